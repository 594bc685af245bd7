"""Reads: the process cache, staleness checks and seqlock fetches.

A read at clock ``c`` of a table with staleness ``s`` needs, for each unit, a
copy fetched when its owner guaranteed ``min_p applied[p] >= c - s`` (asp: a
copy fetched during this clock or after). The cache remembers that guarantee per
unit (``fetch_tag``), so reads that are fresh enough never communicate.

A remote fetch reads the owner's header, the units (one ``Get`` per run of
consecutive slots) and the version again; an odd or changed version means the
owner was applying, so it retries (seqlock). The origin's own chunks the owner
has not applied yet, and its oplog and held deltas, are added (read-my-writes).

Units fetched before (``Cache.base`` = the owner's delta-log head then) are instead
brought up to date from the owner's delta log of the table (mailbox.py) when the log since the
oldest of them is still held and is fewer bytes than those units: the reader Gets
the log bytes ``[base, head)`` in the same seqlock round and adds every entry of
another origin at a position ``>= base[u]`` to its copy of unit ``u``. Its copy then
equals what a whole-unit fetch would give: the owner's shard at ``head`` plus this
worker's chunks the owner has not applied (they were folded in when sent).
"""

from __future__ import annotations

import time

import numpy as np

from . import kernels as K
from .layout import by_owner
from .mailbox import _SKIP, MANAGED_INTERVAL, decode
from .sync import Backoff
from .window import CHUNK_HDR

NEVER = -(2**62)  # fetch_tag of a unit that must be fetched before the next read


class Cache:
    """Fetched copies of one table and when they were fetched.

    Unbounded (``budget`` None): ``a`` is the whole table, ``u`` its units view and unit ``u``
    is row ``u`` (``slot_of`` the identity). Bounded: ``u`` is a pool of ``budget // unit_bytes``
    rows; ``slot_of[u]`` is unit ``u``'s row or -1, and the least recently read units are
    evicted (they are fetched whole again when read: their ``fetch_tag`` and ``base`` go).
    """

    def __init__(self, lay, budget: float | None = None):
        n = lay.n_units
        cap = n if budget is None else int(min(n, max(1, budget // lay.unit_bytes)))
        self.bounded = cap < n
        self.u = np.zeros((cap, lay.bw), dtype=lay.dtype)
        self.a = None if self.bounded else self.u.reshape(lay.rows, lay.width)
        self.slot_of = np.full(n, -1, dtype=np.int64) if self.bounded else np.arange(n, dtype=np.int64)
        self.unit_of = np.full(cap, -1, dtype=np.int64)
        self.last = np.zeros(cap, dtype=np.int64)  # read stamp of each row (LRU)
        self.stamp = 0
        self.evictions = 0
        self.fetch_tag = np.full(lay.n_units, NEVER, dtype=np.int64)  # min applied clock at fetch
        self.fetch_clock = np.full(lay.n_units, -1, dtype=np.int64)  # my clock at fetch
        self.ever = np.zeros(lay.n_units, dtype=bool)  # fetched at least once (for essp refresh)
        self.base = np.full(lay.n_units, -1, dtype=np.int64)  # owner's delta-log head at fetch (-1: none)
        self.ofresh = np.zeros(lay.n_units, dtype=np.int64)  # newest data tag of other origins in the copy
        self.pulled: np.ndarray | None = None  # managed tables: pull round of each unit's last fetch

    def invalidate(self, drop_base: bool = False) -> None:
        """Every unit must be fetched again before its next read; ``drop_base``: the
        copies are no base for a delta-log fetch either (shards rewritten by a resume)."""
        self.fetch_tag[:] = NEVER
        self.fetch_clock[:] = -1
        if drop_base:
            self.base[:] = -1

    def nbytes(self) -> int:
        """Bytes this cache holds: the copies and the per-unit bookkeeping."""
        meta = (self.fetch_tag, self.fetch_clock, self.ever, self.base, self.ofresh, self.slot_of, self.unit_of,
                self.last)
        return self.u.nbytes + sum(m.nbytes for m in meta) + (0 if self.pulled is None else self.pulled.nbytes)

    def hold(self, units: np.ndarray, what: str) -> None:
        """Bounded: give every one of ``units`` (unique) a row, evicting the least recently
        read units not among them; stamp them as read now."""
        self.stamp += 1
        miss = units[self.slot_of[units] < 0]
        if miss.size:
            cap = self.u.shape[0]
            if units.size > cap:
                from ..errors import UsageError

                raise UsageError(f"{what}: a read of {units.size} units needs more than the cache budget "
                                 f"({cap} units of {self.u.shape[1] * self.u.itemsize} bytes); raise cache_mb")
            mine = np.zeros(cap, dtype=bool)
            mine[self.slot_of[units[self.slot_of[units] >= 0]]] = True
            free = np.flatnonzero(self.unit_of < 0)
            if free.size < miss.size:
                cand = np.flatnonzero(~mine & (self.unit_of >= 0))
                old = cand[np.argsort(self.last[cand], kind="stable")[: miss.size - free.size]]
                gone = self.unit_of[old]
                self.slot_of[gone] = -1
                self.fetch_tag[gone] = NEVER
                self.fetch_clock[gone] = -1
                self.ever[gone] = False
                self.base[gone] = -1
                self.unit_of[old] = -1
                self.evictions += gone.size
                free = np.flatnonzero(self.unit_of < 0)
            got = free[: miss.size]
            self.slot_of[miss] = got
            self.unit_of[got] = miss
            self.fetch_tag[miss] = NEVER
            self.fetch_clock[miss] = -1
            self.base[miss] = -1
        self.last[self.slot_of[units]] = self.stamp


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
        if units.size == 0:  # no rows asked for: nothing to read, nothing to wait for
            return np.empty((0, lay.cols), dtype=t.dtype)
        if cache.bounded:
            cache.hold(np.unique(units), f"table {t.name!r}")
        if t.consistency == "asp":
            need = units[cache.fetch_clock[units] < clock]
            required = None
        else:
            required = clock - t.s
            need = units[cache.fetch_tag[units] < required]
        if cache.pulled is not None and self.P > 1:
            need = np.concatenate((need, self._managed_pull(t, units, need)))
        cached = need.size == 0
        if not cached:
            self.fetch(t, np.unique(need), required, clock)
        mt = int(cache.fetch_tag[units].min())
        t.stats.read(clock - mt, cached)
        if self.P > 1:
            t.stats.observed(clock - int(cache.ofresh[units].min()))
        idx = slice(None) if sel is None else sel
        if cache.bounded:  # gather the rows' units from the pool (a copy)
            rows = cache.u[cache.slot_of[units]].reshape(-1, lay.width)[:, : lay.cols]
            out, is_copy = t.log.add_own(rows[0] if single else rows, idx, units, True)
            if single:
                out.flags.writeable = False
            return out
        is_copy = not (single or sel is None)  # fancy indexing copies
        out, is_copy = t.log.add_own(cache.a[idx, : lay.cols], idx, units, is_copy)
        if is_copy:
            return out
        v = out.view()
        v.flags.writeable = False
        return v

    def _managed_pull(self, t, units: np.ndarray, need: np.ndarray) -> np.ndarray:
        """Managed communication, reader side: units of this read whose copy is older than the
        table's current pull round (a new round starts at most every ``MANAGED_INTERVAL``) and
        that the bound does not make us fetch anyway, refreshed as the pull budget (the table's
        ``managed_bytes`` per second, up to one second's worth, whole-unit bytes counted) allows,
        my own units free. Their owners already guarantee the bound, so fetching them never
        waits: they only pick up what others sent since (managed sends, later clocks)."""
        now = time.perf_counter()
        rate = t.spec.managed_bytes
        if now - t.mp_last >= MANAGED_INTERVAL:
            t.mp_credit = min(t.mp_credit + rate * (now - t.mp_last), float(rate))
            t.mp_last = now
            t.mp_round += 1
        cache = t.cache
        cand = units[cache.pulled[units] < t.mp_round]
        if need.size and cand.size:
            cand = cand[~np.isin(cand, need)]
        if not cand.size:
            return cand
        cand = np.unique(cand)
        mine = cand % self.P == self.me
        per = t.lay.unit_bytes + 24.0
        remote = cand[~mine][: int(max(t.mp_credit, 0.0) // per)]
        t.mp_credit -= remote.size * per
        cache.pulled[cand[mine]] = t.mp_round  # refreshed below (free), or not worth a look this round
        t.stats.pulled_units += remote.size
        return np.concatenate((cand[mine], remote))

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
                K.gather_own(cache.u, cache.slot_of, t.shard, us, P)
                cache.ofresh[us] = K.fresh_for(t.fresh[us // P], self.me)
            else:
                mt = self._fetch_remote(t, o, us, required, back)
            cache.fetch_tag[us] = mt
            cache.fetch_clock[us] = clock
            if cache.pulled is not None:
                cache.pulled[us] = t.mp_round
            cache.ever[us] = True
            t.stats.fetch_units += us.size

    def _fetch_remote(self, t, o: int, us: np.ndarray, required, back: Backoff) -> int:
        win, g = self.win, self.g
        ub, bw, cache = t.lay.unit_bytes, t.lay.bw, t.cache
        base = cache.base[us]
        has_base = base >= 0
        n_base = int(has_base.sum())
        lmin = int(base[has_base].min()) if n_base else 0
        ver = np.zeros(1, dtype=np.int64)
        while True:
            h = win.read_header(o)
            g["pull_bytes_recv"] += h.nbytes
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
            head = int(h.log_head[t.tid])
            use_log = bool(n_base and t.logcap and lmin >= int(h.log_tail[t.tid]) and head - lmin < n_base * ub)
            whole = us[~has_base] if use_log else us
            slots = whole // self.P
            # runs of consecutive slots -> one Get each
            brk = np.flatnonzero(np.diff(slots) != 1) + 1
            starts = np.concatenate(([0], brk)) if slots.size else brk
            ends = np.concatenate((brk, [slots.size])) if slots.size else brk
            recv = np.empty((whole.size, bw), dtype=t.dtype)
            rb = recv.view(np.uint8).reshape(-1)
            frecv = np.empty((whole.size, 3), dtype=np.int64)  # the units' freshness at the owner
            fb = frecv.view(np.uint8).reshape(-1)
            for a, b in zip(starts.tolist(), ends.tolist()):
                win.get(rb[a * ub : b * ub], o, t.offset + int(slots[a]) * ub)
                win.get(fb[a * 24 : b * 24], o, t.foff + int(slots[a]) * 24)
            logbuf = self._get_log(t, o, lmin, head) if use_log else None
            win.flush(o)
            win.get(ver, o, h.disp("version"))
            win.flush(o)
            nlog = 0 if logbuf is None else logbuf.size
            g["pull_bytes_recv"] += recv.nbytes + frecv.nbytes + nlog + 8
            if int(ver[0]) == v1:
                break
            g["torn_reads"] += 1
        n = 2 * starts.size + 2 + (0 if logbuf is None else 1 + ((lmin % t.logcap) + nlog > t.logcap))
        t.stats.fetch_msgs += n
        t.stats.fetch_bytes += recv.nbytes + nlog
        g["gets"] += n
        g["bytes_fetched"] += recv.nbytes + nlog
        if whole.size:
            self.mail.add_unapplied(o, t, whole, recv, cseq)
            cache.u[cache.slot_of[whole]] = recv
            cache.ofresh[whole] = K.fresh_for(frecv, self.me)
        if logbuf is not None:
            self._apply_log(t, us[has_base], logbuf, lmin, head)
            t.stats.fetch_log_bytes += nlog
            t.stats.fetch_log_units += n_base
        cache.base[us] = head
        return mt

    def _get_log(self, t, o: int, lo: int, hi: int) -> np.ndarray:
        """Start the Gets of ``o``'s delta-log bytes ``[lo, hi)`` of ``t`` (one or two: the ring wraps)."""
        win = self.win
        cap = t.logcap
        buf = np.empty(hi - lo, dtype=np.uint8)
        pos = lo % cap
        first = min(hi - lo, cap - pos)
        if first:
            win.get(buf[:first], o, t.log0 + pos)
        if first < buf.size:
            win.get(buf[first:], o, t.log0)
        return buf

    def _apply_log(self, t, units: np.ndarray, buf: np.ndarray, lo: int, hi: int) -> None:
        """Add the log entries ``[lo, hi)`` of other origins to the cached ``units`` of ``t``
        (each only from its own ``base`` on)."""
        cap, cache = t.logcap, t.cache
        want = np.zeros(t.lay.n_units, dtype=np.bool_)
        want[units] = True
        q = lo
        while q < hi:
            pos = q % cap
            if cap - pos < CHUNK_HDR:
                q += cap - pos
                continue
            hh = buf[q - lo : q - lo + CHUNK_HDR].view(np.int64)
            if int(hh[0]) == _SKIP:
                q += cap - pos
                continue
            if int(hh[7]) != self.me:
                cu, payload = decode(buf, q - lo, t)
                K.log_fresh(cache.ofresh, cu, want, cache.base, q, K.data_tag(int(hh[2])))
                if isinstance(payload, tuple):
                    K.log_sparse(cache.u, cache.slot_of, cu, *payload, want, cache.base, q)
                else:
                    K.log_rows(cache.u, cache.slot_of, cu, payload, want, cache.base, q)
            q += int(hh[5])
