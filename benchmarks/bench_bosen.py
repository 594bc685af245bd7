"""Bösen micro-benchmarks: cached get, fetching get, clock(), bulk inc throughput.

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_bosen.py

Baselines measured in the same run: numpy row indexing (cached get), a raw
MPI Get + Flush of the same bytes (fetching get), MPI Barrier (clock), and
np.copyto of an array of the same size (bulk inc bandwidth).
"""

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import Bench  # noqa: E402
from mpi4py import MPI  # noqa: E402

from petuum_mpi.bosen import ParameterServer, TableSpec  # noqa: E402


def per_call(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main():
    bench = Bench("bosen")
    comm = MPI.COMM_WORLD
    P, me = comm.size, comm.rank
    cols = 1000
    rows_big, cols_big = 1000, 4000  # 32 MB float64
    tables = [TableSpec("r", max(P, 2), cols), TableSpec("big", rows_big, cols_big)]
    n = 2000
    mode = "NOLOCAL" if os.environ.get("MPIR_CVAR_NOLOCAL") == "1" else "shm"
    with ParameterServer(tables, comm, consistency="ssp", staleness=0) as ps:
        other = (me + 1) % P  # row r lives on rank r % P
        ps.get("r", other)
        # cached get: fresh enough, no communication
        t_cached = ps.allreduce(per_call(lambda: ps.get("r", other), n), MPI.MAX)
        a = np.zeros((max(P, 2), cols))
        t_np = per_call(lambda: a[other], n)
        # clock alone (nothing to send) and clock + a get that must fetch (s = 0)
        ps.barrier()
        t_clock = ps.allreduce(per_call(ps.clock, 300), MPI.MAX)
        ps.barrier()

        def cg():
            ps.clock()
            ps.get("r", other)

        t_cg = ps.allreduce(per_call(cg, 300), MPI.MAX)
        t_fetch = max(t_cg - t_clock, 0.0)
        ps.barrier()
        # raw RMA baseline
        win = MPI.Win.Allocate(cols * 8, 1, comm=comm)
        win.Lock_all()
        buf = np.zeros(cols)

        def raw():
            win.Get([buf, MPI.DOUBLE], other, target=(0, cols * 8, MPI.BYTE))
            win.Flush(other)

        t_raw = comm.allreduce(per_call(raw, n), op=MPI.MAX)
        comm.Barrier()
        win.Unlock_all()
        win.Free()
        t_bar = comm.allreduce(per_call(comm.Barrier, 300), op=MPI.MAX)
        data = f"{cols} float64 cols, {mode}"
        bench.row("cached get", data=data, metric="latency_us", value=t_cached * 1e6, baseline=t_np * 1e6,
                  baseline_name="numpy a[r]")
        bench.row("clock()+get that fetches (s=0, remote row)", data=data, metric="latency_us", value=t_fetch * 1e6,
                  baseline=t_raw * 1e6, baseline_name="raw MPI Get+Flush")
        bench.row("clock() (no updates)", data=f"{P} ranks, {mode}", metric="latency_us", value=t_clock * 1e6,
                  baseline=t_bar * 1e6, baseline_name="MPI Barrier")
        # bulk inc throughput vs memory copy of the same bytes
        d = np.full((rows_big, cols_big), 1e-3)
        dst = np.empty_like(d)
        t_copy = min(per_call(lambda: np.copyto(dst, d), 1) for _ in range(5))
        t_inc = min(per_call(lambda: ps.inc("big", slice(None), d), 1) for _ in range(5))
        sel = np.arange(0, rows_big, 2)
        dh = d[: sel.size]
        t_inc_rows = min(per_call(lambda: ps.inc("big", sel, dh), 1) for _ in range(3))
        gb = d.nbytes / 1e9
        bench.row("bulk inc (whole table)", data=f"{rows_big}x{cols_big} float64", metric="GB_per_s",
                  value=gb / t_inc, baseline=gb / t_copy, baseline_name="np.copyto same bytes", target=">= 0.5")
        bench.row("bulk inc (every 2nd row)", data=f"{sel.size}x{cols_big} float64", metric="GB_per_s",
                  value=dh.nbytes / 1e9 / t_inc_rows, baseline=gb / t_copy, baseline_name="np.copyto same bytes")
        ps.barrier()
        ps.inc("big", slice(None), d)
        t0 = time.perf_counter()
        ps.clock()
        t_flush = ps.allreduce(time.perf_counter() - t0, MPI.MAX)
        bench.row("clock() flushing the whole table", data=f"{rows_big}x{cols_big} float64, {mode}",
                  metric="GB_per_s", value=gb / t_flush, baseline=gb / t_copy, baseline_name="np.copyto same bytes")
        ps.barrier()
        # row 7 got 6 whole-table incs from every rank (odd rows: no row incs)
        ok = np.allclose(ps.get("big", 7), 6e-3 * P) and np.allclose(ps.get("big", 6), 9e-3 * P)
        if me == 0:
            print("table value check:", "ok" if ok else "WRONG", flush=True)
    bench.finish()


if __name__ == "__main__":
    main()
