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

``--peers`` (one process; it starts the MPI fits itself): tomotopy (C++, 1 and 2
threads, ``optim_interval=0``), the ``lda`` package (K <= ``--lda-max-k``) and ours at
1 and 2 ranks (each ``mpiexec -n R`` in a fresh process), interleaved for ``--repeat``
rounds, medians. tokens/s count the whole fit (ours: reading the shards, set-up,
sweeps, final likelihood; tomotopy: ``train`` incl. its initialisation, not
``add_doc``; lda: ``fit``). Every system is scored by the same function,
log p(w | theta, phi) per token from its own point estimates
``theta_d = (n_dk + a)/(L_d + K a)``, ``phi_k = (n_wk + b)/(n_k + V b)``::

    .venv/bin/python benchmarks/bench_lda.py --peers --iters 10 --iters-1000 3 --repeat 3

Run briefly (the baseline takes ~30 s per sweep at K = 1000)::

    .venv/bin/python benchmarks/bench_lda.py --iters 5 --iters-1000 2 --repeat 1
    .venv/bin/mpiexec -n 2 .venv/bin/python benchmarks/bench_lda.py --iters 5 --iters-1000 2 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba import njit

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
    ap.add_argument("--clocks-per-iter", type=int, default=0, help="PS clocks per sweep (0 = the app's auto: one word block per rank for plain/sparse, 1 or 4 for mh)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the lda package")
    ap.add_argument("--peers", action="store_true",
                    help="one process: tomotopy 1/2 threads, lda package, ours at 1 and 2 ranks (mpiexec), interleaved")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="--peers: our rank counts")
    ap.add_argument("--lda-max-k", type=int, default=50, help="--peers: run the lda package up to this K")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # --peers: fit path K iters, write JSON here
    bench = Bench("lda", parser=ap)
    a = bench.args
    if a.worker:
        return worker(a)
    if a.peers:
        return peers(bench)
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


@njit(cache=True)
def point_loglik(doc_ptr, words, theta, phi_wk):
    """sum over tokens of log sum_k theta_dk phi_wk (theta: D x K, phi_wk: V x K)."""
    s = 0.0
    for d in range(doc_ptr.shape[0] - 1):
        for i in range(doc_ptr[d], doc_ptr[d + 1]):
            w = words[i]
            acc = 0.0
            for k in range(theta.shape[1]):
                acc += theta[d, k] * phi_wk[w, k]
            s += np.log(acc)
    return s


def _corpus(a):
    doc_ptr, word_ids, counts, _, _ = make_lda_corpus(a.docs, a.words, 100, doc_length=a.doc_length, alpha=ALPHA,
                                                      beta=BETA, seed=1)
    return doc_ptr, word_ids, counts


def worker(a):
    """--peers child: our fit of a.k[0] topics on the shards at a.worker's folder; rank 0 writes JSON."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    out = a.worker
    path, K = os.path.join(os.path.dirname(out), "corpus"), a.k[0]
    iters = a.iters_1000 if K >= 1000 else a.iters
    est = LDA(n_components=K, doc_topic_prior=ALPHA, topic_word_prior=BETA, max_iter=iters, sampler=a.sampler,
              evaluate_every=0, clocks_per_iter=a.clocks_per_iter, consistency=a.consistency,
              staleness=a.staleness, random_state=1, comm=comm)
    comm.Barrier()
    t0 = time.perf_counter()
    est.fit(path)
    comm.Barrier()
    t = time.perf_counter() - t0
    phi = np.ascontiguousarray(est.topic_word_.T)
    ll = comm.allreduce(point_loglik(est.doc_ptr_, est.words_, est.doc_topic_, phi))
    tel = getattr(est, "telemetry_", None) or {}
    if comm.rank == 0:
        with open(out, "w") as fh:
            json.dump({"time": t, "ll": ll, "sampler": est.sampler_, "loglik_per_token": est.loglik_per_token_,
                       "sweep_tokens_per_s_per_rank": est.sweep_tokens_per_s_per_rank_,
                       "telemetry": {k: v for k, v in tel.items() if isinstance(v, (int, float))}}, fh)


def peers(bench):
    """tomotopy (1, 2 threads), lda package, ours at --ranks, interleaved; medians over --repeat rounds."""
    import lda
    import scipy.sparse as sp
    import tomotopy as tp

    from petuum_mpi.apps.lda.estimator import _Corpus

    a = bench.args
    if bench.size != 1:
        sys.exit("bench_lda.py --peers: run it as one process (it starts mpiexec itself)")
    tmp = tempfile.mkdtemp(prefix="bench_lda_")
    try:
        doc_ptr, word_ids, counts = _corpus(a)
        write_bow(os.path.join(tmp, "corpus"), doc_ptr, word_ids, counts, a.words, n_shards=4)
        c = _Corpus(doc_ptr, word_ids, counts, a.words)
        N, D = c.n_tokens, c.n_docs
        X = sp.csr_matrix((counts.astype(np.int64), word_ids, doc_ptr), shape=(D, a.words))
        data = f"LDA corpus {D} docs, {a.words} words, {N / 1e6:.2f}M tokens"
        t0 = time.perf_counter()
        docs = [[str(w) for w in c.words[c.tok_ptr[d]:c.tok_ptr[d + 1]]] for d in range(D)]
        print(f"  tomotopy corpus as word strings: {time.perf_counter() - t0:.1f} s (not counted)", flush=True)
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        print(f"  load: {os.getloadavg()}", flush=True)

        def tomotopy(K, iters, workers):
            m = tp.LDAModel(k=K, alpha=ALPHA, eta=BETA, seed=1)
            m.optim_interval = 0
            for dw in docs:
                m.add_doc(dw)
            t0 = time.perf_counter()
            m.train(iters, workers=workers)
            t = time.perf_counter() - t0
            col = np.array([int(w) for w in m.used_vocabs], dtype=np.int64)
            phi = np.full((a.words, K), 1.0)  # unused words never occur
            phi[col] = np.array([m.get_topic_word_dist(k) for k in range(K)]).T
            theta = np.array([d.get_topic_dist() for d in m.docs], dtype=np.float64)
            return t, point_loglik(c.tok_ptr, c.words, theta, np.ascontiguousarray(phi))

        def ldapkg(K, iters):
            t0 = time.perf_counter()
            m = lda.LDA(n_topics=K, n_iter=iters, alpha=ALPHA, eta=BETA, random_state=1, refresh=10**9).fit(X)
            t = time.perf_counter() - t0
            return t, point_loglik(c.tok_ptr, c.words, m.doc_topic_, np.ascontiguousarray(m.topic_word_.T))

        def ours(K, ranks):
            out = os.path.join(tmp, f"ours-{K}-{ranks}.json")
            cmd = [mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", out,
                   "--k", str(K), "--iters", str(a.iters), "--iters-1000", str(a.iters_1000), "--sampler", a.sampler,
                   "--consistency", a.consistency, "--staleness", str(a.staleness),
                   "--clocks-per-iter", str(a.clocks_per_iter)]
            subprocess.run(cmd, check=True)
            with open(out) as fh:
                res = json.load(fh)
            ours.info[(K, ranks)] = res
            return res["time"], res["ll"]
        ours.info = {}

        for K in a.k:
            iters = a.iters_1000 if K >= 1000 else a.iters
            systems = [("tomotopy 1 thread", lambda: tomotopy(K, iters, 1)),
                       ("tomotopy 2 threads", lambda: tomotopy(K, iters, 2))]
            if not a.no_baseline and K <= a.lda_max_k:
                systems.append(("lda package (1 core)", lambda: ldapkg(K, iters)))
            systems += [(f"ours {R} rank{'s' if R > 1 else ''}", (lambda R=R: ours(K, R))) for R in a.ranks]
            res = {name: [] for name, _ in systems}
            for rnd in range(a.repeat):
                for name, fn in systems:
                    t, ll = fn()
                    res[name].append((t, ll / N))
                    print(f"  K={K} round {rnd}: {name}: {N * iters / t / 1e6:.3f} M tokens/s, "
                          f"log p(w|theta,phi)/token {ll / N:.4f}, load {os.getloadavg()[0]:.1f}", flush=True)
            tput = {n: N * iters / statistics.median(t for t, _ in v) for n, v in res.items()}
            llt = {n: statistics.median(x for _, x in v) for n, v in res.items()}
            ref = "tomotopy 1 thread"
            for n in res:
                info = ours.info.get((K, int(n.split()[1]))) if n.startswith("ours") else None
                extra = f" [{info['sampler']}]" if info else ""
                bench.row(f"LDA fit K={K}, {iters} sweeps: {n}{extra}", data=data, ranks=1,
                          metric="tokens/s (whole fit, median)", value=tput[n], baseline=tput[ref],
                          baseline_name=ref + " (same run)", target=">= 1x per core" if n.startswith("ours") else "")
            for n in res:
                bench.row(f"LDA K={K}, {iters} sweeps: {n} log p(w|theta,phi)/token", data=data, ranks=1,
                          metric="loglik/token (median)", value=llt[n], baseline=llt[ref], baseline_name=ref,
                          target="diff >= -0.01" if n.startswith("ours") else "", diff=llt[n] - llt[ref])
                print(f"  K={K}: {n}: loglik/token - tomotopy = {llt[n] - llt[ref]:+.4f}", flush=True)
            if len(a.ranks) > 1:
                r1, r2 = (f"ours {R} rank{'s' if R > 1 else ''}" for R in a.ranks[:2])
                bench.row(f"LDA fit K={K} speedup {a.ranks[0]} -> {a.ranks[1]} ranks", data=data, metric="speedup",
                          value=tput[r2] / tput[r1], baseline=a.ranks[1] / a.ranks[0], baseline_name="ideal",
                          target=">= 1.8x", ll_diff=llt[r2] - llt[r1])
        print(f"  load: {os.getloadavg()}", flush=True)
    finally:
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
                lk.sweep_plain(tp, words, z, n_dk, n_wk, n_k, d_wk[:0, :0], d_k, ALPHA, BETA, it + 5)
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
