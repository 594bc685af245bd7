"""Linear-model kernels (petuum_mpi.linear) with the logistic / multinomial loss, single process,
against scikit-learn and finite differences, on dense and CSR rows."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

from petuum_mpi.apps.logreg import kernels as lk
from petuum_mpi.errors import ConfigError
from petuum_mpi.linear import kernels as LK
from petuum_mpi.linear import losses
from petuum_mpi.linear.rows import as_rows


def _loss(C):
    return losses.Multinomial() if C > 1 else losses.Logistic()


def _objective(X, y, W, b, alpha, l1):
    return LK.objective(_loss(W.shape[1]), as_rows(X), y, W, b, alpha, l1)


def _state(d, C, **kw):
    return LK.SGDState(_loss(C), d, C, **kw)


def _gradient(X, y, W, b, alpha):
    """Mean loss gradient + alpha W (the smooth part), from the full-batch kernel."""
    gW, gb = np.zeros_like(W), np.zeros_like(b)
    n = X.shape[0]
    LK.fg(_loss(W.shape[1]), as_rows(X), y, W, b, LK.no_state(), LK.no_state(), gW, gb)
    return gW / n + alpha * W, gb / n


def _data(seed, n, d, C, density=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if density < 1.0:
        X *= rng.random((n, d)) < density
        X[:, :3] *= 3.0
    Wt = rng.normal(size=(d, C))
    Z = X @ Wt + 0.5 * rng.normal(size=(n, C))
    y = (Z[:, 0] > 0).astype(np.float64) if C == 1 else Z.argmax(1).astype(np.float64)
    return X, y


def _fit(st, X, y, sparse, epochs=300, seed=0):
    rng = np.random.default_rng(seed)
    n = X.shape[0]
    Xc = sp.csr_matrix(X)
    for ep in range(epochs):
        perm = rng.permutation(n)
        B = 10 if ep < epochs // 2 else (50 if ep < 5 * epochs // 6 else n)  # growing batches
        for s in range(0, n, B):
            rows = perm[s:s + B]
            if sparse:
                st.run(as_rows(Xc), y, rows, rows.size)
                feats = set(Xc[rows].indices.tolist())
                assert set(st.touched[:len(feats)].tolist()) == feats
            else:
                st.run(X, y, rows, rows.size)
    st.flush()


CASES = [(C, sparse) for C in (1, 4) for sparse in (False, True)]


@pytest.mark.parametrize("C,sparse", CASES)
@pytest.mark.parametrize("schedule,eta0", [("invscaling", 1.0), ("adagrad", 0.5), ("constant", 0.1)])
def test_sgd_matches_sklearn_objective(C, sparse, schedule, eta0):
    n, d, alpha = 400, 20, 0.01
    X, y = _data(C + 10 * sparse, n, d, C, density=0.08 if sparse else 1.0)
    sk = LogisticRegression(C=1.0 / (n * alpha), tol=1e-12, max_iter=10000).fit(X, y)
    f_sk = _objective(X, y, np.ascontiguousarray(sk.coef_.T), sk.intercept_.copy(), alpha, 0.0)
    st = _state(d, C, schedule=schedule, eta0=eta0, alpha=alpha)
    _fit(st, X, y, sparse)
    f = _objective(X, y, st.W, st.b, alpha, 0.0)
    assert abs(f - f_sk) <= 1e-3 * f_sk, (f, f_sk)
    # every change was recorded in the delta buffers (model started at zero)
    np.testing.assert_allclose(st.dW, st.W, atol=1e-12)
    np.testing.assert_allclose(st.db, st.b, atol=1e-12)
    acc = lk.count_correct(LK.margins(X, st.W, st.b), y) / n
    assert acc == pytest.approx(accuracy_score(y, sk.predict(X)), abs=0.02)


@pytest.mark.filterwarnings("ignore:'penalty' was deprecated:FutureWarning")  # sklearn >= 1.8
@pytest.mark.parametrize("C", [1, 3])
def test_l1_elastic_net_matches_sklearn_saga(C):
    n, d = 300, 15
    X, y = _data(7 + C, n, d, C)
    Cinv, l1_ratio = 0.5, 0.5
    alpha, l1 = (1 - l1_ratio) / (Cinv * n), l1_ratio / (Cinv * n)
    sk = LogisticRegression(penalty="elasticnet", solver="saga", l1_ratio=l1_ratio, C=Cinv, tol=1e-12,
                            max_iter=100000).fit(X, y)
    f_sk = _objective(X, y, np.ascontiguousarray(sk.coef_.T), sk.intercept_.copy(), alpha, l1)
    st = _state(d, C, schedule="adagrad", eta0=0.5, alpha=alpha, l1=l1)
    _fit(st, X, y, sparse=True)
    f = _objective(X, y, st.W, st.b, alpha, l1)
    assert abs(f - f_sk) <= 1e-3 * f_sk, (f, f_sk)


@pytest.mark.parametrize("schedule", ["constant", "adagrad"])
def test_lazy_sparse_steps_equal_dense_steps(schedule):
    """Lazy regularisation is exact for constant and AdaGrad rates: sparse steps + flush
    give the same iterate as dense steps that touch every feature."""
    X, y = _data(3, 120, 30, 3, density=0.1)
    Xc = sp.csr_matrix(X)
    a = _state(30, 3, schedule=schedule, eta0=0.3, alpha=0.05, l1=0.01)
    b = _state(30, 3, schedule=schedule, eta0=0.3, alpha=0.05, l1=0.01)
    rng = np.random.default_rng(0)
    for _ in range(40):
        rows = rng.choice(120, 8, replace=False)
        a.run(as_rows(Xc), y, rows, rows.size)
        b.run(X, y, rows, rows.size)
    a.flush()
    assert np.abs(b.W).max() > 0.01
    np.testing.assert_allclose(a.W, b.W, atol=1e-12)
    np.testing.assert_allclose(a.b, b.b, atol=1e-12)
    np.testing.assert_allclose(a.dW, b.dW, atol=1e-12)


@pytest.mark.parametrize("C", [1, 4])
@pytest.mark.parametrize("sparse", [False, True])
def test_objective_proba_accuracy_equal_sklearn_metrics(C, sparse):
    n, d = 200, 12
    X, y = _data(5, n, d, C, density=0.5 if sparse else 1.0)
    rng = np.random.default_rng(1)
    W = rng.normal(size=(d, C))
    b = rng.normal(size=C)
    alpha, l1 = 0.03, 0.02
    pen = alpha / 2 * np.sum(W ** 2) + l1 * np.abs(W).sum()
    Z = X @ W + b
    if C == 1:
        P = 1 / (1 + np.exp(-Z[:, 0]))
        P = np.column_stack([1 - P, P])
    else:
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
    ref = log_loss(y, P, labels=np.arange(max(C, 2))) + pen
    Xr = as_rows(sp.csr_matrix(X)) if sparse else X
    f = LK.objective(_loss(C), Xr, y, W, b, alpha, l1)
    Pk = lk.proba_from_margins(LK.margins(Xr, W, b))
    acc = lk.count_correct(LK.margins(Xr, W, b), y) / n
    assert abs(f - ref) <= 1e-10 * abs(ref), (f, ref)
    np.testing.assert_allclose(Pk, P, rtol=1e-12, atol=1e-15)
    assert acc == accuracy_score(y, P.argmax(1))


@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("sparse", [False, True])
def test_gradient_finite_differences(C, sparse):
    n, d, alpha = 50, 6, 0.1
    X, y = _data(9, n, d, C, density=0.6 if sparse else 1.0)
    rng = np.random.default_rng(2)
    W = rng.normal(size=(d, C))
    b = rng.normal(size=C)
    gW, gb = _gradient(sp.csr_matrix(X) if sparse else X, y, W, b, alpha)
    h = 1e-6
    for j in range(d):
        for c in range(C):
            Wp, Wm = W.copy(), W.copy()
            Wp[j, c] += h
            Wm[j, c] -= h
            fd = (_objective(X, y, Wp, b, alpha, 0.0) - _objective(X, y, Wm, b, alpha, 0.0)) / (2 * h)
            assert gW[j, c] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    for c in range(C):
        bp, bm = b.copy(), b.copy()
        bp[c] += h
        bm[c] -= h
        fd = (_objective(X, y, W, bp, alpha, 0.0) - _objective(X, y, W, bm, alpha, 0.0)) / (2 * h)
        assert gb[c] == pytest.approx(fd, rel=1e-6, abs=1e-8)
    # the SGD step with the full batch is a gradient step: W1 = W0 - eta * g (no l1, alpha in prox form)
    st = _state(d, C, schedule="constant", eta0=0.1, alpha=0.0)
    st.W[:] = W
    st.b[:] = b
    st.run(X, y, np.arange(n), n)
    g0W, g0b = _gradient(X, y, W, b, 0.0)
    np.testing.assert_allclose(st.W, W - 0.1 * g0W, atol=1e-14)
    np.testing.assert_allclose(st.b, b - 0.1 * g0b, atol=1e-14)


def test_state_validation():
    with pytest.raises(ConfigError, match="schedule"):
        _state(3, 1, schedule="optimal")
    with pytest.raises(ConfigError, match="alpha"):
        _state(3, 1, alpha=-1.0)
    with pytest.raises(ConfigError, match="n_columns"):
        _state(3, 0)


@pytest.mark.parametrize("C", [1, 3])
def test_svrg_snapshot_and_passes_reach_sklearn_optimum(C):
    """SVRG kernels (snapshot = loss + full gradient, lazy inner passes, unsigned
    indices) converge to scikit-learn's optimum; the snapshot equals the NumPy gradient."""
    n, d, alpha = 300, 20, 1e-2
    X, y = _data(11, n, d, C, density=0.3)
    Xc = sp.csr_matrix(X)
    Xr = as_rows(Xc)
    assert Xr.indices.dtype.kind == "u"
    loss_ = _loss(C)
    sk = LogisticRegression(C=1.0 / (n * alpha), tol=1e-12, max_iter=10000).fit(X, y)
    f_sk = LK.objective(loss_, Xr, y, np.ascontiguousarray(sk.coef_.T), sk.intercept_, alpha, 0.0)
    rng = np.random.default_rng(0)
    W0 = 0.1 * rng.normal(size=(d, C))
    b0 = 0.1 * rng.normal(size=C)
    R, gW, gb = np.zeros((n, C)), np.zeros((d, C)), np.zeros(C)
    loss = LK.fg(loss_, Xr, y, W0, b0, LK.no_state(), R, gW, gb)
    Z = X @ W0 + b0
    if C == 1:
        Rref = 1 / (1 + np.exp(-Z)) - y[:, None]
    else:
        P = np.exp(Z - Z.max(1, keepdims=True))
        Rref = P / P.sum(1, keepdims=True) - np.eye(C)[y.astype(int)]
    np.testing.assert_allclose(R, Rref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gW / n, X.T @ Rref / n, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gb / n, Rref.mean(0), rtol=1e-12, atol=1e-15)
    assert loss / n + LK.penalty(W0, alpha, 0.0) == pytest.approx(LK.objective(loss_, Xr, y, W0, b0, alpha, 0.0),
                                                                   rel=1e-12)
    M = np.zeros((d, 3 * C + 1))
    b = np.zeros(C)
    eta = 0.5 / (np.mean(np.asarray(Xc.multiply(Xc).sum(1))) / 10)
    t = 0
    for it in range(40):
        W = np.ascontiguousarray(M[:, :C])
        R[...] = 0.0
        gW[...] = 0.0
        gb[...] = 0.0
        LK.fg(loss_, Xr, y, W, b, LK.no_state(), R, gW, gb)
        M[:, C:2 * C] = gW / n
        M[:, 3 * C] = t
        order = rng.permutation(n).astype(np.int64)
        t, _ = LK.svrg_pass(loss_, Xr, y, order, 10, M, b, R, gb / n, t, eta, alpha, True, eta)
        LK.svrg_flush(M, int(t), eta, alpha)
        t = int(t)
    f = LK.objective(loss_, Xr, y, np.ascontiguousarray(M[:, :C]), b, alpha, 0.0)
    assert -1e-9 < (f - f_sk) / f_sk < 1e-7, (f, f_sk)
