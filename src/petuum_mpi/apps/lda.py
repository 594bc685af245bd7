"""LDA topic model by collapsed Gibbs sampling on the Bösen parameter server.

Model. Word-topic counts ``n_wk`` (V x K, int32) and topic totals ``n_k``
(1 x K, int64) are parameter-server tables that every worker updates with
exact +-1 integer deltas; a document's topic counts ``n_dk`` and its token
assignments ``z`` stay on the rank that holds the document (``read_bow``
balances documents by tokens).

One iteration (= one PS clock) on every rank::

    copy the n_wk rows of the local words and n_k from the PS into a local copy
    sweep the local tokens (sweep_plain: exact, O(K) per token; sweep_sparse: exact,
    O(topics of the document + topics of the word); sweep_mh: Metropolis-Hastings, O(1))
    inc the +-1 deltas of the sweep, zero them, clock()

Under ssp/essp/asp the local copy is stale by up to ``s`` clocks of the other
workers. The samplers clamp negative counts of the copy at 0 in their
probabilities (a stale copy may see another worker's decrement before its
increment); the tables themselves stay exact, and after the final barrier
``n_wk`` equals the counts of all ranks' assignments.

Reported per evaluation: the complete log-likelihood ``log p(w, z)``
(Griffiths & Steyvers; the word part is summed by each rank over a range of
``n_wk`` rows, the document part over its documents, then ``ps.allreduce``),
per-token log-likelihood and tokens/s; at the end held-out perplexity by
document completion (a test corpus or a holdout fraction) and the top words of
every topic.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np

from ..bosen import ENGINE_SCHEMA, ParameterServer, TableSpec
from ..bosen.snapshot import DEFAULT_KEEP
from ..config import Field, Section
from ..errors import ConfigError, DataError, UsageError
from ..runtime import compile_once, get_comm
from . import lda_kernels as lk

#: ``sampler="auto"`` uses the O(K) exact Gibbs sweep below this many topics and the
#: exact SparseLDA sweep from here on (measured crossover, see docs/apps-lda.md).
AUTO_SPARSE_MIN_K = 300

SAMPLERS = ("auto", "mh", "plain", "sparse")

SCHEMA = {
    "model": Section(
        {
            "n_components": Field(int, default=10, min=1, help="number of topics K"),
            "doc_topic_prior": Field(float, default=0.1, min=0.0, min_exclusive=True,
                                     help="symmetric Dirichlet prior alpha of document-topic proportions"),
            "topic_word_prior": Field(float, default=0.01, min=0.0, min_exclusive=True,
                                      help="symmetric Dirichlet prior beta of topic-word distributions"),
            "max_iter": Field(int, default=100, min=1, help="Gibbs sweeps (= parameter-server clocks)"),
            "sampler": Field(str, default="auto", choices=SAMPLERS,
                             help="plain (exact, O(K)/token), sparse (exact SparseLDA, O(topics of doc + topics "
                                  "of word)/token), mh (Metropolis-Hastings, O(1)/token, slower mixing), "
                                  f"auto (plain if K < {AUTO_SPARSE_MIN_K}, else sparse)"),
            "mh_steps": Field(int, default=2, min=1, help="Metropolis-Hastings (doc, word) proposal pairs per token"),
            "clocks_per_iter": Field(int, default=0, min=0,
                                     help="parameter-server clocks per sweep (the local documents are cut into this "
                                          "many chunks; more = fresher counts, more communication); "
                                          "0 = 1 on one rank, 4 on more"),
            "evaluate_every": Field(int, default=1, min=0,
                                    help="compute log p(w,z) every N iterations (0 = only at the end)"),
            "perplexity_every": Field(int, default=0, min=0,
                                      help="held-out perplexity every N iterations (0 = only at the end)"),
            "perplexity_iter": Field(int, default=20, min=1, help="fold-in Gibbs sweeps of document completion"),
            "n_top_words": Field(int, default=10, min=1, help="top words listed per topic"),
        },
        help="LDA hyperparameters (scikit-learn LatentDirichletAllocation names)",
    ),
    "data": Section(
        {
            "holdout": Field(float, default=0.0, min=0.0, max=0.9,
                             help="fraction of training documents held out for perplexity when no test set is "
                                  "given (chosen by run.seed, independent of the rank count)"),
        },
    ),
    "engine": ENGINE_SCHEMA,
}


# ----------------------------------------------------------------------------- corpus helpers

def _expand(doc_ptr, word_ids, counts):
    """Bag of words (doc_ptr over (word, count) pairs) -> token CSR (tok_ptr, words int32)."""
    counts = np.asarray(counts, dtype=np.int64)
    words = np.repeat(np.asarray(word_ids, dtype=np.int32), counts)
    cum = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=cum[1:])
    return cum[np.asarray(doc_ptr, dtype=np.int64)], words


def _from_matrix(X, name: str):
    """A (docs x words) count matrix (scipy sparse or dense) -> (doc_ptr, word_ids, counts, V)."""
    import scipy.sparse as sp

    if sp.issparse(X):
        X = sp.csr_matrix(X)
        X.sum_duplicates()
        X.eliminate_zeros()
        data = X.data
    else:
        A = np.asarray(X)
        if A.ndim != 2:
            raise DataError(f"{name}: expected a 2-d document-word count matrix, got shape {A.shape}")
        X = sp.csr_matrix(A)
        data = X.data
    if data.size and (not np.all(np.isfinite(data)) or np.any(data < 0) or np.any(data != np.round(data))):
        raise DataError(f"{name}: word counts must be non-negative integers")
    lens = np.diff(X.indptr)
    if X.shape[0] == 0:
        raise DataError(f"{name}: no documents")
    if np.any(lens == 0):
        d = int(np.flatnonzero(lens == 0)[0])
        raise DataError(f"{name}: document {d} is empty")
    return X.indptr.astype(np.int64), X.indices.astype(np.int32), data.astype(np.int64), int(X.shape[1])


class _Corpus:
    """Local token corpus: tok_ptr (D+1) int64, words (N) int32, global doc offset."""

    def __init__(self, doc_ptr, word_ids, counts, n_words, doc_start=0, vocab=None):
        self.tok_ptr, self.words = _expand(doc_ptr, word_ids, counts)
        self.n_words = int(n_words)
        self.doc_start = int(doc_start)
        self.vocab = vocab

    @property
    def n_docs(self):
        return self.tok_ptr.size - 1

    @property
    def n_tokens(self):
        return int(self.words.size)

    def subset(self, mask):
        """Documents with mask True, as a new corpus (doc_start kept for reference only)."""
        idx = np.flatnonzero(mask)
        lens = np.diff(self.tok_ptr)[idx]
        c = _Corpus.__new__(_Corpus)
        c.tok_ptr = np.zeros(idx.size + 1, dtype=np.int64)
        np.cumsum(lens, out=c.tok_ptr[1:])
        sel = np.repeat(self.tok_ptr[idx], lens) + (np.arange(int(lens.sum()), dtype=np.int64)
                                                     - np.repeat(c.tok_ptr[:-1], lens))
        c.words = self.words[sel]
        c.n_words, c.doc_start, c.vocab = self.n_words, self.doc_start, self.vocab
        return c


def _load(X, comm, name):
    """A dataset path (collective read_bow) or this rank's count matrix -> _Corpus."""
    if isinstance(X, (str, os.PathLike)):
        from ..data import read_bow

        lc = read_bow(os.fspath(X), comm=comm)
        return _Corpus(lc.doc_ptr, lc.word_ids, lc.counts, lc.n_words, lc.doc_start, lc.vocab)
    if isinstance(X, _Corpus):
        return X
    doc_ptr, word_ids, counts, V = _from_matrix(X, name)
    return _Corpus(doc_ptr, word_ids, counts, V)


def _seed(*parts) -> int:
    """A 31-bit seed from integers (per rank, per sweep)."""
    h = 0x345678
    for p in parts:
        h = (h * 1000003) ^ (int(p) & 0xFFFFFFFF)
        h &= 0xFFFFFFFFFFFF
    return int(h % 2147483647)


# ----------------------------------------------------------------------------- estimator

class LDA:
    """Latent Dirichlet allocation by collapsed Gibbs sampling on the parameter server.

    Collective: every rank of ``comm`` calls :meth:`fit` with its share of the
    documents (or the same dataset path; documents are then split by tokens).

    Parameters
    ----------
    n_components : int, default 10
        Number of topics K.
    doc_topic_prior, topic_word_prior : float, default 0.1, 0.01
        Symmetric Dirichlet priors alpha and beta.
    max_iter : int, default 100
        Gibbs sweeps; each sweep is one parameter-server clock.
    sampler : {"auto", "plain", "sparse", "mh"}, default "auto"
        ``plain``: exact O(K) conditional; ``sparse``: exact SparseLDA sampler, O(topics
        of the document + topics of the word) per token; ``mh``: Metropolis-Hastings
        with doc/word proposals, O(mh_steps) per token whatever K is, but slower mixing
        per sweep; ``auto``: plain when ``K < AUTO_SPARSE_MIN_K``, else sparse.
    mh_steps : int, default 2
    clocks_per_iter : int, default 0
        Parameter-server clocks per sweep: the local documents are cut into this
        many chunks (by tokens), each followed by a pull/push/clock, so other
        workers' updates arrive within the sweep (faster convergence per sweep
        on many ranks; more communication). 0: 1 on one rank, 4 on more.
    evaluate_every : int, default 1
        Compute log p(w, z) every N iterations (0: only at the end).
    perplexity_every : int, default 0
        Held-out perplexity every N iterations (0: only at the end, if a test set exists).
    perplexity_iter : int, default 20
        Fold-in sweeps of document completion (the first half is burn-in).
    n_top_words : int, default 10
    random_state : int, default 0
    consistency, staleness : parameter-server model ("bsp", "ssp", "essp", "asp") and bound s.
    engine : dict, optional
        A full ``[engine]`` section (overrides consistency/staleness), see ``ENGINE_SCHEMA``.
    comm : mpi4py communicator, optional

    Attributes
    ----------
    word_topic_counts_ : (V, K) int32 ndarray, the final ``n_wk`` table (every rank).
    topic_counts_ : (K,) int64 ndarray.
    components_ : (K, V) float64, ``n_wk.T + beta`` (pseudo-counts, as in scikit-learn).
    topic_word_ : (K, V) float64, normalised topics phi.
    doc_topic_ : (n_local_docs, K) float64, theta of this rank's training documents.
    z_ : (n_local_tokens,) int32 assignments of this rank's tokens; ``words_``, ``doc_ptr_`` their corpus.
    doc_start_ : global index of this rank's first document (dataset input).
    n_iter_ : int
    loglik_ : float, final log p(w, z); ``loglik_per_token_`` the same / N.
    history_ : list of dict, one per evaluation (iter, loglik, loglik_per_token, tokens_per_s, ...).
    perplexity_ : float or None, held-out perplexity (document completion).
    top_words_ : (K, n_top_words) int64 word ids; ``top_words_text_`` with the vocabulary (or ids).
    vocab_ : list of str or None.
    tokens_per_s_ : float, training tokens (all ranks) per second of the sampling loop.
    stats_ : dict, parameter-server telemetry (rank 0; None elsewhere).
    """

    def __init__(self, n_components=10, *, doc_topic_prior=0.1, topic_word_prior=0.01, max_iter=100,
                 sampler="auto", mh_steps=2, clocks_per_iter=0, evaluate_every=1, perplexity_every=0,
                 perplexity_iter=20,
                 n_top_words=10, random_state=0, consistency="ssp", staleness=1, engine=None, comm=None):
        self.n_components = n_components
        self.doc_topic_prior = doc_topic_prior
        self.topic_word_prior = topic_word_prior
        self.max_iter = max_iter
        self.sampler = sampler
        self.mh_steps = mh_steps
        self.clocks_per_iter = clocks_per_iter
        self.evaluate_every = evaluate_every
        self.perplexity_every = perplexity_every
        self.perplexity_iter = perplexity_iter
        self.n_top_words = n_top_words
        self.random_state = random_state
        self.consistency = consistency
        self.staleness = staleness
        self.engine = engine
        self.comm = comm

    # -- parameters ------------------------------------------------------------
    def _validate(self):
        def integer(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ConfigError(f"LDA: {name} must be an integer >= {lo}, got {v!r}")

        def positive(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not (math.isfinite(v) and v > 0):
                raise ConfigError(f"LDA: {name} must be a finite number > 0, got {v!r}")

        integer("n_components", 1)
        integer("max_iter", 1)
        integer("mh_steps", 1)
        integer("clocks_per_iter", 0)
        integer("evaluate_every", 0)
        integer("perplexity_every", 0)
        integer("perplexity_iter", 1)
        integer("n_top_words", 1)
        integer("random_state", 0)
        integer("staleness", 0)
        positive("doc_topic_prior")
        positive("topic_word_prior")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"LDA: sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.consistency not in ("bsp", "ssp", "essp", "asp"):
            raise ConfigError(f"LDA: consistency must be one of bsp, ssp, essp, asp, got {self.consistency!r}")

    def sampler_for(self, K: int) -> str:
        """The sampler used for K topics ("plain", "sparse" or "mh")."""
        if self.sampler != "auto":
            return self.sampler
        return "sparse" if K >= AUTO_SPARSE_MIN_K else "plain"

    # -- fit ---------------------------------------------------------------------
    def fit(self, X, test=None, *, holdout: float = 0.0, callback: Callable[[dict], None] | None = None):
        """Fit the model (collective).

        Parameters
        ----------
        X : str or array-like
            A bag-of-words dataset folder (read with ``read_bow``, split over ranks
            by tokens) or this rank's (docs x words) count matrix (scipy sparse or
            dense; all ranks must use the same number of words).
        test : str or array-like, optional
            Held-out documents (same forms) for document-completion perplexity.
        holdout : float, default 0.0
            Without ``test``: hold out this fraction of the training documents
            (chosen by ``random_state`` over global document ids).
        callback : callable, optional
            Called on every rank with each evaluation row (dict).
        """
        self._validate()
        comm = get_comm(self.comm)
        if not (0.0 <= holdout < 1.0):
            raise ConfigError(f"LDA: holdout must be in [0, 1), got {holdout!r}")
        K = int(self.n_components)
        alpha, beta = float(self.doc_topic_prior), float(self.topic_word_prior)
        seed0 = int(self.random_state)

        corpus = _load(X, comm, "X")
        V = corpus.n_words
        # all ranks must agree on V (plain collectives are fine: no server exists yet)
        vs = comm.allgather(V)
        if min(vs) != max(vs):
            raise DataError(f"X: ranks disagree on the number of words ({min(vs)} vs {max(vs)})")
        test_c = None
        if test is not None:
            test_c = _load(test, comm, "test")
            tv = comm.allreduce(test_c.n_words, op=_max())
            if tv > V:
                raise DataError(f"test: has {tv} words but the training corpus has {V}")
            test_c.n_words = V
        elif holdout > 0:
            if isinstance(X, (str, os.PathLike)):
                n_docs_total = comm.allreduce(corpus.n_docs)
                held = np.random.default_rng(seed0).random(n_docs_total) < holdout
                mine = held[corpus.doc_start:corpus.doc_start + corpus.n_docs]
            else:
                mine = np.random.default_rng(_seed(seed0, comm.rank, 7)).random(corpus.n_docs) < holdout
            if mine.all():
                mine[0] = False  # every rank keeps at least one training document
            test_c = corpus.subset(mine)
            corpus = corpus.subset(~mine)
        n_heldout_docs = comm.allreduce(test_c.n_docs if test_c is not None else 0) if (
            test is not None or holdout > 0) else 0
        self.vocab_ = corpus.vocab
        N_total = comm.allreduce(corpus.n_tokens)
        if N_total == 0:
            raise DataError("X: the corpus has no tokens")
        kind = self.sampler_for(K)

        tok_ptr, words = corpus.tok_ptr, corpus.words
        D, N = corpus.n_docs, corpus.n_tokens

        def warm():
            dp = np.array([0, 2, 3], dtype=np.int64)
            ww = np.array([0, 1, 1], dtype=np.int32)
            zz = np.zeros(3, np.int32)
            lk.init_assignments(dp, ww, 2, 0, zz)
            ndk = np.zeros((2, 2), np.int32)
            nwk = np.zeros((2, 2), np.int32)
            nk = np.zeros(2, np.int64)
            lk.count_tables(dp, ww, zz, ndk, nwk, nk)
            mwk = nwk.copy()
            idx = lk.build_word_index(ww, 2)
            dwk, dk = np.zeros_like(nwk), np.zeros_like(nk)
            lk.sweep_mh(dp, ww, zz, ndk, nwk, nk, mwk, *idx, dwk, dk, 0.1, 0.01, 1, 1)
            lk.sweep_plain(dp, ww, zz, ndk, nwk, nk, dwk, dk, 0.1, 0.01, 1)
            lists = lk.build_word_lists(nwk, np.bincount(ww, minlength=2))
            lk.sweep_sparse(dp, ww, zz, ndk, nwk, nk, dwk, dk, *lists, 0.1, 0.01, 1)
            lk.word_rows_loglik(nwk, 0.01)
            lk.topic_totals_loglik(nk, 0.01, 2)
            lk.doc_loglik(dp, ndk, 0.1)
            lk.doc_completion_loglik(dp, ww, nwk, nk, 0.1, 0.01, 2, 1, 0)
            lk.fold_in(dp, ww, nwk, nk, 0.1, 0.01, 2, 1, 0)
            lk.top_words(nwk, 1)

        compile_once(warm, comm)

        engine = dict(self.engine) if self.engine is not None else {
            "consistency": self.consistency, "staleness": int(self.staleness)}
        tables = [TableSpec("n_wk", V, K, "int32"), TableSpec("n_k", 1, K, "int64")]
        # local state
        z = np.empty(N, dtype=np.int32)
        n_dk = np.zeros((D, K), dtype=np.int32)
        nwk = np.zeros((V, K), dtype=np.int32)  # local copy of the n_wk rows of local words
        nk = np.zeros(K, dtype=np.int64)
        d_wk = np.zeros((V, K), dtype=np.int32)  # this clock's deltas
        d_k = np.zeros(K, dtype=np.int64)
        rows = np.unique(words).astype(np.int64)  # n_wk rows this rank reads and writes
        dense = rows.size * 2 > V  # whole-table copies beat fancy indexing
        lo, hi = (V * comm.rank) // comm.size, (V * (comm.rank + 1)) // comm.size  # my LL row range
        self.history_ = []
        cpi = int(self.clocks_per_iter) or (1 if comm.size == 1 else 4)
        self.clocks_per_iter_ = cpi
        ps = ParameterServer.from_config(engine, tables, comm)
        ps.keep_snapshots = engine.get("keep_snapshots", DEFAULT_KEEP)  # [engine] keep_snapshots
        try:
            start_iter = 0
            resumed = ps.resume() if engine.get("resume") else None
            if resumed is not None:
                clk, state = resumed
                start_iter = int(clk) // cpi  # snapshots hold a consistent z at any clock
                zs = None if state is None else state.get("z")
                bad = zs is None or np.asarray(zs).shape != (N,)
                if ps.allreduce(float(bad)) > 0:  # raise on every rank together
                    raise ConfigError(
                        "[engine] resume: the snapshot's assignments do not fit this rank's documents "
                        "(resume with the same data and rank count)")
                z[:] = zs
                lk.count_tables(tok_ptr, words, z, n_dk, np.zeros((V, K), np.int32), np.zeros(K, np.int64))
            else:
                lk.init_assignments(tok_ptr, words, K, _seed(seed0, comm.rank, 1), z)
                lk.count_tables(tok_ptr, words, z, n_dk, d_wk, d_k)
                self._push(ps, rows, dense, d_wk, d_k)
                ps.barrier()  # everyone starts from the complete initial counts
            if kind == "mh":
                m_wk = np.zeros((V, K), dtype=np.int32)
                lk.count_tables(tok_ptr, words, z, np.zeros((D, K), np.int32), m_wk, np.zeros(K, np.int64))
                index = lk.build_word_index(words, V)
            n_chunks = cpi
            chunks = np.searchsorted(tok_ptr, np.linspace(0, N, n_chunks + 1)).astype(np.int64)
            chunks[0], chunks[-1] = 0, D
            chunks = np.maximum.accumulate(chunks)
            if kind == "sparse":  # occurrences of each word per chunk: capacity of the word lists
                occ = [np.bincount(words[tok_ptr[chunks[c]]:tok_ptr[chunks[c + 1]]], minlength=V)
                       for c in range(n_chunks)]
            t_loop = time.perf_counter()
            t_sweep_total = 0.0
            for it in range(start_iter, max(start_iter, int(self.max_iter))):
                t0 = time.perf_counter()
                changed, t_s = 0, 0.0
                for c in range(n_chunks):  # one clock per chunk of the local documents
                    a, b = chunks[c], chunks[c + 1]
                    self._pull(ps, rows, dense, nwk, nk)
                    ts = time.perf_counter()
                    s = _seed(seed0, comm.rank, it, c, 2)
                    if kind == "mh":
                        changed += lk.sweep_mh(tok_ptr[a:b + 1], words, z, n_dk[a:b], nwk, nk, m_wk, *index, d_wk,
                                               d_k, alpha, beta, int(self.mh_steps), s)
                    elif kind == "sparse":  # word lists rebuilt from the fresh copy: O(V_local K)
                        lists = lk.build_word_lists(nwk, occ[c])
                        changed += lk.sweep_sparse(tok_ptr[a:b + 1], words, z, n_dk[a:b], nwk, nk, d_wk, d_k,
                                                   *lists, alpha, beta, s)
                    else:
                        changed += lk.sweep_plain(tok_ptr[a:b + 1], words, z, n_dk[a:b], nwk, nk, d_wk, d_k, alpha,
                                                  beta, s)
                    t_s += time.perf_counter() - ts
                    self._push(ps, rows, dense, d_wk, d_k)
                    ps.clock(state=lambda: {"z": z})
                t3 = time.perf_counter()
                t_sweep_total += t_s
                last = it + 1 == self.max_iter
                ev = self.evaluate_every and ((it + 1) % self.evaluate_every == 0) and not last
                pe = (test_c is not None and self.perplexity_every and (it + 1) % self.perplexity_every == 0
                      and not last)
                if ev or pe:
                    row = {"iter": it + 1}
                    if ev:
                        ll_word, ll_top, ll_doc = self._loglik_parts(ps, lo, hi, tok_ptr, n_dk, V, comm.rank)
                        red = ps.allreduce(np.array([ll_word + ll_top + ll_doc, changed, N / max(t_s, 1e-12),
                                                     t3 - t0, t_s], dtype=np.float64))
                        row.update(loglik=red[0], loglik_per_token=red[0] / N_total, changed=int(red[1]),
                                   sweep_tokens_per_s_per_rank=red[2] / comm.size,
                                   tokens_per_s=N_total / (red[3] / comm.size),
                                   iter_s=red[3] / comm.size, sweep_s=red[4] / comm.size)
                    if pe:
                        full = ps.get("n_wk", None)
                        row["perplexity"] = self._perplexity(ps, test_c, full, ps.get("n_k", 0), it)
                    row["elapsed_s"] = time.perf_counter() - t_loop
                    st = ps.stats()["tables"]["n_wk"]
                    row.update(staleness_mean=st["staleness_mean"], staleness_max=st["staleness_max"],
                               wait_s=ps.stats()["wait_s"])
                    self.history_.append(row)
                    if callback is not None:
                        callback(row)
                elif callback is not None:
                    callback({"iter": it + 1, "_progress_only": True})
            loop_s = time.perf_counter() - t_loop
            ps.barrier()  # every update of every worker applied: the tables are exact now
            full = ps.get("n_wk", None).copy()
            n_k_final = ps.get("n_k", 0).copy()
            ll_word = lk.word_rows_loglik(full[lo:hi], beta)
            ll_top = lk.topic_totals_loglik(n_k_final, beta, V) if comm.rank == 0 else 0.0
            ll_doc = lk.doc_loglik(tok_ptr, n_dk, alpha)
            n_iter = int(self.max_iter) - start_iter
            red = ps.allreduce(np.array([ll_word + ll_top + ll_doc, loop_s, t_sweep_total, N], dtype=np.float64))
            self.loglik_ = float(red[0])
            self.loglik_per_token_ = self.loglik_ / N_total
            loop_s_mean = red[1] / comm.size
            self.tokens_per_s_ = N_total * n_iter / loop_s_mean if loop_s_mean > 0 else float("nan")
            self.sweep_tokens_per_s_per_rank_ = (red[3] * n_iter / red[2]) if red[2] > 0 else float("nan")
            self.perplexity_ = None
            if test_c is not None:
                self.perplexity_ = self._perplexity(ps, test_c, full, n_k_final, self.max_iter)
            final = {"iter": int(self.max_iter), "final": True, "loglik": self.loglik_, "loglik_per_token": self.loglik_per_token_,
                     "tokens_per_s": self.tokens_per_s_,
                     "sweep_tokens_per_s_per_rank": self.sweep_tokens_per_s_per_rank_,
                     "elapsed_s": loop_s}
            if self.perplexity_ is not None:
                final["perplexity"] = self.perplexity_
            st = ps.stats()
            final.update(staleness_mean=st["tables"]["n_wk"]["staleness_mean"],
                         staleness_max=st["tables"]["n_wk"]["staleness_max"], wait_s=st["wait_s"])
            self.history_.append(final)
            if callback is not None:
                callback(final)
            self.stats_ = ps.stats_all()
        except BaseException:
            ps.__exit__(*__import__("sys").exc_info())
            raise
        ps.shutdown()

        self.n_iter_ = int(self.max_iter)
        self.sampler_ = kind
        self.n_heldout_docs_ = n_heldout_docs
        self.n_tokens_ = N_total
        self._set_model(full, n_k_final, V)
        self.z_ = z
        self.words_ = words
        self.doc_ptr_ = tok_ptr
        self.doc_start_ = corpus.doc_start
        self.doc_topic_ = (n_dk + alpha) / (np.diff(tok_ptr)[:, None] + K * alpha)
        return self

    # -- pieces of the loop -------------------------------------------------------
    @staticmethod
    def _pull(ps, rows, dense, nwk, nk):
        """Local copy <- PS (rows of local words; the whole table when most rows are local)."""
        if dense:
            np.copyto(nwk, ps.get("n_wk", None))
        elif rows.size:
            nwk[rows] = ps.get("n_wk", rows)
        np.copyto(nk, ps.get("n_k", 0))

    @staticmethod
    def _push(ps, rows, dense, d_wk, d_k):
        """inc this clock's deltas (only rows that changed) and zero them."""
        if rows.size:
            ch = rows[d_wk[rows].any(axis=1)] if not dense else np.flatnonzero(d_wk.any(axis=1))
            if ch.size * 4 > 3 * d_wk.shape[0]:  # most rows changed: one contiguous inc is cheaper
                ps.inc("n_wk", None, d_wk)
                d_wk[:] = 0
            elif ch.size:
                ps.inc("n_wk", ch, d_wk[ch])
                d_wk[ch] = 0
        ps.inc("n_k", 0, d_k)
        d_k[:] = 0

    def _loglik_parts(self, ps, lo, hi, tok_ptr, n_dk, V, rank):
        beta, alpha = float(self.topic_word_prior), float(self.doc_topic_prior)
        ll_word = lk.word_rows_loglik(ps.get("n_wk", slice(lo, hi)), beta) if hi > lo else 0.0
        ll_top = lk.topic_totals_loglik(ps.get("n_k", 0), beta, V) if rank == 0 else 0.0
        return ll_word, ll_top, lk.doc_loglik(tok_ptr, n_dk, alpha)

    def _perplexity(self, ps, test_c, n_wk, n_k, it):
        ll, nh = 0.0, 0
        if test_c.n_docs:
            ll, nh = lk.doc_completion_loglik(test_c.tok_ptr, test_c.words, n_wk, n_k, float(self.doc_topic_prior),
                                              float(self.topic_word_prior), int(self.perplexity_iter),
                                              int(self.perplexity_iter) // 2,
                                              _seed(self.random_state, ps.comm.rank, it, 3))
        red = ps.allreduce(np.array([ll, nh], dtype=np.float64))
        return float(math.exp(-red[0] / red[1])) if red[1] > 0 else float("nan")

    def _set_model(self, n_wk, n_k, V):
        self.word_topic_counts_ = n_wk
        self.topic_counts_ = np.asarray(n_k, dtype=np.int64)
        self.n_features_in_ = V
        self.top_words_ = lk.top_words(n_wk, int(self.n_top_words))
        vocab = getattr(self, "vocab_", None)
        self.top_words_text_ = [[vocab[j] if vocab is not None else str(j) for j in row] for row in self.top_words_]

    @property
    def components_(self):
        """(K, V) float64 pseudo-counts ``n_wk.T + beta`` (computed on access)."""
        self._check_fitted()
        return self.word_topic_counts_.T.astype(np.float64) + float(self.topic_word_prior)

    @property
    def topic_word_(self):
        """(K, V) float64 topics ``phi_k = (n_wk + beta)/(n_k + V beta)`` (computed on access)."""
        c = self.components_
        c /= (self.topic_counts_[:, None] + self.n_features_in_ * float(self.topic_word_prior))
        return c

    # -- using a fitted model ------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "word_topic_counts_"):
            raise UsageError("LDA: the model is not fitted (call fit or LDA.load first)")

    def transform(self, X, n_iter: int = 20):
        """Topic proportions (docs x K) of documents ``X`` (a count matrix, local, not collective)."""
        self._check_fitted()
        doc_ptr, word_ids, counts, V = _from_matrix(X, "X")
        if V != self.n_features_in_:
            raise DataError(f"X: has {V} words, the model has {self.n_features_in_}")
        c = _Corpus(doc_ptr, word_ids, counts, V)
        return lk.fold_in(c.tok_ptr, c.words, self.word_topic_counts_, self.topic_counts_,
                          float(self.doc_topic_prior), float(self.topic_word_prior), int(n_iter), int(n_iter) // 2,
                          _seed(self.random_state, 11))

    def perplexity(self, X, n_iter: int = 20) -> float:
        """Document-completion perplexity of documents ``X`` (count matrix; local, not collective)."""
        self._check_fitted()
        doc_ptr, word_ids, counts, V = _from_matrix(X, "X")
        if V != self.n_features_in_:
            raise DataError(f"X: has {V} words, the model has {self.n_features_in_}")
        c = _Corpus(doc_ptr, word_ids, counts, V)
        ll, nh = lk.doc_completion_loglik(c.tok_ptr, c.words, self.word_topic_counts_, self.topic_counts_,
                                          float(self.doc_topic_prior), float(self.topic_word_prior), int(n_iter),
                                          int(n_iter) // 2, _seed(self.random_state, 12))
        return float(math.exp(-ll / nh)) if nh else float("nan")

    def model_arrays(self) -> tuple[dict, dict]:
        """(arrays, attrs) of the fitted model, as written to ``model.h5``."""
        self._check_fitted()
        arrays = {"word_topic_counts": self.word_topic_counts_, "topic_counts": self.topic_counts_,
                  "top_words": self.top_words_}
        if self.vocab_ is not None:
            enc = [w.encode("utf-8") for w in self.vocab_]
            arrays["vocab"] = np.array(enc, dtype=f"S{max(1, max(map(len, enc), default=1))}")
        attrs = {"model": "lda", "n_components": int(self.n_components),
                 "doc_topic_prior": float(self.doc_topic_prior), "topic_word_prior": float(self.topic_word_prior),
                 "n_iter": int(self.n_iter_), "sampler": self.sampler_, "loglik": float(self.loglik_),
                 "random_state": int(self.random_state)}
        return arrays, attrs

    def save(self, path: str) -> None:
        """Write the model to an HDF5 file (call on one rank)."""
        import h5py

        arrays, attrs = self.model_arrays()
        with h5py.File(path, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=v)
            f.attrs.update(attrs)

    @classmethod
    def load(cls, path: str) -> "LDA":
        """A fitted model from ``model.h5`` (run directory) or :meth:`save`."""
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as e:
            raise DataError(f"{path}: cannot open the model file: {e}") from None
        with f:
            if f.attrs.get("model") != "lda" or "word_topic_counts" not in f:
                raise DataError(f"{path}: not an LDA model file")
            m = cls(int(f.attrs["n_components"]), doc_topic_prior=float(f.attrs["doc_topic_prior"]),
                    topic_word_prior=float(f.attrs["topic_word_prior"]),
                    random_state=int(f.attrs.get("random_state", 0)))
            n_wk = f["word_topic_counts"][...]
            n_k = f["topic_counts"][...]
            m.vocab_ = None
            if "vocab" in f:
                m.vocab_ = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in f["vocab"][...]]
            m.n_iter_ = int(f.attrs.get("n_iter", 0))
            m.sampler_ = str(f.attrs.get("sampler", ""))
            m.loglik_ = float(f.attrs.get("loglik", float("nan")))
            m.n_top_words = int(f["top_words"].shape[1]) if "top_words" in f else 10
        m._set_model(n_wk, n_k, n_wk.shape[0])
        return m


def _max():
    from mpi4py import MPI

    return MPI.MAX


# ----------------------------------------------------------------------------- job runner

def run_job(job: dict, ctx) -> dict:
    """Run an ``app = "lda"`` job (collective); returns the summary figures."""
    m, eng = job["model"], job["engine"]
    est = LDA(m["n_components"], doc_topic_prior=m["doc_topic_prior"], topic_word_prior=m["topic_word_prior"],
              max_iter=m["max_iter"], sampler=m["sampler"], mh_steps=m["mh_steps"],
              clocks_per_iter=m["clocks_per_iter"],
              evaluate_every=m["evaluate_every"], perplexity_every=m["perplexity_every"],
              perplexity_iter=m["perplexity_iter"], n_top_words=m["n_top_words"], random_state=job["run"]["seed"],
              engine=eng, comm=ctx.comm)
    log_every = job["run"].get("log_every", 1)
    prog = ctx.progress(m["max_iter"], "lda")

    def on_row(row):
        if row.get("_progress_only"):
            prog.update(1)
            return
        figs = {k: row[k] for k in ("loglik_per_token", "tokens_per_s", "perplexity") if k in row}
        prog.update(0 if row.get("final") else 1, **figs)
        if row["iter"] % log_every == 0 or row["iter"] == m["max_iter"]:
            ctx.rundir.log_metrics(row)

    try:
        est.fit(job["data"]["train"], test=job["data"].get("test"), holdout=job["data"].get("holdout", 0.0),
                callback=on_row)
    finally:
        prog.close()
    arrays, attrs = est.model_arrays()
    ctx.rundir.save_model(arrays, attrs)
    lines = [f"topic {k:3d} ({int(est.topic_counts_[k])} tokens): " + " ".join(ws)
             for k, ws in enumerate(est.top_words_text_)]
    for line in lines:
        ctx.rundir.log(line)
    rd = getattr(ctx.rundir, "path", None)
    if ctx.comm.rank == 0 and rd:
        with open(os.path.join(rd, "topics.txt"), "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    st = est.stats_ or {}
    tab = st.get("tables", {}).get("n_wk", {})
    summary: dict[str, Any] = {
        "n_components": int(est.n_components), "sampler": est.sampler_, "n_iter": est.n_iter_,
        "n_tokens": int(est.n_tokens_), "loglik": est.loglik_, "loglik_per_token": est.loglik_per_token_,
        "tokens_per_s": est.tokens_per_s_, "sweep_tokens_per_s_per_rank": est.sweep_tokens_per_s_per_rank_,
        "consistency": eng["consistency"], "staleness": eng["staleness"],
        "staleness_mean": tab.get("staleness_mean"), "staleness_max": tab.get("staleness_max"),
        "wait_s_max": st.get("wait_s_max"), "bytes_sent": st.get("bytes_sent"), "msgs": st.get("msgs"),
        "top_words": {str(k): " ".join(ws) for k, ws in enumerate(est.top_words_text_)},
    }
    if est.perplexity_ is not None:
        summary["perplexity"] = est.perplexity_
        summary["n_heldout_docs"] = est.n_heldout_docs_
    return summary
