"""The SSP claim: data-parallel least-squares SGD on the parameter server with
stragglers; time to reach a target objective under bsp, ssp(s=1,3,10), essp, asp.

    .venv/bin/mpiexec -n 4 .venv/bin/python benchmarks/bench_ssp.py [--clocks 80] [--png out.png]

    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_ssp.py --staleness [--png docs/img/staleness.png]

``--staleness``: observed staleness (reader's clock minus the newest clock of other
workers' data in the copy) and convergence per clock of ssp, essp and managed
communication on one workload (the model cut into 16 rows of 50; each clock = 4
mini-batches, each a read of the model, a random compute time, an inc), same
clocks, interleaved repeats; writes the plot (default docs/img/staleness.png).

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


ROWS = 16  # --staleness: the model as ROWS x D / ROWS


def run_sub(comm, model, s, managed, clocks, lr, sub, delay_ms, seed):
    """--staleness workload: ``sub`` mini-batches per clock, each a whole-model read, a random
    compute time (uniform, mean ``delay_ms``) and an inc. Returns (model per clock, stats)."""
    P, me = comm.size, comm.rank
    X, y = local_data(me)
    rng = np.random.default_rng(seed * 100 + me)
    nb = BATCH // sub
    spec = TableSpec("w", ROWS, D // ROWS, managed_bytes=managed)
    ws = []
    with ParameterServer([spec], comm, consistency=model, staleness=s) as ps:
        ps.barrier()
        step = 0
        for c in range(clocks):
            for _ in range(sub):
                w = ps.get("w").ravel().copy()
                if me == 0 and step % sub == 0:
                    ws.append(w)
                i = (step * nb) % NLOC
                Xb, yb = X[i : i + nb], y[i : i + nb]
                g = Xb.T @ (Xb @ w - yb) / nb
                time.sleep(rng.uniform(0, 2 * delay_ms) * 1e-3)
                ps.inc("w", slice(None), (-lr * g / P).reshape(ROWS, -1))
                step += 1
            ps.clock()
        ps.barrier()
        if me == 0:
            ws.append(ps.get("w").ravel().copy())
        st = ps.stats_all()
    return ws, st


def staleness_study(bench, comm, args):
    """ssp / essp / managed: observed staleness distribution and objective per clock."""
    P = comm.size
    s = args.s
    budgets = [float(b) for b in str(args.budget).split(",")]
    # the budget sweep under ssp (managed sends and pulls against the bound), essp at the largest
    variants = [("ssp", s, None), ("essp", s, None)] + [("ssp", s, b) for b in budgets] + [("essp", s, budgets[-1])]
    names = [f"{m}({s})" + (f" + managed {b / 1e6:g} MB/s" if b else "") for m, s, b in variants]
    res = {n: [] for n in names}
    for rep_ in range(args.repeat_runs):
        for (m, s_, b), n in zip(variants, names):  # interleaved
            ws, st = run_sub(comm, m, s_, b, args.clocks, args.lr, 4, args.delay_ms, rep_)
            if comm.rank == 0:
                res[n].append((objective(ws, P), st["tables"]["w"]))
    if comm.rank != 0:
        return
    from petuum_mpi.bosen.telemetry import OBS_LO

    XX = np.vstack([local_data(r)[0] for r in range(P)])
    yy = np.concatenate([local_data(r)[1] for r in range(P)])
    fstar = float(objective([np.linalg.lstsq(XX, yy, rcond=None)[0]], P)[0])  # the exact optimum
    summary = {}
    for n in names:
        fs = np.array([f for f, _ in res[n]])
        hist = np.sum([t["observed_hist"] for _, t in res[n]], axis=0)
        cnt = hist.sum()
        x = np.arange(hist.size) + OBS_LO
        mean = float((x * hist).sum() / cnt)
        var = float(((x - mean) ** 2 * hist).sum() / cnt)
        mb = float(np.mean([t["managed_bytes"] for _, t in res[n]])) / P  # stats_all sums the ranks
        fb = float(np.mean([t["fetch_bytes"] for _, t in res[n]])) / P / args.clocks
        summary[n] = (np.median(fs, axis=0), hist, mean, var)
        fin = float(np.median(fs[:, -1]))
        bench.row(f"observed staleness, {n}", data=f"LS SGD d={D} as {ROWS}x{D // ROWS}, 4 batches/clock",
                  metric="clocks (mean)", value=mean, baseline=summary[names[0]][2], baseline_name=names[0],
                  staleness_var=var, final_objective=fin, managed_bytes=mb, fetch_bytes_per_clock=fb,
                  clocks=args.clocks)
        print(f"   {n:32s} observed staleness mean {mean:+.3f} var {var:.3f}  guaranteed-staleness mean "
              f"{np.mean([t['staleness_mean'] for _, t in res[n]]):.2f}  f - f* after {args.clocks} clocks "
              f"{fin - fstar:.4g} (after {args.clocks // 4}: {float(np.median(fs[:, args.clocks // 4])) - fstar:.4g})  "
              f"managed {mb / 1e3:.0f} KB/rank, fetched {fb / 1e3:.1f} KB/clock/rank", flush=True)
    if args.png == "":
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    wbar = 0.8 / len(names)
    for k, n in enumerate(names):
        f, hist, mean, var = summary[n]
        x = np.arange(hist.size) + OBS_LO
        keep = hist > 0
        a1.bar(x[keep] + (k - (len(names) - 1) / 2) * wbar, hist[keep] / hist.sum(), width=wbar,
               label=f"{n}: mean {mean:+.2f}, sd {np.sqrt(var):.2f}")
        a2.semilogy(np.arange(f.size), f - fstar, label=n)
    a1.set_xlabel("observed staleness (clocks): reader's clock - newest clock of others' data read")
    a1.set_ylabel("share of reads")
    a1.set_title(f"{P} ranks, s = {s}, {args.repeat_runs} runs x {args.clocks} clocks")
    a1.legend(fontsize=8)
    a2.set_xlabel("clock")
    a2.set_ylabel("objective - optimum (median of runs)")
    a2.set_title("convergence per clock")
    a2.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
    fig.savefig(args.png, dpi=90)
    print(f"plot: {args.png}", flush=True)


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
    ap.add_argument("--png", default=None, help="PNG path (default benchmarks/results/bosen_ssp_<P>ranks.png; "
                    "--staleness: docs/img/staleness.png; '' = none)")
    ap.add_argument("--staleness", action="store_true", help="observed staleness: ssp vs essp vs managed")
    ap.add_argument("--s", type=int, default=2, help="--staleness: the staleness bound")
    ap.add_argument("--budget", default="0.02e6,0.1e6,0.5e6,2e6",
                    help="--staleness: managed bytes per second per rank (comma-separated: one variant each)")
    ap.add_argument("--delay-ms", type=float, default=3.0, help="--staleness: mean compute time per mini-batch")
    ap.add_argument("--lr", type=float, default=200.0, help="--staleness: step size (near the stable limit, where staleness matters)")
    ap.add_argument("--repeat-runs", type=int, default=3, help="--staleness: interleaved runs of each variant")
    bench = Bench("bosen_ssp", parser=ap)
    args = bench.args
    comm = MPI.COMM_WORLD
    if args.staleness:
        if args.png is None:
            args.png = "docs/img/staleness.png"
        staleness_study(bench, comm, args)
        bench.finish()
        return
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
