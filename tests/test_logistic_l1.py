"""L1 logistic regression on the STRADS engine against scikit-learn (1, 2, 4 ranks)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

sklm = pytest.importorskip("sklearn.linear_model")

from petuum_mpi.apps.logistic_l1 import L1LogisticRegression, objective  # noqa: E402
from petuum_mpi.errors import ConfigError, DataError  # noqa: E402


def data(kind, seed=0):
    rng = np.random.default_rng(seed)
    n, p = 120, 25
    X = rng.standard_normal((n, p)) if kind == "dense" else sp.random(n, p, density=0.2, random_state=seed,
                                                                        format="csr") * 3
    wt = np.zeros(p)
    wt[:5] = 2.0
    y = (np.asarray(X @ wt).ravel() + 0.5 * rng.standard_normal(n) > 0).astype(int)
    return X, y


def reference(X, y, C, fit_intercept):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solver = "saga" if fit_intercept else "liblinear"
        return sklm.LogisticRegression(l1_ratio=1.0, C=C, solver=solver, tol=1e-12, max_iter=200000,
                                       fit_intercept=fit_intercept).fit(X, y)


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("scheduler", ["cyclic", "sap"])
def test_matches_sklearn(comm, kind, fit_intercept, scheduler):
    X, y = data(kind)
    C = 0.5
    ref = reference(X, y, C, fit_intercept)
    m = L1LogisticRegression(C=C, fit_intercept=fit_intercept, tol=1e-8, max_iter=300, scheduler=scheduler).fit(X, y)
    fo = objective(X, y, m.coef_, m.intercept_, C)
    fr = objective(X, y, ref.coef_, ref.intercept_ if fit_intercept else [0.0], C)
    assert fo <= fr * (1 + 1e-6)
    assert abs(fo - fr) <= 1e-6 * fr
    assert np.array_equal(m.coef_ != 0, ref.coef_ != 0)
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-4)
    assert np.mean(m.predict(X) == ref.predict(X)) > 0.97


def test_validation():
    X, y = data("dense")
    with pytest.raises(ConfigError, match="C"):
        L1LogisticRegression(C=0.0).fit(X, y)
    with pytest.raises(ConfigError, match="scheduler"):
        L1LogisticRegression(scheduler="x").fit(X, y)
    with pytest.raises(DataError, match="2 classes"):
        L1LogisticRegression().fit(X, np.arange(len(y)) % 3)


@pytest.mark.mpi
def test_dataset_path(comm, shared_tmp):
    X, y = data("sparse", seed=3)
    pdata = pytest.importorskip("petuum_mpi.data")
    path = f"{shared_tmp}/l1log_ds"
    if comm.rank == 0:
        pdata.write_matrix(path, sp.csr_matrix(X), y, n_shards=3, task="classification", n_classes=2)
    comm.Barrier()
    m = L1LogisticRegression(C=0.5, tol=1e-8, max_iter=300).fit(path)
    ref = reference(X, y, 0.5, True)
    fo = objective(X, y, m.coef_, m.intercept_, 0.5)
    fr = objective(X, y, ref.coef_, ref.intercept_, 0.5)
    assert abs(fo - fr) <= 1e-6 * fr
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-4)


def test_check_estimator():
    """scikit-learn's check_estimator at one rank: every check passes."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(L1LogisticRegression())
