"""This worker's own deltas of one table, not yet in the owners' shards.

``inc`` adds into the oplog (coalescing all incs of a clock) and marks the
touched units dirty; ``clock()`` sends the dirty units (mailbox.py). When an
owner's mailbox is full, the rest of a closed clock's deltas is moved out of the
oplog into a *held* buffer and sent from a later call; later incs stay in the
oplog until their own ``clock()``, so a deferred send never carries updates of
an unfinished clock (the bsp gate and the staleness bounds rely on this). Reads
add both to fetched rows (read-my-writes).

Storage: the deltas of unit ``u`` are row ``slot[u]`` of ``u`` (held ones: row
``hslot[u]`` of ``hu``; -1 = none). Unbounded (default) the oplog is the dense
table (``slot`` is the identity) and the held buffer a second dense table,
allocated at the first deferred send. Bounded (``TableSpec.oplog_mb``) both
share one pool of ``oplog_mb`` MiB of unit rows, given to units when first
touched and freed when sent; when an ``inc`` needs more rows than are free, the
table's pending deltas are sent early (``spill``, mailbox.py: like a managed
send, data of this clock that is never final, so updates become visible sooner,
never later). Only if that frees too little (owners' mailboxes full) does the
pool grow (``grows`` counts it): nothing waits and nothing is lost.
Free pool rows are all zero.
"""

from __future__ import annotations

import numpy as np

from . import kernels as K


def _add_into(a: np.ndarray, single: bool, sel, csel, d: np.ndarray, width: int, cols: int) -> None:
    """a[sel, csel] += d, repeated rows adding up (``single``: ``sel`` is an int)."""
    if single:
        if isinstance(csel, slice):
            tgt = a[sel, csel]
            np.add(tgt, d, out=tgt, casting="same_kind")
        else:
            np.add.at(a[sel], csel, d.astype(a.dtype, copy=False))
        return
    srt = sel.size <= 1 or bool(np.all(sel[1:] > sel[:-1]))
    if srt and isinstance(csel, slice) and sel.size and sel[-1] - sel[0] == sel.size - 1:
        tgt = a[sel[0] : sel[-1] + 1, csel]
        np.add(tgt, d, out=tgt, casting="same_kind")
    elif isinstance(csel, slice) and d.ndim == 2:
        # any rows, repeated ones included: one pass, no temporaries
        tgt = a if (csel.start == 0 and csel.stop == width) else a[:, csel]
        K.add_rows(tgt, sel.astype(np.int64, copy=False), np.ascontiguousarray(d, dtype=a.dtype))
    elif isinstance(csel, slice) and (srt or np.unique(sel).size == sel.size):
        a[sel, csel] += d
    else:
        cidx = np.arange(cols)[csel] if isinstance(csel, slice) else csel
        dd = np.broadcast_to(d, (sel.size, cidx.size)).astype(a.dtype, copy=False)
        np.add.at(a, (sel[:, None], cidx[None, :]), dd)


class Oplog:
    """Oplog rows ``u`` (map ``slot``, flags ``dirty``) and held rows ``hu`` (``hslot``, ``hdirty``)."""

    def __init__(self, lay, budget: float | None = None):
        self.lay = lay
        n = lay.n_units
        self.dirty = np.zeros(n, dtype=bool)
        self.hdirty = np.zeros(n, dtype=bool)
        self.spill = None  # bounded: callable sending this table's dirty units early (set by the server)
        self.grows = 0
        cap = n if budget is None else int(min(n, max(1, budget // lay.unit_bytes)))
        self.bounded = cap < n
        if self.bounded:
            self.u = np.zeros((cap, lay.bw), dtype=lay.dtype)
            self.hu = self.u
            self.slot = np.full(n, -1, dtype=np.int64)
            self.hslot = np.full(n, -1, dtype=np.int64)
            self.used = np.zeros(cap, dtype=bool)
        else:
            self.a = np.zeros((lay.rows, lay.width), dtype=lay.dtype)
            self.u = self.a.reshape(n, lay.bw)
            self.slot = self.hslot = np.arange(n, dtype=np.int64)
            self.hu: np.ndarray | None = None  # allocated at the first deferred send

    def nbytes(self) -> int:
        """Bytes of pending deltas (oplog, held) and their bookkeeping."""
        maps = self.slot.nbytes * (2 if self.bounded else 1) + self.dirty.nbytes + self.hdirty.nbytes
        if self.bounded:
            return self.u.nbytes + self.used.nbytes + maps
        return self.u.nbytes + (0 if self.hu is None else self.hu.nbytes) + maps

    # ------------------------------------------------------------------ incs
    def add(self, single: bool, sel, csel, d: np.ndarray) -> None:
        """Add validated ``d`` at rows ``sel`` (an int if ``single``, else an int64
        array), columns ``csel`` (a unit-step slice or an int64 array)."""
        lay = self.lay
        rows = np.array([sel], dtype=np.int64) if single else sel
        blocks = self._blocks(csel)
        if not self.bounded:
            _add_into(self.a, single, sel, csel, d, lay.width, lay.cols)
        elif blocks.size and rows.size:
            # the deltas as dense rows of the inc's size, then added unit by unit into the pool
            tmp = np.zeros((rows.size, lay.width), dtype=lay.dtype)
            _add_into(tmp, single, 0 if single else np.arange(rows.size, dtype=np.int64), csel, d,
                      lay.width, lay.cols)
            units = (rows[:, None] * lay.nb + blocks[None, :]).ravel()
            self.rows_for(units)
            vals = tmp.reshape(rows.size, lay.nb, lay.bw)[:, blocks, :].reshape(-1, lay.bw)
            K.add_rows(self.u, self.slot[units], vals)
        if lay.nb == 1:
            self.dirty[rows] = True
        elif blocks.size:
            self.dirty[(rows[:, None] * lay.nb + blocks[None, :]).ravel()] = True

    def _blocks(self, csel) -> np.ndarray:
        lay = self.lay
        if isinstance(csel, slice):
            if csel.stop <= csel.start:
                return np.zeros(0, dtype=np.int64)
            return np.arange(csel.start // lay.bw, (csel.stop - 1) // lay.bw + 1, dtype=np.int64)
        return np.unique(csel // lay.bw).astype(np.int64)

    def rows_for(self, units: np.ndarray) -> None:
        """Bounded: give every unit of ``units`` an oplog row (spilling, or growing the pool)."""
        miss = np.unique(units[self.slot[units] < 0])
        if not miss.size:
            return
        free = np.flatnonzero(~self.used)
        if free.size < miss.size and self.spill is not None and self.dirty.any():
            self.spill()  # frees the rows of what it sent, possibly some of ``units``
            miss = np.unique(units[self.slot[units] < 0])
            free = np.flatnonzero(~self.used)
        if free.size < miss.size:  # owners' mailboxes full: grow rather than wait
            cap = self.u.shape[0]
            extra = max(cap, miss.size - free.size)
            self.u = np.concatenate([self.u, np.zeros((extra, self.lay.bw), dtype=self.u.dtype)])
            self.hu = self.u
            self.used = np.concatenate([self.used, np.zeros(extra, dtype=bool)])
            self.grows += 1
            free = np.flatnonzero(~self.used)
        got = free[: miss.size]
        self.used[got] = True
        self.slot[miss] = got

    def release(self, du: np.ndarray, held: bool) -> None:
        """Units ``du``'s deltas (held ones if ``held``) were sent or are zero: clear
        their flags and, bounded, free their (zeroed) rows."""
        (self.hdirty if held else self.dirty)[du] = False
        if self.bounded:
            m = self.hslot if held else self.slot
            r = m[du]
            self.used[r[r >= 0]] = False
            m[du] = -1

    # ------------------------------------------------------------------ held
    def hold(self, du: np.ndarray) -> None:
        """Move units ``du``'s deltas from the oplog into the held buffer."""
        if self.bounded:
            du = du[self.slot[du] >= 0]
            both = du[self.hslot[du] >= 0]
            if both.size:  # already held from an earlier clock: add, free the oplog row
                self.u[self.hslot[both]] += self.u[self.slot[both]]
                self.u[self.slot[both]] = 0
                self.used[self.slot[both]] = False
            new = du[self.hslot[du] < 0]
            self.hslot[new] = self.slot[new]  # the row itself becomes the held row
            self.slot[du] = -1
        else:
            if self.hu is None:
                self.hu = np.zeros_like(self.u)
            K.hold_units(self.u, self.hu, du)
        self.dirty[du] = False
        self.hdirty[du] = True

    def held_units(self, o: int, P: int) -> np.ndarray:
        """Held units owned by rank ``o``."""
        du = np.flatnonzero(self.hdirty)
        return du[du % P == o].astype(np.int64)

    # ------------------------------------------------------------------ reads
    def add_own(self, out: np.ndarray, idx, units: np.ndarray, is_copy: bool):
        """Add my deltas not in the cache yet (this clock's, held ones) to ``out`` =
        ``cache[idx, :cols]`` (rows in the order of ``units``, ``nb`` units per row);
        returns ``(out, is_copy)`` (a view is never written)."""
        cols, nb = self.lay.cols, self.lay.nb
        for flags, src, m in ((self.dirty, self.u, self.slot), (self.hdirty, self.hu, self.hslot)):
            if not flags[units].any():
                continue
            if not is_copy:
                out, is_copy = out.copy(), True
            if self.bounded:
                ks = np.flatnonzero(flags[units]).astype(np.int64)
                K.add_pool(out.reshape(-1, out.shape[-1]), units, ks, src, m, nb, cols)
            else:
                out += src.reshape(self.lay.rows, self.lay.width)[idx, :cols]
        return out, is_copy
