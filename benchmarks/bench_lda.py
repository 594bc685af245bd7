"""LDA app on Bösen vs. the ``lda`` package (collapsed Gibbs in Cython), same run.

Corpus: drawn from LDA (``make_lda_corpus``), 20,000 documents x ~150 tokens
(~3M tokens), 20,000 words, 100 planted topics; fitted at K = 50 and K = 1000.

Rows (per K):

* tokens/s per rank of ``petuum_mpi.apps.lda.LDA.fit`` (whole fit: setup, sweeps,
  final barrier, likelihood) vs. ``lda.LDA.fit`` on one core (whole fit);
  targets >= 2x at K = 50 and >= 5x at K = 1000;
* per-token log p(w, z) after the same number of sweeps, both computed with the
  same Griffiths-Steyvers formula (``lda.kernels.log_joint``) from the final
  counts; ratio = ours - lda (>= 0 means at least as good);
* the app's default sampler (``auto``: plain below ``AUTO_SPARSE_MIN_K`` topics, the
  exact SparseLDA sampler from there on; the row names the sampler that ran) vs. the
  ``plain`` O(K) sampler in the same run (``--compare``, default ``plain``; ``none``
  skips it), tokens/s per rank and log p(w,z)/token;
* with more than one rank: the same fit on rank 0 alone (sub-communicator)
  vs. all ranks -> speedup (``--no-speedup`` skips it).

Run briefly (the baseline takes ~30 s per sweep at K = 1000)::

    .venv/bin/python benchmarks/bench_lda.py --iters 5 --iters-1000 2 --repeat 1
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_lda.py --iters 5 --iters-1000 2 --repeat 1
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Bench  # noqa: E402

from petuum_mpi.apps.lda import kernels as lk  # noqa: E402
from petuum_mpi.apps.lda import LDA, SAMPLERS  # noqa: E402
from petuum_mpi.data import write_bow  # noqa: E402
from petuum_mpi.data.synth import make_lda_corpus  # noqa: E402

ALPHA, BETA = 0.1, 0.01


def main():
    ap = argparse.ArgumentParser(description="benchmark: lda")
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--words", type=int, default=20_000)
    ap.add_argument("--doc-length", type=float, default=150.0)
    ap.add_argument("--k", type=int, nargs="+", default=[50, 1000])
    ap.add_argument("--iters", type=int, default=10, help="sweeps at K < 1000 (both implementations)")
    ap.add_argument("--iters-1000", type=int, default=3, help="sweeps at K >= 1000 (both implementations)")
    ap.add_argument("--sampler", default="auto", choices=SAMPLERS)
    ap.add_argument("--compare", default="plain", choices=SAMPLERS[1:] + ("none",),
                    help="also fit with this sampler (same run) when it differs from the one --sampler runs")
    ap.add_argument("--no-speedup", action="store_true", help="skip the 1-rank fit used for the speedup row")
    ap.add_argument("--kernels", action="store_true",
                    help="instead of fits: the plain, sparse and mh kernel sweeps on rank 0 alone from the same "
                         "random state (CPU seconds per sweep, log p(w,z)/token), no parameter server")
    ap.add_argument("--consistency", default="bsp", help="bsp: every sweep sees all earlier sweeps (fair per-sweep likelihood)")
    ap.add_argument("--staleness", type=int, default=1)
    ap.add_argument("--clocks-per-iter", type=int, default=0, help="PS clocks per sweep (0 = the app's auto: 1 on one rank, 4 on more)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the lda package")
    bench = Bench("lda", parser=ap)
    a = bench.args
    comm = bench.comm
    logging.getLogger("lda").setLevel(logging.WARNING)

    tmp = None
    if bench.rank == 0:
        tmp = tempfile.mkdtemp(prefix="bench_lda_")
        doc_ptr, word_ids, counts, _, _ = make_lda_corpus(a.docs, a.words, 100, doc_length=a.doc_length,
                                                          alpha=ALPHA, beta=BETA, seed=1)
        write_bow(os.path.join(tmp, "corpus"), doc_ptr, word_ids, counts, a.words, n_shards=4)
    tmp = comm.bcast(tmp, root=0)
    path = os.path.join(tmp, "corpus")
    if bench.rank == 0:
        import scipy.sparse as sp

        X = sp.csr_matrix((counts.astype(np.int64), word_ids, doc_ptr), shape=(a.docs, a.words))
        N = int(counts.sum())
        tok_ptr = np.zeros(a.docs + 1, np.int64)
        np.cumsum(np.asarray(X.sum(axis=1)).ravel(), out=tok_ptr[1:])
    N = comm.bcast(N if bench.rank == 0 else None, root=0)
    data = f"LDA corpus {a.docs} docs, {a.words} words, {N / 1e6:.2f}M tokens"
    solo = comm.Split(0 if bench.rank == 0 else 1, bench.rank) if bench.size > 1 and not a.no_speedup else None

    if a.kernels:
        if bench.rank == 0:
            for K in a.k:
                kernel_sweeps(bench, X, N, K, a.iters_1000 if K >= 1000 else a.iters, data)
        bench.barrier()
        if bench.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        bench.finish()
        return
    try:
        for K in a.k:
            iters = a.iters_1000 if K >= 1000 else a.iters
            # baseline: lda package, one core, rank 0 (other ranks wait)
            t_lda, ll_lda = None, None
            if not a.no_baseline and bench.rank == 0:
                import lda

                t0 = time.perf_counter()
                m = lda.LDA(n_topics=K, n_iter=iters, alpha=ALPHA, eta=BETA, random_state=1, refresh=10**9).fit(X)
                t_lda = time.perf_counter() - t0
                ll_lda = lk.log_joint(tok_ptr, m.ndz_, np.ascontiguousarray(m.nzw_.T), m.nz_.astype(np.int64),
                                      ALPHA, BETA) / N
                del m
            bench.barrier()

            def fit(c, sampler=a.sampler):
                est = LDA(n_components=K, doc_topic_prior=ALPHA, topic_word_prior=BETA, max_iter=iters, sampler=sampler,
                          evaluate_every=0, clocks_per_iter=a.clocks_per_iter, consistency=a.consistency,
                          staleness=a.staleness, random_state=1,
                          comm=c)
                c.Barrier()
                t0 = time.perf_counter()
                est.fit(path)
                c.Barrier()
                return time.perf_counter() - t0, est

            t1 = None
            if solo is not None:  # the same fit on rank 0 alone, for the speedup
                if bench.rank == 0:
                    t1, _ = fit(solo)
                bench.barrier()
            t, est = fit(comm)
            tput = N * iters / t / bench.size
            base = N * iters / t_lda if t_lda else None
            target = {50: ">= 2x", 1000: ">= 5x"}.get(K, "")
            bench.row(f"LDA fit K={K} ({est.sampler_}, {iters} sweeps, {a.consistency})", data=data,
                      metric="tokens/s per rank", value=tput, baseline=base,
                      baseline_name="lda package 3.0 (Cython collapsed Gibbs, 1 core, whole fit)", target=target)
            bench.row(f"LDA sampling loop K={K}", data=data, metric="tokens/s (all ranks, loop only)",
                      value=est.tokens_per_s_, baseline=base, baseline_name="lda package whole fit")
            bench.row(f"LDA per-token log p(w,z) after {iters} sweeps K={K}", data=data, metric="loglik/token",
                      value=est.loglik_per_token_, baseline=ll_lda, baseline_name="lda package (same formula)",
                      target="ours >= lda")
            if ll_lda is not None and bench.rank == 0:
                print(f"  sampler {est.sampler_}: loglik/token difference ours - lda = "
                      f"{est.loglik_per_token_ - ll_lda:+.4f}", flush=True)
            if a.compare != "none" and a.compare != est.sampler_:
                t_c, est_c = fit(comm, a.compare)
                tput_c = N * iters / t_c / bench.size
                bench.row(f"LDA fit K={K} {est.sampler_} vs {a.compare} ({iters} sweeps)", data=data,
                          metric="tokens/s per rank", value=tput, baseline=tput_c,
                          baseline_name=f"our {a.compare} sampler, same run")
                bench.row(f"LDA per-token log p(w,z) K={K} {a.compare} sampler", data=data, metric="loglik/token",
                          value=est_c.loglik_per_token_, baseline=ll_lda, baseline_name="lda package (same formula)")
                if bench.rank == 0:
                    extra = f", {a.compare} - lda = {est_c.loglik_per_token_ - ll_lda:+.4f}" if ll_lda else ""
                    print(f"  {a.compare} vs lda package: {tput_c / base:.2f}x" if base else "",
                          f"  loglik/token {est.sampler_} - {a.compare} = "
                          f"{est.loglik_per_token_ - est_c.loglik_per_token_:+.4f}{extra}", flush=True)
            if solo is not None:
                t1 = comm.bcast(t1, root=0)
                bench.row(f"LDA fit K={K} speedup 1 -> {bench.size} ranks", data=data, metric="speedup",
                          value=t1 / t, baseline=float(bench.size), baseline_name="ideal")
    finally:
        bench.barrier()
        if bench.rank == 0 and tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    bench.finish()


def kernel_sweeps(bench, X, N, K, iters, data):
    """plain / sparse / mh sweeps from the same random state, one process: CPU time per sweep."""
    from petuum_mpi.apps.lda.estimator import _Corpus

    c = _Corpus(X.indptr.astype(np.int64), X.indices.astype(np.int32), X.data.astype(np.int64), X.shape[1])
    tp, words, V, D = c.tok_ptr, c.words, c.n_words, c.n_docs
    z0 = np.empty(N, np.int32)
    lk.init_assignments(tp, words, K, 1, z0)
    occ = np.bincount(words, minlength=V)
    res = {}
    for kind in ("plain", "sparse", "mh"):
        z = z0.copy()
        n_dk, n_wk, n_k = np.zeros((D, K), np.int32), np.zeros((V, K), np.int32), np.zeros(K, np.int64)
        lk.count_tables(tp, words, z, n_dk, n_wk, n_k)
        d_wk, d_k = np.zeros_like(n_wk), np.zeros_like(n_k)
        if kind == "mh":
            m_wk, index = n_wk.copy(), lk.build_word_index(words, V)
        # compile (or load from the cache) outside the timing: one sweep over a 1-document copy
        one = tp[:2]
        args = (z.copy(), n_dk[:1].copy(), n_wk.copy(), n_k.copy(), d_wk.copy(), d_k.copy())
        if kind == "plain":
            lk.sweep_plain(one, words, *args, ALPHA, BETA, 1)
        elif kind == "sparse":
            lk.sweep_sparse(one, words, *args, *lk.build_word_lists(args[2], np.bincount(words[:one[1]], minlength=V)),
                            ALPHA, BETA, 1)
        else:
            lk.sweep_mh(one, words, *args[:4], m_wk.copy(), *index, *args[4:], ALPHA, BETA, 2, 1)
        secs = []
        for it in range(iters):
            t0 = time.process_time()
            if kind == "plain":
                lk.sweep_plain(tp, words, z, n_dk, n_wk, n_k, d_wk, d_k, ALPHA, BETA, it + 5)
            elif kind == "sparse":
                lists = lk.build_word_lists(n_wk, occ)
                lk.sweep_sparse(tp, words, z, n_dk, n_wk, n_k, d_wk, d_k, *lists, ALPHA, BETA, it + 5)
            else:
                lk.sweep_mh(tp, words, z, n_dk, n_wk, n_k, m_wk, *index, d_wk, d_k, ALPHA, BETA, 2, it + 5)
            secs.append(time.process_time() - t0)
        ll = lk.per_token_loglik(tp, n_dk, n_wk, n_k, ALPHA, BETA)
        res[kind] = (N * iters / sum(secs), ll)
        print(f"  K={K} {kind}: M tokens/s (CPU) per sweep " + " ".join(f"{N / t / 1e6:.2f}" for t in secs)
              + f"; log p(w,z)/token after {iters} sweeps {ll:.4f}", flush=True)
    for kind in ("sparse", "mh"):
        bench.row(f"LDA kernel sweeps K={K} {kind} vs plain ({iters} sweeps from the same state)", data=data,
                  metric="tokens/s (CPU time)", value=res[kind][0], baseline=res["plain"][0],
                  baseline_name="sweep_plain, same state")
        bench.row(f"LDA kernel log p(w,z)/token K={K} {kind}", data=data, metric="loglik/token",
                  value=res[kind][1], baseline=res["plain"][1], baseline_name="sweep_plain")


if __name__ == "__main__":
    main()
