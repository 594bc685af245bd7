"""Bösen parameter server on one-sided MPI windows (see docs/bosen.md).

Design in one paragraph: every rank owns a shard of every table in one MPI
window (``Win.Allocate``, one ``Lock_all`` epoch for its lifetime). Updates are
never written into a remote shard: an origin coalesces its incs in a dense oplog
and, at ``clock()``, ``Put``s them as chunks into a per-origin ring buffer
(mailbox) at the owner. The owner applies mailbox chunks itself whenever it
enters the library (get/inc/clock/barrier and every wait). Only ``Put`` and
``Get`` are used, so the server makes progress when ranks do not share memory
(``MPIR_CVAR_NOLOCAL=1``), where floating-point ``Accumulate`` would stall.
Each owner publishes, in its window header, ``applied[p]`` = "all updates of
origin p from clocks < applied[p] are in my shard"; a reader at clock ``c``
needs ``min_p applied[p] >= c - s`` from the owner of a row. Header and rows are
read as one consistent snapshot with a sequence lock (version odd while the
owner applies). Read-my-writes: the reader adds its own unapplied deltas (the
oplog, and chunks sent but not yet consumed) to fetched rows.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Any, Iterable, Mapping

import numpy as np

from ..errors import UsageError
from ..runtime import compile_once, get_comm
from . import kernels as K
from .layout import CONSISTENCY, Layout, TableSpec, validate_spec
from .telemetry import TableStats, merge

_HDR_FIXED = 4  # version, clock, bsp gate (clock being closed), reserved
_CHUNK_HDR = 64  # bytes: kind, seq, tag, tid, nunits, total_bytes, 0, 0
_DATA, _SKIP = 1, 2
_SLEEP0, _SLEEP_MAX = 20e-6, 1e-3
_NEVER = -(2**62)  # fetch_tag of a unit that must be fetched before the next read


def _align(n: int, a: int = 64) -> int:
    return -(-n // a) * a


class _Backoff:
    """Exponential sleep between polls: 20 us doubling to 1 ms."""

    def __init__(self) -> None:
        self.d = _SLEEP0

    def __call__(self) -> None:
        time.sleep(self.d)
        self.d = min(self.d * 2, _SLEEP_MAX)


class _Table:
    def __init__(self, tid: int, spec: TableSpec, P: int, me: int, default_cons: str, default_s: int):
        self.tid, self.spec, self.name = tid, spec, spec.name
        self.lay = Layout(spec, P)
        self.consistency = spec.consistency or default_cons
        s = spec.staleness if spec.staleness is not None else default_s
        self.s = 0 if self.consistency == "bsp" else int(s)
        lay = self.lay
        self.dtype = lay.dtype
        self.cache = np.zeros((lay.rows, lay.width), dtype=self.dtype)
        self.oplog = np.zeros((lay.rows, lay.width), dtype=self.dtype)
        self.cache_u = self.cache.reshape(lay.n_units, lay.bw)
        self.oplog_u = self.oplog.reshape(lay.n_units, lay.bw)
        self.dirty = np.zeros(lay.n_units, dtype=bool)
        # deltas of closed clocks that did not fit into a full mailbox yet (kept
        # apart from the oplog, which only takes the current clock's incs)
        self.held: np.ndarray | None = None  # allocated at the first deferred send
        self.held_u: np.ndarray | None = None
        self.hdirty = np.zeros(lay.n_units, dtype=bool)
        self.n_dirty_hint = False
        self.fetch_tag = np.full(lay.n_units, _NEVER, dtype=np.int64)  # min applied clock at fetch
        self.fetch_clock = np.full(lay.n_units, -1, dtype=np.int64)  # my clock at fetch
        self.ever = np.zeros(lay.n_units, dtype=bool)  # fetched at least once (for essp refresh)
        self.nslots = lay.n_slots(me)
        self.offset = 0  # byte offset of the shard in the window
        self.shard: np.ndarray | None = None
        self.stats = TableStats()


class ParameterServer:
    """A stale-synchronous parameter server over all ranks of ``comm``.

    Collective: every rank constructs it with the same tables. Every rank is a
    worker and hosts a shard of every table.

    Parameters
    ----------
    tables : list of TableSpec or dict
        Table declarations (see :class:`TableSpec`).
    comm : mpi4py communicator, optional
        Default ``MPI.COMM_WORLD``.
    consistency : {"bsp", "ssp", "essp", "asp"}, default "ssp"
        Default model of tables that do not set their own.
    staleness : int, default 1
        Default staleness ``s``: a read at clock ``c`` reflects all updates of
        clocks ``<= c - s - 1`` of every worker (bsp: s = 0; asp: no bound).
    straggler : dict, optional
        ``{"ranks": [..], "factor": 2.0, "random_delay_ms": 0.0, "seed": 0}``:
        listed ranks sleep ``(factor - 1) x`` their compute time of each clock,
        and ``random_delay_ms > 0`` adds a uniform random sleep per clock (on
        the listed ranks, or on all ranks when the list is empty).
    snapshot_every : int, default 0
        Write a snapshot every N clocks (0 = never); needs ``snapshot_dir``.
    snapshot_dir : str, optional
    mailbox_mb : float, optional
        Size of each per-origin mailbox (default: from the table sizes).
    """

    def __init__(
        self,
        tables: Iterable[TableSpec | Mapping[str, Any]],
        comm=None,
        *,
        consistency: str = "ssp",
        staleness: int = 1,
        straggler: Mapping[str, Any] | None = None,
        snapshot_every: int = 0,
        snapshot_dir: str | None = None,
        mailbox_mb: float | None = None,
    ):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = get_comm(comm)
        self.P, self.me = self.comm.size, self.comm.rank
        if consistency not in CONSISTENCY:
            raise UsageError(f"consistency must be one of {', '.join(CONSISTENCY)}, got {consistency!r}")
        if isinstance(staleness, bool) or not isinstance(staleness, (int, np.integer)) or staleness < 0:
            raise UsageError(f"staleness must be an integer >= 0, got {staleness!r}")
        if snapshot_every and not snapshot_dir:
            raise UsageError("snapshot_every > 0 needs snapshot_dir")
        specs = [validate_spec(t) for t in tables]
        if not specs:
            raise UsageError("a parameter server needs at least one table")
        names = [s.name for s in specs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise UsageError(f"table {sorted(dup)[0]!r} is declared twice")
        self._tables = [_Table(i, s, self.P, self.me, consistency, staleness) for i, s in enumerate(specs)]
        self._by_name = {t.name: t for t in self._tables}
        self._bsp = any(t.consistency == "bsp" for t in self._tables)
        self.consistency, self.staleness = consistency, int(staleness)
        self.snapshot_every, self.snapshot_dir = int(snapshot_every), snapshot_dir
        self._straggler = dict(straggler or {})
        self._rng = random.Random(int(self._straggler.get("seed", 0)) * 7919 + self.me)

        compile_once(lambda: K.warmup(sorted({t.dtype.str for t in self._tables})), self.comm)
        P = self.P
        self._hdr_len = _HDR_FIXED + 4 * P
        hdr_bytes = _align(8 * self._hdr_len)
        if mailbox_mb is not None:
            cap = int(mailbox_mb * 2**20)
        else:
            total = sum(t.lay.n_units * t.lay.unit_bytes for t in self._tables)
            cap = int(1.1 * total / P) + 2**16
        max_unit = max(t.lay.unit_bytes for t in self._tables) + 8
        cap = max(cap, 2 * (_CHUNK_HDR + max_unit) + 64, 256 * 1024)
        cap = min(cap, max(32 * 2**20, 2 * (_CHUNK_HDR + max_unit) + 64))
        self._cap = _align(cap, 64) if P > 1 else 0
        self._ring0 = hdr_bytes
        off = hdr_bytes + self._cap * P
        for t in self._tables:
            off = _align(off)
            t.offset = off  # same on every rank: room for the largest shard (rank 0's)
            off += t.lay.n_slots(0) * t.lay.unit_bytes
        size = _align(max(off, 64))
        self._win = MPI.Win.Allocate(size, 1, comm=self.comm)
        self._mem = np.frombuffer(self._win.tomemory(), dtype=np.uint8, count=size)
        self._mem[:] = 0
        self._hdr = self._mem[: 8 * self._hdr_len].view(np.int64)
        for t in self._tables:
            t.shard = self._mem[t.offset : t.offset + t.nslots * t.lay.unit_bytes].view(t.dtype).reshape(
                t.nslots, t.lay.bw
            )
            self._init_shard(t)
        # origin-side state per owner
        self._head = np.zeros(P, dtype=np.int64)  # bytes written into my ring at owner o
        self._known_consumed = np.zeros(P, dtype=np.int64)
        self._seq = np.zeros(P, dtype=np.int64)
        self._pending_tag = np.zeros(P, dtype=np.int64)  # tag still to deliver to o (0 = none)
        self._inflight: list[collections.deque] = [collections.deque() for _ in range(P)]
        self._rbuf = np.zeros(self._hdr_len, dtype=np.int64)
        self._one = np.zeros(1, dtype=np.int64)
        self._clock = 0
        self._closed = False
        self._t0 = time.perf_counter()
        self._last_clock_end = self._t0
        self._wait_this_clock = 0.0
        self._g = {"wait_s": 0.0, "msgs": 0, "bytes_sent": 0, "bytes_fetched": 0, "gets": 0, "chunks_applied": 0,
                   "straggler_sleep_s": 0.0, "torn_reads": 0, "deferred_sends": 0, "snapshots": 0}
        # A receive that never matches: testing it drives MPI's progress engine,
        # which Open MPI's osc/ucx (e.g. over TCP) needs on the target before an
        # origin's Put/Flush can complete; Win.Sync, Iprobe and flushes do not do it.
        self._pcomm = self.comm.Dup() if P > 1 else None
        self._pbuf = np.zeros(1, dtype=np.int64)
        self._preq = self._pcomm.Irecv([self._pbuf, MPI.BYTE], MPI.ANY_SOURCE, 0) if P > 1 else None
        # An unused window that outlives the main one: osc/ucx stops progressing RMA
        # once a rank has no window left, and a peer still inside Win.Free (closing its
        # endpoints to us) would then hang there. Freed after a barrier that follows.
        self._keepalive = MPI.Win.Allocate(8, 1, comm=self.comm) if P > 1 else None
        self._win.Lock_all()
        self.comm.Barrier()

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, engine: Mapping[str, Any], tables, comm=None) -> "ParameterServer":
        """Build from a validated ``[engine]`` section (see :data:`ENGINE_SCHEMA`)."""
        e = dict(engine)
        mb = e.get("mailbox_mb")
        return cls(
            tables,
            comm,
            consistency=e.get("consistency", "ssp"),
            staleness=e.get("staleness", 1),
            straggler=e.get("straggler") or {},
            snapshot_every=e.get("snapshot_every", 0) or 0,
            snapshot_dir=e.get("snapshot_dir"),
            mailbox_mb=mb if mb else None,
        )

    # ------------------------------------------------------------------ public
    @property
    def clock_value(self) -> int:
        """This worker's clock (number of completed ``clock()`` calls)."""
        return self._clock

    @property
    def tables(self) -> list[str]:
        return [t.name for t in self._tables]

    def table(self, name: str) -> "Table":
        """A handle with ``get``/``inc`` bound to one table."""
        return Table(self, self._t(name))

    def get(self, table: str, rows=None) -> np.ndarray:
        """Read rows under the table's consistency model.

        ``rows`` = an int (returns shape ``(cols,)``), a sequence/array of ints
        (``(len(rows), cols)``), a slice, or None (the whole table). A single
        row or the whole table is a read-only view, valid until the next call
        into the server; other selections are copies. Includes all of this
        worker's own incs.
        """
        t = self._t(table)
        self._progress()
        lay = t.lay
        single, sel = self._rows(t, rows)
        if sel is None:
            units = np.arange(lay.n_units, dtype=np.int64)
        elif single:
            units = np.arange(sel * lay.nb, (sel + 1) * lay.nb, dtype=np.int64)
        else:
            units = lay.units_of_rows(sel)
        c = self._clock
        if t.consistency == "asp":
            need = units[t.fetch_clock[units] < c]
            required = None
        else:
            required = c - t.s
            need = units[t.fetch_tag[units] < required]
        cached = need.size == 0
        if not cached:
            self._fetch(t, np.unique(need), required)
        mt = int(t.fetch_tag[units].min())
        t.stats.read(c - mt, cached)
        cols = lay.cols
        idx = slice(None) if sel is None else sel
        is_copy = not (single or sel is None)  # fancy indexing copies
        out = t.cache[idx, :cols]
        for has, own in ((t.dirty[units].any(), t.oplog), (t.hdirty[units].any(), t.held)):
            if has:  # my deltas not in the cache yet (this clock's, held ones)
                if is_copy:
                    out += own[idx, :cols]
                else:
                    out, is_copy = out + own[idx, :cols], True
        if is_copy:
            return out
        v = out.view()
        v.flags.writeable = False
        return v

    def inc(self, table: str, rows, delta, cols=None) -> None:
        """Add ``delta`` to rows (coalesced locally, sent at ``clock()``).

        ``rows`` = an int (``delta`` shape ``(ncols,)``), or a sequence/array/
        slice of rows (``delta`` shape ``(nrows, ncols)``; repeated rows add
        up). ``cols`` = None (all columns), a slice, or an int array; ``ncols``
        is its length. A scalar ``delta`` is broadcast. Integer tables refuse
        floating-point deltas.
        """
        t = self._t(table)
        lay = t.lay
        single, sel = self._rows(t, rows)
        csel, ncols = self._cols(t, cols)
        d = np.asarray(delta)
        if d.dtype.kind not in "biuf":
            raise UsageError(f"table {t.name!r}: delta must be numeric, got dtype {d.dtype}")
        if not np.can_cast(d.dtype, t.dtype, "same_kind"):
            raise UsageError(f"table {t.name!r}: cannot add a {d.dtype} delta to a {t.dtype} table")
        if d.ndim:
            if single:
                exp = (ncols,)
            else:
                nrows = lay.rows if sel is None else len(sel)
                exp = (nrows, ncols)
            if d.shape != exp:
                raise UsageError(f"table {t.name!r}: delta has shape {d.shape}, expected {exp}")
        if sel is None:
            sel = np.arange(lay.rows, dtype=np.int64)
        if single:
            if isinstance(csel, slice):
                tgt = t.oplog[sel, csel]
                np.add(tgt, d, out=tgt, casting="same_kind")
            else:
                np.add.at(t.oplog[sel], csel, d.astype(t.dtype, copy=False))
            self._mark(t, np.array([sel], dtype=np.int64), csel)
        else:
            srt = sel.size <= 1 or bool(np.all(sel[1:] > sel[:-1]))
            if srt and isinstance(csel, slice) and sel.size and sel[-1] - sel[0] == sel.size - 1:
                tgt = t.oplog[sel[0] : sel[-1] + 1, csel]
                np.add(tgt, d, out=tgt, casting="same_kind")
            elif isinstance(csel, slice) and d.ndim == 2:
                # any rows, repeated ones included: one pass, no temporaries
                tgt = t.oplog if (csel.start == 0 and csel.stop == lay.width) else t.oplog[:, csel]
                K.add_rows(tgt, sel.astype(np.int64, copy=False), np.ascontiguousarray(d, dtype=t.dtype))
            elif isinstance(csel, slice) and (srt or np.unique(sel).size == sel.size):
                t.oplog[sel, csel] += d
            else:
                cidx = np.arange(lay.cols)[csel] if isinstance(csel, slice) else csel
                dd = np.broadcast_to(d, (sel.size, cidx.size)).astype(t.dtype, copy=False)
                np.add.at(t.oplog, (sel[:, None], cidx[None, :]), dd)
            self._mark(t, sel, csel)
        t.stats.incs += 1
        if self.P > 1 and self._mail_waiting():
            self._drain()

    def clock(self, state: Mapping[str, np.ndarray] | None = None) -> int:
        """End this worker's clock: send the coalesced incs, advance the clock.

        ``state`` (a dict of arrays, or a callable returning one) is the app's
        own state, saved with a snapshot when one is due at the new clock.
        Returns the new clock.
        """
        self._check_open()
        self._straggle()
        tag = self._clock + 1
        if self._bsp and self.P > 1:
            self._bsp_gate(tag)
        self._send_all(tag)
        self._clock = tag
        self._hdr[1] = tag
        self._progress()
        for t in self._tables:
            if t.consistency == "essp":
                units = np.flatnonzero(t.ever)
                if units.size:
                    self._fetch(t, units.astype(np.int64), None)
        if self.snapshot_every and tag % self.snapshot_every == 0:
            self.snapshot(state() if callable(state) else state)
        self._last_clock_end = time.perf_counter()
        self._wait_this_clock = 0.0
        return tag

    def barrier(self) -> None:
        """Global barrier: on return every update made by any worker before
        its ``barrier()`` is applied, and later reads see it."""
        self._check_open()
        self._flush_everything()
        self._invalidate()

    def allreduce(self, value, op=None):
        """Collective allreduce that keeps serving this rank's shard while it
        waits (``Iallreduce`` + progress). Use it (or :meth:`barrier`) instead of
        blocking MPI collectives while other workers may still read: an owner
        blocked in a plain collective cannot apply updates, so readers that
        need them would wait forever. Returns a NumPy array (or a float for a
        scalar ``value``)."""
        self._check_open()
        MPI = self._MPI
        scalar = np.isscalar(value)
        a = np.ascontiguousarray(np.atleast_1d(np.asarray(value, dtype=np.float64 if scalar else None)))
        out = np.empty_like(a)
        req = self.comm.Iallreduce(a, out, op=op or MPI.SUM)
        back = _Backoff()
        while not req.Test():
            self._progress()
            back()
        return float(out[0]) if scalar else out

    def snapshot(self, state: Mapping[str, np.ndarray] | None = None) -> str:
        """Collectively write a snapshot of all tables (and ``state``) now."""
        from .snapshot import write_snapshot

        self._check_open()
        if not self.snapshot_dir:
            raise UsageError("snapshot() needs snapshot_dir")
        self.barrier()
        path = write_snapshot(self, state)
        self._g["snapshots"] += 1
        return path

    def resume(self, path: str | None = None):
        """Collectively load the last good snapshot (or ``path``).

        Returns ``(clock, state)`` with this rank's saved app state, or None
        when there is no snapshot. Must be called before any inc/clock.
        """
        from .snapshot import read_snapshot

        self._check_open()
        if self._clock != 0 or any(t.dirty.any() for t in self._tables) or self._seq.any():
            raise UsageError("resume() must be called right after the parameter server is created")
        if not self.snapshot_dir and path is None:
            raise UsageError("resume() needs snapshot_dir")
        out = read_snapshot(self, path)
        self.comm.Barrier()
        if out is None:
            return None
        clk, state = out
        self._clock = clk
        self._hdr[1] = clk
        self._hdr[2] = clk
        self._hdr[_HDR_FIXED : _HDR_FIXED + self.P] = clk
        self._invalidate()
        self.comm.Barrier()
        return clk, state

    def stats(self) -> dict:
        """Telemetry of this rank: ``{"tables": {name: {...}}, ...}``.

        Per table: reads, cached_reads, staleness_mean/var/max/hist (staleness =
        reader's clock minus the clock the row is guaranteed to reflect),
        wait_s, fetch/sent units, bytes and messages, clocks_per_s.
        """
        el = time.perf_counter() - self._t0
        out = {"rank": self.me, "clock": self._clock, "elapsed_s": el, **self._g}
        out["tables"] = {t.name: t.stats.as_dict(el, self._clock) for t in self._tables}
        return out

    def figures(self, table: str) -> dict:
        """Headline figures of this rank for one metrics row: staleness of
        ``table``'s reads (mean, max), time spent waiting, bytes and messages sent."""
        s = self.stats()
        t = s["tables"][self._t(table).name]
        return {"staleness_mean": t["staleness_mean"], "staleness_max": t["staleness_max"], "wait_s": s["wait_s"],
                "bytes_sent": s["bytes_sent"], "msgs": s["msgs"]}

    def stats_all(self) -> dict | None:
        """Collective: the merged stats of all ranks on rank 0 (None elsewhere)."""
        mine = self.stats()
        allst = self.comm.gather(mine, root=0)
        if self.me != 0:
            return None
        out = {"ranks": self.P, "clock_min": min(s["clock"] for s in allst), "per_rank": allst}
        for k in ("wait_s", "straggler_sleep_s"):
            out[k + "_max"] = max(s[k] for s in allst)
        for k in ("msgs", "bytes_sent", "bytes_fetched", "gets", "chunks_applied", "torn_reads", "deferred_sends"):
            out[k] = sum(s[k] for s in allst)
        out["tables"] = {n: merge([s["tables"][n] for s in allst]) for n in self.tables}
        return out

    def shutdown(self) -> None:
        """Collectively flush everything and free the window. Idempotent."""
        if self._closed:
            return
        try:
            self._flush_everything()
        finally:
            self._closed = True
            if self._preq is not None:
                self._preq.Cancel()
                self._preq.Wait()
                self._pcomm.Free()
            self._win.Unlock_all()
            self._win.Free()
            self._mem = None
            if self.P > 1:  # serve the others' Win.Free until all are out of it
                self._test_barrier()
                self._keepalive.Free()

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.shutdown()
        else:  # do not enter collectives when an error is propagating
            self._closed = True

    # ------------------------------------------------------------------ checks
    def _check_open(self) -> None:
        if self._closed:
            raise UsageError("the parameter server has been shut down")

    def _t(self, name) -> _Table:
        self._check_open()
        t = self._by_name.get(name)
        if t is None:
            raise UsageError(f"unknown table {name!r} (tables: {', '.join(self._by_name)})")
        return t

    def _rows(self, t: _Table, rows):
        n = t.lay.rows
        if rows is None:
            return False, None
        if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool):
            r = int(rows)
            if not 0 <= r < n:
                raise UsageError(f"table {t.name!r}: row {r} out of range (rows: {n})")
            return True, r
        if isinstance(rows, slice):
            return False, np.arange(n, dtype=np.int64)[rows]
        a = np.asarray(rows)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise UsageError(f"table {t.name!r}: rows must be an int, a slice or a 1-D integer array")
        a = a.astype(np.int64, copy=False)
        if a.size and (a.min() < 0 or a.max() >= n):
            bad = a[(a < 0) | (a >= n)][0]
            raise UsageError(f"table {t.name!r}: row {bad} out of range (rows: {n})")
        return False, a

    def _cols(self, t: _Table, cols):
        n = t.lay.cols
        if cols is None:
            return slice(0, n), n
        if isinstance(cols, slice):
            s = slice(*cols.indices(n))
            if s.step != 1:
                return self._cols(t, np.arange(n)[s])
            return s, max(0, s.stop - s.start)
        a = np.asarray(cols)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise UsageError(f"table {t.name!r}: cols must be a slice or a 1-D integer array")
        if a.size and (a.min() < 0 or a.max() >= n):
            raise UsageError(f"table {t.name!r}: column index out of range (cols: {n})")
        return a.astype(np.int64), a.size

    def _mark(self, t: _Table, rows: np.ndarray, csel) -> None:
        lay = t.lay
        if lay.nb == 1:
            t.dirty[rows] = True
            return
        if isinstance(csel, slice):
            if csel.stop <= csel.start:
                return
            b = np.arange(csel.start // lay.bw, (csel.stop - 1) // lay.bw + 1)
        else:
            b = np.unique(csel // lay.bw)
        t.dirty[(rows[:, None] * lay.nb + b[None, :]).ravel()] = True

    # ------------------------------------------------------------------ local apply
    def _init_shard(self, t: _Table) -> None:
        init = t.spec.init
        if np.isscalar(init):
            t.shard[:] = init
            if t.lay.width != t.lay.cols and init != 0:
                self._zero_padding(t)
            return
        arr = np.asarray(init, dtype=t.dtype)
        lay = t.lay
        full = np.zeros((lay.rows, lay.width), dtype=t.dtype)
        full[:, : lay.cols] = arr
        t.shard[:] = full.reshape(lay.n_units, lay.bw)[lay.owned_units(self.me)]

    def _zero_padding(self, t: _Table) -> None:
        lay = t.lay
        units = lay.owned_units(self.me)
        last = units[units % lay.nb == lay.nb - 1]
        pad0 = lay.cols - (lay.nb - 1) * lay.bw
        t.shard[last // self.P, pad0:] = 0

    def _begin_write(self) -> None:
        self._hdr[0] += 1
        self._win.Sync()

    def _end_write(self) -> None:
        self._win.Sync()
        self._hdr[0] += 1
        self._win.Sync()

    def _mail_waiting(self) -> bool:
        P = self.P
        h = self._hdr
        b = _HDR_FIXED + P
        return bool((h[b + 2 * P : b + 3 * P] != h[b : b + P]).any())

    def _drain(self) -> int:
        """Apply every chunk waiting in my mailboxes. Returns chunks applied."""
        if self.P == 1:
            return 0
        self._win.Sync()
        if not self._mail_waiting():
            return 0
        P, cap, h = self.P, self._cap, self._hdr
        A, CB, CS, W = _HDR_FIXED, _HDR_FIXED + P, _HDR_FIXED + 2 * P, _HDR_FIXED + 3 * P
        n = 0
        self._begin_write()
        try:
            for p in range(P):
                written = int(h[W + p])
                cons = int(h[CB + p])
                base = self._ring0 + p * cap
                while cons < written:
                    pos = cons % cap
                    if cap - pos < _CHUNK_HDR:
                        cons += cap - pos
                        continue
                    ch = self._mem[base + pos : base + pos + _CHUNK_HDR].view(np.int64)
                    kind, seq, tag, tid, nu, nbytes = (int(x) for x in ch[:6])
                    if kind == _SKIP:
                        cons += cap - pos
                        continue
                    if nu:
                        t = self._tables[tid]
                        o = base + pos + _CHUNK_HDR
                        units = self._mem[o : o + 8 * nu].view(np.int64)
                        o += 8 * nu
                        vals = self._mem[o : o + nu * t.lay.unit_bytes].view(t.dtype).reshape(nu, t.lay.bw)
                        K.add_rows(t.shard, units // P, vals)
                    cons += nbytes
                    h[CS + p] = seq
                    if tag >= 0:
                        h[A + p] = max(int(h[A + p]), tag)
                    n += 1
                h[CB + p] = cons
        finally:
            self._end_write()
        self._g["chunks_applied"] += n
        return n

    def _progress(self) -> None:
        """Drive MPI progress, apply my mailboxes, retry deferred sends."""
        if self.P == 1:
            return
        self._preq.Test()
        self._drain()
        if self._pending_tag.any():
            for o in np.flatnonzero(self._pending_tag):
                self._send_to(int(o), int(self._pending_tag[o]), self._held_for(int(o)), held=True)

    def _wait(self, t: _Table | None, backoff: _Backoff) -> None:
        t0 = time.perf_counter()
        self._progress()
        backoff()
        dt = time.perf_counter() - t0
        self._g["wait_s"] += dt
        self._wait_this_clock += dt
        if t is not None:
            t.stats.wait_s += dt

    # ------------------------------------------------------------------ sending
    def _held_for(self, o: int) -> list[tuple[_Table, np.ndarray]]:
        out = []
        for t in self._tables:
            du = np.flatnonzero(t.hdirty)
            du = du[du % self.P == o]
            if du.size:
                out.append((t, du.astype(np.int64)))
        return out

    def _hold(self, work) -> None:
        """Move ``work``'s deltas from the oplog into the held buffers."""
        for t, du in work:
            if t.held is None:
                t.held = np.zeros_like(t.oplog)
                t.held_u = t.held.reshape(t.lay.n_units, t.lay.bw)
            K.hold_units(t.oplog_u, t.held_u, du)
            t.dirty[du] = False
            t.hdirty[du] = True

    def _send_all(self, tag: int) -> None:
        P = self.P
        per = [[] for _ in range(P)]
        for t in self._tables:
            du = np.flatnonzero(t.dirty).astype(np.int64)
            if not du.size:
                continue
            if P == 1:
                per[0].append((t, du))
                continue
            own = du % P
            order = np.argsort(own, kind="stable")
            du, own = du[order], own[order]
            bounds = np.searchsorted(own, np.arange(P + 1))
            for o in range(P):
                if bounds[o + 1] > bounds[o]:
                    per[o].append((t, du[bounds[o] : bounds[o + 1]]))
        self._apply_own(tag, per[self.me])
        for k in range(1, P):
            o = (self.me + k) % P
            if self._pending_tag[o]:  # o's mailbox is still full: queue behind the held deltas
                self._hold(per[o])
                self._send_to(o, tag, self._held_for(o), held=True)
            else:
                self._send_to(o, tag, per[o])

    def _apply_own(self, tag: int, work) -> None:
        P = self.P
        self._begin_write()
        try:
            for t, du in work:
                K.apply_own(t.shard, t.cache_u, t.oplog_u, du, P)
                t.dirty[du] = False
            a = _HDR_FIXED + self.me
            self._hdr[a] = max(int(self._hdr[a]), tag)
        finally:
            self._end_write()

    def _send_to(self, o: int, tag: int, work, held: bool = False) -> bool:
        """Put ``work`` (list of (table, units)) and a final tag into o's mailbox.

        ``work`` comes from the oplog, or from the held buffers if ``held``.
        What does not fit is held (moved out of the oplog, so that incs made
        after this ``clock()`` are not sent with it: the bsp gate and the
        bounds depend on that); the tag is remembered and delivered by a later
        call (never waits)."""
        MPI, P, cap = self._MPI, self.P, self._cap
        chunks: list[tuple[_Table, np.ndarray]] = []
        for t, du in work:
            per = max(1, (cap // 2 - _CHUNK_HDR) // (8 + t.lay.unit_bytes))
            for i in range(0, du.size, per):
                chunks.append((t, du[i : i + per]))
        if not chunks:
            chunks.append((None, None))
        base = self._ring0 + self.me * cap
        sent_any = False
        ok = True
        i = 0
        try:
            for i, (t, du) in enumerate(chunks):
                nu = 0 if du is None else du.size
                ub = 0 if t is None else t.lay.unit_bytes
                need = _align(_CHUNK_HDR + 8 * nu + nu * ub, 8)
                head = int(self._head[o])
                pos = head % cap
                skip = cap - pos if pos + need > cap else 0
                if head + skip + need - int(self._known_consumed[o]) > cap:
                    self._refresh_consumed(o)
                    if head + skip + need - int(self._known_consumed[o]) > cap:
                        ok = False
                        break
                if skip:
                    if skip >= _CHUNK_HDR:
                        sk = np.zeros(8, dtype=np.int64)
                        sk[0] = _SKIP
                        self._win.Put([sk, MPI.BYTE], o, target=(base + pos, _CHUNK_HDR, MPI.BYTE))
                        self._inflight[o].append((-1, None, None, None, sk))
                    head += skip
                    pos = 0
                buf = np.zeros(need, dtype=np.uint8)
                hh = buf[:_CHUNK_HDR].view(np.int64)
                self._seq[o] += 1
                seq = int(self._seq[o])
                final = i == len(chunks) - 1
                hh[:6] = (_DATA, seq, tag if final else -1, -1 if t is None else t.tid, nu, need)
                if nu:
                    units = buf[_CHUNK_HDR : _CHUNK_HDR + 8 * nu].view(np.int64)
                    units[:] = du
                    vals = buf[_CHUNK_HDR + 8 * nu : _CHUNK_HDR + 8 * nu + nu * ub].view(t.dtype).reshape(nu, t.lay.bw)
                    K.pack_units(t.held_u if held else t.oplog_u, t.cache_u, du, vals)
                    (t.hdirty if held else t.dirty)[du] = False
                    t.stats.sent_units += nu
                    t.stats.sent_bytes += nu * ub
                    self._inflight[o].append((seq, t.tid, units, vals, buf))
                else:
                    self._inflight[o].append((seq, None, None, None, buf))
                self._win.Put([buf, MPI.BYTE], o, target=(base + pos, need, MPI.BYTE))
                self._head[o] = head + need
                self._g["msgs"] += 1
                self._g["bytes_sent"] += need
                sent_any = True
        finally:
            if sent_any:
                self._win.Flush(o)
                self._one[0] = self._head[o]
                w = 8 * (_HDR_FIXED + 3 * P + self.me)
                self._win.Put([self._one, MPI.BYTE], o, target=(w, 8, MPI.BYTE))
                self._win.Flush(o)
        if ok:
            self._pending_tag[o] = 0
        else:
            if not held:
                self._hold([(t, du) for t, du in chunks[i:] if t is not None])
            self._pending_tag[o] = max(int(self._pending_tag[o]), tag)
            self._g["deferred_sends"] += 1
        return ok

    def _refresh_consumed(self, o: int) -> None:
        MPI = self._MPI
        d = 8 * (_HDR_FIXED + self.P + self.me)
        self._win.Get([self._one, MPI.BYTE], o, target=(d, 8, MPI.BYTE))
        self._win.Flush(o)
        self._known_consumed[o] = self._one[0]

    # ------------------------------------------------------------------ fetching
    def _read_header(self, o: int) -> np.ndarray:
        MPI = self._MPI
        self._win.Get([self._rbuf, MPI.BYTE], o, target=(0, 8 * self._hdr_len, MPI.BYTE))
        self._win.Flush(o)
        self._g["gets"] += 1
        return self._rbuf

    def _fetch(self, t: _Table, units: np.ndarray, required: int | None) -> None:
        """Refresh ``units`` (sorted, unique) of ``t`` in the cache; if
        ``required`` is set, wait until each owner guarantees that clock."""
        P, me = self.P, self.me
        if P == 1:
            groups = [(0, units)]
        else:
            own = units % P
            order = np.argsort(own, kind="stable")
            su, so = units[order], own[order]
            bounds = np.searchsorted(so, np.arange(P + 1))
            groups = [(o, su[bounds[o] : bounds[o + 1]]) for o in range(P) if bounds[o + 1] > bounds[o]]
        A = _HDR_FIXED
        for o, us in groups:
            back = _Backoff()
            if o == me:
                while True:
                    mt = int(self._hdr[A : A + P].min())
                    if required is None or mt >= required:
                        break
                    self._wait(t, back)
                K.gather_own(t.cache_u, t.shard, us, P)
            else:
                mt = self._fetch_remote(t, o, us, required, back)
            t.fetch_tag[us] = mt
            t.fetch_clock[us] = self._clock
            t.ever[us] = True
            t.stats.fetch_units += us.size

    def _fetch_remote(self, t: _Table, o: int, us: np.ndarray, required, back: _Backoff) -> int:
        MPI, P = self._MPI, self.P
        A, CS = _HDR_FIXED, _HDR_FIXED + 2 * P
        ub, bw = t.lay.unit_bytes, t.lay.bw
        slots = us // P
        # runs of consecutive slots -> one Get each
        brk = np.flatnonzero(np.diff(slots) != 1) + 1
        starts = np.concatenate(([0], brk))
        ends = np.concatenate((brk, [slots.size]))
        recv = np.empty((us.size, bw), dtype=t.dtype)
        rb = recv.view(np.uint8).reshape(-1)
        ver = np.zeros(1, dtype=np.int64)
        while True:
            h = self._read_header(o)
            v1 = int(h[0])
            mt = int(h[A : A + P].min())
            if required is not None and mt < required:
                self._wait(t, back)
                continue
            if v1 & 1:
                self._g["torn_reads"] += 1
                self._wait(None, back)
                continue
            cseq = int(h[CS + self.me])
            for a, b in zip(starts.tolist(), ends.tolist()):
                disp = t.offset + int(slots[a]) * ub
                self._win.Get([rb[a * ub : b * ub], MPI.BYTE], o, target=(disp, (b - a) * ub, MPI.BYTE))
            self._win.Flush(o)
            self._win.Get([ver, MPI.BYTE], o, target=(0, 8, MPI.BYTE))
            self._win.Flush(o)
            if int(ver[0]) == v1:
                break
            self._g["torn_reads"] += 1
        n = starts.size + 2
        t.stats.fetch_msgs += n
        t.stats.fetch_bytes += recv.nbytes
        self._g["gets"] += n
        self._g["bytes_fetched"] += recv.nbytes
        # read-my-writes: add my chunks that o has not applied yet
        q = self._inflight[o]
        while q and q[0][0] <= cseq:
            q.popleft()
        for seq, tid, cu, cv, _ in q:
            if tid != t.tid:
                continue
            idx = np.searchsorted(cu, us)
            idx[idx >= cu.size] = 0
            m = cu[idx] == us
            if m.any():
                recv[m] += cv[idx[m]]
        t.cache_u[us] = recv
        return mt

    # ------------------------------------------------------------------ barrier
    def _flush_everything(self) -> None:
        self._send_all(self._clock)
        back = _Backoff()
        while self._pending_tag.any():
            self._wait(None, back)
        if self.P > 1:
            self._test_barrier(self._drain)
            self._drain()
            self.comm.Barrier()
            for q in self._inflight:
                q.clear()

    def _test_barrier(self, serve=None) -> None:
        """A barrier that waits by testing (which drives MPI progress), with back-off."""
        req = self.comm.Ibarrier()
        back = _Backoff()
        while not req.Test():
            if serve is not None:
                serve()
            back()

    def _invalidate(self) -> None:
        for t in self._tables:
            t.fetch_tag[:] = _NEVER
            t.fetch_clock[:] = -1

    def _bsp_gate(self, tag: int) -> None:
        """BSP: send clock ``tag - 1``'s updates only after every worker has
        finished its reads of that clock, so a read at clock c reflects exactly
        the updates of clocks < c (deterministic runs)."""
        self._hdr[2] = tag
        self._win.Sync()
        for k in range(1, self.P):
            o = (self.me + k) % self.P
            back = _Backoff()
            while int(self._read_header(o)[2]) < tag:
                self._wait(None, back)

    def _straggle(self) -> None:
        st = self._straggler
        if not st:
            return
        ranks = list(st.get("ranks") or [])
        mine = self.me in ranks
        sl = 0.0
        f = float(st.get("factor", 1.0) or 1.0)
        if mine and f > 1.0:
            compute = max(0.0, time.perf_counter() - self._last_clock_end - self._wait_this_clock)
            sl += (f - 1.0) * compute
        rd = float(st.get("random_delay_ms", 0.0) or 0.0)
        if rd > 0 and (mine or not ranks):
            sl += self._rng.uniform(0.0, rd) / 1000.0
        if sl > 0:
            time.sleep(sl)
            self._g["straggler_sleep_s"] += sl


class Table:
    """Handle bound to one table: ``ps.table("w").get(r)``."""

    def __init__(self, ps: ParameterServer, t: _Table):
        self._ps, self._t = ps, t
        self.name, self.shape, self.dtype = t.name, (t.lay.rows, t.lay.cols), t.dtype
        self.consistency, self.staleness = t.consistency, t.s

    def get(self, rows=None) -> np.ndarray:
        return self._ps.get(self.name, rows)

    def inc(self, rows, delta, cols=None) -> None:
        self._ps.inc(self.name, rows, delta, cols)

    def __repr__(self) -> str:
        return f"Table({self.name!r}, shape={self.shape}, dtype={self.dtype}, {self.consistency}, s={self.staleness})"
