"""Everything one rank keeps about one table: model, geometry, shard, cache, oplog, counters."""

from __future__ import annotations

import numpy as np

from .layout import Layout, TableSpec
from .oplog import Oplog
from .reads import Cache
from .telemetry import TableStats


class TableState:
    """One table on this rank. ``shard`` (this rank's units, in the window) is set by the window."""

    def __init__(self, tid: int, spec: TableSpec, P: int, me: int, default_cons: str, default_s: int):
        self.tid, self.spec, self.name = tid, spec, spec.name
        self.lay = lay = Layout(spec, P)
        self.consistency = spec.consistency or default_cons
        s = spec.staleness if spec.staleness is not None else default_s
        self.s = 0 if self.consistency == "bsp" else int(s)
        self.dtype = lay.dtype
        # column index of a sparse entry within its unit (mailbox.py)
        self.col_dtype = np.dtype(np.uint16) if lay.bw < 2**16 else np.dtype(np.int32)
        self.cache = Cache(lay, None if spec.cache_mb is None else spec.cache_mb * 2**20)
        self.log = Oplog(lay, None if spec.oplog_mb is None else spec.oplog_mb * 2**20)
        self.nslots = lay.n_slots(me)
        self.offset = 0  # byte offset of the shard in the window
        self.log0, self.logcap = 0, 0  # the delta log in the window (set by the window)
        self.shard: np.ndarray | None = None
        self.stats = TableStats()
        self.mg_credit, self.mg_last = 0.0, 0.0  # managed communication: bytes allowed, last round (mailbox.py)
        self.mp_credit, self.mp_last, self.mp_round = 0.0, 0.0, 0  # its pulls: budget, last round, round (reads.py)
        if spec.managed_bytes is not None:
            self.cache.pulled = np.full(lay.n_units, -1, dtype=np.int64)

    def init_shard(self, me: int, P: int) -> None:
        """Fill my shard from ``spec.init`` (padding columns of wide rows stay 0)."""
        init, lay = self.spec.init, self.lay
        if np.isscalar(init):
            self.shard[:] = init
            if lay.width != lay.cols and init != 0:
                units = lay.owned_units(me)
                last = units[units % lay.nb == lay.nb - 1]
                self.shard[last // P, lay.cols - (lay.nb - 1) * lay.bw :] = 0
            return
        full = np.zeros((lay.rows, lay.width), dtype=self.dtype)
        full[:, : lay.cols] = np.asarray(init, dtype=self.dtype)
        self.shard[:] = full.reshape(lay.n_units, lay.bw)[lay.owned_units(me)]
