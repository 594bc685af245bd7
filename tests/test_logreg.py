"""Logistic regression: the default full-batch solvers reach scikit-learn's optimum on
ill-conditioned data, the parameter-server solvers (svrg, sgd) its objective at any rank count;
predictions, persistence, job runner, errors, check_estimator. Run at 1, 2, 4 ranks:

    mpiexec -n 4 python -m pytest --with-mpi -m mpi -q tests/test_logreg.py
"""

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from petuum_mpi.apps.logreg import LogisticRegression, holdout_mask
from petuum_mpi.linear import kernels as LK
from petuum_mpi.linear import losses
from petuum_mpi.linear.rows import as_rows
from petuum_mpi.data.synth import make_classification, make_ill_conditioned_classification
from petuum_mpi.errors import ConfigError, DataError, UsageError

sklearn = pytest.importorskip("sklearn.linear_model")


def _sk_objective(X, y, alpha):
    """Objective of scikit-learn's LogisticRegression(C=1/(n alpha)) optimum (tight tolerance)."""
    n = X.shape[0]
    sk = sklearn.LogisticRegression(C=1.0 / (n * alpha), tol=1e-10, max_iter=10000).fit(X, y)
    Xc = sp.csr_matrix(X)
    yk = np.searchsorted(sk.classes_, y).astype(np.float64)
    loss = losses.by_name("log_loss", sk.classes_.size)
    return LK.objective(loss, as_rows(Xc), yk, np.ascontiguousarray(sk.coef_.T), sk.intercept_, alpha, 0.0), sk


@pytest.mark.mpi
@pytest.mark.parametrize("consistency,n_classes", [("bsp", 2), ("ssp", 2), ("ssp", 3), ("essp", 2), ("asp", 2)])
def test_objective_reaches_sklearn(comm, consistency, n_classes):
    alpha = 1e-2
    X, y, _ = make_classification(1500, 200, n_classes=n_classes, nnz=20000, seed=3)
    f_sk, _ = _sk_objective(X, y, alpha)
    m = LogisticRegression(alpha=alpha, solver="svrg", tol=None, max_iter=30, consistency=consistency,
                           staleness=2, eval_every=10,
                           comm=comm).fit(X, y)
    rel = (m.objective_ - f_sk) / f_sk
    assert -1e-6 < rel < 1e-3, (consistency, n_classes, m.objective_, f_sk, rel)
    # the reported objective is the objective of the returned model on all rows
    assert m.objective(X, y) == pytest.approx(m.objective_, rel=1e-10)
    # every rank holds the same model
    allc = comm.allgather(m.coef_)
    for c in allc:
        np.testing.assert_array_equal(c, allc[0])
    assert m.history_[-1]["train_score"] > 0.6


@pytest.mark.mpi
@pytest.mark.nolocal
def test_dense_features_and_holdout(comm):
    alpha = 1e-2
    X, y, _ = make_classification(1200, 40, nnz=None, dense=True, seed=5)
    rows = np.arange(X.shape[0])
    held = holdout_mask(rows, 0.2, 7)
    assert 0.1 < held.mean() < 0.3
    f_sk, sk = _sk_objective(X[~held], y[~held], alpha)
    m = LogisticRegression(alpha=alpha, solver="svrg", tol=None, max_iter=30, holdout=0.2, random_state=7,
                           consistency="ssp", eval_every=1000, comm=comm).fit(X, y)
    rel = (m.objective_ - f_sk) / f_sk
    assert -1e-6 < rel < 1e-3, rel
    last = m.history_[-1]
    # test figures are those of the returned model on exactly the held-out rows
    p = m.predict_proba(X[held])
    ll = -np.mean(np.log(p[np.arange(held.sum()), y[held]]))
    assert last["test_loss"] == pytest.approx(ll, rel=1e-9)
    assert last["test_score"] == pytest.approx(np.mean(m.predict(X[held]) == y[held]), abs=1e-12)
    assert last["test_score"] == pytest.approx(sk.score(X[held], y[held]), abs=0.03)


def test_predict_proba_matches_numpy_and_roundtrip(tmp_path):
    X, y, _ = make_classification(400, 30, n_classes=3, nnz=3000, seed=1)
    labels = np.array(["a", "b", "c"])[y]
    m = LogisticRegression(alpha=1e-2, max_iter=5).fit(X, labels)
    assert list(m.classes_) == ["a", "b", "c"]
    Z = X @ m.coef_.T + m.intercept_
    P = np.exp(Z - Z.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    np.testing.assert_allclose(m.predict_proba(X), P, rtol=1e-10, atol=1e-12)
    assert (m.predict(X) == m.classes_[P.argmax(1)]).all()
    m.save(str(tmp_path / "m3.h5"))  # string labels survive the model file
    assert list(LogisticRegression.load(str(tmp_path / "m3.h5")).predict(X)) == list(m.predict(X))
    # binary: columns [1 - p, p]
    Xb, yb, _ = make_classification(300, 20, nnz=2000, seed=2)
    mb = LogisticRegression(alpha=1e-2, max_iter=5).fit(Xb, yb)
    p1 = 1 / (1 + np.exp(-(Xb @ mb.coef_[0] + mb.intercept_[0])))
    np.testing.assert_allclose(mb.predict_proba(Xb)[:, 1], p1, rtol=1e-10)
    path = str(tmp_path / "m.h5")
    mb.save(path)
    m2 = LogisticRegression.load(path)
    np.testing.assert_array_equal(m2.predict(Xb), mb.predict(Xb))
    assert m2.objective(Xb, yb) == pytest.approx(mb.objective_, rel=1e-10)


def test_l1_gives_sparse_model():
    X, y, _ = make_classification(800, 100, nnz=8000, n_informative=5, seed=4)
    m = LogisticRegression(alpha=1e-3, l1=5e-2, solver="sgd", tol=None, max_iter=20, average=False).fit(X, y)
    dense = LogisticRegression(alpha=1e-3, solver="sgd", tol=None, max_iter=20, average=False).fit(X, y)
    assert np.count_nonzero(dense.coef_) == 100
    assert np.count_nonzero(m.coef_) < 0.85 * np.count_nonzero(dense.coef_)


@pytest.mark.parametrize("kw,needle", [
    ({"alpha": -1.0}, "alpha"), ({"learning_rate": "fast"}, "learning_rate"), ({"batch_size": 0}, "batch_size"),
    ({"eta0": 0.0}, "eta0"), ({"holdout": 1.0}, "holdout"), ({"consistency": "strict"}, "consistency"),
    ({"max_iter": 2.5}, "max_iter"), ({"average": "yes"}, "average"), ({"solver": "svm"}, "solver"),
    ({"l1": 0.1}, "l1: solver 'newton-cg' needs l1 = 0.*sgd.*l1_logistic"), ({"alpha": 0.0}, "alpha: .*> 0"),
    ({"solver": "lbfgs", "snapshot_every": 2}, "snapshot_every"), ({"tol": -1.0}, "tol"),
])
def test_bad_parameters(kw, needle):
    X, y, _ = make_classification(50, 5, nnz=100, seed=0)
    with pytest.raises(ConfigError, match=needle):
        LogisticRegression(**kw).fit(X, y)


def test_bad_data():
    X, y, _ = make_classification(50, 5, nnz=100, seed=0)
    with pytest.raises(DataError, match="2 classes"):
        LogisticRegression().fit(X, np.zeros(50))
    with pytest.raises(DataError, match="inconsistent numbers of samples"):  # scikit-learn's message
        LogisticRegression().fit(X, y[:-1])
    Xn = X.toarray()
    Xn[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        LogisticRegression().fit(Xn, y)
    with pytest.raises(UsageError, match="fit"):
        LogisticRegression().predict(X)
    m = LogisticRegression(tol=None, max_iter=1).fit(X, y)
    with pytest.raises(DataError, match="features"):
        m.predict(np.zeros((2, 6)))
    with pytest.raises(DataError, match="label"):
        m.objective(X, y + 5)


@pytest.mark.mpi
def test_run_job_end_to_end(comm, shared_tmp):
    from petuum_mpi.cli import run_job_file
    from petuum_mpi.data import write_matrix

    X, y, _ = make_classification(1000, 100, nnz=10000, seed=8)
    data = os.path.join(shared_tmp, "clf")
    if comm.rank == 0:
        write_matrix(data, X, y, n_shards=3, task="classification", n_classes=2)
        with open(os.path.join(shared_tmp, "job.toml"), "w") as fh:
            fh.write(f'app = "logreg"\n[data]\ntrain = "{data}"\n[model]\nalpha = 0.01\nmax_iter = 40\n'
                     f'holdout = 0.1\nsolver = "svrg"\ntol = 0.0\n[engine]\nconsistency = "ssp"\nstaleness = 1\n'
                     f'[run]\noutput_dir = "{shared_tmp}/runs"\nname = "lr"\nprogress = "off"\n')
    comm.Barrier()
    summary = run_job_file(os.path.join(shared_tmp, "job.toml"), ["model.max_iter=60"], comm)
    comm.Barrier()  # rank 0 writes the run directory
    held = holdout_mask(np.arange(1000), 0.1, 0)
    f_sk, _ = _sk_objective(X[~held], y[~held], 0.01)
    assert abs(summary["objective"] - f_sk) / f_sk < 1e-3, (summary["objective"], f_sk)
    assert summary["n_iter"] == 60 and "test_score" in summary
    assert comm.rank != 0 or summary["telemetry"]["tables"]["W"]["staleness_max"] <= 1
    model = os.path.join(shared_tmp, "runs", "lr", "model.h5")
    m = LogisticRegression.load(model)
    assert m.objective(X[~held], y[~held]) == pytest.approx(summary["objective"], rel=1e-9)
    rows = [__import__("json").loads(x) for x in open(os.path.join(shared_tmp, "runs", "lr", "metrics.jsonl"))]
    assert len(rows) == 60 and all("objective" in r and "staleness_mean" in r for r in rows)
    comm.Barrier()


@pytest.mark.mpi
def test_bad_job_values(comm, shared_tmp):
    from petuum_mpi.config import load_job

    path = os.path.join(shared_tmp, "bad.toml")
    if comm.rank == 0:
        with open(path, "w") as fh:
            fh.write(f'app = "logreg"\n[data]\ntrain = "{shared_tmp}"\n[model]\nlearning_rate = "fast"\n')
    comm.Barrier()
    with pytest.raises(ConfigError, match="learning_rate"):
        load_job(path, comm=comm)


@pytest.mark.mpi
@pytest.mark.parametrize("solver", ["svrg", "sgd"])
def test_snapshot_resume_equals_uninterrupted(comm, shared_tmp, solver):
    # 5 iterations with snapshots, then resumed to 10 == 10 uninterrupted (bsp; averaging off:
    # its window is a fraction of max_iter, which differs between the 5- and 10-iteration runs)
    X, y, _ = make_classification(1500, 200, nnz=20000, seed=3)
    kw = dict(alpha=1e-3, solver=solver, learning_rate="adagrad", average=False, tol=None, comm=comm,
              consistency="bsp", staleness=0)
    eng = {"snapshot_every": 5, "snapshot_dir": os.path.join(shared_tmp, solver)}
    full = LogisticRegression(max_iter=10, **kw).fit(X, y)
    LogisticRegression(max_iter=5, **eng, **kw).fit(X, y)
    res = LogisticRegression(max_iter=10, resume=True, **eng, **kw).fit(X, y)
    assert res.n_iter_ == 10
    assert res.objective_ == pytest.approx(full.objective_, rel=1e-7)
    np.testing.assert_allclose(res.coef_, full.coef_, atol=1e-6)
    half = LogisticRegression(max_iter=5, **kw).fit(X, y)
    assert res.objective_ < half.objective_  # it really continued


# ----------------------------------------------------------------------------- full-batch solvers (issue 13)
ALPHA_ILL = 1e-4
_ILL = {}


def _ill(dense, n_classes):
    key = (dense, n_classes)
    if key not in _ILL:
        n, d = (800, 20) if dense else (1000, 80)
        _ILL[key] = make_ill_conditioned_classification(n, d, n_classes=n_classes, dense=dense, seed=1)[:2]
    return _ILL[key]


def _sk_optimum(comm, X, y):
    """The lower objective of scikit-learn's lbfgs and newton-cg, tight (computed on rank 0)."""
    f = None
    if comm.rank == 0:
        fs = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for solver in ("lbfgs", "newton-cg"):
                sk = sklearn.LogisticRegression(C=1.0 / (X.shape[0] * ALPHA_ILL), tol=1e-12, max_iter=20000,
                                                solver=solver).fit(X, y)
                m = LogisticRegression(alpha=ALPHA_ILL)
                m.coef_, m.intercept_, m.classes_, m.n_features_in_ = sk.coef_, sk.intercept_, sk.classes_, X.shape[1]
                fs.append(m.objective(X, y))
        f = min(fs)
    return comm.bcast(f, root=0)


@pytest.mark.mpi
@pytest.mark.parametrize("solver", ["newton-cg", "lbfgs"])
@pytest.mark.parametrize("dense,n_classes", [(True, 2), (True, 3), (False, 2), (False, 3)])
def test_default_solvers_reach_sklearn_optimum_ill_conditioned(comm, solver, dense, n_classes):
    X, y = _ill(dense, n_classes)
    f_sk = _sk_optimum(comm, X, y)
    rows = []
    with warnings.catch_warnings():  # at tol=1e-10 lbfgs may stop on the precision limit (and say so)
        warnings.simplefilter("ignore")
        m = LogisticRegression(alpha=ALPHA_ILL, solver=solver, tol=1e-10, max_iter=5000, comm=comm).fit(
            X, y, callback=rows.append)
    rel = (m.objective_ - f_sk) / f_sk
    assert rel < 1e-6, (solver, dense, n_classes, m.objective_, f_sk, rel, m.telemetry_)
    assert m.objective(X, y) == pytest.approx(m.objective_, rel=1e-12)  # the returned model's objective
    assert m.history_[-1]["grad_max"] == m.telemetry_["grad_max"] and m.telemetry_["n_fev"] >= m.n_iter_
    assert rows == m.history_ and [r["iter"] for r in rows[:-1]] == list(range(1, m.n_iter_ + 1))
    assert set(rows[-1]) >= {"iter", "epoch", "time", "objective", "grad_max", "train_loss", "train_score"}
    allc = comm.allgather((m.coef_, m.intercept_))  # every rank holds the same model, bit for bit
    for c, b in allc:
        np.testing.assert_array_equal(c, allc[0][0])
        np.testing.assert_array_equal(b, allc[0][1])
    assert m.coef_.shape == (1 if n_classes == 2 else n_classes, X.shape[1])


@pytest.mark.mpi
@pytest.mark.parametrize("solver", ["newton-cg", "lbfgs"])
def test_convergence_warning_at_max_iter(comm, solver):
    from petuum_mpi.apps.logreg import ConvergenceWarning

    X, y = _ill(True, 3)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        m = LogisticRegression(alpha=ALPHA_ILL, solver=solver, tol=1e-8, max_iter=3, comm=comm).fit(X, y)
    assert m.n_iter_ == 3 and not m.telemetry_["converged"] and m.history_[-1]["grad_max"] > 1e-8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loose = LogisticRegression(alpha=ALPHA_ILL, solver=solver, tol=1e-2, comm=comm).fit(X, y)
    assert loose.telemetry_["converged"] and loose.history_[-1]["grad_max"] <= 1e-2


def test_check_estimator():
    """scikit-learn's check_estimator at one rank (default solver): every check passes."""
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_estimator(LogisticRegression())
