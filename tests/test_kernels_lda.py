"""LDA kernels, single process: planted topics, exact count bookkeeping, likelihood
formula vs. a sequential Polya-urn computation, the samplers' stationary distribution
vs. exact enumeration of the posterior, and the per-token draw of the plain and sparse
samplers vs. the exact conditional (chi-square), also from stale copies with negative
counts."""

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.stats import chisquare

from petuum_mpi.apps.lda import kernels as lk


def _planted(seed, K=6, V=60, D=300, L=60, a=0.3):
    """Corpus from LDA with block topics: topic k puts 95% of its mass on its own
    10 words and the rest uniformly."""
    rng = np.random.default_rng(seed)
    phi = np.full((K, V), 0.05 / V)
    block = V // K
    for k in range(K):
        phi[k, k * block:(k + 1) * block] += 0.95 / block
    phi /= phi.sum(1, keepdims=True)
    theta = rng.dirichlet(np.full(K, a), size=D)
    lens = rng.integers(L // 2, 3 * L // 2, size=D)
    doc_ptr = np.zeros(D + 1, dtype=np.int64)
    doc_ptr[1:] = np.cumsum(lens)
    words = np.empty(doc_ptr[-1], dtype=np.int32)
    for d in range(D):
        topics = rng.choice(K, size=lens[d], p=theta[d])
        cum = np.cumsum(phi[topics], axis=1)
        u = rng.random(lens[d])[:, None]
        words[doc_ptr[d]:doc_ptr[d + 1]] = (u > cum).sum(1)
    return doc_ptr, np.minimum(words, V - 1).astype(np.int32), phi


class Model:
    def __init__(self, doc_ptr, words, K, V, seed=0, dtype=np.int32):
        self.doc_ptr, self.words, self.K, self.V = doc_ptr, words, K, V
        D = doc_ptr.size - 1
        self.z = np.empty(words.size, dtype=np.int32)
        lk.init_assignments(doc_ptr, words, K, seed, self.z)
        self.n_dk = np.zeros((D, K), dtype)
        self.n_wk = np.zeros((V, K), dtype)
        self.n_k = np.zeros(K, np.int64)
        # the initial push: counts go to the deltas too
        self.d_wk = np.zeros((V, K), dtype)
        self.d_k = np.zeros(K, np.int64)
        lk.count_tables(doc_ptr, words, self.z, np.zeros((D, K), dtype), self.d_wk, self.d_k)
        lk.count_tables(doc_ptr, words, self.z, self.n_dk, self.n_wk, self.n_k)
        self.m_wk = self.n_wk.copy()
        self.index = lk.build_word_index(words, V)

    def sweep(self, kind, seed, alpha, beta, mh_steps=2):
        if kind == "mh":
            return lk.sweep_mh(self.doc_ptr, self.words, self.z, self.n_dk, self.n_wk, self.n_k, self.m_wk,
                               *self.index, self.d_wk, self.d_k, alpha, beta, mh_steps, seed)
        if kind == "sparse":
            self.lists = lk.build_word_lists(self.n_wk, np.bincount(self.words, minlength=self.V))
            return lk.sweep_sparse(self.doc_ptr, self.words, self.z, self.n_dk, self.n_wk, self.n_k, self.d_wk,
                                   self.d_k, *self.lists, alpha, beta, seed)
        return lk.sweep_plain(self.doc_ptr, self.words, self.z, self.n_dk, self.n_wk, self.n_k, self.d_wk,
                              self.d_k, alpha, beta, seed)

    def check_counts(self, with_m=True):
        D = self.doc_ptr.size - 1
        doc_of = np.repeat(np.arange(D), np.diff(self.doc_ptr))
        ref_dk = np.zeros((D, self.K), np.int64)
        np.add.at(ref_dk, (doc_of, self.z), 1)
        ref_wk = np.zeros((self.V, self.K), np.int64)
        np.add.at(ref_wk, (self.words, self.z), 1)
        assert self.z.min() >= 0 and self.z.max() < self.K
        np.testing.assert_array_equal(self.n_dk, ref_dk)
        np.testing.assert_array_equal(self.n_wk, ref_wk)
        if with_m:  # the plain sampler does not use (nor update) m_wk
            np.testing.assert_array_equal(self.m_wk, ref_wk)
        np.testing.assert_array_equal(self.n_k, ref_wk.sum(0))
        assert self.n_k.sum() == self.words.size
        assert self.n_wk.min() >= 0 and self.n_dk.min() >= 0
        # deltas (initial push + every sweep) add up to the table
        np.testing.assert_array_equal(self.d_wk, self.n_wk)
        np.testing.assert_array_equal(self.d_k, self.n_k)
        if hasattr(self, "lists"):
            check_lists(self.n_wk, self.words, *self.lists)


def check_lists(n_wk, words, wl_ptr, wl_top, wl_cnt, wl_len):
    """The sparse sampler's word lists hold exactly the positive topics of every swept word,
    with their counts, within their capacity."""
    for w in np.unique(words):
        p, n = wl_ptr[w], wl_len[w]
        assert n <= wl_ptr[w + 1] - p
        top = wl_top[p:p + n]
        assert len(set(top.tolist())) == n
        np.testing.assert_array_equal(np.sort(top), np.flatnonzero(n_wk[w] > 0))
        np.testing.assert_array_equal(wl_cnt[p:p + n], n_wk[w, top])


def test_word_index():
    words = np.array([3, 1, 3, 0, 1, 3], dtype=np.int32)
    ptr, tok, pos = lk.build_word_index(words, 5)
    np.testing.assert_array_equal(ptr, [0, 1, 3, 3, 6, 6])
    for i, w in enumerate(words):
        assert tok[ptr[w] + pos[i]] == i


@pytest.mark.parametrize("kind", ["mh", "plain", "sparse"])
def test_planted_topics_recovered_and_counts_consistent(kind):
    K, V = 6, 60
    doc_ptr, words, phi = _planted(0, K=K, V=V)
    m = Model(doc_ptr, words, K, V, seed=1)
    m.check_counts()
    alpha, beta = 0.1, 0.01
    ll = []
    for it in range(120):
        m.sweep(kind, 100 + it, alpha, beta)
        m.check_counts(with_m=kind == "mh")
        ll.append(lk.per_token_loglik(doc_ptr, m.n_dk, m.n_wk, m.n_k, alpha, beta))
    assert ll[-1] > ll[0] + 0.3, (ll[0], ll[-1])
    est = (m.n_wk.T + beta) / (m.n_k[:, None] + V * beta)
    cos = (est / np.linalg.norm(est, axis=1, keepdims=True)) @ (phi / np.linalg.norm(phi, axis=1, keepdims=True)).T
    r, c = linear_sum_assignment(-cos)
    assert cos[r, c].min() > 0.9, cos[r, c]
    # top words of each matched topic come from its planted block
    top = lk.top_words(m.n_wk, 5)
    for k, j in zip(r, c):
        assert np.all(top[k] // (V // K) == j), (top[k], j)


def test_top_words_matches_argsort():
    rng = np.random.default_rng(3)
    n_wk = rng.integers(0, 20, size=(40, 4)).astype(np.int32)
    top = lk.top_words(n_wk, 7)
    for k in range(4):
        np.testing.assert_array_equal(top[k], np.argsort(-n_wk[:, k], kind="stable")[:7])


def _urn_log_joint(doc_ptr, words, z, K, V, alpha, beta):
    """log p(w, z) by the chain rule: tokens added one by one with Polya-urn predictives."""
    n_dk = np.zeros((doc_ptr.size - 1, K))
    n_wk = np.zeros((V, K))
    n_k = np.zeros(K)
    s = 0.0
    for d in range(doc_ptr.size - 1):
        for i in range(doc_ptr[d], doc_ptr[d + 1]):
            w, k = words[i], z[i]
            s += math.log((n_dk[d, k] + alpha) / (i - doc_ptr[d] + K * alpha))
            s += math.log((n_wk[w, k] + beta) / (n_k[k] + V * beta))
            n_dk[d, k] += 1
            n_wk[w, k] += 1
            n_k[k] += 1
    return s


def test_log_joint_equals_polya_urn_chain_rule():
    doc_ptr, words, _ = _planted(5, K=4, V=20, D=15, L=12)
    m = Model(doc_ptr, words, 4, 20, seed=2)
    for alpha, beta in [(0.1, 0.01), (0.5, 0.2), (2.0, 1.5)]:
        got = lk.log_joint(doc_ptr, m.n_dk, m.n_wk, m.n_k, alpha, beta)
        ref = _urn_log_joint(doc_ptr, words, m.z, 4, 20, alpha, beta)
        assert abs(got - ref) <= 1e-9 * abs(ref), (got, ref)
    assert lk.per_token_loglik(doc_ptr, m.n_dk, m.n_wk, m.n_k, 0.5, 0.2) == pytest.approx(
        _urn_log_joint(doc_ptr, words, m.z, 4, 20, 0.5, 0.2) / words.size, rel=1e-12)


def _exact_posterior(doc_ptr, words, K, V, alpha, beta):
    N = words.size
    states = np.array(list(itertools.product(range(K), repeat=N)), dtype=np.int32)
    lp = np.array([_urn_log_joint(doc_ptr, words, s, K, V, alpha, beta) for s in states])
    p = np.exp(lp - lp.max())
    return states, p / p.sum()


@pytest.mark.parametrize("kind,mh_steps", [("mh", 1), ("mh", 2), ("plain", 1), ("sparse", 1)])
def test_stationary_distribution_matches_exact_posterior(kind, mh_steps):
    # 2 documents, 6 tokens, K=3: 729 joint states, posterior by enumeration
    doc_ptr = np.array([0, 3, 6], dtype=np.int64)
    words = np.array([0, 1, 0, 2, 2, 1], dtype=np.int32)
    K, V, alpha, beta = 3, 3, 0.3, 0.2
    states, p = _exact_posterior(doc_ptr, words, K, V, alpha, beta)
    m = Model(doc_ptr, words, K, V, seed=7)
    n_sweeps = 60000
    codes = np.empty(n_sweeps, dtype=np.int64)
    base = K ** np.arange(words.size - 1, -1, -1)
    for t in range(n_sweeps):
        m.sweep(kind, 1000 + t, alpha, beta, mh_steps)
        codes[t] = m.z @ base
    m.check_counts(with_m=kind == "mh")
    emp = np.bincount(codes[1000:], minlength=K ** words.size) / (n_sweeps - 1000)
    tv = 0.5 * np.abs(emp - p).sum()
    assert tv < 0.06, tv
    # permutation-invariant summaries: P(z_i == z_j) for all token pairs
    zs = states[codes[1000:]]  # codes enumerate states in itertools.product order
    same_emp = np.array([[np.mean(zs[:, i] == zs[:, j]) for j in range(words.size)] for i in range(words.size)])
    same_ref = np.array([[np.sum(p * (states[:, i] == states[:, j])) for j in range(words.size)]
                         for i in range(words.size)])
    np.testing.assert_allclose(same_emp, same_ref, atol=0.02)


def test_mh_and_plain_agree_on_topic_frequencies():
    """Empirical frequency of each token's co-assignment with the first token under the MH
    sampler vs the plain full-conditional sampler, on a problem too big to enumerate."""
    doc_ptr, words, _ = _planted(11, K=3, V=9, D=4, L=6)
    K, V, alpha, beta = 3, 9, 0.2, 0.1
    res = {}
    for kind in ("mh", "plain"):
        m = Model(doc_ptr, words, K, V, seed=3)
        acc = np.zeros((words.size, words.size))
        n = 0
        for t in range(40000):
            m.sweep(kind, 5 + t, alpha, beta)
            if t >= 500:
                acc += m.z[:, None] == m.z[None, :]
                n += 1
        res[kind] = acc / n
    np.testing.assert_allclose(res["mh"], res["plain"], atol=0.04)


def test_doc_completion_perplexity():
    K, V = 6, 60
    doc_ptr, words, phi = _planted(0, K=K, V=V, D=300)
    hptr, hwords, _ = _planted(1, K=K, V=V, D=60)
    alpha, beta = 0.1, 0.01
    m = Model(doc_ptr, words, K, V, seed=1)
    for it in range(60):
        m.sweep("mh", it, alpha, beta)
    ll, nh = lk.doc_completion_loglik(hptr, hwords, m.n_wk, m.n_k, alpha, beta, 30, 10, 9)
    assert nh == sum((b - a) // 2 for a, b in zip(hptr[:-1], hptr[1:]))
    ppl = math.exp(-ll / nh)
    # with the planted topics as (huge) pseudo-counts the same kernel gives the "true" perplexity
    true_wk = np.ascontiguousarray((phi.T * 1e7).astype(np.int64))
    tll, _ = lk.doc_completion_loglik(hptr, hwords, true_wk, true_wk.sum(0), alpha, beta, 30, 10, 9)
    true_ppl = math.exp(-tll / nh)
    unigram = np.bincount(words, minlength=V) + 0.5
    unigram = unigram / unigram.sum()
    uni_ppl = math.exp(-np.mean(np.log(unigram[np.concatenate(
        [hwords[a + 1:b:2] for a, b in zip(hptr[:-1], hptr[1:])])])))
    assert ppl < 1.05 * true_ppl, (ppl, true_ppl)
    assert ppl < 0.6 * uni_ppl, (ppl, uni_ppl)


def _conditional(z, doc_ptr, words, n_dk, n_wk, n_k, i, alpha, beta):
    """Exact full conditional of token i (the samplers' target: counts without token i,
    stale n_wk / n_k clamped at 0)."""
    V = n_wk.shape[0]
    d = np.searchsorted(doc_ptr, i, side="right") - 1
    nd = n_dk[d].astype(float)
    nw = n_wk[words[i]].astype(float)
    nk = n_k.astype(float)
    s = z[i]
    nd[s] -= 1
    nw[s] -= 1
    nk[s] -= 1
    p = (nd + alpha) * (np.maximum(nw, 0) + beta) / (np.maximum(nk, 0) + V * beta)
    return p / p.sum()


def _stale_state(case):
    """One document (word 0 at token 0) plus counts of 'other workers' in n_wk / n_k, some
    negative as a stale parameter-server copy can show them."""
    K, V = 10, 4
    doc_ptr = np.array([0, 9], dtype=np.int64)
    words = np.array([0, 1, 0, 2, 0, 3, 1, 0, 2], dtype=np.int32)
    z = np.array([2, 2, 5, 7, 0, 2, 9, 5, 1], dtype=np.int32)
    n_dk = np.zeros((1, K), np.int32)
    n_wk = np.zeros((V, K), np.int32)
    n_k = np.zeros(K, np.int64)
    lk.count_tables(doc_ptr, words, z, n_dk, n_wk, n_k)
    other = np.zeros((V, K), np.int32)
    if case == "stale":
        other[0] = [3, 0, -1, 40, -2, 1, 0, 0, 7, -1]  # token 0's own topic 2 reads 1 + (-1) = 0
        other[1] = [0, 5, 0, -1, 0, 2, 0, 0, 0, 1]
        other[2] = [1, 0, 0, 0, 9, 0, 0, 0, 0, 0]
        extra_k = other.sum(0) + np.array([5, 0, 0, 3, -40, 0, 20, 0, 0, 0])  # topic 4 total stale negative
    elif case == "listed":  # token 0's topic 2 keeps a positive count of word 0 without the token
        other[0] = [0, 1, 2, 0, -1, 0, 0, 0, 3, 0]
        other[2] = [0, 0, 1, 0, 0, 0, 0, 2, 0, 0]
        extra_k = other.sum(0)
    else:  # token 0's topic 2 holds word 0 once: the sampler must drop it from the word's list
        other[0] = [2, 0, 0, 6, 0, 0, 0, 1, 0, 0]
        other[3] = [0, 4, 0, 0, 0, 3, 0, 0, 0, 0]
        extra_k = other.sum(0) + 30
    return doc_ptr, words, z, n_dk, n_wk + other, n_k + extra_k


@pytest.mark.parametrize("kind", ["plain", "sparse"])
@pytest.mark.parametrize("case", ["stale", "fresh", "listed"])
@pytest.mark.parametrize("alpha,beta", [(0.1, 0.01), (0.8, 0.5)])
def test_token_draw_matches_exact_conditional(kind, case, alpha, beta):
    """The first token's new topic, over many independent sweeps from the same state, is
    distributed as its exact conditional (chi-square), and the tables stay exact."""
    doc_ptr, words, z0, n_dk0, n_wk0, n_k0 = _stale_state(case)
    p = _conditional(z0, doc_ptr, words, n_dk0, n_wk0, n_k0, 0, alpha, beta)
    occ = np.bincount(words, minlength=n_wk0.shape[0])
    K = n_wk0.shape[1]
    n = 20000
    hits = np.zeros(K, np.int64)
    for t in range(n):
        z, n_dk, n_wk, n_k = z0.copy(), n_dk0.copy(), n_wk0.copy(), n_k0.copy()
        d_wk, d_k = np.zeros_like(n_wk), np.zeros_like(n_k)
        if kind == "sparse":
            lists = lk.build_word_lists(n_wk, occ)
            lk.sweep_sparse(doc_ptr, words, z, n_dk, n_wk, n_k, d_wk, d_k, *lists, alpha, beta, 77 + t)
        else:
            lk.sweep_plain(doc_ptr, words, z, n_dk, n_wk, n_k, d_wk, d_k, alpha, beta, 77 + t)
        hits[z[0]] += 1
        if t < 200:  # bookkeeping: exact +-1 deltas, n_dk recount, lists = positive topics
            np.testing.assert_array_equal(n_wk - n_wk0, d_wk)
            np.testing.assert_array_equal(n_k - n_k0, d_k)
            ref = np.zeros_like(n_wk)
            np.add.at(ref, (words, z), 1)
            old = np.zeros_like(n_wk)
            np.add.at(old, (words, z0), 1)
            np.testing.assert_array_equal(d_wk, ref - old)
            np.testing.assert_array_equal(n_dk[0], np.bincount(z, minlength=K))
            if kind == "sparse":
                check_lists(n_wk, words, *lists)
    tv = 0.5 * np.abs(hits / n - p).sum()
    assert tv < 0.02, (tv, hits / n, p)
    live = p * n >= 5  # chi-square over the cells with enough expected draws, the rest pooled
    f_obs = np.append(hits[live], hits[~live].sum())
    f_exp = np.append(p[live], p[~live].sum()) * n
    if f_exp[-1] == 0:
        assert f_obs[-1] == 0
        f_obs, f_exp = f_obs[:-1], f_exp[:-1]
    assert chisquare(f_obs, f_exp).pvalue > 1e-4, (hits / n, p)


def test_sparse_stale_sweeps_keep_tables_and_lists_exact():
    """Many sparse sweeps over a corpus whose n_wk / n_k copies include (partly negative)
    counts of other workers: the copies minus those counts equal the recount from z, the
    deltas are the exact changes, and the word lists stay exact."""
    K, V = 12, 40
    doc_ptr, words, _ = _planted(4, K=K, V=V, D=40, L=30)
    m = Model(doc_ptr, words, K, V, seed=5)
    rng = np.random.default_rng(0)
    other = rng.integers(-2, 4, size=(V, K)).astype(np.int32)
    other_k = other.sum(0) + rng.integers(-60, 60, size=K)
    n_wk, n_k = m.n_wk + other, m.n_k + other_k
    d_wk, d_k = np.zeros_like(n_wk), np.zeros_like(n_k)
    z0 = m.z.copy()
    for it in range(30):
        lists = lk.build_word_lists(n_wk, np.bincount(words, minlength=V))
        lk.sweep_sparse(doc_ptr, words, m.z, m.n_dk, n_wk, n_k, d_wk, d_k, *lists, 0.1, 0.01, it)
        check_lists(n_wk, words, *lists)
    ref = np.zeros((V, K), np.int64)
    np.add.at(ref, (words, m.z), 1)
    np.testing.assert_array_equal(n_wk - other, ref)
    np.testing.assert_array_equal(n_k - other_k, ref.sum(0))
    np.testing.assert_array_equal(d_wk, ref - m.n_wk)  # m.n_wk: the counts of the initial z
    assert not np.array_equal(m.z, z0)


def test_plain_without_word_deltas_is_the_same_chain():
    """sweep_plain with an empty d_wk (the app takes the deltas as n_wk minus its copy) runs
    the same chain as with tracked deltas, and those deltas are exactly that difference."""
    doc_ptr, words, _ = _planted(5, K=8, V=40, D=60, L=40)
    K, V = 8, 40
    a, b = Model(doc_ptr, words, K, V, seed=2), Model(doc_ptr, words, K, V, seed=2)
    sentinel = np.zeros((V, K), np.int32)
    empty = sentinel[:0, :0]  # (0, 0) view on sentinel's memory: a kernel writing it would show there
    for t in range(5):
        before = b.n_wk.copy()
        a.d_wk[:] = 0
        ca = lk.sweep_plain(doc_ptr, words, a.z, a.n_dk, a.n_wk, a.n_k, a.d_wk, a.d_k, 0.1, 0.01, 40 + t)
        cb = lk.sweep_plain(doc_ptr, words, b.z, b.n_dk, b.n_wk, b.n_k, empty, b.d_k, 0.1, 0.01, 40 + t)
        assert ca == cb
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.n_wk, b.n_wk)
        np.testing.assert_array_equal(a.d_wk, b.n_wk - before)
        np.testing.assert_array_equal(a.d_k, b.d_k)
        assert not sentinel.any()


@pytest.mark.parametrize("kind", ["plain", "sparse"])
def test_token_draw_exact_when_sweeping_part_of_a_document(kind):
    """A word block sweeps only some tokens of a document (the app's block-major layout):
    the first token's draw still follows its exact conditional with all of the document's
    counts (the sparse sampler must list the topics of the unswept tokens too)."""
    doc_ptr, words, z0, n_dk0, n_wk0, n_k0 = _stale_state("listed")
    part = np.array([0, 3], dtype=np.int64)  # tokens 0..2 of the 9-token document
    alpha, beta = 0.1, 0.01
    p = _conditional(z0, doc_ptr, words, n_dk0, n_wk0, n_k0, 0, alpha, beta)
    occ = np.bincount(words[:3], minlength=n_wk0.shape[0])
    K, n = n_wk0.shape[1], 20000
    hits = np.zeros(K, np.int64)
    for t in range(n):
        z, n_dk, n_wk, n_k = z0.copy(), n_dk0.copy(), n_wk0.copy(), n_k0.copy()
        d_wk, d_k = np.zeros_like(n_wk), np.zeros_like(n_k)
        if kind == "sparse":
            lk.sweep_sparse(part, words, z, n_dk, n_wk, n_k, d_wk, d_k, *lk.build_word_lists(n_wk, occ), alpha,
                            beta, 5 + t)
        else:
            lk.sweep_plain(part, words, z, n_dk, n_wk, n_k, d_wk, d_k, alpha, beta, 5 + t)
        hits[z[0]] += 1
        assert np.array_equal(z[3:], z0[3:])
    live = p * n >= 5
    f_obs = np.append(hits[live], hits[~live].sum())
    f_exp = np.append(p[live], p[~live].sum()) * n
    if f_exp[-1] == 0:
        assert f_obs[-1] == 0
        f_obs, f_exp = f_obs[:-1], f_exp[:-1]
    assert 0.5 * np.abs(hits / n - p).sum() < 0.02
    assert chisquare(f_obs, f_exp).pvalue > 1e-4, (hits / n, p)


def test_plain_search_counts_prefix_sums_and_never_returns_padding():
    """sweep_plain's draw: the index where u falls in the cumulative sums of the weights,
    counting from the block sums; a u at or past the total (float32 rounding) gives the last
    real topic, never a zero-weight padding slot."""
    B = lk._PBLK
    for K in (1, 3, B, B + 1, 3 * B - 2):
        rng = np.random.default_rng(K)
        nb = -(-K // B)
        vals = np.zeros(nb * B, np.float32)
        vals[:K] = rng.integers(1, 5, K)  # small integers: float32 sums are exact
        bsum = vals.reshape(nb, B).sum(1).astype(np.float32)
        cum = np.cumsum(vals[:K])
        for u in np.concatenate(([0.0], cum - 0.5, cum[:-1], [cum[-1], cum[-1] * 1.01])):
            j = lk._search_plain(np.float32(u), bsum, nb, vals, K)
            want = min(int(np.searchsorted(cum, u, side="right")), K - 1)
            assert j == want, (K, u, j, want)
