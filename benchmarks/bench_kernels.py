"""Single-core throughput of the app kernels (MF SGD updates/s, LDA tokens/s, linear
models entries/s).

    .venv/bin/python benchmarks/bench_kernels.py [--repeat 3] [--only mf,lda,linear] [--jsonl FILE]

Baselines are measured in the same run: a plain, straightforward Numba MF loop
(float64, NumPy row ops), the plain O(K) collapsed Gibbs sampler, and for the linear
kernels (:mod:`petuum_mpi.linear`) the same computation in NumPy/SciPy (``X @ W``,
``X.T @ R``; full batch) or one epoch of scikit-learn's ``SGDClassifier`` (SGD, SVRG).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bench  # noqa: E402

from petuum_mpi.apps.lda import kernels as lk  # noqa: E402
from petuum_mpi.apps.mf import kernels as mk  # noqa: E402
from petuum_mpi.linear import kernels as LK  # noqa: E402
from petuum_mpi.linear import losses, rows  # noqa: E402


@njit(cache=True)
def plain_mf_epoch(users, items, ratings, U, V, eta, lam):
    """The obvious Numba MF SGD loop (row slices, np.dot, a copy per update)."""
    for t in range(ratings.shape[0]):
        u = users[t]
        i = items[t]
        e = ratings[t] - np.dot(U[u], V[i])
        uu = U[u].copy()
        U[u] += eta * (e * V[i] - lam * U[u])
        V[i] += eta * (e * uu - lam * V[i])


def bench_mf(bench):
    rng = np.random.default_rng(0)
    n_users, n_items, n = 20_000, 5_000, 2_000_000
    users = rng.integers(0, n_users, n).astype(np.int32)
    items = rng.integers(0, n_items, n).astype(np.int32)
    ratings = rng.normal(size=n)
    data = f"{n_users // 1000}k users x {n_items // 1000}k items, {n // 10**6}M ratings"
    for K in (20, 40):
        U64 = rng.normal(size=(n_users, K)) * 0.1
        V64 = rng.normal(size=(n_items, K)) * 0.1
        plain_mf_epoch(users[:10], items[:10], ratings[:10], U64.copy(), V64.copy(), 1e-3, 0.05)
        t_plain = bench.time(lambda: plain_mf_epoch(users, items, ratings, U64, V64, 1e-4, 0.05))
        for dtype in (np.float32, np.float64):
            U = U64.astype(dtype)
            V = V64.astype(dtype)
            dV = np.zeros_like(V)
            bu = np.zeros(n_users, dtype)
            bi = np.zeros(n_items, dtype)
            dbi = np.zeros(n_items, dtype)

            def run():
                mk.sgd_epoch(users, items, ratings, U, V, dV, bu, bi, dbi, 0.0, 1e-4, 0.05, 0.05, True, False)

            mk.sgd_epoch(users[:10], items[:10], ratings[:10], U, V, dV, bu, bi, dbi, 0.0, 1e-4, 0.05, 0.05, True,
                         False)
            t = bench.time(run)
            bench.row(f"MF sgd_epoch {np.dtype(dtype).name} +biases", data=f"{data}, rank {K}",
                      metric="updates/s", value=n / t, baseline=n / t_plain,
                      baseline_name="plain Numba loop float64 (same run)",
                      target=">= 20M/s per core at rank 20" if K == 20 else "")


def _corpus(rng, D, L, V):
    p = 1.0 / np.arange(1, V + 1)
    p /= p.sum()
    words = rng.choice(V, size=D * L, p=p).astype(np.int32)
    return np.arange(D + 1, dtype=np.int64) * L, words


def bench_lda(bench):
    rng = np.random.default_rng(1)
    D, L, V = 2000, 100, 5000
    doc_ptr, words = _corpus(rng, D, L, V)
    N = words.size
    index = lk.build_word_index(words, V)
    data = f"{D} docs x {L} tok, V={V} zipf, {N // 1000}k tokens"
    for K in (50, 1000):
        z = np.empty(N, np.int32)
        lk.init_assignments(doc_ptr, words, K, 0, z)
        n_dk = np.zeros((D, K), np.int32)
        n_wk = np.zeros((V, K), np.int32)
        n_k = np.zeros(K, np.int64)
        lk.count_tables(doc_ptr, words, z, n_dk, n_wk, n_k)
        m_wk = n_wk.copy()
        d_wk = np.zeros_like(n_wk)
        d_k = np.zeros_like(n_k)
        # a few sweeps so the state is not the uniform random start
        for s in range(3):
            lk.sweep_mh(doc_ptr, words, z, n_dk, n_wk, n_k, m_wk, *index, d_wk, d_k, 0.1, 0.01, 2, s)
        state = (z.copy(), n_dk.copy(), n_wk.copy(), n_k.copy())
        seeds = iter(range(100, 10_000))
        t_mh = bench.time(lambda: lk.sweep_mh(doc_ptr, words, z, n_dk, n_wk, n_k, m_wk, *index, d_wk, d_k, 0.1,
                                              0.01, 2, next(seeds)))
        z, n_dk, n_wk, n_k = (a.copy() for a in state)
        no_dwk = np.zeros((0, 0), np.int32)  # as the app runs it: deltas taken as n_wk minus the pulled copy
        lk.sweep_plain(doc_ptr[:2], words, z, n_dk, n_wk, n_k, no_dwk, d_k, 0.1, 0.01, 0)
        t_plain = bench.time(lambda: lk.sweep_plain(doc_ptr, words, z, n_dk, n_wk, n_k, no_dwk, d_k, 0.1, 0.01,
                                                    next(seeds)), repeat=min(bench.args.repeat, 2))
        bench.row("LDA sweep_mh (2 MH steps/token)", data=f"{data}, K={K}", metric="tokens/s", value=N / t_mh,
                  baseline=N / t_plain, baseline_name="plain O(K) Gibbs sweep (same run)")
        occ = np.bincount(words, minlength=V).astype(np.int64)

        def sparse_sweep():  # the word lists are rebuilt per sweep, as the app does after every pull
            lists = lk.build_word_lists(n_wk, occ)
            lk.sweep_sparse(doc_ptr, words, z, n_dk, n_wk, n_k, d_wk, d_k, *lists, 0.1, 0.01, next(seeds))

        z, n_dk, n_wk, n_k = (a.copy() for a in state)
        sparse_sweep()
        z, n_dk, n_wk, n_k = (a.copy() for a in state)
        t_sparse = bench.time(sparse_sweep, repeat=min(bench.args.repeat, 2))
        bench.row("LDA sweep_sparse (exact SparseLDA, lists rebuilt)", data=f"{data}, K={K}", metric="tokens/s",
                  value=N / t_sparse, baseline=N / t_plain, baseline_name="plain O(K) Gibbs sweep (same run)")


def _np_fg(X, Y, W, b, multi):
    """NumPy/SciPy reference of :func:`linear.kernels.fg`: loss, gradient sums, curvature."""
    Z = X @ W + b
    if multi:
        Z -= Z.max(axis=1, keepdims=True)
        P = np.exp(Z)
        P /= P.sum(axis=1, keepdims=True)
        loss = -np.log(P[Y.astype(bool)]).sum()
        S = P
    else:
        P = 1.0 / (1.0 + np.exp(-Z))
        loss = np.logaddexp(0.0, -np.where(Y > 0, Z, -Z)).sum()
        S = P * (1.0 - P)
    R = P - Y
    return loss, X.T @ R, R.sum(axis=0), S


def _np_hessp(X, S, V, vb, multi):
    """NumPy/SciPy reference of :func:`linear.kernels.hessp`."""
    U = X @ V + vb
    U = S * (U - (S * U).sum(axis=1, keepdims=True)) if multi else S * U
    return X.T @ U, U.sum(axis=0)


def bench_linear(bench):
    """Full-batch loss+gradient, Hessian product, SVRG and SGD passes (binary logistic and
    3-class multinomial; CSR 20k x 5k 800k nnz and dense 10k x 200), entries/s."""
    from sklearn.linear_model import SGDClassifier

    from petuum_mpi.data.synth import make_classification

    rng = np.random.default_rng(2)
    Xs, yb, _ = make_classification(20_000, 5_000, nnz=800_000, seed=0)
    Xs = Xs.tocsr()
    Xd = rng.normal(size=(10_000, 200))
    sets = [("CSR 20k x 5k, 800k nnz", Xs, yb.astype(np.float64)),
            ("dense 10k x 200", Xd, (Xd[:, 0] + rng.normal(size=10_000) > 0).astype(np.float64))]
    for data, X, y2 in sets:
        n, d = X.shape
        nnz = X.nnz if hasattr(X, "nnz") else X.size
        Xr = rows.as_rows(X)
        for C in (1, 3):
            multi = C > 1
            y = rng.integers(0, C, n).astype(np.float64) if multi else y2
            Y = np.eye(C)[y.astype(int)] if multi else y[:, None]
            loss = losses.Multinomial() if multi else losses.Logistic()
            name = "multinomial C=3" if multi else "logistic"
            W = 0.01 * rng.normal(size=(d, C))
            b = np.zeros(C)
            S = np.empty((n, C))
            gW, gb = np.zeros((d, C)), np.zeros(C)

            def fg():
                return LK.fg(loss, Xr, y, W, b, S, LK.no_state(), gW, gb)

            fg()
            t_fg, t_np = bench.time(fg), bench.time(lambda: _np_fg(X, Y, W, b, multi))
            bench.row(f"linear fg (loss+gradient) {name}", data=data, metric="entries/s", value=nnz / t_fg,
                      baseline=nnz / t_np, baseline_name="NumPy/SciPy X@W, X.T@(P-Y) (same run)")
            S_np = _np_fg(X, Y, W, b, multi)[3]

            def hv():
                LK.hessp(loss, Xr, S, W, b, gW, gb)

            hv()
            t_hv, t_np = bench.time(hv), bench.time(lambda: _np_hessp(X, S_np, W, b, multi))
            bench.row(f"linear hessp {name}", data=data, metric="entries/s", value=nnz / t_hv, baseline=nnz / t_np,
                      baseline_name="NumPy/SciPy X@V, X.T@U (same run)")
            order = np.arange(n, dtype=np.int64)
            M = np.zeros((d, 3 * C + 1))
            R = np.zeros((n, C))

            def sv():
                LK.svrg_pass(loss, Xr, y, order, 64, M, np.zeros(C), R, np.zeros(C), 0, 0.1, 1e-4, True, 0.1)

            sv()
            sk = SGDClassifier(loss="log_loss", alpha=1e-4, learning_rate="constant", eta0=0.01, max_iter=1,
                               tol=None, random_state=0)
            sk.partial_fit(X, y, classes=np.arange(max(C, 2)))
            t_sk = bench.time(lambda: sk.partial_fit(X, y))
            t_sv = bench.time(sv, setup=lambda: M.fill(0.0))
            bench.row(f"linear svrg_pass (batch 64) {name}", data=data, metric="entries/s", value=nnz / t_sv,
                      baseline=nnz / t_sk, baseline_name="sklearn SGDClassifier 1 epoch (same run)")
            st = [None]

            def sg_setup():
                st[0] = LK.SGDState(loss, d, C, "adagrad", 0.1, 0.5, 1e-4, 1e-5)

            sg_setup()
            st[0].run(Xr, y, order[:100], 16)
            t_sg = bench.time(lambda: st[0].run(Xr, y, order, 16), setup=sg_setup)
            bench.row(f"linear SGD pass (batch 16, adagrad, l1) {name}", data=data, metric="entries/s",
                      value=nnz / t_sg, baseline=nnz / t_sk, baseline_name="sklearn SGDClassifier 1 epoch (same run)")


PARTS = {"mf": bench_mf, "lda": bench_lda, "linear": bench_linear}


def main():
    import argparse

    parser = argparse.ArgumentParser(description="benchmark: kernels")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts: " + ", ".join(PARTS))
    bench = Bench("kernels", parser=parser)
    for part in bench.args.only.split(","):
        PARTS[part](bench)
    bench.finish()


if __name__ == "__main__":
    main()
