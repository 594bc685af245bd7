"""Bösen sparse communication: changed-entry incs and delta-log pulls keep the guarantee.

Worker ``w`` adds ``c + 1`` at clock ``c`` to the columns ``j`` with ``j % stride == w``
(a sparse delta: 1/64 or 1/32 of every row), so every entry tells exactly which clocks it holds
(``k (k + 1) / 2``, as in test_bosen_pressure.py) and columns no worker owns stay 0. Each
clock reads the whole table after its incs (every third clock only half of the rows, so that
later fetches bring copies of different ages up to date together; in one variant also before
the incs): the
incs travel as (column, value) pairs and the reads come from the owners' delta logs, which
the checks below decode value by value:

* own columns: exactly the own clocks (read-my-writes);
* ``bsp``: exactly ``k == c`` for every other worker;
* ``ssp``/``essp(s)``: ``c - s <= k <= c + s + 1``;
* ``asp``: reads never go back in time;
* after the final barrier every entry is the sum of all incs.

Run at 1, 2 and 4 ranks, also with MPIR_CVAR_NOLOCAL=1.
"""

import numpy as np
import pytest

from petuum_mpi.bosen import ParameterServer, TableSpec

pytestmark = [pytest.mark.mpi, pytest.mark.nolocal]

MODELS = [("bsp", 0), ("ssp", 1), ("ssp", 3), ("essp", 2), ("asp", 0)]


def _all(comm, ok):
    from mpi4py import MPI

    return bool(comm.allreduce(int(bool(ok)), op=MPI.MIN))


def _clocks_in(v):
    """k with v == k (k + 1) / 2, or -1 if v is not of that form."""
    v = np.asarray(v, dtype=np.float64)
    k = np.floor((np.sqrt(8.0 * v + 1.0) - 1.0) / 2.0 + 1e-9).astype(np.int64)
    return np.where(k * (k + 1) // 2 == v, k, -1)


def _check(bad, prev, name, rows, vals, c, own_done, P, me, model, s, stride):
    vals = np.atleast_2d(vals)
    k = _clocks_in(vals)
    owner = np.arange(vals.shape[1]) % stride
    if (k < 0).any():
        bad.append(f"{name} clock {c}: value not a whole number of clocks: {vals[k < 0][:3]}")
        return
    if (k[:, owner >= P] != 0).any():
        bad.append(f"{name} clock {c}: a column nobody writes is not 0")
    own = k[:, owner == me]
    if (own != own_done).any():
        bad.append(f"{name} clock {c}: own columns hold {np.unique(own)} clocks, expected {own_done}")
    oth = k[:, (owner != me) & (owner < P)]
    if oth.size:
        lo, hi = {"bsp": (c, c), "ssp": (c - s, c + s + 1), "essp": (c - s, c + s + 1)}.get(model, (0, None))
        if oth.min() < lo or (hi is not None and oth.max() > hi):
            bad.append(f"{name} clock {c}: others' columns hold {oth.min()}..{oth.max()} clocks, allowed {lo}..{hi}")
    if (k < prev[name][rows]).any():
        bad.append(f"{name} clock {c}: a read went back in time")
    prev[name][rows] = np.maximum(prev[name][rows], k)


def _run(comm, model, s, clocks, tables, read_first, stride, **kw):
    P, me = comm.size, comm.rank
    bad = []
    prev = {t.name: np.zeros((t.rows, t.cols), dtype=np.int64) for t in tables}
    with ParameterServer(tables, comm, consistency=model, staleness=s, **kw) as ps:
        for c in range(clocks):
            # every third clock only half of the rows: later fetches bring copies of different ages up to date together
            sel = {t.name: np.arange(t.rows // 2) if c % 3 == 1 and t.rows > 1 else slice(None) for t in tables}
            for t in tables if read_first else []:
                _check(bad, prev, t.name, sel[t.name], ps.get(t.name, sel[t.name]), c, c, P, me, model, s, stride)
            for t in tables:
                d = np.zeros((t.rows, t.cols), dtype=t.dtype)
                d[:, np.arange(t.cols) % stride == me] = c + 1
                if t.rows > 1:  # a few row incs, repeated rows included, plus whole-table incs
                    half = d[1] // 2 if d.dtype.kind == "i" else d[1] / 2
                    ps.inc(t.name, [1, 1], np.stack([half, d[1] - half]))
                    d[1] = 0
                ps.inc(t.name, slice(None), d)
            for t in tables:
                _check(bad, prev, t.name, [0], ps.get(t.name, 0), c, c + 1, P, me, model, s, stride)
                _check(bad, prev, t.name, sel[t.name], ps.get(t.name, sel[t.name]), c, c + 1, P, me, model, s, stride)
            ps.clock()
        st = ps.stats()
        ps.barrier()
        total = clocks * (clocks + 1) // 2
        exp = {t.name: np.where(np.arange(t.cols) % stride < P, total, 0) for t in tables}
        final = all((ps.get(t.name) == exp[t.name]).all() for t in tables)
    return bad, st, final


def _sparse_was_used(comm, st):
    """At > 1 rank the run must have sent sparse chunks and pulled from delta logs."""
    if comm.size == 1:
        return True
    sp = sum(t["sent_sparse_units"] for t in st["tables"].values())
    lg = sum(t["fetch_log_units"] for t in st["tables"].values())
    return comm.allreduce(sp) > 0 and comm.allreduce(lg) > 0


@pytest.mark.parametrize("model,s", MODELS)
def test_sparse_incs_and_log_pulls_keep_the_guarantee(comm, model, s):
    """int32, int64 and float64 tables, a 100k-column row and a 300k-column int32 row (column
    blocks of >= 65,536 columns at 1-2 ranks: int32 column indices), random delays."""
    tables = [TableSpec("i", 16, 1024, "int32"), TableSpec("l", 8, 4096, "int64"),
              TableSpec("f", 16, 2048, "float64"), TableSpec("w", 1, 100_000, "int64"),
              TableSpec("w32", 1, 300_000, "int32")]
    strag = {"ranks": [], "random_delay_ms": 2.0, "seed": 9}
    bad, st, final = _run(comm, model, s, 10, tables, read_first=True, stride=64, straggler=strag)
    assert _all(comm, not bad), bad[:5]
    assert _all(comm, final), "final table is not the sum of all incs"
    assert _sparse_was_used(comm, st)


@pytest.mark.parametrize("model,s,log_mb", [m + (16,) for m in MODELS] + [("ssp", 1, 1), ("bsp", 0, 1)])
def test_sparse_under_mailbox_pressure(comm, model, s, log_mb):
    """256 KiB mailboxes that sparse chunks still overflow (deferred sends); a 16 MiB
    delta log (reads come from it), or a 1 MiB one that one clock's changes overrun
    (readers find their copy too old for the log and fetch whole units)."""
    tables = [TableSpec("t", 2048, 2048, "int64")]
    bad, st, final = _run(comm, model, s, 8, tables, read_first=False, stride=32, mailbox_mb=0.25,
                          delta_log_mb=log_mb)
    assert _all(comm, not bad), bad[:5]
    assert _all(comm, final)
    if comm.size > 1:
        assert comm.allreduce(st["deferred_sends"]) > 0
        if log_mb == 16 and s <= 2:  # ssp(3) at 4 ranks: copies up to ~5 clocks old, whose log may
            assert _sparse_was_used(comm, st)  # rightly be larger than the rows (whole-unit fetches)
        elif log_mb == 16:
            assert comm.allreduce(st["tables"]["t"]["sent_sparse_units"]) > 0
        else:
            assert comm.allreduce(st["tables"]["t"]["sent_sparse_units"]) > 0
            # whether a copy is still covered by the overrun 1 MiB log depends on timing (Open MPI at 4 ranks
            # read 767 units from it): the value checks above are the claim, not which path served a read


def _bytes_per_clock(comm, sparse):
    tables = [TableSpec("n", 256, 1024, "int32"), TableSpec("x", 128, 512, "float64")]
    P, me = comm.size, comm.rank
    with ParameterServer(tables, comm, consistency="ssp", staleness=0, sparse=sparse) as ps:
        for c in range(6):
            for t in tables:
                d = np.zeros((t.rows, t.cols), dtype=t.dtype)
                d[:, np.arange(t.cols) % 32 == me] = 1
                ps.inc(t.name, slice(None), d)
            ps.clock()
            for t in tables:
                ps.get(t.name)
        pc = ps.stats()["per_clock"]
        ps.barrier()
        ok = all((ps.get(t.name)[:, np.arange(t.cols) % 32 < P] == 6).all() for t in tables)
    return pc, ok


def test_bytes_per_clock_drop_for_sparse_updates(comm):
    """Same run (1/32 of the entries change per worker and clock, every clock reads the
    whole table under ssp(0)) with whole units and with sparse communication."""
    dense, ok_d = _bytes_per_clock(comm, sparse=False)
    sparse, ok_s = _bytes_per_clock(comm, sparse=True)
    assert _all(comm, ok_d and ok_s)
    if comm.size == 1:
        assert dense["inc_bytes_sent"] == sparse["inc_bytes_sent"] == 0
        return
    assert _all(comm, dense["inc_bytes_sent"] > 0 and dense["pull_bytes_recv"] > 0)
    assert _all(comm, sparse["inc_bytes_sent"] * 4 <= dense["inc_bytes_sent"]), (sparse, dense)
    assert _all(comm, sparse["pull_bytes_recv"] * 2 <= dense["pull_bytes_recv"]), (sparse, dense)
