"""LDA topic model by collapsed Gibbs sampling on the Bösen parameter server.

Model. Word-topic counts ``n_wk`` (V x K, int32) and topic totals ``n_k``
(1 x K, int64) are parameter-server tables that every worker updates with
exact +-1 integer deltas; a document's topic counts ``n_dk`` and its token
assignments ``z`` stay on the rank that holds the document (each rank takes a
contiguous block of documents with about the same number of tokens).

One sweep (= one epoch) is ``clocks_per_iter`` clocks; each clock handles one
chunk of the local documents::

    copy the n_wk rows of the local words and n_k from the PS into a local copy
    sweep the chunk (sweep_plain: exact, O(K) per token; sweep_sparse: exact,
    O(topics of the document + topics of the word); sweep_mh: Metropolis-Hastings, O(1))
    inc the +-1 deltas of the chunk, zero them; the driver then clocks

Under ssp/essp/asp the local copy is stale by up to ``s`` clocks of the other
workers. The samplers clamp negative counts of the copy at 0 in their
probabilities; the tables themselves stay exact, and after the final barrier
``n_wk`` equals the counts of all ranks' assignments.

Metrics rows: ``objective`` = ``-log p(w, z)`` (the complete log-likelihood of
Griffiths & Steyvers, negated so that it falls), ``loglik`` = ``log p(w, z)``,
``loglik_per_token``, ``changed`` (assignments changed in the last sweep),
``tokens_per_s``; with test data (or a holdout) ``perplexity`` by document
completion.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
from sklearn.base import TransformerMixin

from ...bosen import TableSpec
from ...drivers import DataParallelEstimator
from ...errors import ConfigError
from ...estimator import InputError, Param
from ...runtime import get_comm, warm_once
from . import kernels as lk

#: ``sampler="auto"`` uses the O(K) exact Gibbs sweep below this many topics and the
#: exact SparseLDA sweep from here on (measured crossover, see docs/apps-lda.md).
AUTO_SPARSE_MIN_K = 300

SAMPLERS = ("auto", "mh", "plain", "sparse")

_NO_DELTAS = np.zeros((0, 0), dtype=np.int32)  # sweep_plain: do not track the word-topic deltas


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
    from sklearn.utils.validation import check_array

    try:
        X = sp.csr_matrix(check_array(X, accept_sparse="csr", dtype="numeric", input_name=name))
    except (ValueError, TypeError) as e:
        raise InputError(f"{name}: {e}") from None
    X.sum_duplicates()
    X.eliminate_zeros()
    data = X.data
    if np.any(data < 0):
        raise InputError(f"{name}: Negative values in data: word counts must be non-negative integers")
    if np.any(data != np.round(data)):
        raise InputError(f"{name}: word counts must be non-negative integers")
    lens = np.diff(X.indptr)
    if np.any(lens == 0):
        raise InputError(f"{name}: document {int(np.flatnonzero(lens == 0)[0])} is empty")
    return X.indptr.astype(np.int64), X.indices.astype(np.int32), data.astype(np.int64), int(X.shape[1])


class _Corpus:
    """Local token corpus: tok_ptr (D+1) int64, words (N) int32, global doc offset."""

    def __init__(self, doc_ptr, word_ids, counts, n_words, doc_start=0, vocab=None):
        self.tok_ptr, self.words = _expand(doc_ptr, word_ids, counts)
        self.n_words, self.doc_start, self.vocab = int(n_words), int(doc_start), vocab

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


def _load(r, X, name, train):
    """A dataset folder (each rank reads its block) or the full count matrix -> this rank's _Corpus."""
    from ...data import partition_rows, read_bow

    if isinstance(X, (str, os.PathLike)):
        lc = read_bow(os.fspath(X), comm=r.comm)
        c = _Corpus(lc.doc_ptr, lc.word_ids, lc.counts, lc.n_words, lc.doc_start, lc.vocab)
        c.n_docs_total = int(r.allreduce(float(c.n_docs)))
        return c
    doc_ptr, word_ids, counts, V = _from_matrix(X, name)
    D = doc_ptr.size - 1
    if train and D == 0:
        raise InputError(f"{name}: no documents")
    # every rank must pass the same corpus (sums of x and x^2 agree with size * x only then)
    s = r.allreduce(np.array([D, D * D, V, V * V], dtype=np.float64))
    if s[1] * r.size != s[0] ** 2 or s[3] * r.size != s[2] ** 2:
        raise InputError(f"{name}: ranks disagree on the corpus shape (pass the full corpus on every rank)")
    lens = np.add.reduceat(counts, doc_ptr[:-1]) if D else np.zeros(0, np.int64)
    lo, hi = (partition_rows(D, r.size, lens) if D >= r.size
              else [(min(i, D), min(i + 1, D)) for i in range(r.size)])[r.rank]
    a, b = doc_ptr[lo], doc_ptr[hi]
    c = _Corpus(doc_ptr[lo:hi + 1] - a, word_ids[a:b], counts[a:b], V, lo)
    c.n_docs_total = D
    return c


def _seed(*parts) -> int:
    """A 31-bit seed from integers (per rank, per sweep)."""
    h = 0x345678
    for p in parts:
        h = (h * 1000003) ^ (int(p) & 0xFFFFFFFF)
        h &= 0xFFFFFFFFFFFF
    return int(h % 2147483647)


def _warm_common():
    """The kernels of every fit (set-up, log-likelihood, top words) on tiny inputs; returns the inputs."""
    dp, ww, zz = np.array([0, 2, 3], dtype=np.int64), np.array([0, 1, 1], dtype=np.int32), np.zeros(3, np.int32)
    lk.init_assignments(dp, ww, 2, 0, zz)
    ndk, nwk, nk = np.zeros((2, 2), np.int32), np.zeros((2, 2), np.int32), np.zeros(2, np.int64)
    lk.count_tables(dp, ww, zz, ndk, nwk, nk)
    lk.word_rows_loglik(nwk, 0.01)
    lk.topic_totals_loglik(nk, 0.01, 2)
    lk.doc_loglik(dp, ndk, 0.1)
    lk.top_words(nwk, 1)
    return dp, ww, zz, ndk, nwk, nk, np.zeros_like(nwk), np.zeros_like(nk)


def warmup_plain():
    """Numba kernels of a fit with sweep_plain (compiled or loaded from the cache before the first clock)."""
    dp, ww, zz, ndk, nwk, nk, dwk, dk = _warm_common()
    lk.sweep_plain(dp, ww, zz, ndk, nwk, nk, dwk, dk, 0.1, 0.01, 1)
    lk.sweep_plain(dp, ww, zz, ndk, nwk, nk, _NO_DELTAS, dk, 0.1, 0.01, 1)


def warmup_sparse():
    """Numba kernels of a fit with sweep_sparse."""
    dp, ww, zz, ndk, nwk, nk, dwk, dk = _warm_common()
    lk.sweep_sparse(dp, ww, zz, ndk, nwk, nk, dwk, dk, *lk.build_word_lists(nwk, np.bincount(ww, minlength=2)),
                    0.1, 0.01, 1)


def warmup_mh():
    """Numba kernels of a fit with sweep_mh."""
    dp, ww, zz, ndk, nwk, nk, dwk, dk = _warm_common()
    lk.sweep_mh(dp, ww, zz, ndk, nwk, nk, nwk.copy(), *lk.build_word_index(ww, 2), dwk, dk, 0.1, 0.01, 1, 1)


def warmup_test():
    """Numba kernels of held-out perplexity (document completion) and of transform."""
    dp, ww, zz, ndk, nwk, nk, dwk, dk = _warm_common()
    lk.doc_completion_loglik(dp, ww, nwk, nk, 0.1, 0.01, 2, 1, 0)
    lk.fold_in(dp, ww, nwk, nk, 0.1, 0.01, 2, 1, 0)


_WARMUP = {"plain": warmup_plain, "sparse": warmup_sparse, "mh": warmup_mh}


def warmup():
    """Every kernel once on tiny inputs."""
    for f in (*_WARMUP.values(), warmup_test):
        f()


# ----------------------------------------------------------------------------- estimator
class LDA(TransformerMixin, DataParallelEstimator):
    """Latent Dirichlet allocation by collapsed Gibbs sampling on the parameter server.

    ``fit(X, test=None)`` is collective: ``X`` is a bag-of-words dataset folder or the
    full (docs x words) count matrix on every rank; each rank takes a block of documents
    with about the same number of tokens.

    Attributes: ``word_topic_counts_`` (V x K int32, the final ``n_wk``), ``topic_counts_``
    (K,), ``components_`` / ``topic_word_`` (K x V, computed on access), ``doc_topic_`` (computed on
    access from ``doc_topic_counts_``, the local n_dk),
    ``z_``, ``words_``, ``doc_ptr_``, ``doc_start_`` (this rank's documents), ``loglik_``,
    ``loglik_per_token_``, ``perplexity_`` (None without test data), ``top_words_``,
    ``top_words_text_``, ``vocab_``, ``tokens_per_s_``, ``sampler_``, ``n_iter_`` (sweeps),
    ``history_``, ``telemetry_``.
    """

    app_name = "lda"
    params = {
        "n_components": Param(10, int, lo=1, doc="number of topics K"),
        "doc_topic_prior": Param(0.1, float, lo=0, lo_open=True,
                                 doc="symmetric Dirichlet prior alpha of document-topic proportions"),
        "topic_word_prior": Param(0.01, float, lo=0, lo_open=True,
                                  doc="symmetric Dirichlet prior beta of topic-word distributions"),
        "max_iter": Param(100, int, lo=1, doc="Gibbs sweeps (epochs)"),
        "sampler": Param("auto", str, choices=SAMPLERS,
                         doc="plain (exact, O(K)/token), sparse (exact SparseLDA, O(topics of doc + topics of word)"
                             "/token), mh (Metropolis-Hastings, O(1)/token, slower mixing), "
                             f"auto (plain if K < {AUTO_SPARSE_MIN_K}, else sparse)"),
        "mh_steps": Param(2, int, lo=1, doc="Metropolis-Hastings (doc, word) proposal pairs per token"),
        "clocks_per_iter": Param(0, int, lo=0, doc="parameter-server clocks per sweep. plain/sparse: the vocabulary "
                                 "is cut into this many word blocks (equal token counts) and at each clock every rank "
                                 "samples its tokens of another block, so no two ranks change the same n_wk rows in a "
                                 "clock; mh: the local documents are cut into this many chunks. 0 = the number of "
                                 "ranks (plain/sparse), 1 on one rank and 4 on more (mh)"),
        "evaluate_every": Param(1, int, lo=0, doc="compute log p(w,z) every N sweeps (0 = only at the end)"),
        "perplexity_every": Param(0, int, lo=0, doc="held-out perplexity every N sweeps (0 = only at the end)"),
        "perplexity_iter": Param(20, int, lo=1, doc="fold-in Gibbs sweeps of document completion"),
        "n_top_words": Param(10, int, lo=1, doc="top words listed per topic"),
        "holdout": Param(0.0, float, lo=0, hi=0.9, section="data",
                         doc="fraction of training documents held out for perplexity when no test set is given "
                             "(chosen by the seed, independent of the rank count)"),
        # the driver's cadence comes from clocks_per_iter / evaluate_every; LDA runs max_iter sweeps
        "clocks_per_epoch": None, "eval_every": None, "tol": None,
    }
    figures_table = "n_wk"
    warmup = None  # tables() warms only the kernels this fit uses (the sampler's; fold-in with test data)

    def sampler_for(self, K: int) -> str:
        """The sampler used for K topics ("plain", "sparse" or "mh")."""
        return self.sampler if self.sampler != "auto" else ("sparse" if K >= AUTO_SPARSE_MIN_K else "plain")

    def _cpi(self, comm) -> int:
        size = get_comm(comm).size
        if self.clocks_per_iter:
            return int(self.clocks_per_iter)
        return 4 if size > 1 and self.sampler == "mh" else size

    def _check_params(self):
        p = super()._check_params()
        cpi = p.clocks_per_epoch = self._cpi(p.comm)
        every = [e for e in (p.evaluate_every, p.perplexity_every) if e]
        p.eval_every = cpi * (math.gcd(*every) if every else p.max_iter)
        p.tol = None
        return p

    def progress_total(self) -> int:
        return int(self.max_iter) * self._cpi(self.comm)

    # -- data ---------------------------------------------------------------------
    def read(self, r, X, y):
        r.corpus = _load(r, X, "X", True)

    def read_test(self, r, test):
        r.test_c = _load(r, test, "test", False)
        tv = r.allreduce(np.array([r.test_c.n_words, r.corpus.n_words], dtype=np.float64))
        if tv[0] > tv[1]:
            raise InputError(f"test: has {r.test_c.n_words} words but the training corpus has {r.corpus.n_words}")
        r.test_c.n_words = r.corpus.n_words

    def tables(self, r):
        p, c = r.p, r.corpus
        r.test_c = getattr(r, "test_c", None)
        r.n_heldout = 0
        if r.has_test:
            r.n_heldout = int(r.allreduce(float(r.test_c.n_docs)))
        elif p.holdout > 0:
            held = np.random.default_rng(r.seed).random(c.n_docs_total) < p.holdout
            mine = held[c.doc_start:c.doc_start + c.n_docs]
            if mine.all():
                mine[0] = False  # every rank keeps at least one training document
            r.test_c, r.corpus = c.subset(mine), c.subset(~mine)
            r.n_heldout = int(r.allreduce(float(r.test_c.n_docs)))
        c = r.corpus
        r.N_total = int(r.allreduce(float(c.n_tokens)))
        if r.N_total == 0:
            raise InputError("X: the corpus has no tokens")
        V, K, D, N = c.n_words, p.n_components, c.n_docs, c.n_tokens
        r.V, r.K, r.cpi, r.kind = V, K, p.clocks_per_epoch, self.sampler_for(K)
        r.alpha, r.beta = p.doc_topic_prior, p.topic_word_prior
        warm_once(_WARMUP[r.kind], r.comm)
        if r.test_c is not None:
            warm_once(warmup_test, r.comm)
        r.z = np.empty(N, dtype=np.int32)
        r.n_dk = np.zeros((D, K), dtype=np.int32)
        r.nwk = np.zeros((V, K), dtype=np.int32)  # local copy of the n_wk rows of local words
        r.nk = np.zeros(K, dtype=np.int64)
        r.d_wk, r.d_k = np.zeros((V, K), dtype=np.int32), np.zeros(K, dtype=np.int64)  # this clock's deltas
        r.wcount = np.bincount(c.words, minlength=V)  # local occurrences of each word
        r.rows = np.flatnonzero(r.wcount).astype(np.int64)  # n_wk rows this rank reads and writes
        r.lo, r.hi = (V * r.rank) // r.size, (V * (r.rank + 1)) // r.size  # my log-likelihood row range
        r.blocks = r.kind != "mh"  # mh's doc proposal needs all of a document's tokens in one sweep
        if r.blocks:
            self._word_blocks(r)
        else:
            ch = np.searchsorted(c.tok_ptr, np.linspace(0, N, r.cpi + 1)).astype(np.int64)
            ch[0], ch[-1] = 0, D
            r.chunks = np.maximum.accumulate(ch)
        if r.kind == "plain":
            r.base = np.zeros_like(r.nwk)
        r.changed, r.t_sweep, r.t_loop, r.t_end = 0, 0.0, None, None
        return [TableSpec("n_wk", V, K, "int32"), TableSpec("n_k", 1, K, "int64")]

    @staticmethod
    def _word_blocks(r):
        """Word blocks of about equal global token counts; the local tokens reordered
        block-major, then by document (``r.wb`` block bounds, ``r.order`` token permutation,
        ``r.bwords`` words in that order, ``r.bptr[b]`` block b's document pointers,
        ``r.zb`` the assignments in that order, ``r.occ[b]`` word occurrences of block b)."""
        c, B, V, D = r.corpus, r.cpi, r.V, r.corpus.n_docs
        cum = np.cumsum(r.allreduce(r.wcount.astype(np.float64)))
        wb = np.searchsorted(cum, np.arange(1, B) * (cum[-1] / B), side="left") + 1
        r.wb = np.concatenate(([0], np.minimum(wb, V), [V])).astype(np.int64)
        # block of each token by a per-word lookup; tokens are in document order, so a stable sort
        # by block gives block-major then document order (radix sort of the small block ids: O(N))
        bt = np.int16 if B < 2**15 else np.int64
        blk = np.repeat(np.arange(B, dtype=bt), np.diff(r.wb))[c.words]
        r.order = np.argsort(blk, kind="stable")
        r.bwords = np.ascontiguousarray(c.words[r.order])
        doc_of = np.repeat(np.arange(D, dtype=np.int64), np.diff(c.tok_ptr))
        starts = np.zeros(B * D + 1, dtype=np.int64)
        np.cumsum(np.bincount(blk * np.int64(D) + doc_of, minlength=B * D), out=starts[1:])
        r.bptr = [starts[b * D:(b + 1) * D + 1] for b in range(B)]
        r.zb = np.empty_like(r.z)
        if r.kind == "sparse":  # occurrences of each word per block: capacity of the word lists
            r.occ = [np.bincount(r.bwords[p[0]:p[-1]], minlength=V) for p in r.bptr]

    # -- the chain -----------------------------------------------------------------
    def start(self, r):
        c = r.corpus
        lk.init_assignments(c.tok_ptr, c.words, r.K, _seed(r.seed, r.rank, 1), r.z)
        lk.count_tables(c.tok_ptr, c.words, r.z, r.n_dk, r.d_wk, r.d_k)
        self._push(r, 0, r.V)
        self._mh_setup(r)

    def state(self, r):
        if r.blocks:
            r.z[r.order] = r.zb
        return {"z": r.z}

    def restore(self, r, state):
        c = r.corpus
        zs = None if state is None else state.get("z")
        bad = zs is None or np.asarray(zs).shape != r.z.shape
        if r.allreduce(float(bad)) > 0:  # raise on every rank together
            raise ConfigError("[engine] resume: the snapshot's assignments do not fit this rank's documents "
                              "(resume with the same data and rank count)")
        r.z[:] = zs
        lk.count_tables(c.tok_ptr, c.words, r.z, r.n_dk, np.zeros_like(r.nwk), np.zeros_like(r.nk))
        self._mh_setup(r)

    @staticmethod
    def _mh_setup(r):
        if r.blocks:
            r.zb[:] = r.z[r.order]
        if r.kind == "mh":
            c = r.corpus
            r.m_wk = np.zeros_like(r.nwk)
            lk.count_tables(c.tok_ptr, c.words, r.z, np.zeros_like(r.n_dk), r.m_wk, np.zeros_like(r.nk))
            r.index = lk.build_word_index(c.words, r.V)

    def step(self, r):
        if r.t_loop is None:
            r.t_loop, r.clk_loop = time.perf_counter(), r.clock
        c, k = r.corpus, r.clock % r.cpi
        if k == 0:
            r.changed = 0
        if r.blocks:  # this clock's word block: another one on every rank
            bk = (k + r.rank) % r.cpi
            lo, hi = r.wb[bk], r.wb[bk + 1]
            args = (r.bptr[bk], r.bwords, r.zb, r.n_dk, r.nwk, r.nk)
        else:
            a, b = r.chunks[k], r.chunks[k + 1]
            lo, hi, bk = 0, r.V, k
            args = (c.tok_ptr[a:b + 1], c.words, r.z, r.n_dk[a:b], r.nwk, r.nk)
        self._pull(r, lo, hi)
        ts = time.perf_counter()
        s = _seed(r.seed, r.rank, r.epoch, k, 2)
        if r.kind == "mh":
            r.changed += lk.sweep_mh(*args, r.m_wk, *r.index, r.d_wk, r.d_k, r.alpha, r.beta, r.p.mh_steps, s)
        elif r.kind == "sparse":  # word lists rebuilt from the fresh copy: O(V_local K)
            r.changed += lk.sweep_sparse(*args, r.d_wk, r.d_k, *lk.build_word_lists(r.nwk, r.occ[bk]), r.alpha,
                                         r.beta, s)
        else:  # the word-topic deltas are n_wk minus the pulled copy (cheaper than tracking them per token)
            r.changed += lk.sweep_plain(*args, _NO_DELTAS, r.d_k, r.alpha, r.beta, s)
            np.subtract(r.nwk[lo:hi], r.base[lo:hi], out=r.d_wk[lo:hi])
        r.t_sweep += time.perf_counter() - ts
        self._push(r, lo, hi)

    def flush(self, r):
        r.t_end = time.perf_counter()

    @staticmethod
    def _pull(r, lo, hi):
        """Local copy <- PS: the n_wk rows lo..hi of local words (all of them when most are
        local), and n_k."""
        rows = r.rows[(r.rows >= lo) & (r.rows < hi)]
        if rows.size * 2 > hi - lo:
            r.nwk[lo:hi] = r.ps.get("n_wk", slice(lo, hi))
        elif rows.size:
            r.nwk[rows] = r.ps.get("n_wk", rows)
        np.copyto(r.nk, r.ps.get("n_k", 0))
        if r.kind == "plain":  # the copy before the sweep, to take the deltas from
            np.copyto(r.base[lo:hi], r.nwk[lo:hi])

    @staticmethod
    def _push(r, lo, hi):
        """inc the deltas of rows lo..hi (only rows that changed) and n_k, and zero them."""
        ps, d = r.ps, r.d_wk[lo:hi]
        ch = np.flatnonzero(d.any(axis=1))
        if ch.size * 4 > 3 * (hi - lo):  # most rows changed: one contiguous inc is cheaper
            ps.inc("n_wk", slice(lo, hi), d)
            d[:] = 0
        elif ch.size:
            ps.inc("n_wk", ch + lo, d[ch])
            d[ch] = 0
        ps.inc("n_k", 0, r.d_k)
        r.d_k[:] = 0

    # -- figures ---------------------------------------------------------------------
    def metrics(self, r):
        p, c = r.p, r.corpus
        final = r.clock >= p.max_iter * r.cpi
        ep = r.clock // r.cpi
        pe = r.test_c is not None and (final or bool(p.perplexity_every and ep % p.perplexity_every == 0))
        ev = final or not pe or bool(p.evaluate_every and ep % p.evaluate_every == 0)
        out = {}
        if ev:
            ll = lk.word_rows_loglik(r.ps.get("n_wk", slice(r.lo, r.hi)), r.beta) if r.hi > r.lo else 0.0
            ll += lk.topic_totals_loglik(r.ps.get("n_k", 0), r.beta, r.V) if r.rank == 0 else 0.0
            now = r.t_end if final and r.t_end is not None else time.perf_counter()
            out.update(loglik=ll + lk.doc_loglik(c.tok_ptr, r.n_dk, r.alpha), changed=r.changed,
                       loop_s=now - (r.t_loop or now), sweep_s=r.t_sweep)
        if pe:
            t = r.test_c
            n_wk = r.ps.get("n_wk", None).copy()
            ll, nh = 0.0, 0
            if t.n_docs:
                ll, nh = lk.doc_completion_loglik(t.tok_ptr, t.words, n_wk, r.ps.get("n_k", 0), r.alpha, r.beta,
                                                  p.perplexity_iter, p.perplexity_iter // 2,
                                                  _seed(r.seed, r.rank, p.max_iter if final else ep - 1, 3))
            out.update(test_loglik=ll, test_tokens=nh)
        return out

    def report(self, r, sums):
        row = {}
        if "loglik" in sums:
            ll, sweeps = sums["loglik"], (r.clock - getattr(r, "clk_loop", r.clock)) / r.cpi
            row.update(objective=-ll, loglik=ll, loglik_per_token=ll / r.N_total, changed=int(sums["changed"]))
            row["tokens_per_s"] = r.N_total * sweeps / (sums["loop_s"] / r.size) if sums["loop_s"] > 0 else 0.0
            row["sweep_tokens_per_s_per_rank"] = r.N_total * sweeps / sums["sweep_s"] if sums["sweep_s"] > 0 else 0.0
        if "test_tokens" in sums:
            nh = sums["test_tokens"]
            row["perplexity"] = float(math.exp(-sums["test_loglik"] / nh)) if nh > 0 else float("nan")
        return row

    def finish(self, r):
        c, last = r.corpus, self.history_[-1]
        self.n_iter_ = r.clock // r.cpi
        self.sampler_, self.clocks_per_iter_ = r.kind, r.cpi
        self.n_heldout_docs_, self.n_tokens_ = r.n_heldout, r.N_total
        self.loglik_, self.loglik_per_token_ = last["loglik"], last["loglik_per_token"]
        self.tokens_per_s_ = last["tokens_per_s"]
        self.sweep_tokens_per_s_per_rank_ = last["sweep_tokens_per_s_per_rank"]
        self.perplexity_ = last.get("perplexity")
        self.vocab_ = c.vocab
        self._set_model(r.ps.get("n_wk", None).copy(), r.ps.get("n_k", 0).copy(), r.V)
        if r.blocks:
            r.z[r.order] = r.zb
        self.z_, self.words_, self.doc_ptr_, self.doc_start_ = r.z, c.words, c.tok_ptr, c.doc_start
        self.doc_topic_counts_ = r.n_dk

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
    def doc_topic_(self):
        """(local docs, K) float64 ``theta_d = (n_dk + alpha)/(L_d + K alpha)`` of this rank's
        documents (computed on access: at K = 1000 it is 8 bytes x D x K)."""
        n_dk = self.__dict__.get("doc_topic_counts_")
        if n_dk is None:
            raise AttributeError("doc_topic_: only after fit, on the rank that holds the documents")
        a = float(self.doc_topic_prior)
        return (n_dk + a) / (np.diff(self.doc_ptr_)[:, None] + n_dk.shape[1] * a)

    @property
    def topic_word_(self):
        """(K, V) float64 topics ``phi_k = (n_wk + beta)/(n_k + V beta)`` (computed on access)."""
        c = self.components_
        c /= (self.topic_counts_[:, None] + self.n_features_in_ * float(self.topic_word_prior))
        return c

    # -- using a fitted model ------------------------------------------------------
    def _check_fitted(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "word_topic_counts_", msg="LDA: the model is not fitted (call fit or LDA.load first)")

    def _local(self, X):
        self._check_fitted()
        doc_ptr, word_ids, counts, V = _from_matrix(X, "X")
        if V != self.n_features_in_:
            raise InputError(f"X: has {V} words, the model has {self.n_features_in_}")
        return _Corpus(doc_ptr, word_ids, counts, V)

    def transform(self, X, n_iter: int = 20):
        """Topic proportions (docs x K) of documents ``X`` (a count matrix, local, not collective)."""
        c = self._local(X)
        return lk.fold_in(c.tok_ptr, c.words, self.word_topic_counts_, self.topic_counts_,
                          float(self.doc_topic_prior), float(self.topic_word_prior), int(n_iter), int(n_iter) // 2,
                          _seed(self.random_state, 11))

    def perplexity(self, X, n_iter: int = 20) -> float:
        """Document-completion perplexity of documents ``X`` (count matrix; local, not collective)."""
        c = self._local(X)
        ll, nh = lk.doc_completion_loglik(c.tok_ptr, c.words, self.word_topic_counts_, self.topic_counts_,
                                          float(self.doc_topic_prior), float(self.topic_word_prior), int(n_iter),
                                          int(n_iter) // 2, _seed(self.random_state, 12))
        return float(math.exp(-ll / nh)) if nh else float("nan")

    # -- model files and jobs ----------------------------------------------------------
    _PER_RANK = ("z_", "words_", "doc_ptr_", "doc_topic_counts_", "doc_start_")

    def model_arrays(self):
        """``(arrays, attrs)`` of the fitted model (the tables, top words, vocabulary; no per-rank state)."""
        arrays, attrs = super().model_arrays()
        for k in self._PER_RANK:
            arrays.pop(k, None)
        arrays["sampler_"] = np.array([self.sampler_.encode()])  # bytes, 1-d: h5py stores them as they are
        if self.vocab_ is not None:
            arrays["vocab_"] = np.array([w.encode("utf-8") for w in self.vocab_])
        return arrays, attrs

    @classmethod
    def load(cls, path: str) -> "LDA":
        m = super().load(path)
        dec = (lambda w: w.decode("utf-8") if isinstance(w, bytes) else str(w))
        m.sampler_ = dec(m.sampler_[0]) if hasattr(m, "sampler_") else ""
        m.vocab_ = [dec(w) for w in m.vocab_] if getattr(m, "vocab_", None) is not None else None
        m._set_model(m.word_topic_counts_, m.topic_counts_, m.word_topic_counts_.shape[0])
        return m

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # word counts
        tags.input_tags.sparse = True
        return tags

    def job_outputs(self, rundir) -> dict:
        """Job runs: the topics (log and ``topics.txt``) and the summary figures of LDA."""
        lines = [f"topic {k:3d} ({int(self.topic_counts_[k])} tokens): " + " ".join(ws)
                 for k, ws in enumerate(self.top_words_text_)]
        for line in lines:
            rundir.log(line)
        rd = getattr(rundir, "path", None)
        if get_comm(self.comm).rank == 0 and rd:
            with open(os.path.join(rd, "topics.txt"), "w", encoding="utf-8") as fh:
                fh.write("\n".join(lines) + "\n")
        out = {"n_components": int(self.n_components), "sampler": self.sampler_, "n_tokens": int(self.n_tokens_),
               "top_words": {str(k): " ".join(ws) for k, ws in enumerate(self.top_words_text_)}}
        if self.perplexity_ is not None:
            out["n_heldout_docs"] = self.n_heldout_docs_
        return out
