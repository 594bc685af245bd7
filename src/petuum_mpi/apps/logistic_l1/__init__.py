"""L1 logistic regression on STRADS: the estimator, its kernels and the ``l1_logistic`` job app."""

from ...estimator import job_app
from .estimator import L1LogisticRegression, LogisticProblem, objective

APP = L1LogisticRegression
_job = job_app(L1LogisticRegression)
SCHEMA, run_job = _job.SCHEMA, _job.run_job

__all__ = ["L1LogisticRegression", "LogisticProblem", "objective", "APP", "SCHEMA", "run_job"]
