"""Logistic regression on Bösen: time to reach the optimum's objective within 1e-3 (relative),
against scikit-learn (the faster of LogisticRegression lbfgs and SGDClassifier, same objective).

    mpiexec -n 1 python benchmarks/bench_logreg.py   (default 200,000 x 50,000, 8M non-zeros)
    mpiexec -n 2 python benchmarks/bench_logreg.py
"""

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bench  # noqa: E402

from petuum_mpi.linear import kernels as LK  # noqa: E402
from petuum_mpi.linear.losses import Logistic  # noqa: E402
from petuum_mpi.linear.rows import as_rows  # noqa: E402
from petuum_mpi.apps.logreg import LogisticRegression  # noqa: E402
from petuum_mpi.data.synth import make_classification  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--rows", type=int, default=200_000)
p.add_argument("--cols", type=int, default=50_000)
p.add_argument("--nnz", type=int, default=8_000_000)
p.add_argument("--alpha", type=float, default=1e-4)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--solver", default="svrg", help="solver of our app (svrg | sgd | newton-cg | lbfgs)")
bench = Bench("logreg", parser=p)
a = bench.args
X, y, _ = make_classification(a.rows, a.cols, nnz=a.nnz, seed=0)
X = X.tocsr()
yf = y.astype(np.float64)
Xr = as_rows(X)
n = X.shape[0]
data = f"{a.rows}x{a.cols} {X.nnz / 1e6:.1f}M nnz alpha={a.alpha:g}"


def obj(W, b):
    return LK.objective(Logistic(), Xr, yf, np.ascontiguousarray(W), np.asarray(b, float), a.alpha, 0.0)


from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression as SkLR, SGDClassifier  # noqa: E402

warnings.filterwarnings("ignore", category=ConvergenceWarning)  # the budgeted sklearn fits stop early on purpose

f_star = None
if bench.rank == 0:
    sk = SkLR(C=1 / (n * a.alpha), tol=1e-10, max_iter=5000).fit(X, y)
    f_star = obj(sk.coef_.T, sk.intercept_)
f_star = bench.comm.bcast(f_star, root=0)
target = f_star * (1 + 1e-3)
t_sk = float("inf")
name = ""
if bench.rank == 0:
    for it in (4, 5, 6, 7, 8, 10, 12, 15, 20, 40, 80, 160, 320):  # smallest lbfgs budget that reaches the target
        t0 = time.perf_counter()
        sk = SkLR(C=1 / (n * a.alpha), tol=1e-12, max_iter=it).fit(X, y)
        dt = time.perf_counter() - t0
        if obj(sk.coef_.T, sk.intercept_) <= target:
            for _ in range(a.repeat - 1):  # best of --repeat (the machine may be shared)
                t0 = time.perf_counter()
                SkLR(C=1 / (n * a.alpha), tol=1e-12, max_iter=it).fit(X, y)
                dt = min(dt, time.perf_counter() - t0)
            t_sk, name = dt, f"sklearn lbfgs max_iter={it}"
            break
    for it in (2, 4, 8, 16, 32):
        t0 = time.perf_counter()
        sg = SGDClassifier(loss="log_loss", alpha=a.alpha, max_iter=it, tol=None, average=True).fit(X, y)
        dt = time.perf_counter() - t0
        if obj(sg.coef_.T, sg.intercept_) <= target:
            for _ in range(a.repeat - 1):
                t0 = time.perf_counter()
                SGDClassifier(loss="log_loss", alpha=a.alpha, max_iter=it, tol=None, average=True).fit(X, y)
                dt = min(dt, time.perf_counter() - t0)
            if dt < t_sk:
                t_sk, name = dt, f"sklearn SGDClassifier(average) max_iter={it}"
            break
t_sk, name = bench.comm.bcast((t_sk, name), root=0)
t_hit, hist, m = float("inf"), None, None
for _ in range(a.repeat):  # best of --repeat
    h = []
    mm = LogisticRegression(alpha=a.alpha, max_iter=a.epochs, eval_every=1, solver=a.solver, tol=None,
                            comm=bench.comm).fit(X, y, callback=h.append)
    setup = getattr(mm, "setup_time_", 0.0)  # svrg's step-size estimate, before the driver's clock starts
    for r in h:
        r["train_time"] = r["time"] + setup
    th = next((r["train_time"] for r in h if r["objective"] <= target), float("nan"))
    if hist is None or (th == th and not th >= t_hit):
        t_hit, hist, m = th, h, mm
bench.row("logreg time to F* (1 + 1e-3)", data=data, metric="train_s", value=t_hit, baseline=t_sk,
          baseline_name=name, target="ratio <= 1.0 at 1 rank, <= 0.6 at 2", final_rel=(m.objective_ - f_star) / f_star,
          solver=a.solver, step_size=getattr(m, "step_size_", None),
          curve=[(round(r["train_time"], 3), (r["objective"] - f_star) / f_star) for r in hist])
bench.finish()
