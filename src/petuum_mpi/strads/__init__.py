"""STRADS: structure-aware model-parallel engine (schedule / push / pull rounds).

See :mod:`petuum_mpi.strads.engine` and :mod:`petuum_mpi.strads.schedulers`, and
``docs/strads.md``.
"""

from .engine import Engine, Telemetry
from .sample import gather_row_sample
from .schedulers import SCHEDULERS, RowSample, make_scheduler

__all__ = ["Engine", "Telemetry", "RowSample", "SCHEDULERS", "make_scheduler", "gather_row_sample"]
