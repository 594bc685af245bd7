"""Lasso / ElasticNet on the STRADS engine against scikit-learn (1, 2 and 4 ranks)."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

sklm = pytest.importorskip("sklearn.linear_model")

from petuum_mpi.apps.lasso import ElasticNet, Lasso, lasso_path  # noqa: E402
from petuum_mpi.errors import ConfigError, UsageError  # noqa: E402


def objective(X, y, w, b, alpha, l1=1.0):
    r = y - X @ w - b
    return 0.5 * r @ r / len(y) + alpha * l1 * np.abs(w).sum() + 0.5 * alpha * (1 - l1) * w @ w


def dataset(kind, seed=0, n=120, p=40, noise=0.3):
    rng = np.random.default_rng(seed)
    if kind == "dense":
        X = rng.standard_normal((n, p))
    elif kind == "sparse":
        X = sp.random(n, p, density=0.15, random_state=seed, format="csr") * 3.0
    elif kind == "correlated":  # groups of 4 nearly equal columns
        Z = rng.standard_normal((n, p // 4))
        X = np.repeat(Z, 4, axis=1) + noise * rng.standard_normal((n, p))
    elif kind == "wide":  # more features than samples
        n, p = 40, 100
        X = rng.standard_normal((n, p))
    wt = np.zeros(p)
    wt[:6] = rng.standard_normal(6) * 2
    y = X @ wt + 0.1 * rng.standard_normal(n) + 1.5
    return X, y


def check_vs_sklearn(X, y, alpha, l1, fit_intercept=True, **kw):
    kw.setdefault("scheduler", "cyclic")
    ref = sklm.ElasticNet(alpha=alpha, l1_ratio=l1, tol=1e-12, max_iter=200000, fit_intercept=fit_intercept).fit(X, y)
    m = ElasticNet(alpha=alpha, l1_ratio=l1, tol=1e-10, max_iter=20000, fit_intercept=fit_intercept, **kw).fit(X, y)
    fo = objective(X, y, m.coef_, m.intercept_, alpha, l1)
    fr = objective(X, y, ref.coef_, ref.intercept_, alpha, l1)
    assert abs(fo - fr) <= 1e-6 * abs(fr), (fo, fr)
    assert np.array_equal(m.coef_ != 0, ref.coef_ != 0)
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-5)
    assert abs(m.intercept_ - ref.intercept_) < 1e-5
    assert m.dual_gap_ >= 0
    return m


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["dense", "sparse", "correlated", "wide"])
@pytest.mark.parametrize("l1", [1.0, 0.5])
def test_matches_sklearn(comm, kind, l1):
    X, y = dataset(kind)
    check_vs_sklearn(X, y, 0.05, l1)


@pytest.mark.mpi
@pytest.mark.parametrize("scheduler", ["cyclic", "random", "priority", "sap"])
def test_every_scheduler_same_optimum(comm, scheduler):
    X, y = dataset("correlated", seed=3, n=80, p=16, noise=0.5)
    m = check_vs_sklearn(X, y, 0.02, 1.0, scheduler=scheduler, round_size=8, precompute=False)
    local = scheduler == "cyclic"  # cyclic: the local CD kernel (gathered columns at > 1 rank), not rounds
    assert m.telemetry_["local_sweeps" if local else "updates"] > 0
    if scheduler == "sap" and comm.rank == 0 and comm.size > 1:
        assert m.telemetry_["rejected"] > 0  # correlated groups were kept apart (parallel rounds only)


@pytest.mark.mpi
@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("scheduler", ["cyclic", "sap"])
def test_pipelining_converges(comm, depth, scheduler):
    X, y = dataset("sparse", seed=5)
    check_vs_sklearn(X, y, 0.02, 1.0, scheduler=scheduler, pipeline_depth=depth, round_size=4, precompute=False)


@pytest.mark.mpi
def test_parallel_rounds_without_fusion_and_big_rounds(comm):
    # a round of all coordinates (Jacobi) on correlated data must be rescued by the safeguard
    X, y = dataset("correlated", seed=1, n=80, p=16, noise=0.5)
    m = check_vs_sklearn(X, y, 0.01, 1.0, scheduler="random", round_size=16, serial_fusion=False,
                         working_set=False, screening=False, precompute=False)
    assert m.telemetry_["final_round_size"] < 16


@pytest.mark.mpi
def test_no_intercept_and_sparse_centering(comm):
    X, y = dataset("sparse", seed=2)
    check_vs_sklearn(X, y, 0.03, 1.0, fit_intercept=False)
    m = Lasso(alpha=0.03, tol=1e-10).fit(X, y)
    assert sp.issparse(X)  # centring handled implicitly
    ref = sklm.Lasso(alpha=0.03, tol=1e-12, max_iter=100000).fit(X, y)
    np.testing.assert_allclose(m.predict(X), ref.predict(X), atol=1e-5)
    assert abs(m.score(X, y) - ref.score(X, y)) < 1e-6


@pytest.mark.mpi
def test_tol_rule_and_n_iter_like_sklearn(comm):
    X, y = dataset("dense", seed=4)
    m = Lasso(alpha=0.1, tol=1e-4).fit(X, y)
    # sklearn's rule: gap (unscaled) <= tol * ||y - mean y||^2, dual_gap_ = gap / n
    yc = y - y.mean()
    assert m.dual_gap_ * len(y) <= 1e-4 * yc @ yc
    assert m.n_iter_ >= 1


@pytest.mark.mpi
def test_convergence_warning(comm):
    X, y = dataset("correlated", seed=6)
    with pytest.warns(sklearn_conv_warning()):
        Lasso(alpha=0.001, tol=1e-14, max_iter=2, working_set=False).fit(X, y)


def sklearn_conv_warning():
    from sklearn.exceptions import ConvergenceWarning

    return ConvergenceWarning


@pytest.mark.mpi
def test_warm_start(comm):
    X, y = dataset("dense", seed=7)
    m = Lasso(alpha=0.05, tol=1e-10, warm_start=True).fit(X, y)
    n1 = m.n_iter_
    m.fit(X, y)
    assert m.n_iter_ <= 1 < n1 + 1


@pytest.mark.mpi
def test_path_matches_sklearn(comm):
    X, y = dataset("wide", seed=8)
    alphas, coefs, gaps = lasso_path(X, y, n_alphas=8, eps=1e-2, tol=1e-10, max_iter=100000)  # as the reference
    ra, rc, _ = sklm.lasso_path(X, y, alphas=alphas, tol=1e-12, max_iter=100000)
    np.testing.assert_allclose(alphas, ra)
    assert np.all(np.diff(alphas) < 0)
    for i, a in enumerate(alphas):
        fo = objective(X, y, coefs[:, i], 0.0, a)
        fr = objective(X, y, rc[:, i], 0.0, a)
        assert abs(fo - fr) <= 1e-6 * fr
        assert np.array_equal(coefs[:, i] != 0, rc[:, i] != 0)
    # sklearn's default grid
    grid = sklm._coordinate_descent._alpha_grid(X, y, n_alphas=8, eps=1e-2, fit_intercept=False)
    np.testing.assert_allclose(alphas, grid, rtol=1e-12)


@pytest.mark.mpi
def test_dataset_path(comm, shared_tmp):
    data = pytest.importorskip("petuum_mpi.data")
    X, y = dataset("sparse", seed=9)
    path = f"{shared_tmp}/lasso_ds"
    if comm.rank == 0:
        data.write_matrix(path, sp.csr_matrix(X), y, n_shards=3)
    comm.Barrier()
    m = Lasso(alpha=0.03, tol=1e-10).fit(path)
    ref = sklm.Lasso(alpha=0.03, tol=1e-12, max_iter=100000).fit(X, y)
    np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-5)


def test_parameter_validation():
    X, y = dataset("dense")
    for kw, name in [({"alpha": -1.0}, "alpha"), ({"alpha": 0.0}, "alpha"), ({"max_iter": 0}, "max_iter"),
                     ({"tol": "x"}, "tol"), ({"scheduler": "fifo"}, "scheduler"), ({"rho": 2.0}, "rho"),
                     ({"pipeline_depth": -1}, "pipeline_depth"), ({"round_size": 0}, "round_size"),
                     ({"fit_intercept": 1}, "fit_intercept"), ({"precompute": "yes"}, "precompute")]:
        with pytest.raises(ConfigError, match=name):
            Lasso(**kw).fit(X, y)
    with pytest.raises(ConfigError, match="l1_ratio"):
        ElasticNet(l1_ratio=1.5).fit(X, y)
    with pytest.raises(UsageError):
        Lasso().predict(X)


@pytest.mark.mpi
@pytest.mark.parametrize("precompute", [True, False])
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_precompute_gram_and_engine_agree(comm, kind, precompute):
    # Gram working-set solver (one Allreduce per working set) and engine rounds
    X, y = dataset(kind, seed=11)
    m = check_vs_sklearn(X, y, 0.05, 0.7, precompute=precompute)
    assert (m.telemetry_["gram_solves"] > 0) == precompute


def test_gram_sparse_kernel_matches_scipy():
    from petuum_mpi.apps.lasso import kernels as K

    X = sp.random(300, 80, density=0.05, random_state=3, format="csc")
    X[:, 7] = 0.0  # an empty column
    X.eliminate_zeros()
    W = np.array([0, 3, 7, 8, 40, 79], dtype=np.int64)
    G = np.zeros((len(W), len(W)))
    K.gram_sparse(X.indptr.astype(np.int64), X.indices.astype(np.int32), X.data, W, X.shape[0], G)
    ref = (X[:, W].T @ X[:, W]).toarray()
    np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("alpha", [0.3, 0.03, 0.003])
def test_gram_cd_active_set_reaches_sklearn_optimum(alpha):
    # gram_cd (full sweeps + compact active-set phases) on a working set = all columns
    from petuum_mpi.apps.lasso import kernels as K

    rng = np.random.default_rng(5)
    n, p = 200, 60
    Z = rng.standard_normal((n, p // 3))
    X = np.repeat(Z, 3, axis=1) + 0.5 * rng.standard_normal((n, p))
    y = X[:, :5] @ rng.standard_normal(5) + 0.1 * rng.standard_normal(n)
    G = X.T @ X
    z = X.T @ y
    w = np.zeros(p)
    q = z.copy()  # X^T (y - X w) at w = 0
    a = alpha * n
    sweeps, gap, primal = K.gram_cd(G, q, w, z, float(y @ y), a, 0.0, 1e-12 * (y @ y), 100000)
    ref = sklm.Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=1000000).fit(X, y)
    fo = objective(X, y, w, 0.0, alpha)
    fr = objective(X, y, ref.coef_, 0.0, alpha)
    assert abs(fo - fr) <= 1e-9 * fr
    assert 0 <= gap <= 1e-12 * (y @ y) and abs(primal / n - fo) <= 1e-9 * fo
    np.testing.assert_allclose(q, X.T @ (y - X @ w), atol=1e-8)  # q kept consistent through the phases
    assert np.array_equal(w != 0, ref.coef_ != 0)


@pytest.mark.parametrize("est", [Lasso(), ElasticNet()], ids=lambda e: type(e).__name__)
def test_check_estimator(est):
    """scikit-learn's check_estimator at one rank: every check passes."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(est)


def test_declared_params_save_load(tmp_path):
    X, y = dataset("dense")
    assert "l1_ratio" not in Lasso().get_params() and ElasticNet().get_params()["l1_ratio"] == 0.5
    m = ElasticNet(alpha=0.05, tol=1e-8).fit(X, y)
    assert m.history_ and {"iter", "objective", "gap", "dual_gap"} <= set(m.history_[-1])
    m.save(str(tmp_path / "m.h5"))
    back = ElasticNet.load(str(tmp_path / "m.h5"))
    assert back.get_params() == m.get_params()
    np.testing.assert_array_equal(back.predict(X), m.predict(X))


@pytest.mark.mpi
@pytest.mark.parametrize("scheduler", ["cyclic", "sap"])
def test_sparse_large_support_correlated(comm, scheduler):
    """Tall sparse data with groups of 4 correlated columns and a support of ~400
    coefficients, solved by the engine's rounds (precompute=False) with the default
    round size: no sklearn-tolerance drift at any rank count."""
    from petuum_mpi.data.synth import make_regression

    X, y, _ = make_regression(1000, 1200, nnz=18000, group_size=4, corr=0.8, n_informative=500, seed=3)
    alpha = 0.02 * np.abs(X.T @ (y - y.mean())).max() / len(y)
    ref = sklm.Lasso(alpha=alpha, tol=1e-12, max_iter=200000, fit_intercept=False).fit(X, y)
    m = Lasso(alpha=alpha, tol=1e-9, max_iter=20000, fit_intercept=False, precompute=False,
              scheduler=scheduler).fit(X, y)
    fo = objective(X, y, m.coef_, 0.0, alpha)
    fr = objective(X, y, ref.coef_, 0.0, alpha)
    assert np.count_nonzero(ref.coef_) > 300
    assert abs(fo - fr) <= 1e-6 * abs(fr), (fo, fr)
    local = scheduler == "cyclic"  # cyclic: the local CD kernel (gathered columns at > 1 rank), not rounds
    assert m.telemetry_["local_sweeps" if local else "rounds"] > 0


@pytest.mark.mpi
@pytest.mark.parametrize("path", [False, True])
def test_one_blas_thread_inside_a_fit(comm, path):
    # a rank is a core: BLAS inside the fit runs one thread at any rank count (a second
    # OpenBLAS thread on a busy core made the gap's dots 1000x slower); the limit is undone after
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]

    X, y = dataset("sparse", seed=2)
    Lasso(alpha=0.05).fit(X, y)  # the first fit may set a process-wide share of the cores (compile_once)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        seen = []
        if path:
            lasso_path(X, y, n_alphas=3, comm=comm, on_alpha=lambda *a: seen.extend(blas_threads()))
        else:
            Lasso(alpha=0.05).fit(X, y, callback=lambda row: seen.extend(blas_threads()))
        assert seen and set(seen) == {1}, seen
        assert blas_threads() == before


@pytest.mark.mpi
@pytest.mark.parametrize("kind,precompute,l1", [("dense", False, 1.0), ("sparse", False, 1.0), ("sparse", "auto", 1.0),
                                                ("dense", False, 0.5)])
def test_large_working_set_local_path(comm, kind, precompute, l1):
    # a working set larger than the Gram solver's: at one rank the local CD kernel with Anderson
    # extrapolation solves it; at more ranks its columns are gathered (every row) and the ranks
    # sweep contiguous blocks of it (block-Jacobi, split_cd), not the engine's rounds; same optimum
    # as sklearn everywhere
    rng = np.random.default_rng(7)
    n, p = 800, 1200
    if kind == "dense":
        Z = rng.standard_normal((n, p // 4))
        X = np.repeat(Z, 4, axis=1) + 0.5 * rng.standard_normal((n, p))
    else:
        X = sp.random(n, p, density=0.03, random_state=7, format="csc", data_rvs=rng.standard_normal)
        X = (X + sp.hstack([X[:, 1:], X[:, :1]]) * 0.8).tocsr()  # neighbours share non-zeros: correlated
    wt = np.zeros(p)
    wt[rng.choice(p, p // 5, replace=False)] = rng.standard_normal(p // 5)
    y = X @ wt + 0.1 * rng.standard_normal(n)
    m = check_vs_sklearn(X, y, 0.01, l1, precompute=precompute)
    assert np.count_nonzero(m.coef_) > 250
    t = m.telemetry_
    assert t["local_sweeps"] > 0 and t["rounds"] == 0, t
    if comm.size == 1:
        assert t["extrapolations"] > 0, t
    else:
        assert t["gathered_cols"] > 0 and t["split_solves"] > 0, t


@pytest.mark.mpi
def test_gathered_working_set_replicated_solve(comm):
    # a working set of few non-zeros per rank and sweep: at > 1 rank its gathered columns are
    # solved by the same kernel on every rank (no block split); sklearn's optimum and one coef_
    # on every rank
    rng = np.random.default_rng(4)
    X = sp.random(3000, 300, density=0.01, random_state=4, format="csr", data_rvs=rng.standard_normal)
    y = X @ rng.standard_normal(300) + 0.1 * rng.standard_normal(3000)
    m = check_vs_sklearn(X, y, 0.002, 1.0, precompute=False)
    assert np.count_nonzero(m.coef_) > 100
    t = m.telemetry_
    assert t["local_sweeps"] > 0 and t["rounds"] == 0, t
    if comm.size > 1:
        assert t["gathered_solves"] > 0, t
        coefs = comm.allgather(m.coef_)
        assert all(np.array_equal(c, coefs[0]) for c in coefs)
