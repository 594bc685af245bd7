"""Bösen parameter server: consistency bound, exactness, read-my-writes, asp,
snapshots, misuse. Run at 1, 2, 4 ranks, and with MPIR_CVAR_NOLOCAL=1:

    .venv/bin/mpiexec -n 4 .venv/bin/python -m pytest --with-mpi -m mpi -q tests/test_bosen.py
"""

import os
import time

import numpy as np
import pytest

from petuum_mpi.bosen import ENGINE_SCHEMA, ParameterServer, TableSpec, latest_snapshot
from petuum_mpi.config import validate
from petuum_mpi.errors import ConfigError, UsageError

# every test here also runs with MPIR_CVAR_NOLOCAL=1 (ranks as on separate nodes): see tests/run_suite.py
pytestmark = [pytest.mark.mpi, pytest.mark.nolocal]


def _all(comm, ok):
    """True on every rank iff ok on every rank (so asserts agree)."""
    return bool(comm.allreduce(int(bool(ok)), op=__import__("mpi4py").MPI.MIN))


@pytest.mark.parametrize("model,s", [("bsp", 0), ("ssp", 1), ("ssp", 3), ("essp", 2)])
def test_staleness_bound_under_random_delays(comm, model, s):
    P, me = comm.size, comm.rank
    clocks = 25
    wide = 40000  # a wide row: cut into column blocks over all ranks
    tables = [TableSpec("c", 2, P, "int64"), TableSpec("v", 1, wide, "float64")]
    strag = {"ranks": [], "random_delay_ms": 4.0, "seed": 3}
    violations = 0
    with ParameterServer(tables, comm, consistency=model, staleness=s, straggler=strag) as ps:
        eff_s = 0 if model == "bsp" else s
        for c in range(clocks):
            row = ps.get("c", 0)
            violations += int((row < c - eff_s).sum())
            violations += int(row[me] != c)  # read-my-writes of earlier clocks
            v = ps.get("v", 0)
            violations += int((v[me::P] < c - eff_s).sum())
            ps.inc("c", 0, np.eye(P, dtype=np.int64)[me])
            ps.inc("c", 1, 1, cols=slice(me, me + 1))
            ps.inc("v", 0, 1.0, cols=slice(me, None, P))
            ps.clock()
        ps.barrier()
        final_ok = (ps.get("c", 0) == clocks).all() and (ps.get("c", 1) == clocks).all()
        final_ok = final_ok and (ps.get("v", 0) == clocks).all()
        st = ps.stats()["tables"]["c"]
        assert st["staleness_max"] <= max(eff_s, 0) + (1 if model != "asp" else 10**9)
    assert _all(comm, violations == 0), f"{violations} reads broke the bound"
    assert _all(comm, final_ok)


@pytest.mark.parametrize("dtype", ["float64", "int64", "float32", "int32"])
def test_exact_sum_of_many_incs(comm, dtype):
    P, me = comm.size, comm.rank
    rng = np.random.default_rng(42)
    rows, cols, clocks = 6, 5, 8
    # every rank incs the same rows, with repeated rows in one batch
    deltas = rng.integers(-50, 50, size=(P, clocks, 10, cols))
    idx = rng.integers(0, rows, size=(P, clocks, 10))
    with ParameterServer([TableSpec("t", rows, cols, dtype, init=3)], comm, consistency="ssp", staleness=2) as ps:
        for c in range(clocks):
            ps.inc("t", idx[me, c], deltas[me, c].astype(dtype))
            ps.inc("t", 0, np.ones(cols, dtype=dtype))
            ps.clock()
        ps.barrier()
        got = ps.get("t").copy()
    ref = np.full((rows, cols), 3, dtype=np.int64)
    np.add.at(ref, idx.reshape(-1), deltas.reshape(-1, cols))
    ref[0] += P * clocks
    assert got.dtype == np.dtype(dtype)
    assert _all(comm, np.array_equal(got.astype(np.int64), ref))


def test_float_sum_matches_numpy(comm):
    P, me = comm.size, comm.rank
    rng = np.random.default_rng(7)
    d = rng.standard_normal((P, 30, 4, 300))
    with ParameterServer([TableSpec("w", 4, 300)], comm, consistency="asp") as ps:
        for c in range(30):
            ps.inc("w", slice(None), d[me, c])
            ps.clock()
        ps.barrier()
        got = ps.get("w").copy()
    assert _all(comm, np.allclose(got, d.sum(axis=(0, 1)), rtol=1e-12, atol=1e-12))


def test_read_my_writes_and_column_ranges(comm):
    P, me = comm.size, comm.rank
    with ParameterServer([TableSpec("t", 3, 8, "int64")], comm, consistency="ssp", staleness=5) as ps:
        ps.inc("t", 1, np.arange(3), cols=slice(2, 5))
        ps.inc("t", 1, np.array([10, 20]), cols=np.array([0, 0]))
        before = ps.get("t", 1).copy()  # unflushed incs are visible
        ps.clock()
        after = ps.get("t", 1).copy()  # flushed (maybe not applied) incs are visible
        tbl = ps.table("t")
        tbl.inc([2, 2], np.ones((2, 8), dtype=np.int64))
        two = tbl.get([1, 2])
        ps.barrier()
        full = ps.get("t", 1).copy()
    exp = np.zeros(8, dtype=np.int64)
    exp[2:5] = [0, 1, 2]
    exp[0] = 30
    ok = (before >= exp).all() and (after >= exp).all() and (two[1] >= 2).all() and (two[0] >= exp).all()
    assert _all(comm, ok)
    assert _all(comm, np.array_equal(full, exp * P))


@pytest.mark.parametrize("bounded", [False, True])
def test_reading_no_rows_gives_an_empty_block(comm, bounded):
    """An empty row selection (an app's empty block) reads nothing and waits for nothing."""
    spec = TableSpec("t", 6, 3, "float32", cache_mb=1e-4 if bounded else None)
    with ParameterServer([spec], comm, consistency="ssp", staleness=1) as ps:
        ps.inc("t", [1], np.ones((1, 3), dtype=np.float32))
        ps.clock()
        got = [ps.get("t", np.array([], dtype=np.int64)), ps.get("t", slice(4, 4)), ps.get("t", [])]
        ps.barrier()
    ok = all(g.shape == (0, 3) and g.dtype == np.float32 for g in got)
    assert _all(comm, ok)


def test_asp_never_waits_for_a_sleeping_rank(comm):
    P, me = comm.size, comm.rank
    clocks = 20
    with ParameterServer([TableSpec("c", 1, P, "int64")], comm, consistency="asp") as ps:
        if me == P - 1 and P > 1:
            time.sleep(1.5)  # a straggler that does not even enter the library
        t0 = time.perf_counter()
        for c in range(clocks):
            row = ps.get("c", 0).copy()  # a view is valid until the next call
            ps.inc("c", 0, np.eye(P, dtype=np.int64)[me])
            ps.clock()
        dt = time.perf_counter() - t0
        waited = ps.stats()["tables"]["c"]["wait_s"]
        ps.barrier()
        final = ps.get("c", 0).copy()
    assert _all(comm, waited == 0.0)
    assert _all(comm, row[me] == clocks - 1 and (final == clocks).all())
    assert dt >= 0


def test_bsp_waits_for_the_slowest(comm):
    P, me = comm.size, comm.rank
    with ParameterServer([TableSpec("c", 1, P, "int64")], comm, consistency="bsp") as ps:
        for c in range(3):
            if me == 0:
                time.sleep(0.05)
            row = ps.get("c", 0)
            # rank 0 sleeps, yet everyone sees its update of clock c-1 (bsp waited)
            ok = (row >= c).all() and row[me] == c
            ps.inc("c", 0, np.eye(P, dtype=np.int64)[me])
            ps.clock()
            assert _all(comm, ok)


def _sgd_run(comm, ps, start, stop, w_state=None):
    """Deterministic least-squares SGD on the PS (bsp): returns rng state clock."""
    me, P = comm.rank, comm.size
    rng = np.random.default_rng(100 + me)
    X = rng.standard_normal((64, 10))
    y = X @ np.arange(10.0)
    for c in range(start, stop):
        w = ps.get("w", 0)
        i = (c * 8) % 64
        g = X[i : i + 8].T @ (X[i : i + 8] @ w - y[i : i + 8]) / 8
        ps.inc("w", 0, -0.05 * g / P)
        ps.inc("n", 0, np.array([1, c], dtype=np.int64))
        ps.clock(state={"step": np.array([c + 1]), "x0": X[0]})


def test_snapshot_resume_equals_uninterrupted(comm, shared_tmp):
    tables = [TableSpec("w", 1, 10), TableSpec("n", 1, 2, "int64")]
    d1 = os.path.join(shared_tmp, "a")
    with ParameterServer(tables, comm, consistency="bsp", snapshot_every=5, snapshot_dir=d1) as ps:
        _sgd_run(comm, ps, 0, 20)
        ps.barrier()
        ref_w, ref_n = ps.get("w", 0).copy(), ps.get("n", 0).copy()
    d2 = os.path.join(shared_tmp, "b")
    with ParameterServer(tables, comm, consistency="bsp", snapshot_every=5, snapshot_dir=d2) as ps:
        assert ps.resume() is None
        _sgd_run(comm, ps, 0, 12)  # "crash" after clock 12: last snapshot at 10
    # a half-written checkpoint (no manifest) must be ignored
    if comm.rank == 0:
        os.makedirs(os.path.join(d2, "ckpt-00000015"))
        open(os.path.join(d2, "ckpt-00000015", "shard-00000.h5"), "w").close()
    comm.Barrier()
    assert latest_snapshot(d2).endswith("ckpt-00000010")
    with ParameterServer(tables, comm, consistency="bsp", snapshot_every=5, snapshot_dir=d2) as ps:
        clk, state = ps.resume()
        assert clk == 10 and ps.clock_value == 10 and int(state["step"][0]) == 10
        _sgd_run(comm, ps, clk, 20)
        ps.barrier()
        w, n = ps.get("w", 0).copy(), ps.get("n", 0).copy()
    assert _all(comm, np.array_equal(n, ref_n))
    # same model up to the order in which owners add concurrent float deltas
    assert _all(comm, np.allclose(w, ref_w, rtol=1e-12, atol=1e-14))
    assert _all(comm, np.linalg.norm(w - np.arange(10.0)) < np.linalg.norm(np.arange(10.0)))


def test_misuse_errors_name_the_problem(comm):
    ps = ParameterServer([TableSpec("w", 2, 3), TableSpec("k", 2, 3, "int64")], comm)
    with pytest.raises(UsageError, match="unknown table 'x'"):
        ps.get("x", 0)
    with pytest.raises(UsageError, match=r"table 'w': row 5 out of range"):
        ps.get("w", 5)
    with pytest.raises(UsageError, match=r"table 'w': delta has shape \(4,\), expected \(3,\)"):
        ps.inc("w", 0, np.ones(4))
    with pytest.raises(UsageError, match=r"table 'k': cannot add a float64 delta to a int64 table"):
        ps.inc("k", 0, np.ones(3))
    with pytest.raises(UsageError, match="table 'w': delta has shape"):
        ps.inc("w", [0, 1], np.ones((3, 3)))
    v = ps.get("w", 0)
    with pytest.raises(ValueError):
        v[0] = 1.0  # reads are read-only views
    ps.shutdown()
    ps.shutdown()
    with pytest.raises(UsageError, match="shut down"):
        ps.inc("w", 0, np.ones(3))
    with pytest.raises(UsageError, match="shut down"):
        ps.clock()
    with pytest.raises(UsageError, match="declared twice"):
        ParameterServer([TableSpec("a", 1, 1), TableSpec("a", 1, 1)], comm)
    with pytest.raises(UsageError, match="table 'b': dtype"):
        ParameterServer([TableSpec("b", 1, 1, "complex128")], comm)
    with pytest.raises(UsageError, match="consistency"):
        ParameterServer([TableSpec("b", 1, 1)], comm, consistency="fast")


def test_engine_schema_and_from_config(comm):
    eng = validate({"engine": {"consistency": "essp", "staleness": 2, "straggler": {"ranks": [0], "factor": 2.0}}},
                   {"engine": ENGINE_SCHEMA})["engine"]
    assert eng["straggler"]["factor"] == 2.0 and eng["snapshot_every"] == 0
    with pytest.raises(ConfigError, match="staleness"):
        validate({"engine": {"staleness": -1}}, {"engine": ENGINE_SCHEMA})
    with ParameterServer.from_config(eng, [TableSpec("w", 1, 4)], comm) as ps:
        assert ps.table("w").consistency == "essp" and ps.table("w").staleness == 2
        ps.inc("w", 0, np.ones(4))
        ps.clock()
        ps.barrier()
        assert _all(comm, (ps.get("w", 0) == comm.size).all())
        st = ps.stats()
        assert st["straggler_sleep_s"] >= 0 and "staleness_hist" in st["tables"]["w"]
