"""Lasso / ElasticNet on STRADS: estimators, paths, kernels and the ``lasso`` / ``elastic_net`` job apps."""

from .estimator import ElasticNet, EnetProblem, Lasso, solve_enet
from .job import SCHEMA, run_job
from .path import alpha_grid, enet_path, lasso_path

__all__ = ["ElasticNet", "Lasso", "enet_path", "lasso_path", "alpha_grid", "EnetProblem", "solve_enet", "SCHEMA",
           "run_job"]


def __getattr__(name):  # ``ConvergenceWarning``, without importing scikit-learn's exceptions eagerly
    if name == "ConvergenceWarning":
        from ...errors import convergence_warning

        return convergence_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
