"""LDA topic model (collapsed Gibbs) on the Bösen parameter server: the estimator
(:mod:`.estimator`), its Numba kernels (:mod:`.kernels`) and the job-file app."""

from ...estimator import job_app
from . import kernels
from .estimator import AUTO_SPARSE_MIN_K, LDA, SAMPLERS

_APP = job_app(LDA)
SCHEMA, run_job = _APP.SCHEMA, _APP.run_job

__all__ = ["LDA", "AUTO_SPARSE_MIN_K", "SAMPLERS", "SCHEMA", "run_job", "kernels"]
