"""Bösen: observed-staleness telemetry and managed communication.

Observed staleness of a read at clock ``c`` = ``c`` minus the newest data tag of other
workers in the copy (a tag ``k`` = data of clock ``k - 1``), taken over the read's units
(the oldest unit counts). Worker ``w`` adds 1 to column ``w`` of every row each clock,
so a reader decodes from the values exactly which clocks of ``w`` it holds and checks
the telemetry (count, histogram, min, max, mean, variance) against that, read by read.

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
        # the guarantee (>= c - s of every worker) below; nobody is more than s clocks ahead
        assert _all(comm, exp.max() <= s and exp.min() >= -s)
