"""The examples (examples/kmeans.py on Bösen, examples/svm.py on STRADS) against
scikit-learn at 1, 2 and 4 ranks."""

import os
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))

from kmeans import KMeans  # noqa: E402
from svm import LinearSVM  # noqa: E402


@pytest.mark.mpi
@pytest.mark.parametrize("consistency", ["bsp", "ssp"])
def test_kmeans_equals_sklearn_lloyd(comm, consistency):
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(600, 5, centers=4, cluster_std=2.0, random_state=0)
    m = KMeans(n_clusters=4, init="first", consistency=consistency, staleness=2, comm=comm).fit(X)
    ref = SKKMeans(4, init=X[:4], n_init=1, algorithm="lloyd", tol=0).fit(X)
    assert m.telemetry_["converged"] and m.history_[-1]["changed"] == 0
    if consistency == "ssp":
        # ssp is Lloyd on stale statistics: its trajectory depends on timing, so it may stop at
        # another local optimum than Lloyd's. What must hold exactly: a (confirmed) Lloyd fixed
        # point -- labels are the nearest centres, centres are the means of their points.
        d = ((X[:, None] - m.cluster_centers_[None]) ** 2).sum(-1)
        np.testing.assert_array_equal(m.labels_, d.argmin(axis=1))
        for k in range(4):
            np.testing.assert_allclose(m.cluster_centers_[k], X[m.labels_ == k].mean(axis=0), rtol=0, atol=1e-9)
        assert abs(m.inertia_ - d.min(axis=1).sum()) <= 1e-9 * m.inertia_
        assert comm.allgather(m.n_iter_) == [m.n_iter_] * comm.size
        return
    # bsp is Lloyd exactly
    np.testing.assert_allclose(m.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-9)
    assert abs(m.inertia_ - ref.inertia_) <= 1e-9 * ref.inertia_
    np.testing.assert_array_equal(m.labels_, ref.labels_)
    np.testing.assert_array_equal(m.predict(X), ref.predict(X))
    # the stale-safe stop confirms with exact reads: every rank stops at the same clock
    assert comm.allgather(m.n_iter_) == [m.n_iter_] * comm.size


@pytest.mark.mpi
def test_kmeans_resume_equals_uninterrupted(comm, shared_tmp):
    from sklearn.datasets import make_blobs

    X, _ = make_blobs(400, 3, centers=5, cluster_std=3.0, random_state=1)
    kw = dict(n_clusters=5, init="first", consistency="bsp", comm=comm)
    full = KMeans(**kw).fit(X)
    snap = os.path.join(shared_tmp, "ckpt")
    KMeans(**kw, max_iter=3, snapshot_every=3, snapshot_dir=snap).fit(X)
    res = KMeans(**kw, snapshot_dir=snap, resume=True).fit(X)
    np.testing.assert_allclose(res.cluster_centers_, full.cluster_centers_, rtol=0, atol=1e-12)
    assert res.n_iter_ == full.n_iter_


def _svm_data():
    rng = np.random.default_rng(0)
    X = sp.random(300, 1000, density=0.02, random_state=1, format="csr")
    y = np.where(X @ rng.standard_normal(1000) + 0.3 * rng.standard_normal(300) > 0, 1, 0)
    return X, y


def _primal(X, y, w, b, C, loss):
    xi = np.maximum(0.0, 1.0 - np.where(y == 1, 1.0, -1.0) * (X @ w.ravel() + b[0]))
    return 0.5 * (w.ravel() @ w.ravel() + b[0] ** 2) + C * (xi.sum() if loss == "hinge" else (xi ** 2).sum())


@pytest.mark.mpi
@pytest.mark.parametrize("loss", ["hinge", "squared_hinge"])
def test_svm_equals_liblinear(comm, loss):
    from sklearn.svm import LinearSVC

    X, y = _svm_data()
    m = LinearSVM(C=1.0, loss=loss, tol=1e-8, comm=comm).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LinearSVC(C=1.0, loss=loss, dual=True, tol=1e-10, max_iter=200_000).fit(X, y)
    p_ours, p_ref = _primal(X, y, m.coef_, m.intercept_, 1.0, loss), _primal(X, y, ref.coef_, ref.intercept_, 1.0, loss)
    assert p_ours <= p_ref * (1 + 1e-6)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=0, atol=2e-4)
    np.testing.assert_allclose(m.intercept_, ref.intercept_, rtol=0, atol=2e-4)
    np.testing.assert_array_equal(m.predict(X), ref.predict(X))
    assert m.history_[-1]["gap"] <= 1e-8
    assert comm.allgather(m.n_iter_) == [m.n_iter_] * comm.size


@pytest.mark.mpi
@pytest.mark.parametrize("sparse", [False, True])
def test_ridge_equals_sklearn(comm, sparse):
    """examples/ridge.py: the squared loss through the logistic app's full-batch kernels."""
    from sklearn.linear_model import Ridge as SkRidge

    from ridge import Ridge

    rng = np.random.default_rng(3)
    X = sp.random(400, 60, density=0.1, random_state=2, format="csr") if sparse else rng.normal(size=(400, 60))
    y = X @ rng.normal(size=60) + 0.5 + 0.1 * rng.normal(size=400)
    m = Ridge(alpha=2.0, comm=comm).fit(X, y)
    ref = SkRidge(alpha=2.0, solver="cholesky" if not sparse else "sparse_cg", tol=1e-12).fit(X, y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=0, atol=1e-8)
    assert m.intercept_ == pytest.approx(ref.intercept_, abs=1e-8)
    assert comm.allgather(m.n_iter_) == [m.n_iter_] * comm.size
