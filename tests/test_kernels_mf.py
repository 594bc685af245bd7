"""MF SGD kernels, single process, against planted low-rank truths and closed forms."""

import numpy as np
import pytest

from petuum_mpi.apps.mf import kernels as mk


def _lowrank(seed, n_users=300, n_items=200, rank=4, density=0.6, noise=0.5, nonneg=False):
    rng = np.random.default_rng(seed)
    if nonneg:
        Ut = rng.gamma(2.0, 0.5, size=(n_users, rank))
        Vt = rng.gamma(2.0, 0.5, size=(n_items, rank))
    else:
        Ut = rng.normal(size=(n_users, rank))
        Vt = rng.normal(size=(n_items, rank))
    mask = rng.random((n_users, n_items)) < density
    u, i = np.nonzero(mask)
    r = np.einsum("nk,nk->n", Ut[u], Vt[i]) + noise * rng.normal(size=u.size)
    perm = rng.permutation(u.size)
    u, i, r = u[perm].astype(np.int32), i[perm].astype(np.int32), r[perm]
    n_test = u.size // 10
    return (u[n_test:], i[n_test:], r[n_test:]), (u[:n_test], i[:n_test], r[:n_test]), Ut, Vt


def _fit(train, n_users, n_items, K, epochs, eta0, lam, dtype=np.float64, nonneg=False, use_bias=False,
         lam_bias=0.0, seed=1, decay=0.05):
    u, i, r = train
    rng = np.random.default_rng(seed)
    scale = 0.3 if not nonneg else 0.5
    U = np.ascontiguousarray(np.abs(rng.normal(size=(n_users, K))) * scale if nonneg
                             else rng.normal(size=(n_users, K)) * scale, dtype=dtype)
    V = np.ascontiguousarray(np.abs(rng.normal(size=(n_items, K))) * scale if nonneg
                             else rng.normal(size=(n_items, K)) * scale, dtype=dtype)
    V0 = V.copy()
    dV = np.zeros_like(V)
    bu = np.zeros(n_users, dtype)
    bi = np.zeros(n_items, dtype)
    bi0 = bi.copy()
    dbi = np.zeros(n_items, dtype)
    mu = float(r.mean()) if use_bias else 0.0
    for ep in range(epochs):
        perm = rng.permutation(u.size)
        mk.sgd_epoch(u[perm], i[perm], r[perm], U, V, dV, bu, bi, dbi, mu, mk.step_size(eta0, ep, decay),
                     lam, lam_bias, use_bias, nonneg)
        if nonneg:
            assert U.min() >= 0.0 and V.min() >= 0.0, f"negative factor after epoch {ep}"
    return U, V, V0, dV, bu, bi, bi0, dbi, mu


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sgd_reaches_noise_level(dtype):
    noise = 0.5
    train, test, Ut, Vt = _lowrank(0, noise=noise)
    U, V, V0, dV, bu, bi, _, _, mu = _fit(train, 300, 200, 4, 60, 0.02, 0.02, dtype=dtype)
    te = mk.rmse(*test, U, V, bu, bi, mu, False)
    tr = mk.rmse(*train, U, V, bu, bi, mu, False)
    # held-out RMSE within 5% of the noise level, and no gross overfit on train
    assert te < 1.05 * noise, (te, noise)
    assert 0.85 * noise < tr < 1.05 * noise, (tr, noise)
    # deltas accumulate exactly the change of the item table
    np.testing.assert_allclose(V0 + dV, V, rtol=0, atol=1e-4 if dtype == np.float32 else 1e-10)


def test_rmse_and_predict_match_numpy():
    train, test, Ut, Vt = _lowrank(1, n_users=50, n_items=40, rank=3)
    rng = np.random.default_rng(2)
    U = rng.normal(size=(50, 3))
    V = rng.normal(size=(40, 3))
    bu = rng.normal(size=50)
    bi = rng.normal(size=40)
    u, i, r = test
    ref = 0.7 + bu[u] + bi[i] + np.sum(U[u] * V[i], axis=1)
    np.testing.assert_allclose(mk.predict(u, i, U, V, bu, bi, 0.7, True), ref, rtol=1e-12)
    np.testing.assert_allclose(mk.rmse(u, i, r, U, V, bu, bi, 0.7, True), np.sqrt(np.mean((r - ref) ** 2)),
                               rtol=1e-12)


def test_nmf_keeps_factors_nonnegative_and_fits():
    noise = 0.3
    train, test, Ut, Vt = _lowrank(3, rank=3, noise=noise, nonneg=True)
    U, V, V0, dV, bu, bi, _, _, mu = _fit(train, 300, 200, 3, 60, 0.01, 0.02, nonneg=True)
    assert U.min() >= 0.0 and V.min() >= 0.0
    te = mk.rmse(*test, U, V, bu, bi, mu, False)
    assert te < 1.1 * noise, te
    np.testing.assert_allclose(V0 + dV, V, atol=1e-10)


def test_biases_only_equals_closed_form():
    # r_ui = mu + b_u + c_i with per-rating ridge penalty: minimise
    # 1/2 sum (r - mu - b_u - c_i)^2 + lam/2 sum_(u,i) (b_u^2 + c_i^2)
    rng = np.random.default_rng(4)
    nu, ni = 6, 5
    u, i = np.nonzero(rng.random((nu, ni)) < 0.7)
    u = u.astype(np.int64)
    i = i.astype(np.int64)
    r = rng.normal(size=u.size) + 3.0
    lam = 0.1
    mu = float(r.mean())
    A = np.zeros((u.size, nu + ni))
    A[np.arange(u.size), u] = 1.0
    A[np.arange(u.size), nu + i] = 1.0
    cnt = np.concatenate([np.bincount(u, minlength=nu), np.bincount(i, minlength=ni)]).astype(float)
    exact = np.linalg.solve(A.T @ A + lam * np.diag(cnt), A.T @ (r - mu))
    U = np.zeros((nu, 0))
    V = np.zeros((ni, 0))
    dV = np.zeros((ni, 0))
    bu = np.zeros(nu)
    bi = np.zeros(ni)
    dbi = np.zeros(ni)
    for ep in range(4000):
        perm = rng.permutation(u.size)
        mk.sgd_epoch(u[perm], i[perm], r[perm], U, V, dV, bu, bi, dbi, mu, 0.05 / (1 + ep * 0.01), 0.0, lam,
                     True, False)
    # the split between user and item biases is identified by the ridge penalty
    np.testing.assert_allclose(np.concatenate([bu, bi]), exact, atol=2e-3)
    np.testing.assert_allclose(dbi, bi, atol=1e-12)


def test_top_k_items_matches_argsort():
    rng = np.random.default_rng(5)
    V = rng.normal(size=(100, 8))
    bi = rng.normal(size=100)
    uvec = rng.normal(size=8)
    exclude = np.array([3, 7, 50], dtype=np.int64)
    scores = 0.2 + 0.1 + bi + V @ uvec
    scores_ex = scores.copy()
    scores_ex[exclude] = -np.inf
    ref = np.argsort(-scores_ex, kind="stable")[:10]
    ids, sc = mk.top_k_items(uvec, V, bi, 0.1, 0.2, True, 10, exclude)
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(sc, scores[ref], rtol=1e-12)
    ids, _ = mk.top_k_items(uvec, V, bi, 0.1, 0.2, True, 200, np.zeros(0, dtype=np.int64))
    np.testing.assert_array_equal(ids, np.argsort(-scores, kind="stable"))
