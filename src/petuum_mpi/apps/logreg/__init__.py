"""Logistic regression: the estimator (:mod:`.estimator`: full-batch Newton-CG / L-BFGS,
or SVRG / SGD on the Bösen parameter server), its classification kernels (:mod:`.kernels`;
the model math is :mod:`petuum_mpi.linear`) and the job-file app."""

from ...estimator import job_app
from . import kernels
from .estimator import SOLVERS, LogisticRegression, holdout_mask

_APP = job_app(LogisticRegression)
SCHEMA, run_job = _APP.SCHEMA, _APP.run_job


def __getattr__(name):  # ``ConvergenceWarning``, without importing scikit-learn's exceptions at import
    if name == "ConvergenceWarning":
        from ...errors import convergence_warning

        return convergence_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LogisticRegression", "SOLVERS", "holdout_mask", "SCHEMA", "run_job", "kernels", "ConvergenceWarning"]
