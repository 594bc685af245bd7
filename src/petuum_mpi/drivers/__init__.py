"""Drivers: the loops every app used to write itself.

* :mod:`.dataparallel` -- Bösen apps (parameter server, clocks, snapshots, stale-safe stopping)
* :mod:`.modelparallel` -- STRADS apps (scheduled sweeps, undo and shrink, convergence test)

See docs/writing-apps.md.
"""

from .dataparallel import Contribution, DataParallelEstimator, Run, seed_from_root
from .modelparallel import ModelParallelEstimator, Sweeper

__all__ = ["DataParallelEstimator", "ModelParallelEstimator", "Run", "Contribution", "seed_from_root", "Sweeper"]
