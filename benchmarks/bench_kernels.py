"""Single-core throughput of the app kernels (MF SGD updates/s, LDA tokens/s).

    .venv/bin/python benchmarks/bench_kernels.py [--repeat 3] [--jsonl FILE]

Baselines are measured in the same run: a plain, straightforward Numba MF loop
(float64, NumPy row ops) and the plain O(K) collapsed Gibbs sampler.
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


def main():
    bench = Bench("kernels")
    bench_mf(bench)
    bench_lda(bench)
    bench.finish()


if __name__ == "__main__":
    main()
