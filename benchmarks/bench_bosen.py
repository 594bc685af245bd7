"""Bösen micro-benchmarks: cached get, fetching get, clock(), bulk inc throughput,
and traffic per clock (sparse vs dense communication).

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_bosen.py
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_bosen.py --traffic   # traffic rows only
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_bosen.py --lda       # the LDA app's traffic only
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_bosen.py --managed   # managed communication only
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_bosen.py --oplog     # bounded oplog only

Traffic rows: every clock each rank incs a random ``density`` of the entries (LDA-like int32
count tables: entries; MF-like float64 tables: whole rows), ends the clock and reads the whole
table (as LDA does), under ssp(0) so every clock fetches. Reported per clock per rank (max over ranks): bytes the incs sent, bytes the
pulls received, and the time of one clock (inc + clock + get); baseline = the dense path
(``sparse=False``: whole units on the wire, whole units fetched), interleaved in the same run,
median of ``--repeat`` runs.

Managed rows (``--managed``): the least-squares SGD of ``bench_ssp.py --staleness`` (d = 800 as
16 x 50, 4 mini-batches per clock with a random compute time of mean 3 ms, ssp(2)) with
``managed_bytes`` = each ``--budget`` against the same run without (baseline), interleaved,
median of ``--repeat`` runs: bytes per clock per rank (incs sent + pulls received, max over
ranks), observed staleness (mean, variance), time per clock, objective - optimum after a
quarter of the clocks and at the end.

Oplog rows (``--oplog``): a wide table (16 rows of 131,072 float64, 16 MiB) whose every rank
incs 2 random whole rows per clock and reads one, ssp(1), with ``oplog_mb`` = 2 against the
dense oplog: bytes per rank (total and oplogs), time per clock.

Baselines measured in the same run: numpy row indexing (cached get), a raw
MPI Get + Flush of the same bytes (fetching get), MPI Barrier (clock), and
np.copyto of an array of the same size (bulk inc bandwidth).
"""

import argparse
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


TRAFFIC = [  # (name, rows, cols, dtype, entry-sparse?, densities)
    ("LDA-like n_wk K=1000", 20_000, 1000, "int32", True, (0.001, 0.01, 0.03, 0.1, 1.0)),
    ("LDA-like n_wk K=50", 20_000, 50, "int32", True, (0.01, 0.1, 1.0)),
    ("MF-like factors (rows)", 20_000, 100, "float64", False, (0.001, 0.01, 0.1, 1.0)),
]


def _deltas(rows, cols, dtype, entries, density, seed, n=2):
    """``n`` random deltas of the table: a ``density`` of the entries (or of whole rows) nonzero."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if entries:
            nnz = max(1, int(density * rows * cols))
            d = np.zeros(rows * cols, dtype=dtype)
            d[rng.choice(rows * cols, nnz, replace=False) if density < 1 else slice(None)] = rng.choice(
                np.array([-1, 1], dtype=dtype), nnz)
            d = d.reshape(rows, cols)
        else:
            nr = max(1, int(density * rows))
            d = np.zeros((rows, cols), dtype=dtype)
            d[rng.choice(rows, nr, replace=False)] = rng.standard_normal((nr, cols))
        ch = np.flatnonzero(d.any(axis=1))
        out.append((ch, np.ascontiguousarray(d[ch])))
    return out


def _traffic_once(comm, spec, deltas, sparse, clocks):
    """One run: bytes per clock per rank (incs sent, pulls received) and seconds per clock (max over ranks)."""
    name, rows, cols, dtype = spec
    with ParameterServer([TableSpec("t", rows, cols, dtype)], comm, consistency="ssp", staleness=0,
                         sparse=sparse) as ps:
        ps.get("t")
        for k in range(2):  # warm-up: first fetches, compilation
            ch, d = deltas[k % len(deltas)]
            ps.inc("t", ch, d)
            ps.clock()
            ps.get("t")
        ps.barrier()
        s0 = ps.stats()
        t0 = time.perf_counter()
        for k in range(clocks):
            ch, d = deltas[k % len(deltas)]
            ps.inc("t", ch, d)
            ps.clock()
            ps.get("t")
        dt = time.perf_counter() - t0
        s1 = ps.stats()
        res = np.array([(s1[k] - s0[k]) / clocks for k in ("inc_bytes_sent", "pull_bytes_recv")] + [dt / clocks])
        res = ps.allreduce(res, MPI.MAX)
        ps.barrier()
    return res


def traffic(bench, comm, clocks):
    mode = "NOLOCAL" if os.environ.get("MPIR_CVAR_NOLOCAL") == "1" else "shm"
    for name, rows, cols, dtype, entries, dens in TRAFFIC:
        for dsty in dens:
            deltas = _deltas(rows, cols, dtype, entries, dsty, 11 + comm.rank)
            runs = {True: [], False: []}
            for _ in range(bench.args.repeat):
                for sp in (False, True):
                    runs[sp].append(_traffic_once(comm, (name, rows, cols, dtype), deltas, sp, clocks))
            med = {sp: np.median(np.array(v), axis=0) for sp, v in runs.items()}
            data = f"{rows}x{cols} {dtype}, {dsty:.1%} {'entries' if entries else 'rows'}/clock, {mode}"
            for i, (what, metric) in enumerate((("incs: bytes sent per clock per rank", "bytes"),
                                                ("pulls: bytes received per clock per rank", "bytes"),
                                                ("time per clock (inc+clock+get all)", "time_s"))):
                bench.row(f"{name} {what}", data=data, metric=metric, value=float(med[True][i]),
                          baseline=float(med[False][i]), baseline_name="dense path (sparse=False)",
                          target="<= 0.2 bytes (5x) at K=1000" if name.endswith("1000") and i < 2 and dsty < 0.05
                          else "")


def lda_app(bench, comm, ks, sweeps):
    """The LDA app (default sampler, 4 clocks per sweep) on a corpus drawn from LDA
    (20,000 docs x ~150 tokens, 20,000 words), with sparse communication and with the
    dense path (``sparse=False`` set as the servers' default: the app has no option for it)."""
    import shutil
    import tempfile

    from petuum_mpi.apps.lda import LDA
    from petuum_mpi.bosen import server as S
    from petuum_mpi.data import write_bow
    from petuum_mpi.data.synth import make_lda_corpus

    tmp = None
    if comm.rank == 0:
        tmp = tempfile.mkdtemp(prefix="bench_bosen_lda_")
        doc_ptr, word_ids, counts, _, _ = make_lda_corpus(20_000, 20_000, 100, doc_length=150.0, alpha=0.1,
                                                          beta=0.01, seed=1)
        write_bow(os.path.join(tmp, "corpus"), doc_ptr, word_ids, counts, 20_000, n_shards=4)
    tmp = comm.bcast(tmp, root=0)
    orig = S.ParameterServer.__init__
    mode = "NOLOCAL" if os.environ.get("MPIR_CVAR_NOLOCAL") == "1" else "shm"
    try:  # an error on one rank must not leave the others in a collective
        for K in ks:
            res = {}
            for sparse in (False, True, False, True)[: 2 * max(1, bench.args.repeat // 2)]:
                def init(self, *a, _sp=sparse, **k):
                    k.setdefault("sparse", _sp)
                    orig(self, *a, **k)

                S.ParameterServer.__init__ = init
                est = LDA(n_components=K, doc_topic_prior=0.1, topic_word_prior=0.01, max_iter=sweeps,
                          evaluate_every=0, random_state=1, comm=comm)
                comm.Barrier()
                t0 = time.perf_counter()
                est.fit(os.path.join(tmp, "corpus"))
                dt = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
                row = est.history_[-1]
                clocks = est.n_iter_ * est.clocks_per_iter_  # n_iter_ counts sweeps
                v = np.array([row["inc_bytes_per_clock"], row["pull_bytes_per_clock"]], dtype=np.float64)
                comm.Allreduce(MPI.IN_PLACE, v, op=MPI.MAX)
                v = np.append(v, dt / clocks)
                res.setdefault(sparse, []).append(v)
            med = {sp: np.median(np.array(r), axis=0) for sp, r in res.items()}
            data = (f"LDA app K={K}, 20k docs x 150 tokens, 20k words, {sweeps} sweeps x {est.clocks_per_iter_} clocks "
                    f"(per clock: incl. the first whole-table fetch), {mode}")
            for i, (what, metric) in enumerate((("incs: bytes sent per clock per rank", "bytes"),
                                                ("pulls: bytes received per clock per rank", "bytes"),
                                                ("time per clock (whole fit / clocks)", "time_s"))):
                bench.row(f"LDA app {what}", data=data, metric=metric, value=float(med[True][i]),
                          baseline=float(med[False][i]), baseline_name="dense path (sparse=False)",
                          target="<= 0.2 (5x fewer bytes)" if K >= 1000 and i < 2 else "")
    except BaseException:
        import traceback

        traceback.print_exc()
        comm.Abort(1)
    S.ParameterServer.__init__ = orig
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)


def managed(bench, comm, clocks, budgets):
    """Managed communication against the same SGD run without it (see the module docstring)."""
    from bench_ssp import D, ROWS, local_data, objective, run_sub

    P = comm.size
    res = {b: [] for b in [None] + budgets}
    for rep_ in range(bench.args.repeat):
        for b in res:  # interleaved
            ws, st = run_sub(comm, "ssp", 2, b, clocks, 200.0, 4, 3.0, rep_)
            if comm.rank == 0:
                f = objective(ws, P)
                t, pc = st["tables"]["w"], st["per_clock_max"]
                res[b].append([pc["inc_bytes_sent"] + pc["pull_bytes_recv"], t["observed_mean"], t["observed_var"],
                               pc["time_s"], f[clocks // 4], f[-1]])
    if comm.rank != 0:
        return
    XX = np.vstack([local_data(r)[0] for r in range(P)])
    yy = np.concatenate([local_data(r)[1] for r in range(P)])
    fstar = float(objective([np.linalg.lstsq(XX, yy, rcond=None)[0]], P)[0])
    med = {b: np.median(np.array(v), axis=0) for b, v in res.items()}
    base = med[None]
    mode = "NOLOCAL" if os.environ.get("MPIR_CVAR_NOLOCAL") == "1" else "shm"
    data0 = f"LS SGD d={D} as {ROWS}x{D // ROWS}, 4 batches/clock, ssp(2), {clocks} clocks, {P} ranks, {mode}"
    what = (("bytes per clock per rank (incs + pulls)", "bytes"), ("observed staleness mean", "clocks"),
            ("observed staleness variance", "clocks^2"), ("time per clock", "time_s"),
            (f"objective - optimum after {clocks // 4} clocks", "f-f*"), (f"objective - optimum after {clocks} clocks",
                                                                         "f-f*"))
    for b in budgets:
        for i, (w, metric) in enumerate(what):
            sub = fstar if i >= 4 else 0.0
            bench.row(f"managed {b / 1e6:g} MB/s: {w}", data=data0, metric=metric, value=float(med[b][i] - sub),
                      baseline=float(base[i] - sub), baseline_name="same run without managed communication")


def oplog(bench, comm, clocks):
    """A bounded oplog against the dense one on a wide table (see the module docstring)."""
    rows, cols = 16, 131_072
    mode = "NOLOCAL" if os.environ.get("MPIR_CVAR_NOLOCAL") == "1" else "shm"
    rng = np.random.default_rng(3 + comm.rank)
    d = rng.standard_normal((2, cols))
    res = {(None, None): [], (2.0, None): [], (2.0, 2.0): []}  # (oplog_mb, cache_mb)
    for _ in range(bench.args.repeat):
        for mb in res:
            with ParameterServer([TableSpec("t", rows, cols, oplog_mb=mb[0], cache_mb=mb[1])], comm, consistency="ssp",
                                 staleness=1) as ps:
                ps.barrier()
                t0 = time.perf_counter()
                for c in range(clocks):
                    ps.inc("t", np.sort(rng.choice(rows, 2, replace=False)), d)
                    ps.get("t", int(rng.integers(rows)))
                    ps.clock()
                dt = ps.allreduce(time.perf_counter() - t0, MPI.MAX) / clocks
                st = ps.stats_all()
                if comm.rank == 0:
                    bp = st["bytes_per_rank_max"]
                    res[mb].append([bp["total"], bp["oplogs"], dt, st["tables"]["t"]["spilled_units"] / st["ranks"]])
    if comm.rank != 0:
        return
    med = {k: np.median(np.array(v), axis=0) for k, v in res.items()}
    data = f"{rows}x{cols} float64 (16 MiB), 2 rows inc'd + 1 read per clock, ssp(1), {clocks} clocks, {comm.size} ranks, {mode}"
    for key, name in (((2.0, None), "oplog_mb=2"), ((2.0, 2.0), "oplog_mb=2, cache_mb=2")):
        for i, (w, metric) in enumerate((("bytes per rank (total)", "bytes"), ("bytes per rank (oplogs)", "bytes"),
                                         ("time per clock", "time_s"))):
            bench.row(f"{name}: {w}", data=data, metric=metric, value=float(med[key][i]),
                      baseline=float(med[(None, None)][i]), baseline_name="dense oplog, whole-table cache")
        print(f"   {name}: units spilled early per rank: {med[key][3]:.0f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description="benchmark: bosen")
    parser.add_argument("--traffic", action="store_true", help="only the traffic-per-clock rows")
    parser.add_argument("--lda", action="store_true", help="only the LDA app's traffic rows")
    parser.add_argument("--lda-k", type=int, nargs="+", default=[50, 1000])
    parser.add_argument("--lda-sweeps", type=int, default=3)
    parser.add_argument("--clocks", type=int, default=6, help="timed clocks per traffic run")
    parser.add_argument("--managed", action="store_true", help="only the managed-communication rows")
    parser.add_argument("--managed-clocks", type=int, default=30)
    parser.add_argument("--budget", type=float, nargs="+", default=[1e5, 2e6], help="--managed: bytes/s per rank")
    parser.add_argument("--oplog", action="store_true", help="only the bounded-oplog rows")
    bench = Bench("bosen", parser=parser)
    comm = MPI.COMM_WORLD
    if bench.args.managed or bench.args.oplog:
        if bench.args.managed:
            managed(bench, comm, bench.args.managed_clocks, bench.args.budget)
        if bench.args.oplog:
            oplog(bench, comm, 20)
        bench.finish()
        return
    if bench.args.lda:
        lda_app(bench, comm, bench.args.lda_k, bench.args.lda_sweeps)
        bench.finish()
        return
    traffic(bench, comm, bench.args.clocks)
    if bench.args.traffic:
        bench.finish()
        return
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
