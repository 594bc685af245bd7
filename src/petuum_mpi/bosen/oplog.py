"""This worker's own deltas of one table, not yet in the owners' shards.

``inc`` adds into a dense oplog (coalescing all incs of a clock) and marks the
touched units dirty; ``clock()`` sends the dirty units (mailbox.py). When an
owner's mailbox is full, the rest of a closed clock's deltas is moved out of the
oplog into a *held* buffer (allocated at the first deferred send) and sent from
a later call; later incs stay in the oplog until their own ``clock()``, so a
deferred send never carries updates of an unfinished clock (the bsp gate and the
staleness bounds rely on this). Reads add both to fetched rows (read-my-writes).
"""

from __future__ import annotations

import numpy as np

from . import kernels as K


class Oplog:
    """Oplog (``a``, units view ``u``, ``dirty``) and held deltas (``held``, ``held_u``, ``hdirty``)."""

    def __init__(self, lay):
        self.lay = lay
        self.a = np.zeros((lay.rows, lay.width), dtype=lay.dtype)
        self.u = self.a.reshape(lay.n_units, lay.bw)
        self.dirty = np.zeros(lay.n_units, dtype=bool)
        self.held: np.ndarray | None = None  # allocated at the first deferred send
        self.held_u: np.ndarray | None = None
        self.hdirty = np.zeros(lay.n_units, dtype=bool)

    def add(self, single: bool, sel, csel, d: np.ndarray) -> None:
        """Add validated ``d`` at rows ``sel`` (an int if ``single``, else an int64
        array), columns ``csel`` (a unit-step slice or an int64 array)."""
        a, lay = self.a, self.lay
        if single:
            if isinstance(csel, slice):
                tgt = a[sel, csel]
                np.add(tgt, d, out=tgt, casting="same_kind")
            else:
                np.add.at(a[sel], csel, d.astype(a.dtype, copy=False))
            self._mark(np.array([sel], dtype=np.int64), csel)
            return
        srt = sel.size <= 1 or bool(np.all(sel[1:] > sel[:-1]))
        if srt and isinstance(csel, slice) and sel.size and sel[-1] - sel[0] == sel.size - 1:
            tgt = a[sel[0] : sel[-1] + 1, csel]
            np.add(tgt, d, out=tgt, casting="same_kind")
        elif isinstance(csel, slice) and d.ndim == 2:
            # any rows, repeated ones included: one pass, no temporaries
            tgt = a if (csel.start == 0 and csel.stop == lay.width) else a[:, csel]
            K.add_rows(tgt, sel.astype(np.int64, copy=False), np.ascontiguousarray(d, dtype=a.dtype))
        elif isinstance(csel, slice) and (srt or np.unique(sel).size == sel.size):
            a[sel, csel] += d
        else:
            cidx = np.arange(lay.cols)[csel] if isinstance(csel, slice) else csel
            dd = np.broadcast_to(d, (sel.size, cidx.size)).astype(a.dtype, copy=False)
            np.add.at(a, (sel[:, None], cidx[None, :]), dd)
        self._mark(sel, csel)

    def _mark(self, rows: np.ndarray, csel) -> None:
        lay = self.lay
        if lay.nb == 1:
            self.dirty[rows] = True
            return
        if isinstance(csel, slice):
            if csel.stop <= csel.start:
                return
            b = np.arange(csel.start // lay.bw, (csel.stop - 1) // lay.bw + 1)
        else:
            b = np.unique(csel // lay.bw)
        self.dirty[(rows[:, None] * lay.nb + b[None, :]).ravel()] = True

    def hold(self, du: np.ndarray) -> None:
        """Move units ``du``'s deltas from the oplog into the held buffer."""
        if self.held is None:
            self.held = np.zeros_like(self.a)
            self.held_u = self.held.reshape(self.lay.n_units, self.lay.bw)
        K.hold_units(self.u, self.held_u, du)
        self.dirty[du] = False
        self.hdirty[du] = True

    def held_units(self, o: int, P: int) -> np.ndarray:
        """Held units owned by rank ``o``."""
        du = np.flatnonzero(self.hdirty)
        return du[du % P == o].astype(np.int64)

    def add_own(self, out: np.ndarray, idx, units: np.ndarray, is_copy: bool):
        """Add my deltas not in the cache yet (this clock's, held ones) to ``out`` =
        ``cache[idx, :cols]``; returns ``(out, is_copy)`` (a view is never written)."""
        cols = self.lay.cols
        for has, own in ((self.dirty[units].any(), self.a), (self.hdirty[units].any(), self.held)):
            if has:
                if is_copy:
                    out += own[idx, :cols]
                else:
                    out, is_copy = out + own[idx, :cols], True
        return out, is_copy
