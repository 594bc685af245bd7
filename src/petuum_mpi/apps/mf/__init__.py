"""Matrix factorization (SGD on Bösen): the estimator and its job-file app (``app = "mf"``)."""

from ...estimator import job_app
from .estimator import MatrixFactorization

_APP = job_app(MatrixFactorization, "mf")
SCHEMA, run_job = _APP.SCHEMA, _APP.run_job

__all__ = ["MatrixFactorization", "SCHEMA", "run_job"]
