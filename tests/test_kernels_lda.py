"""LDA kernels, single process: planted topics, exact count bookkeeping, likelihood
formula vs. a sequential Polya-urn computation, and the MH sampler's stationary
distribution vs. exact enumeration of the posterior."""

import itertools
import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from petuum_mpi.apps import lda_kernels as lk


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


def test_word_index():
    words = np.array([3, 1, 3, 0, 1, 3], dtype=np.int32)
    ptr, tok, pos = lk.build_word_index(words, 5)
    np.testing.assert_array_equal(ptr, [0, 1, 3, 3, 6, 6])
    for i, w in enumerate(words):
        assert tok[ptr[w] + pos[i]] == i


@pytest.mark.parametrize("kind", ["mh", "plain"])
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


@pytest.mark.parametrize("kind,mh_steps", [("mh", 1), ("mh", 2), ("plain", 1)])
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
