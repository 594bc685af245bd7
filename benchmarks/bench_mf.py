"""MF on Bösen: SGD updates/s per rank and time to a test RMSE within 5% of the noise.

    mpiexec -n 1 python benchmarks/bench_mf.py [--users 50000 --items 20000 --ratings 5000000]
    mpiexec -n 2 python benchmarks/bench_mf.py
Baseline: the plain Numba kernel (mf_kernels.sgd_epoch) on the same rank's ratings, no PS.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bench  # noqa: E402

from petuum_mpi.apps import mf_kernels as K  # noqa: E402
from petuum_mpi.apps.mf import MatrixFactorization  # noqa: E402
from petuum_mpi.data.synth import make_ratings  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--users", type=int, default=50000)
p.add_argument("--items", type=int, default=20000)
p.add_argument("--ratings", type=int, default=5_000_000)
p.add_argument("--rank", type=int, default=20)
p.add_argument("--epochs", type=int, default=20)
bench = Bench("mf", parser=p)
a = bench.args
noise = 0.5
dens = a.ratings / (a.users * a.items)
u, i, v, _, _ = make_ratings(a.users, a.items, rank=a.rank, noise=noise, density=dens, seed=0)
te = np.random.default_rng(1).random(u.size) < 0.05
data = f"{a.users}x{a.items} {u.size / 1e6:.1f}M ratings K={a.rank}"
hist = []
m = MatrixFactorization(n_components=a.rank, max_iter=a.epochs, eta0=0.01, lam=0.02, decay=0.05, init_scale=0.1,
                        comm=bench.comm).fit((u[~te], i[~te], v[~te]), a.users, a.items,
                                             test=(u[te], i[te], v[te]), on_clock=hist.append)
ups = m.updates_per_s_
t_hit = next((r["train_time"] for r in hist if r.get("test_rmse", 9) < 1.05 * noise), float("nan"))
# baseline: the bare kernel on this rank's share, float32, user-grouped, one pass
lo, hi = bench.rank * a.users // bench.size, (bench.rank + 1) * a.users // bench.size
sel = (u >= lo) & (u < hi) & ~te
o = np.argsort(u[sel], kind="stable")
uu, ii, vv = (u[sel][o] - lo).astype(np.int32), i[sel][o], v[sel][o]
U = (0.1 * np.random.default_rng(0).standard_normal((hi - lo, a.rank))).astype(np.float32)
V = (0.1 * np.random.default_rng(1).standard_normal((a.items, a.rank))).astype(np.float32)
dV, b = np.zeros_like(V), np.zeros(a.items, np.float32)
bu = np.zeros(hi - lo, np.float32)
K.sgd_epoch(uu, ii, vv, U, V, dV, bu, b, b.copy(), 0.0, 0.01, 0.02, 0.0, True, False)
t0 = time.perf_counter()
K.sgd_epoch(uu, ii, vv, U, V, dV, bu, b, b.copy(), 0.0, 0.01, 0.02, 0.0, True, False)
base = uu.size / (time.perf_counter() - t0)
bench.row("mf SGD updates/s per rank", data=data, metric="updates_per_s", value=ups, baseline=base,
          baseline_name="bare Numba kernel pass", target=">= 20M")
bench.row("mf time to test RMSE <= 1.05 noise", data=data, metric="train_s", value=t_hit,
          baseline=None, final_test_rmse=m.test_rmse_)
bench.finish()
