"""Shared pieces of the STRADS generalised-linear-model apps (lasso, l1_logistic).

Not an app: the engine parameters both declare, the not-fitted error, and the
:class:`~petuum_mpi.drivers.Sweeper` built from those parameters (with the row
sample of the ``sap`` scheduler).
"""

from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError

from ..errors import UsageError
from ..estimator import Param
from .schedulers import SCHEDULERS

__all__ = ["ENGINE_PARAMS", "NotFitted", "make_sweeper", "require_fitted", "regression_targets"]

#: engine parameters of the GLM apps (``[engine]`` in job files)
ENGINE_PARAMS = {
    "scheduler": Param("cyclic", str, choices=SCHEDULERS, section="engine",
                       doc="variable scheduler (sap: keeps correlated columns out of the same round)"),
    "round_size": Param(None, int, lo=1, section="engine", doc="variables per round (None: about 64k non-zeros "
                        "per rank and round)"),
    "rho": Param(0.1, float, lo=0.0, hi=1.0, section="engine", doc="sap dependency threshold |corr|"),
    "eta": Param(1e-2, float, lo=0.0, section="engine", doc="priority floor relative to the mean weight"),
    "warmup_sweeps": Param(1.0, float, lo=0.0, section="engine", doc="uniform sweeps before priorities"),
    "pipeline_depth": Param(0, int, lo=0, section="engine", doc="rounds in flight before results are in"),
    "sample_rows": Param(1000, int, lo=2, section="engine", doc="rows sampled for sap correlations"),
}


def make_sweeper(app, r, n_vars, costs, X_local, n_rows, *, round_size=None, serial_fusion=True):
    """The :class:`~petuum_mpi.drivers.Sweeper` of the engine parameters ``r.p`` (collective)."""
    from ..drivers import Sweeper
    from .sample import gather_row_sample

    p = r.p

    def sample():  # collective; built by the engine before its first parallel round
        return gather_row_sample(X_local, n_rows, p.sample_rows, p.random_state, r.comm)

    sample = sample if p.scheduler == "sap" else None
    return Sweeper(app, r, n_vars, costs, scheduler=p.scheduler, round_size=round_size or p.round_size,
                   pipeline_depth=p.pipeline_depth, seed=p.random_state, sample=sample, serial_fusion=serial_fusion,
                   eta=p.eta, warmup_sweeps=p.warmup_sweeps, rho=p.rho)


class NotFitted(UsageError, NotFittedError):
    """An estimator used before ``fit`` (also scikit-learn's NotFittedError)."""


def require_fitted(est) -> None:
    if getattr(est, "coef_", None) is None:
        raise NotFitted(f"This {type(est).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                        "arguments before using this estimator.")


def regression_targets(y) -> np.ndarray:
    """``y`` as float64 (one line naming the problem when it is not numeric)."""
    from ..estimator import InputError

    try:
        return np.asarray(y, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise InputError(f"y must be numeric for a regressor: {e}") from None
