"""Bösen: a bounded oplog (``TableSpec.oplog_mb``).

Pending incs live in a pool of ``oplog_mb`` MiB of unit rows; when an ``inc`` needs more rows
than are free, the table's pending incs are sent early (visible sooner, never later). Worker
``w`` adds 1 to column ``w`` of every row each clock, one row per ``inc``, so every value says
exactly which clocks of ``w`` a copy holds: the reads check the bound, read-my-writes and the
observed-staleness telemetry, and the final table must be exact.

Run at 1, 2 and 4 ranks, also with MPIR_CVAR_NOLOCAL=1.
"""

import numpy as np
import pytest

from petuum_mpi.bosen import ParameterServer, TableSpec
from petuum_mpi.bosen.telemetry import OBS_BINS, OBS_LO

pytestmark = [pytest.mark.mpi, pytest.mark.nolocal]


def _all(comm, ok):
    from mpi4py import MPI

    return bool(comm.allreduce(int(bool(ok)), op=MPI.MIN))


def _run(comm, model, s, oplog_mb, rows=16, clocks=12, block_cols=None, seed=0, cols=None, mailbox_mb=None,
         dense=False):
    P, me = comm.size, comm.rank
    rng = np.random.default_rng(seed + me)
    cols = cols or 64 * P
    spec = TableSpec("t", rows, cols, "int64", consistency=model, staleness=s, oplog_mb=oplog_mb,
                     block_cols=block_cols)
    strag = {"ranks": [], "random_delay_ms": 2.0, "seed": seed}
    exp, bad = [], 0
    with ParameterServer([spec], comm, straggler=strag, mailbox_mb=mailbox_mb) as ps:
        for c in range(clocks):
            for r in range(rows):
                # every unit of the row (``dense``: all my columns, j % P == me, so that units travel dense)
                ps.inc("t", r, 1, cols=np.arange(me, cols, P if dense else block_cols or cols))
                if rng.random() < 0.3:
                    sel = np.sort(rng.choice(rows, 3, replace=False))
                    bw = block_cols or cols
                    v = ps.get("t", sel).reshape(sel.size, -1, bw)[:, :, :P]  # (rows, units of a row, workers)
                    bad += int((v[:, :, me] != c + (sel <= r)[:, None]).sum())  # read-my-writes, this clock's too
                    others = np.delete(v, me, axis=2)
                    if model != "asp":  # every clock <= c - s - 1 of every worker is in the copy
                        bad += int((others < c - s).sum())
                    if P > 1:  # the oldest unit's newest data of another worker
                        exp.append(c - int(others.max(axis=2).min()))
            ps.clock()
        st = ps.stats()
        ps.barrier()
        bad += int((ps.get("t")[:, :P] != clocks).sum())
    return np.array(exp, dtype=np.int64), st, bad


def _telemetry_ok(exp, t):
    hist = np.bincount(np.clip(exp - OBS_LO, 0, OBS_BINS - 1), minlength=OBS_BINS) if exp.size else np.zeros(OBS_BINS)
    ok = t["observed_count"] == exp.size and t["observed_hist"] == hist.tolist()
    if exp.size:
        ok = ok and abs(t["observed_mean"] - exp.mean()) < 1e-9 and abs(t["observed_var"] - exp.var()) < 1e-9
    return ok


@pytest.mark.parametrize("model,s,block_cols", [("ssp", 1, None), ("ssp", 3, None), ("essp", 2, None),
                                                ("asp", 0, None), ("ssp", 1, 16)])
def test_bounded_oplog_keeps_guarantee(comm, model, s, block_cols):
    """An oplog of 3 rows (of 16 touched per clock, row by row): incs spill early, every read
    keeps the bound, read-my-writes and exact telemetry, the table ends exact, and the oplog
    holds a fraction of the dense one's bytes."""
    P = comm.size
    row_bytes = 64 * P * 8
    exp, st, bad = _run(comm, model, s, 3 * row_bytes / 2**20, block_cols=block_cols)
    _, full, bad0 = _run(comm, model, s, None, block_cols=block_cols)
    t = st["tables"]["t"]
    assert _all(comm, bad == 0 and bad0 == 0)
    assert _all(comm, _telemetry_ok(exp, t))
    assert t["spilled_units"] > 0 and t["oplog_grows"] == 0  # the bound bound, and spilling sufficed
    assert full["tables"]["t"]["spilled_units"] == 0
    assert st["bytes_per_rank"]["oplogs"] < full["bytes_per_rank"]["oplogs"] / 2


@pytest.mark.parametrize("model,s", [("ssp", 2), ("essp", 1), ("asp", 0)])
def test_bounded_oplog_under_mailbox_pressure(comm, model, s):
    """128 rows of 32 KiB, a pool of 48 rows, 256 KiB mailboxes (each clock() is left with the 32
    rows since the last spill, more than a ring per owner at 2 and 4 ranks), random delays: spills
    meet full mailboxes and closed clocks are deferred (held deltas share the pool): the bound,
    read-my-writes, exact telemetry and the final table still hold."""
    exp, st, bad = _run(comm, model, s, 48 * 4096 * 8 / 2**20, rows=128, clocks=6, cols=4096, mailbox_mb=0.25,
                        dense=True)
    assert _all(comm, bad == 0)
    assert _all(comm, _telemetry_ok(exp, st["tables"]["t"]))
    assert st["tables"]["t"]["spilled_units"] > 0
    if comm.size > 1:  # only meaningful if the rings did fill up
        assert comm.allreduce(st["deferred_sends"]) > 0


def test_bounded_oplog_grows_when_one_inc_needs_more(comm):
    """One inc touching more units than the pool holds: the pool grows, nothing is lost."""
    P, me = comm.size, comm.rank
    rows, cols = 32, 8
    with ParameterServer([TableSpec("t", rows, cols, "float64", oplog_mb=4 * cols * 8 / 2**20)], comm) as ps:
        for _ in range(3):
            ps.inc("t", slice(None), np.ones((rows, cols)))
            assert np.all(ps.get("t") >= ps.clock_value + 1)
            ps.clock()
        grows = ps.stats()["tables"]["t"]["oplog_grows"]
        ps.barrier()
        final = ps.get("t").copy()
    assert grows > 0
    assert _all(comm, np.array_equal(final, np.full((rows, cols), 3.0 * P)))


def test_bounded_oplog_misuse(comm):
    from petuum_mpi.errors import UsageError

    with pytest.raises(UsageError, match="'t': oplog_mb needs ssp"):
        ParameterServer([TableSpec("t", 2, 4, oplog_mb=1)], comm, consistency="bsp")
    with pytest.raises(UsageError, match="'t': oplog_mb must be a number > 0"):
        ParameterServer([TableSpec("t", 2, 4, oplog_mb=0)], comm)
