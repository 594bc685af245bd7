"""STRADS schedulers on correlated data: objective vs coefficient updates and vs time.

    mpiexec -n 2 python benchmarks/bench_schedulers.py [--rows 2000 --cols 4000 --round-size 64]

Lasso with parallel (Jacobi) rounds only: no Gram solver, no working set, no
screening, and ``serial_fusion=False`` so that even one rank really runs rounds
of ``round_size`` simultaneous updates. The data has groups of 4 columns with
correlation ``--corr``; ``sap`` keeps such columns out of the same round.
Rows: updates (and seconds) each scheduler needs to bring the objective within
``--target`` (relative) of the optimum, ``random`` (Shotgun) as the baseline.
Writes ``docs/img/strads_schedulers.png`` (rank 0; the figure in docs/strads.md).
``--fits tall,large,wide,genomics`` instead times whole default Lasso fits per
scheduler on bench_lasso's data shapes (the "which scheduler where" table).
"""

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bench  # noqa: E402
from lasso_data import alpha_max, genotypes  # noqa: E402

from petuum_mpi.apps.lasso import Lasso  # noqa: E402
from petuum_mpi.data.synth import make_regression  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=2000)
parser.add_argument("--cols", type=int, default=4000)
parser.add_argument("--density", type=float, default=0.02)
parser.add_argument("--corr", type=float, default=0.9)
parser.add_argument("--round-size", type=int, default=64)
parser.add_argument("--alpha-frac", type=float, default=0.05, help="alpha / alpha_max")
parser.add_argument("--sweeps", type=int, default=300, help="most sweeps per scheduler")
parser.add_argument("--target", type=float, default=1e-5, help="relative suboptimality to reach")
parser.add_argument("--schedulers", default="cyclic,random,priority,sap",
                    help="comma-separated (random is the curves' baseline)")
parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                                                  "img", "strads_schedulers.png"))
parser.add_argument("--rho", type=float, default=None, help="sap threshold in --fits (default: the estimator's)")
parser.add_argument("--fits", default=None,
                    help="instead of the curves: whole default Lasso fits per scheduler on bench_lasso's data shapes "
                         "(comma separated: tall,large,wide,genomics), interleaved, medians of --repeat")
bench = Bench("strads_schedulers", parser=parser)
a = bench.args
comm = bench.comm




def fits(regimes, schedulers, reps):
    """Default Lasso fits (tol 1e-7, as bench_lasso) that differ only in the scheduler."""
    import time

    kw = {} if a.rho is None else {"rho": a.rho}
    for reg in regimes:
        b = True
        if reg == "tall":
            X, y, _ = make_regression(5000, 10000, nnz=500_000, group_size=4, corr=0.8, seed=0)
            alpha = alpha_max(X, y, True) / 20
        elif reg == "large":
            X, y, _ = make_regression(20000, 40000, nnz=1_600_000, group_size=4, corr=0.8, n_informative=4000,
                                      seed=0)
            b, alpha = False, alpha_max(X, y, False) / 20
        elif reg == "wide":
            X, y, _ = make_regression(100, 20000, dense=True, group_size=4, corr=0.8, seed=1)
            alpha = alpha_max(X, y, True) / 20
        elif reg == "genomics":
            X, y = genotypes(2000, 20000)
            alpha = alpha_max(X, y, True) / 10
        else:
            raise SystemExit(f"--fits: unknown regime {reg!r} (tall, large, wide, genomics)")
        for name in schedulers:  # warm
            Lasso(alpha=alpha, tol=1e-2, fit_intercept=b, scheduler=name, **kw).fit(X, y)
        res = {name: [] for name in schedulers}
        for _ in range(reps):  # interleaved
            for name in schedulers:
                comm.Barrier()
                t0 = time.perf_counter()
                m = Lasso(alpha=alpha, tol=1e-7, fit_intercept=b, scheduler=name, **kw).fit(X, y)
                comm.Barrier()
                res[name].append((time.perf_counter() - t0, m))
        for name in schedulers:
            t = float(np.median([r[0] for r in res[name]]))
            tel = res[name][-1][1].telemetry_
            if comm.rank == 0:
                runs = " ".join(f"{r[0]:.3f}" for r in res[name])
                print(f"# {reg} {X.shape[0]}x{X.shape[1]} {name}: {t:.3f} s (runs {runs}) "
                      f"updates {tel.get('updates')} rounds {tel.get('rounds')} rejected {tel.get('rejected')} "
                      f"undone {tel.get('rejected_sweeps')} root_wait {tel.get('root_wait_fraction', 0):.3f} "
                      f"time_schedule {tel.get('time_schedule', 0):.3f} gram_sweeps {tel.get('gram_sweeps')}",
                      flush=True)
            bench.row(f"lasso fit, scheduler {name}", data=f"{reg} {X.shape[0]}x{X.shape[1]}", metric="time_s",
                      value=t, baseline=float(np.median([r[0] for r in res[schedulers[0]]])),
                      baseline_name=f"scheduler {schedulers[0]}", updates=int(tel.get("updates", 0)),
                      rounds=int(tel.get("rounds", 0)), root_wait_fraction=float(tel.get("root_wait_fraction", 0)))


if a.fits:
    fits(a.fits.split(","), a.schedulers.split(","), a.repeat)
    bench.finish()
    raise SystemExit(0)

X, y, _ = make_regression(a.rows, a.cols, nnz=int(a.rows * a.cols * a.density), group_size=4, corr=a.corr, seed=0)
Xd = X.toarray()
yc = y - y.mean()
alpha_max = np.abs((Xd - Xd.mean(axis=0)).T @ yc).max() / a.rows
alpha = a.alpha_frac * alpha_max


def objective(w, b):
    r = y - X @ w - b
    return 0.5 * r @ r / a.rows + alpha * np.abs(w).sum()


# optimum: a tight exact solve (Gram working sets), checked against scikit-learn on rank 0
best = Lasso(alpha=alpha, tol=1e-12, max_iter=100000).fit(X, y)
f_opt = objective(best.coef_, best.intercept_)
if comm.rank == 0:
    from sklearn.linear_model import Lasso as SL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SL(alpha=alpha, tol=1e-10, max_iter=100000).fit(X, y)
    f_sk = objective(ref.coef_, ref.intercept_)
    print(f"# data {a.rows}x{a.cols} nnz={X.nnz} corr={a.corr} alpha={alpha:.4g} F*={f_opt:.10g} "
          f"(sklearn {f_sk:.10g}, rel diff {(f_sk - f_opt) / f_opt:.1e}) nnz(w*)={np.count_nonzero(best.coef_)}",
          flush=True)

kw = dict(round_size=a.round_size, serial_fusion=False, precompute=False, working_set=False, screening=False)
names = a.schedulers.split(",")
for name in names:  # compile / warm everything first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Lasso(alpha=alpha, max_iter=1, scheduler=name, **kw).fit(X, y)
curves = {}
for name in names:
    rows = []
    m = Lasso(alpha=alpha, tol=1e-12, max_iter=a.sweeps, scheduler=name, random_state=1, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # may stop at max_iter
        m.fit(X, y, callback=rows.append)
    rows = [r for r in rows if r["check"] == "working_set"]
    upd = np.array([r["updates"] for r in rows], dtype=float)
    t = np.array([r["time"] for r in rows])
    f = np.array([r["objective"] for r in rows])
    sub = np.maximum((f - f_opt) / f_opt, 1e-16)
    hit = np.nonzero(sub <= a.target)[0]
    curves[name] = dict(updates=upd, time=t, sub=sub, hit=int(hit[0]) if len(hit) else None,
                        rounds=m.telemetry_["rounds"], rejected=m.telemetry_["rejected"],
                        final_u=m.telemetry_["final_round_size"], undone=m.telemetry_["rejected_sweeps"],
                        root_wait=m.telemetry_.get("root_wait_fraction", 0.0))
    if comm.rank == 0:
        c = curves[name]
        reach = (f"reaches {a.target:g} after {upd[c['hit']]:.0f} updates, {t[c['hit']]:.2f} s"
                 if c["hit"] is not None else f"does not reach {a.target:g} in {a.sweeps} sweeps")
        print(f"# {name}: {reach}; final rel {sub[-1]:.1e}, rounds {c['rounds']}, rejected {c['rejected']}, "
              f"final round size {c['final_u']}, undone sweeps {c['undone']}, root_wait {c['root_wait']:.3f}", flush=True)


def at_target(name, key):
    c = curves[name]
    return float(c[key][c["hit"]]) if c["hit"] is not None else float("nan")


data = f"{a.rows}x{a.cols} corr {a.corr} U={a.round_size} P={comm.size}"
for name in [n for n in names if n != "random"]:
    for key, metric in (("updates", "updates"), ("time", "time_s")):
        bench.row(f"{name}: {key} to {a.target:g} rel", data=data, metric=metric, value=at_target(name, key),
                  baseline=at_target("random", key) if "random" in curves else float("nan"),
                  baseline_name="random (Shotgun)")

if comm.rank == 0:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, c in curves.items():
        for ax, key in zip(axes, ("updates", "time")):
            ax.semilogy(c[key], c["sub"], label=f"{name} (final U={c['final_u']})")
    for ax, lab in zip(axes, ("coefficient updates", "seconds")):
        ax.axhline(a.target, color="grey", ls=":", lw=1)
        ax.set_xlabel(lab)
        ax.set_ylabel("(F - F*) / F*")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Lasso, parallel rounds of {a.round_size} on {comm.size} rank(s): {a.rows}x{a.cols} sparse, "
                 f"groups of 4 with corr {a.corr}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"# plot: {a.out}")
bench.finish()
