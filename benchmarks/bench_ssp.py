"""The SSP claim: data-parallel least-squares SGD on the parameter server with
stragglers; time to reach a target objective under bsp, ssp(s=1,3,10), essp, asp.

    .venv/bin/mpiexec -n 4 .venv/bin/python benchmarks/bench_ssp.py [--clocks 80] [--png out.png]

Scenarios: "persistent" = rank P-1 slowed 2x every clock (straggler factor 2);
"random" = every rank gets a uniform random delay of mean = its compute time
(so each is 2x slower on average, but at different clocks). Baseline = bsp in
the same run; ratio = bsp time / model time (higher is better).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from harness import Bench  # noqa: E402
from mpi4py import MPI  # noqa: E402

from petuum_mpi.bosen import ParameterServer, TableSpec  # noqa: E402

D, NLOC, BATCH = 800, 4000, 1000


def local_data(rank):
    rng = np.random.default_rng(1000 + rank)
    X = rng.standard_normal((NLOC, D)) / np.sqrt(D)
    w_true = np.random.default_rng(5).standard_normal(D)
    y = X @ w_true + 0.1 * rng.standard_normal(NLOC)
    return X, y


def run(comm, model, s, strag, clocks, lr):
    P, me = comm.size, comm.rank
    X, y = local_data(me)
    cons = {"bsp": ("bsp", 0), "asp": ("asp", 0)}.get(model, (model, s))
    log = []
    with ParameterServer([TableSpec("w", 1, D)], comm, consistency=cons[0], staleness=cons[1],
                         straggler=strag) as ps:
        ps.barrier()
        t0 = time.perf_counter()
        for c in range(clocks):
            w = ps.get("w", 0).copy()
            if me == 0:
                log.append((time.perf_counter() - t0, w))
            i = (c * BATCH) % NLOC
            Xb, yb = X[i : i + BATCH], y[i : i + BATCH]
            g = Xb.T @ (Xb @ w - yb) / BATCH
            for _ in range(3):  # a bit more compute per clock (same result)
                g = Xb.T @ (Xb @ w - yb) / BATCH
            ps.inc("w", 0, -lr * g / P)
            ps.clock()
        ps.barrier()
        if me == 0:
            log.append((time.perf_counter() - t0, ps.get("w", 0).copy()))
        st = ps.stats_all()
    return log, st


def objective(ws, P):
    f = np.zeros(len(ws))
    for r in range(P):
        X, y = local_data(r)
        R = X @ np.array(ws).T - y[:, None]
        f += 0.5 * (R**2).sum(axis=0)
    return f / (P * NLOC)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clocks", type=int, default=80)
    ap.add_argument("--png", default=None, help="PNG path (default benchmarks/results/bosen_ssp_<P>ranks.png)")
    bench = Bench("bosen_ssp", parser=ap)
    args = bench.args
    comm = MPI.COMM_WORLD
    P = comm.size
    models = [("bsp", 0), ("ssp", 1), ("ssp", 3), ("ssp", 10), ("essp", 3), ("asp", 0)]
    # measure compute time per clock to size the random delays
    X, y = local_data(comm.rank)
    w = np.zeros(D)
    t0 = time.perf_counter()
    for _ in range(20):
        g = X[:BATCH].T @ (X[:BATCH] @ w - y[:BATCH])
    tc = comm.allreduce((time.perf_counter() - t0) / 20 * 4, op=MPI.MAX)
    scen = {
        "persistent": {"ranks": [P - 1], "factor": 2.0},
        "random": {"ranks": [], "random_delay_ms": 2 * tc * 1e3, "seed": 1},
    }
    lr = 0.3
    curves = {}
    for sname, strag in scen.items():
        res = {}
        for m, s in models:
            log, st = run(comm, m, s, strag, args.clocks, lr)
            if comm.rank == 0:
                ts = np.array([t for t, _ in log])
                f = objective([w for _, w in log], P)
                res[(m, s)] = (ts, f, st)
        if comm.rank == 0:
            f0 = res[("bsp", 0)][1][0]
            fmin = min(r[1].min() for r in res.values())
            target = fmin + 0.05 * (f0 - fmin)
            tt = {}
            for k, (ts, f, st) in res.items():
                hit = np.flatnonzero(f <= target)
                tt[k] = ts[hit[0]] if hit.size else float("inf")
            for (m, s), (ts, f, st) in res.items():
                name = m if m in ("bsp", "asp") else f"{m}(s={s})"
                tw = st["tables"]["w"]
                bench.row(f"time to target, {name}", data=f"LS SGD d={D}, {sname} straggler", metric="seconds",
                          value=tt[(m, s)], baseline=tt[("bsp", 0)], baseline_name="bsp",
                          target="bsp/ssp >= 1.4" if m in ("ssp", "essp") else "",
                          staleness_mean=tw["staleness_mean"], staleness_var=tw["staleness_var"],
                          wait_s_max=tw["wait_s_max"], final_objective=float(f[-1]))
                print(f"   {name:10s} speedup vs bsp {tt[('bsp', 0)] / tt[(m, s)]:.2f}x  "
                      f"staleness mean {tw['staleness_mean']:.2f} var {tw['staleness_var']:.2f} "
                      f"final f {f[-1]:.4g} (target {target:.4g})", flush=True)
            curves[sname] = (res, target)
    if args.png is None:
        args.png = f"benchmarks/results/bosen_ssp_{comm.size}ranks.png"
    if comm.rank == 0 and args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2))
        for ax, (sname, (res, target)) in zip(np.atleast_1d(axes), curves.items()):
            for (m, s), (ts, f, _) in res.items():
                ax.semilogy(ts, f, label=m if m in ("bsp", "asp") else f"{m}(s={s})")
            ax.axhline(target, color="k", ls=":", lw=1, label="target")
            ax.set_title(f"{P} ranks, {sname} straggler")
            ax.set_xlabel("wall time (s)")
            ax.set_ylabel("objective")
            ax.legend()
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
        fig.savefig(args.png, dpi=90)
        print(f"plot: {args.png}", flush=True)
    bench.finish()


if __name__ == "__main__":
    main()
