"""Reads: the process cache, staleness checks and seqlock fetches.

A read at clock ``c`` of a table with staleness ``s`` needs, for each unit, a
copy fetched when its owner guaranteed ``min_p applied[p] >= c - s`` (asp: a
copy fetched during this clock or after). The cache remembers that guarantee per
unit (``fetch_tag``), so reads that are fresh enough never communicate.

A remote fetch reads the owner's header, the units (one ``Get`` per run of
consecutive slots) and the version again; an odd or changed version means the
owner was applying, so it retries (seqlock). The origin's own chunks the owner
has not applied yet, and its oplog and held deltas, are added (read-my-writes).
"""

from __future__ import annotations

import numpy as np

from . import kernels as K
from .layout import by_owner
from .sync import Backoff

NEVER = -(2**62)  # fetch_tag of a unit that must be fetched before the next read


class Cache:
    """Fetched copies of one table (``a``, units view ``u``) and when they were fetched."""

    def __init__(self, lay):
        self.a = np.zeros((lay.rows, lay.width), dtype=lay.dtype)
        self.u = self.a.reshape(lay.n_units, lay.bw)
        self.fetch_tag = np.full(lay.n_units, NEVER, dtype=np.int64)  # min applied clock at fetch
        self.fetch_clock = np.full(lay.n_units, -1, dtype=np.int64)  # my clock at fetch
        self.ever = np.zeros(lay.n_units, dtype=bool)  # fetched at least once (for essp refresh)

    def invalidate(self) -> None:
        """Every unit must be fetched again before its next read."""
        self.fetch_tag[:] = NEVER
        self.fetch_clock[:] = -1


class Reader:
    """Reads of one server (``win``: window, ``mail``: mailboxes, ``sync``: waits, ``g``: counters)."""

    def __init__(self, win, mail, sync, g: dict):
        self.win, self.mail, self.sync, self.g = win, mail, sync, g
        self.P, self.me = win.P, win.me

    def read(self, t, single: bool, sel, clock: int) -> np.ndarray:
        """Rows ``sel`` of ``t`` (validated: an int if ``single``, an int64 array, or
        None = all) under its consistency model at ``clock``; see ParameterServer.get."""
        lay, cache = t.lay, t.cache
        if sel is None:
            units = np.arange(lay.n_units, dtype=np.int64)
        elif single:
            units = np.arange(sel * lay.nb, (sel + 1) * lay.nb, dtype=np.int64)
        else:
            units = lay.units_of_rows(sel)
        if t.consistency == "asp":
            need = units[cache.fetch_clock[units] < clock]
            required = None
        else:
            required = clock - t.s
            need = units[cache.fetch_tag[units] < required]
        cached = need.size == 0
        if not cached:
            self.fetch(t, np.unique(need), required, clock)
        mt = int(cache.fetch_tag[units].min())
        t.stats.read(clock - mt, cached)
        idx = slice(None) if sel is None else sel
        is_copy = not (single or sel is None)  # fancy indexing copies
        out, is_copy = t.log.add_own(cache.a[idx, : lay.cols], idx, units, is_copy)
        if is_copy:
            return out
        v = out.view()
        v.flags.writeable = False
        return v

    def refresh_essp(self, tables, clock: int) -> None:
        """essp: after a clock, re-fetch every cached unit without waiting."""
        for t in tables:
            if t.consistency == "essp":
                units = np.flatnonzero(t.cache.ever)
                if units.size:
                    self.fetch(t, units.astype(np.int64), None, clock)

    def fetch(self, t, units: np.ndarray, required: int | None, clock: int) -> None:
        """Refresh ``units`` (sorted, unique) of ``t`` in the cache; if
        ``required`` is set, wait until each owner guarantees that clock."""
        P, cache = self.P, t.cache
        for o, us in by_owner(units, P):
            back = Backoff()
            if o == self.me:
                while True:
                    mt = int(self.win.hdr.applied.min())
                    if required is None or mt >= required:
                        break
                    self.sync.wait(t, back)
                K.gather_own(cache.u, t.shard, us, P)
            else:
                mt = self._fetch_remote(t, o, us, required, back)
            cache.fetch_tag[us] = mt
            cache.fetch_clock[us] = clock
            cache.ever[us] = True
            t.stats.fetch_units += us.size

    def _fetch_remote(self, t, o: int, us: np.ndarray, required, back: Backoff) -> int:
        win, g = self.win, self.g
        ub, bw = t.lay.unit_bytes, t.lay.bw
        slots = us // self.P
        # runs of consecutive slots -> one Get each
        brk = np.flatnonzero(np.diff(slots) != 1) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [slots.size]))
        recv = np.empty((us.size, bw), dtype=t.dtype)
        rb = recv.view(np.uint8).reshape(-1)
        ver = np.zeros(1, dtype=np.int64)
        while True:
            h = win.read_header(o)
            v1 = int(h.version[0])
            mt = int(h.applied.min())
            if required is not None and mt < required:
                self.sync.wait(t, back)
                continue
            if v1 & 1:
                g["torn_reads"] += 1
                self.sync.wait(None, back)
                continue
            cseq = int(h.consumed_seq[self.me])
            for a, b in zip(starts.tolist(), ends.tolist()):
                win.get(rb[a * ub : b * ub], o, t.offset + int(slots[a]) * ub)
            win.flush(o)
            win.get(ver, o, h.disp("version"))
            win.flush(o)
            if int(ver[0]) == v1:
                break
            g["torn_reads"] += 1
        n = starts.size + 2
        t.stats.fetch_msgs += n
        t.stats.fetch_bytes += recv.nbytes
        g["gets"] += n
        g["bytes_fetched"] += recv.nbytes
        self.mail.add_unapplied(o, t, us, recv, cseq)
        t.cache.u[us] = recv
        return mt
