"""Bösen parameter server on one-sided MPI windows: the API (see docs/bosen.md).

Every rank owns a shard of every table in one MPI window. ``inc`` coalesces
deltas in an oplog; ``clock()`` ``Put``s them into per-origin mailboxes at their
owners, which apply them whenever they enter the library. A read at clock ``c``
waits until the owner has applied every origin's clocks ``< c - s`` and reads
header and rows under a seqlock, adding this worker's unapplied deltas.

This class validates arguments and delegates; the protocol lives in

* :mod:`.window` - the MPI window (header, mailbox rings, shards), progress, shutdown
* :mod:`.header` - the window header as named fields
* :mod:`.oplog` - this worker's unsent deltas (oplog, held deltas)
* :mod:`.mailbox` - sending deltas to owners and applying them there
* :mod:`.reads` - the cache, staleness checks, seqlock fetches
* :mod:`.sync` - waiting while serving, the end of a clock, the bsp gate, barriers
* :mod:`.snapshot`, :mod:`.telemetry`, :mod:`.straggler` - checkpoints, counters, experiments
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from ..errors import UsageError
from ..runtime import compile_once, get_comm
from . import kernels as K
from . import telemetry
from .layout import CONSISTENCY, Layout, TableSpec, validate_spec
from .mailbox import Mailboxes
from .reads import Reader
from .straggler import Straggler
from .sync import Sync
from .table import TableState
from .window import Window


class Shard(NamedTuple):
    """This rank's part of one table: the units ``layout.owned_units(rank)``, one row of
    ``data`` each (a view of the window: writing it changes the table)."""

    name: str
    layout: Layout
    data: np.ndarray


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
    sparse : bool, default True
        Changed-entry communication: a unit's deltas travel as (column, value)
        pairs when that is smaller than the unit, and fetches of units cached
        before read only the owner's delta log since then when that is smaller
        (docs/bosen.md, "Wire format"). False: whole units both ways.
    delta_log_mb : float, optional
        Size of each rank's delta log (default: its shard, within 0.25-64 MiB;
        0 = no log, fetches read whole units).
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
        sparse: bool = True,
        delta_log_mb: float | None = None,
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
        self._tables = [TableState(i, s, self.P, self.me, consistency, staleness) for i, s in enumerate(specs)]
        self._by_name = {t.name: t for t in self._tables}
        for t in self._tables:
            if t.spec.managed_bytes is not None and t.consistency == "bsp":
                raise UsageError(f"table {t.name!r}: managed_bytes needs ssp, essp or asp (bsp sends only at the gate)")
            if t.spec.oplog_mb is not None and t.consistency == "bsp":
                raise UsageError(f"table {t.name!r}: oplog_mb needs ssp, essp or asp (a full oplog is sent early, "
                                 "which bsp does not allow)")
        self._managed = any(t.spec.managed_bytes is not None for t in self._tables) and self.P > 1
        self.consistency, self.staleness = consistency, int(staleness)
        self.snapshot_every, self.snapshot_dir = int(snapshot_every), snapshot_dir
        self.sparse = bool(sparse)

        dts = sorted({t.dtype.str for t in self._tables})
        compile_once(lambda: K.warmup(dts), self.comm, key="bosen.kernels." + "_".join(dts))
        self._g = telemetry.new_counters()
        if delta_log_mb is not None and (isinstance(delta_log_mb, bool) or not delta_log_mb >= 0):
            raise UsageError(f"delta_log_mb must be a number >= 0, got {delta_log_mb!r}")
        self._win = Window(self.comm, self._tables, mailbox_mb, self._g, delta_log_mb if self.sparse else 0)
        self._mail = Mailboxes(self._win, self._tables, self._g, self.sparse)
        self._sync = Sync(self._win, self._mail, self._g, bsp=any(t.consistency == "bsp" for t in self._tables))
        self._reader = Reader(self._win, self._mail, self._sync, self._g)
        for t in self._tables:
            if t.log.bounded:
                t.log.spill = lambda t=t: self._mail.spill(t, self._clock)
        self._clock = 0
        self._closed = False
        self._t0 = time.perf_counter()
        self._straggler = Straggler.from_config(straggler, self.me, self._g)
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
        self._sync.progress()
        if self._managed:
            self._mail.managed(self._clock)
        single, sel = self._rows(t, rows)
        return self._reader.read(t, single, sel, self._clock)

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
        t.log.add(single, sel, csel, d)
        t.stats.incs += 1
        if self.P > 1 and self._mail.waiting():
            self._mail.drain()
        if self._managed:
            self._mail.managed(self._clock)

    def clock(self, state: Mapping[str, np.ndarray] | None = None) -> int:
        """End this worker's clock: send the coalesced incs, advance the clock.

        ``state`` (a dict of arrays, or a callable returning one) is the app's
        own state, saved with a snapshot when one is due at the new clock.
        Returns the new clock.
        """
        self._check_open()
        if self._straggler is not None:
            self._straggler.before_clock()
        tag = self._clock + 1
        self._sync.end_clock(tag)
        self._clock = tag
        self._reader.refresh_essp(self._tables, tag)
        if self.snapshot_every and tag % self.snapshot_every == 0:
            self.snapshot(state() if callable(state) else state)
        if self._straggler is not None:
            self._straggler.clock_done()
        return tag

    def barrier(self) -> None:
        """Global barrier: on return every update made by any worker before
        its ``barrier()`` is applied, and later reads see it."""
        self._check_open()
        self._sync.flush_everything(self._clock)
        for t in self._tables:
            t.cache.invalidate()

    def allreduce(self, value, op=None):
        """Collective allreduce that keeps serving this rank's shard while it
        waits (``Iallreduce`` + progress). Use it (or :meth:`barrier`) instead of
        blocking MPI collectives while other workers may still read: an owner
        blocked in a plain collective cannot apply updates, so readers that
        need them would wait forever. Returns a NumPy array (or a float for a
        scalar ``value``)."""
        self._check_open()
        scalar = np.isscalar(value)
        a = np.ascontiguousarray(np.atleast_1d(np.asarray(value, dtype=np.float64 if scalar else None)))
        out = np.empty_like(a)
        self._sync.serve_until(self.comm.Iallreduce(a, out, op=op or self._MPI.SUM))
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
        if self._clock != 0 or any(t.log.dirty.any() for t in self._tables) or self._mail.seq.any():
            raise UsageError("resume() must be called right after the parameter server is created")
        if not self.snapshot_dir and path is None:
            raise UsageError("resume() needs snapshot_dir")
        out = read_snapshot(self, path)
        self.comm.Barrier()
        if out is None:
            return None
        clk, state = out
        self._clock = clk
        self._sync.restart_at(clk)
        for t in self._tables:
            t.cache.invalidate(drop_base=True)  # the shards were rewritten outside the delta log
            t.fresh[:] = (clk, -1, clk)  # the shards hold everything of clocks < clk
        self.comm.Barrier()
        return clk, state

    def shards(self) -> list[Shard]:
        """This rank's shard of every table (for snapshots; between barriers only
        the owner writes it)."""
        self._check_open()
        return [Shard(t.name, t.lay, t.shard) for t in self._tables]

    def stats(self) -> dict:
        """Telemetry of this rank: ``{"tables": {name: {...}}, ...}``.

        Per table: reads, cached_reads, staleness_mean/var/max/hist (staleness =
        reader's clock minus the clock the row is guaranteed to reflect),
        wait_s, fetch/sent units, bytes and messages, clocks_per_s.
        """
        out = telemetry.rank_stats(self.me, self._clock, time.perf_counter() - self._t0, self._g, self._tables)
        out["bytes_per_rank"] = telemetry.memory(self._tables, self._win.nbytes)
        return out

    def figures(self, table: str) -> dict:
        """Headline figures of this rank for one metrics row: staleness of
        ``table``'s reads (mean, max), time spent waiting, bytes and messages sent."""
        return telemetry.figures(self.stats(), self._t(table).name)

    def stats_all(self) -> dict | None:
        """Collective: the merged stats of all ranks on rank 0 (None elsewhere)."""
        allst = self.comm.gather(self.stats(), root=0)
        return telemetry.merge_ranks(allst, self.tables) if self.me == 0 else None

    def shutdown(self) -> None:
        """Collectively flush everything and free the window. Idempotent."""
        if self._closed:
            return
        try:
            self._sync.flush_everything(self._clock)
        finally:
            self._closed = True
            self._win.free()

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

    def _t(self, name) -> TableState:
        self._check_open()
        t = self._by_name.get(name)
        if t is None:
            raise UsageError(f"unknown table {name!r} (tables: {', '.join(self._by_name)})")
        return t

    def _rows(self, t: TableState, rows):
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

    def _cols(self, t: TableState, cols):
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


class Table:
    """Handle bound to one table: ``ps.table("w").get(r)``."""

    def __init__(self, ps: ParameterServer, t: TableState):
        self._ps, self._t = ps, t
        self.name, self.shape, self.dtype = t.name, (t.lay.rows, t.lay.cols), t.dtype
        self.consistency, self.staleness = t.consistency, t.s

    def get(self, rows=None) -> np.ndarray:
        return self._ps.get(self.name, rows)

    def inc(self, rows, delta, cols=None) -> None:
        self._ps.inc(self.name, rows, delta, cols)

    def __repr__(self) -> str:
        return f"Table({self.name!r}, shape={self.shape}, dtype={self.dtype}, {self.consistency}, s={self.staleness})"
