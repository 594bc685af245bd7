"""Bösen: observed-staleness telemetry and managed communication.

Observed staleness of a read at clock ``c`` = ``c`` minus the newest data tag of other
workers in the copy (a tag ``k`` = data of clock ``k - 1``), taken over the read's units
(the oldest unit counts). Worker ``w`` adds 1 to column ``w`` of every row each clock,
so a reader decodes from the values exactly which clocks of ``w`` it holds and checks
the telemetry (count, histogram, min, max, mean, variance) against that, read by read.

Run at 1, 2 and 4 ranks, also with MPIR_CVAR_NOLOCAL=1.
"""

import time

import numpy as np
import pytest

from petuum_mpi.bosen import ParameterServer, TableSpec
from petuum_mpi.bosen.telemetry import OBS_BINS, OBS_LO

pytestmark = [pytest.mark.mpi, pytest.mark.nolocal]


def _all(comm, ok):
    from mpi4py import MPI

    return bool(comm.allreduce(int(bool(ok)), op=MPI.MIN))


def _expected(v, me):
    """Observed staleness tag of a read of rows ``v`` (n, P): the oldest row's newest other worker."""
    others = np.delete(v, me, axis=1)
    return int(others.max(axis=1).min())


def _run_counting(comm, model, s, clocks=24, rows=8, managed=None, sparse=True, seed=0):
    """Every worker adds 1 to its column of every row each clock, reads random rows or the
    whole table with random delays; returns (expected staleness list, table stats, bad reads)."""
    P, me = comm.size, comm.rank
    rng = np.random.default_rng(seed + me)
    cols = 64 * P  # wide enough that a sparse delta-log read is smaller than the rows
    spec = TableSpec("t", rows, cols, "int64", managed_bytes=managed)
    strag = {"ranks": [], "random_delay_ms": 3.0, "seed": seed}
    exp, bad = [], 0
    with ParameterServer([spec], comm, consistency=model, staleness=s, straggler=strag, sparse=sparse) as ps:
        for c in range(clocks):
            for _ in range(2):
                if rng.random() < 0.5:
                    v = ps.get("t")[:, :P]
                else:
                    v = ps.get("t", [int(rng.integers(rows))])[:, :P]
                bad += int((v[:, me] != c).sum())  # read-my-writes of my earlier clocks
                if P > 1:
                    exp.append(c - _expected(v, me))
            ps.inc("t", slice(None), 1, cols=slice(me, me + 1))
            if managed:  # time for a managed round before the clock ends; a get enters the library
                time.sleep(0.006)
                v = ps.get("t", [0])[:, :P]
                bad += int(v[0, me] != c + 1)  # read-my-writes of this clock's incs, sent or not
                if P > 1:
                    exp.append(c - _expected(v, me))
            ps.clock()
        st = ps.stats()["tables"]["t"]
        ps.barrier()
        bad += int((ps.get("t")[:, :P] != clocks).sum())
    return np.array(exp, dtype=np.int64), st, bad


def _check_telemetry(exp, st):
    """The telemetry equals what the values say, read by read."""
    hist = np.bincount(np.clip(exp - OBS_LO, 0, OBS_BINS - 1), minlength=OBS_BINS) if exp.size else np.zeros(OBS_BINS)
    ok = st["observed_count"] == exp.size and st["observed_hist"] == hist.tolist()
    if exp.size:
        ok = ok and st["observed_min"] == exp.min() and st["observed_max"] == exp.max()
        ok = ok and abs(st["observed_mean"] - exp.mean()) < 1e-9 and abs(st["observed_var"] - exp.var()) < 1e-9
    return ok


@pytest.mark.parametrize("model,s,sparse", [("bsp", 0, True), ("ssp", 1, True), ("ssp", 3, True),
                                            ("ssp", 2, False), ("essp", 2, True), ("asp", 0, True)])
def test_observed_staleness_telemetry_is_exact(comm, model, s, sparse):
    exp, st, bad = _run_counting(comm, model, s, sparse=sparse)
    assert _all(comm, bad == 0), "read-my-writes or final sums broken"
    assert _all(comm, _check_telemetry(exp, st)), f"telemetry {st['observed_count']} {st['observed_mean']} " \
                                                  f"{st['observed_min']}..{st['observed_max']} vs values"
    if sparse and comm.size > 1 and model != "asp":  # copies were brought up to date from delta logs
        assert comm.allreduce(st["fetch_log_units"]) > 0
    if comm.size == 1:
        assert st["observed_count"] == 0  # no other workers: nothing to observe
    elif model == "bsp":
        assert _all(comm, (exp == 0).all())  # exactly the clocks before mine
    elif model in ("ssp", "essp"):
        # the guarantee (>= c - s of every worker) below; above: another worker's reads at clock
        # c' need my data of clock c' - s - 1 (I have sent up to clock c - 1), so c' <= c + s and
        # its newest data is of clock <= c + s (tag c + s + 1)
        assert _all(comm, exp.max() <= s and exp.min() >= -s - 1), (model, s, exp.min(), exp.max())


@pytest.mark.parametrize("model,s", [("ssp", 1), ("ssp", 3), ("essp", 2), ("asp", 0)])
def test_managed_keeps_guarantee_and_telemetry(comm, model, s):
    """With a budget big enough to send every clock's incs early, reads see others' data of
    unfinished clocks, never less than the guarantee; the exact telemetry still matches."""
    exp, st, bad = _run_counting(comm, model, s, managed=1e9, seed=5)
    assert _all(comm, bad == 0), "read-my-writes or final sums broken"
    assert _all(comm, _check_telemetry(exp, st)), "telemetry does not match the values read"
    if comm.size > 1:
        assert st["managed_units"] > 0 and st["managed_bytes"] > 0
        if model != "asp":
            # guarantee below; above: early data of a clock <= c + s (its reads need my clock c - 1)
            assert _all(comm, exp.max() <= s and exp.min() >= -s - 1)


def test_managed_sends_largest_relative_change_first_within_budget(comm):
    P, me = comm.size, comm.rank
    rows = 16 * P
    init = np.repeat(1000.0 * np.arange(rows, 0, -1)[:, None], 8, axis=1)  # row r: 1000 (rows - r)
    rate = 64 * P + 3 * (12 + 8 * 10)  # bytes per second: chunk headers and about three sparse units
    spec = TableSpec("t", rows, 64, "float64", init=np.pad(init, ((0, 0), (0, 56))), managed_bytes=rate)
    with ParameterServer([spec], comm, consistency="ssp", staleness=1) as ps:
        ps.get("t")  # relative change is measured against the cached copy
        t0 = time.perf_counter()
        ps.inc("t", slice(None), 1.0, cols=slice(0, 8))  # the same delta: smaller rows change more
        state = ps._by_name["t"]
        time.sleep(0.01)  # rounds are at least MANAGED_INTERVAL apart
        ps.get("t", 0)  # a managed round with a fresh budget of one second (rate bytes)
        left = state.log.dirty.copy()
        time.sleep(0.05)
        for _ in range(3):
            ps.get("t", 0)
        st = ps.stats()["tables"]["t"]
        elapsed = time.perf_counter() - t0
        ps.clock()
        ps.barrier()
        final = ps.get("t")[:, :8]
    if P > 1:
        sent = np.flatnonzero(~left)  # units of other owners sent early, and mine applied early
        assert sent.size >= 1
        # the largest relative changes are the last rows (smallest values)
        assert (sent == np.arange(rows - sent.size, rows)).all(), sent
        assert 0 < st["managed_bytes"] <= rate * (1 + elapsed)
    assert np.array_equal(final, init + P)


def test_managed_misuse(comm):
    from petuum_mpi.errors import UsageError

    with pytest.raises(UsageError, match="'t': managed_bytes needs ssp"):
        ParameterServer([TableSpec("t", 2, 4, managed_bytes=1e6)], comm, consistency="bsp")
    with pytest.raises(UsageError, match="'t': managed_bytes must be a number > 0"):
        ParameterServer([TableSpec("t", 2, 4, managed_bytes=-1)], comm)


@pytest.mark.parametrize("model,s", [("bsp", 0), ("ssp", 2), ("essp", 1), ("asp", 0)])
def test_bounded_cache_equals_unbounded(comm, model, s):
    """A cache of 1/4 of a table: random reads and incs see exactly my own incs (read-my-writes
    across evictions and re-fetches), give exactly what the unbounded cache gives under bsp,
    and end with the same table."""
    P, me = comm.size, comm.rank
    rows, cols, clocks = 24, 40 * P, 12
    row_bytes = cols * 8

    def run(cache_mb):
        rng = np.random.default_rng(7 + me)
        spec = TableSpec("t", rows, cols, "int64", cache_mb=cache_mb, consistency=model, staleness=s)
        seen, bad = [], 0
        mine = np.zeros(rows, dtype=np.int64)  # my incs per row
        with ParameterServer([spec], comm, straggler={"ranks": [], "random_delay_ms": 2.0, "seed": 1}) as ps:
            for c in range(clocks):
                for _ in range(3):
                    r = np.sort(rng.choice(rows, 4, replace=False))
                    v = ps.get("t", r)
                    bad += int((v[:, me::P] != mine[r][:, None]).sum())
                    seen.append(v.copy())
                    rr = int(rng.integers(rows))
                    ps.inc("t", rr, 1, cols=np.arange(me, cols, P))
                    mine[rr] += 1
                    v = ps.get("t", rr)
                    bad += int((v[me::P] != mine[rr]).sum())
                    seen.append(v.copy())
                ps.clock()
            st = ps.stats()
            ps.barrier()
            final = np.vstack([ps.get("t", np.arange(i, i + 4)) for i in range(0, rows, 4)])
        allm = np.array(comm.allgather(mine))  # (P, rows): every worker's incs, all applied at the end
        for w in range(P):
            bad += int((final[:, w::P] != allm[w][:, None]).sum())
        return seen, final, st, bad

    full_seen, full_final, full_st, bad0 = run(None)
    seen, final, st, bad = run(rows * row_bytes / 4 / 2**20)
    assert st["tables"]["t"]["cache_evictions"] > 0  # the budget did bind
    assert full_st["tables"]["t"]["cache_evictions"] == 0
    assert st["bytes_per_rank"]["caches"] < full_st["bytes_per_rank"]["caches"] / 2
    assert _all(comm, bad == 0 and bad0 == 0)
    assert _all(comm, np.array_equal(final, full_final))
    if model == "bsp":  # deterministic: every read equals the unbounded run's
        assert _all(comm, all(np.array_equal(a, b) for a, b in zip(seen, full_seen)))
    with ParameterServer([TableSpec("t", rows, cols, "int64", cache_mb=row_bytes * 2 / 2**20)], comm) as ps:
        from petuum_mpi.errors import UsageError

        with pytest.raises(UsageError, match="'t': a read of .* units needs more than the cache budget"):
            ps.get("t")


@pytest.mark.parametrize("model", ["ssp", "essp"])
def test_managed_reads_pick_up_early_sends(comm, model):
    """With a budget, a copy cached in an earlier clock is refreshed mid-clock: once every
    worker's incs of this clock were sent early and applied, a read within the bound (s = 3,
    no fetch required) sees them all."""
    P, me = comm.size, comm.rank
    spec = TableSpec("t", 2, 64 * P, "int64", managed_bytes=1e9)
    bad = 0
    with ParameterServer([spec], comm, consistency=model, staleness=3) as ps:
        for c in range(6):
            ps.inc("t", 0, 1, cols=np.arange(me, 64 * P, 64))
            time.sleep(0.006)
            ps.get("t", 1)  # a managed round: row 0's incs go out early
            ps.allreduce(0.0)  # every worker has sent them ...
            ps.get("t", 1)  # ... and applied what reached its shard
            ps.allreduce(0.0)
            time.sleep(0.006)  # a new pull round
            v = ps.get("t", 0)[:P]
            bad += int((v < c + 1).sum())  # (a worker past the last allreduce may have sent clock c + 1's too)
            ps.clock()
        st = ps.stats()["tables"]["t"]
    assert _all(comm, bad == 0)
    assert (st["pulled_units"] > 0) == (P > 1)
