"""Exceptions that petuum_mpi raises for bad input.

Every error a user can cause (a bad job file, a malformed shard, NaN in data, a
misused table) is a :class:`PetuumError` subclass with a message that names the
problem. The command line prints such errors as one line, without a traceback,
and aborts every rank (see :mod:`petuum_mpi.runtime`).
"""


class PetuumError(Exception):
    """Base class of all errors caused by the user's input or usage.

    ``collective`` is True when every rank of the job raised the same error at
    the same point (a bad job file, a bad dataset found by a collective reader):
    the job can then end cleanly on every rank instead of being aborted.
    """

    collective = False


def collective(exc: PetuumError) -> PetuumError:
    """Mark ``exc`` as raised by every rank at once (see ``PetuumError.collective``)."""
    exc.collective = True
    return exc


class ConfigError(PetuumError):
    """A job file or an estimator parameter is invalid (unknown key, wrong type, bad value)."""


class DataError(PetuumError):
    """A dataset is missing, corrupt, inconsistent, or holds invalid values."""


class UsageError(PetuumError):
    """An API is used wrongly (unknown table, wrong shape, call after shutdown...)."""


class _ConvergenceWarning(UserWarning):
    """The solver stopped before reaching ``tol`` (scikit-learn not installed)."""


def convergence_warning() -> type:
    """scikit-learn's ``ConvergenceWarning`` when it is installed, else petuum_mpi's own.

    Resolved when a warning is issued, not when an app is imported: importing
    scikit-learn takes seconds, more than a small job.
    """
    try:
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:
        return _ConvergenceWarning
    return ConvergenceWarning


class OutputError(PetuumError):
    """A result file (model, snapshot, metrics) could not be written: disk full, permissions..."""
