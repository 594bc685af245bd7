"""STRADS engine and schedulers on their own (NumPy references), and the STRADS jobs end to end."""

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

from petuum_mpi.errors import ConfigError
from petuum_mpi.strads import Engine, RowSample, make_scheduler
from petuum_mpi.strads.schedulers import CyclicScheduler, PriorityScheduler, SAPScheduler


def correlated_sample(n=400, groups=30, size=4, seed=0):
    """Dense rows with groups of ``size`` strongly correlated columns."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, groups))
    return np.repeat(Z, size, axis=1) + 0.5 * rng.standard_normal((n, groups * size))


# ------------------------------------------------------------------ schedulers
@pytest.mark.parametrize("depth", [0, 2])
def test_sap_never_pairs_dependent_columns(depth):
    S = correlated_sample()
    p = S.shape[1]
    sample = RowSample(S)
    rho = 0.3
    sched = SAPScheduler(p, round_size=16, depth=depth, seed=1, rho=rho, sample=sample, warmup_sweeps=0.5)
    C = np.abs(np.corrcoef(S, rowvar=False))  # independent reference (float64)
    recent = []
    rng = np.random.default_rng(2)
    n_pairs_checked = 0
    for t in range(300):
        v = sched.schedule()
        sched.in_flight(v)
        assert len(v) == len(np.unique(v))
        sub = C[np.ix_(v, v)] - np.eye(len(v))
        assert sub.max(initial=0.0) < rho + 1e-5, (t, v)
        for old in recent[-depth:] if depth else []:  # never dependent on a round still in flight
            assert not np.intersect1d(v, old).size
            assert C[np.ix_(v, old)].max(initial=0.0) < rho + 1e-5
        n_pairs_checked += len(v) * (len(v) - 1) // 2
        recent.append(v)
        sched.feedback(v, rng.random(len(v)))
    # groups of 4 with |corr| ~ 0.8 exist, so the filter really had work to do
    assert sched.rejected > 0 and n_pairs_checked > 1000
    assert (C - np.eye(p)).max() > 0.7


@pytest.mark.parametrize("sparse", [False, True])
def test_independent_filter_matches_greedy_on_full_matrix(sparse):
    # the lazy Numba filter against a greedy pass over the full |corr| matrix (NumPy, float64)
    rng = np.random.default_rng(4)
    S = correlated_sample(n=300, groups=25, size=4, seed=4)
    if sparse:
        S = sp.csr_matrix(S * (rng.random(S.shape) < 0.3))
    sample = RowSample(S)
    p = S.shape[1]
    for trial in range(40):
        cand = rng.permutation(p + 3)[:40]  # ids >= p (e.g. an intercept) are independent
        blocked = np.setdiff1d(rng.choice(p, 10, replace=False), cand)
        limit = int(rng.integers(5, 30))
        rho = float(rng.choice([0.2, 0.4, 0.7]))
        G = sample.corr(cand, np.concatenate([cand, blocked]))
        ref = np.zeros(len(cand), dtype=bool)
        acc = []
        for i in range(len(cand)):
            if len(acc) >= limit:
                break
            row = G[i]
            near = [k for k in acc if row[k] >= rho + 1e-4]
            far = [k for k in acc if row[k] < rho - 1e-4]
            assert len(near) + len(far) == len(acc)  # no tie within float32 rounding
            if row[len(cand):].max(initial=0.0) < rho and not near:
                ref[i] = True
                acc.append(i)
        np.testing.assert_array_equal(sample.independent(cand, blocked, rho, limit), ref)


def test_sap_sparse_sample_uses_cosine():
    rng = np.random.default_rng(3)
    S = sp.random(300, 60, density=0.2, random_state=3, format="csr")
    S = sp.hstack([S[:, :1], S[:, :1] * 2.0, S[:, 2:]]).tocsr()  # parallel columns: cosine 1
    sample = RowSample(sp.csr_matrix(S))
    Sd = S.toarray()
    nrm = np.linalg.norm(Sd, axis=0)
    nrm[nrm == 0] = 1
    cos = np.abs((Sd / nrm).T @ (Sd / nrm))
    C = np.arange(60)
    np.testing.assert_allclose(sample.corr(C, C), cos, atol=1e-5)
    sched = SAPScheduler(60, round_size=30, seed=0, rho=0.5, sample=sample, warmup_sweeps=0)
    sched.weight[:] = rng.random(60)
    sched.weight[:2] = 10.0  # both parallel columns are top candidates
    for _ in range(50):
        v = sched.schedule()
        assert not (0 in v and 1 in v)
        sub = cos[np.ix_(v, v)] - np.eye(len(v))
        assert sub.max(initial=0.0) < 0.5 + 1e-5


def test_sap_sparse_rounds_are_full_when_no_dependency_reaches_rho():
    """Columns that all overlap but only weakly (|cos| < rho for every pair): every
    round holds round_size columns. The former filter walked at most as many row-list
    entries as the round's non-zeros and ended such rounds after ~20 of 64."""
    n, p, u, rho = 2000, 400, 64, 0.2
    S = sp.random(n, p, density=0.3, random_state=7, format="csr", data_rvs=np.random.default_rng(7).standard_normal)
    Sd = S.toarray()
    Sd /= np.linalg.norm(Sd, axis=0)
    cos = np.abs(Sd.T @ Sd) - np.eye(p)
    assert 0.05 < cos.max() < rho  # every pair overlaps, none reaches rho
    sched = SAPScheduler(p, round_size=u, seed=2, rho=rho, sample=RowSample(S), warmup_sweeps=0.0)
    sched.weight[:] = 1.0
    for _ in range(30):
        v = sched.schedule()
        assert len(v) == u
        sched.feedback(v, np.ones(len(v)))
    assert sched.rejected == 0


def test_sap_sparse_conflict_lists_are_built_once_per_column():
    rng = np.random.default_rng(8)
    S = sp.random(500, 120, density=0.05, random_state=8, format="csr")
    sample = RowSample(S)
    cand = rng.permutation(120)[:40]
    sample.independent(cand, np.empty(0, dtype=np.int64), 0.3, 20)
    work = sample.list_work
    assert work > 0
    for _ in range(5):  # the same columns again: no dot product recomputed
        sample.independent(rng.permutation(cand), cand[:3], 0.3, 20)
    assert sample.list_work == work


def test_cyclic_covers_every_variable_once_per_sweep_and_balances_nnz():
    rng = np.random.default_rng(4)
    p, u = 103, 10
    costs = np.round(rng.lognormal(4.0, 0.8, p)) + 1  # skewed column nnz
    sched = CyclicScheduler(p, round_size=u, costs=costs)
    n_rounds = -(-p // u)
    for sweep in range(3):
        rounds = [sched.schedule() for _ in range(n_rounds)]
        allv = np.concatenate(rounds)
        assert len(allv) == p and np.array_equal(np.sort(allv), np.arange(p)), sweep
    # rounds carry about the same nnz: much flatter than contiguous blocks
    sums = np.array([costs[r].sum() for r in rounds])
    contiguous = np.array([costs[i: i + u].sum() for i in range(0, p, u)])
    assert sums.max() <= costs.sum() / n_rounds + costs.max()  # greedy list-scheduling bound
    assert np.std(sums) < 0.5 * np.std(contiguous)
    # restricting the active set: a sweep covers exactly the active ones
    act = np.sort(rng.choice(p, 37, replace=False))
    sched.set_active(act)
    allv = np.concatenate([sched.schedule() for _ in range(-(-37 // u))])
    assert np.array_equal(np.sort(allv), act)


def test_priority_sampling_follows_weights():
    p, draws = 20, 40000
    sched = PriorityScheduler(p, round_size=1, seed=5, eta=0.05, warmup_sweeps=0)
    change = np.linspace(0.1, 2.0, p)
    sched.feedback(np.arange(p), change)  # weight = change^2
    w = change ** 2
    prob = (w + 0.05 * w.mean()) / (w + 0.05 * w.mean()).sum()
    counts = np.zeros(p)
    for _ in range(draws):
        counts[sched.schedule()] += 1
    # one uniform refresh sweep (p draws) after every 4 p priority draws
    cycle = 5 * p
    expect = draws / cycle * (4 * p * prob + 1)
    sd = np.sqrt(draws / cycle * 4 * p * prob * (1 - prob)) + 1
    assert np.all(np.abs(counts - expect) < 5 * sd), (counts, expect)
    assert counts.min() > 0  # no variable starves
    assert np.corrcoef(counts, prob)[0, 1] > 0.99


def test_in_flight_rounds_are_not_reissued():
    for name in ("cyclic", "random", "priority"):
        sched = make_scheduler(name, 30, round_size=5, depth=2, seed=6, warmup_sweeps=0)
        sched.feedback(np.arange(30), np.r_[np.full(3, 100.0), np.ones(27)])  # heavy priority on 0..2
        hist = []
        for _ in range(200):
            v = sched.schedule()
            assert len(v) > 0  # never an empty round while free variables exist
            for old in hist[-2:]:
                assert not np.intersect1d(v, old).size, name
            sched.in_flight(v)
            hist.append(v)
        sched.clear_in_flight()
        assert not sched.blocked.any()


def test_make_scheduler_rejects_unknown():
    with pytest.raises(ConfigError, match="scheduler"):
        make_scheduler("fifo", 10)


# ------------------------------------------------------------------ engine
class Separable:
    """Toy app: variable j's value is the sum over ranks of its rows' targets (known exactly).

    Records pushes and pulls to check the pipeline order and the telemetry."""

    partial_width = 1

    def __init__(self, comm, p=50, seed=0):
        rng = np.random.default_rng(seed)
        self.T = rng.standard_normal((4 * comm.size, p))  # rows; every rank owns some
        lo, hi = comm.rank * 4, (comm.rank + 1) * 4
        self.local = self.T[lo:hi]
        self.x = np.zeros(p)
        self.events = []
        self.pulled = 0

    def push(self, v):
        self.events.append(("push", self.pulled, v.copy()))
        return self.local[:, v].sum(axis=0)

    def pull(self, v, summed):
        self.pulled += 1
        return summed.copy()

    def apply(self, v, values):
        ch = np.abs(values - self.x[v])
        self.x[v] = values
        return ch


@pytest.mark.mpi
@pytest.mark.parametrize("depth", [0, 1, 3])
@pytest.mark.parametrize("name", ["cyclic", "priority"])
def test_engine_rounds_pipeline_and_telemetry(comm, depth, name):
    app = Separable(comm)
    sched = make_scheduler(name, 50, round_size=5, depth=depth, seed=0, warmup_sweeps=1)
    eng = Engine(app, sched, comm, pipeline_depth=depth)
    done = eng.run(50) + eng.run(23)
    st = comm.bcast(eng.stats(), root=0)
    pushes = [e for e in app.events if e[0] == "push"]
    n_upd = sum(len(e[2]) for e in pushes)
    # telemetry counts what happened
    assert st["rounds"] == len(pushes) == app.pulled
    assert st["updates"] == n_upd == done
    assert done == 73  # cyclic / warm-up rounds are full: the budget is met exactly
    # pipelining: round k is pushed after exactly max(0, k - depth) pulls (within a run)
    first = 50 // 5
    for k, (_, pulled, _) in enumerate(pushes[:first]):
        assert pulled == max(0, k - depth), (k, pulled)
    # values are the exact global sums, on every rank
    touched = np.unique(np.concatenate([e[2] for e in pushes]))
    np.testing.assert_allclose(app.x[touched], app.T[:, touched].sum(axis=0), rtol=1e-12)
    assert all(b == app.x.tobytes() for b in comm.allgather(app.x.tobytes()))
    if comm.size > 1:
        assert st["time_comm"] > 0


@pytest.mark.mpi
def test_engine_one_rank_fusion_is_exact_cd(comm):
    """At one rank with serial_fusion a round of U updates is U sequential CD steps;
    without fusion it is a Jacobi round: both reach sklearn's optimum. (``random``: with
    ``cyclic`` one rank solves working sets in the lasso's own CD kernel, not in rounds.)"""
    sklm = pytest.importorskip("sklearn.linear_model")
    from petuum_mpi.apps.lasso import Lasso

    rng = np.random.default_rng(7)
    X = rng.standard_normal((60, 12))
    y = X[:, :3] @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.standard_normal(60)
    ref = sklm.Lasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(X, y)
    for fusion in (True, False):
        m = Lasso(alpha=0.05, tol=1e-10, scheduler="random", round_size=12, serial_fusion=fusion,
                  precompute=False).fit(X, y)
        np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-6)
        assert m.telemetry_["updates"] >= 12 * m.n_iter_


# ------------------------------------------------------------------ jobs end to end
def _write_job(path, app, data, out, extra=""):
    with open(path, "w") as fh:
        fh.write(f'app = "{app}"\n[data]\ntrain = "{data}"\n{extra}\n'
                 f'[run]\noutput_dir = "{out}"\nname = "{app}"\nprogress = "off"\n')


@pytest.mark.mpi
@pytest.mark.parametrize("app", ["lasso", "elastic_net"])
def test_run_job_enet_end_to_end(comm, shared_tmp, app):
    sklm = pytest.importorskip("sklearn.linear_model")
    h5py = pytest.importorskip("h5py")
    from petuum_mpi.cli import run_job_file
    from petuum_mpi.data import write_matrix
    from petuum_mpi.data.synth import make_regression

    X, y, _ = make_regression(300, 80, nnz=3000, group_size=4, corr=0.8, seed=3)
    data = os.path.join(shared_tmp, "reg")
    job = os.path.join(shared_tmp, "job.toml")
    l1 = 1.0 if app == "lasso" else 0.5
    if comm.rank == 0:
        write_matrix(data, X, y, n_shards=3)
        extra = '[model]\nalpha = 0.01\ntol = 1e-3\n[engine]\nscheduler = "sap"\n'
        _write_job(job, app, os.path.join(shared_tmp, "nowhere"), os.path.join(shared_tmp, "runs"), extra)
    comm.Barrier()
    summary = run_job_file(job, [f"data.train={data}", "model.tol=1e-9"], comm)
    comm.Barrier()
    ref = sklm.ElasticNet(alpha=0.01, l1_ratio=l1, tol=1e-12, max_iter=100000).fit(X.toarray(), y)
    run = os.path.join(shared_tmp, "runs", app)
    with h5py.File(os.path.join(run, "model.h5"), "r") as f:
        coef = f["coef"][()]
        b = float(np.ravel(f["intercept"][()])[0])
    np.testing.assert_allclose(coef, ref.coef_, atol=1e-5)
    assert abs(b - ref.intercept_) < 1e-5
    assert summary["nnz"] == np.count_nonzero(ref.coef_)
    assert summary["dual_gap"] >= 0 and summary["n_iter"] >= 1
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert rows and all({"iter", "objective", "dual_gap", "nnz", "rounds", "updates"} <= set(r) for r in rows)
    obj = ElasticNetObjective(X.toarray(), y, 0.01, l1)
    assert abs(rows[-1]["objective"] - obj(ref.coef_, ref.intercept_)) <= 1e-6 * obj(ref.coef_, ref.intercept_)
    assert rows[-1]["iter"] == summary["n_iter"]
    with open(os.path.join(run, "summary.json")) as fh:
        assert json.load(fh)["nnz"] == summary["nnz"]
    comm.Barrier()


def ElasticNetObjective(X, y, alpha, l1):
    def f(w, b):
        r = y - X @ w - b
        return 0.5 * r @ r / len(y) + alpha * l1 * np.abs(w).sum() + 0.5 * alpha * (1 - l1) * w @ w

    return f


@pytest.mark.mpi
def test_run_job_lasso_path_and_l1_logistic(comm, shared_tmp):
    sklm = pytest.importorskip("sklearn.linear_model")
    h5py = pytest.importorskip("h5py")
    from petuum_mpi.cli import run_job_file
    from petuum_mpi.data import write_matrix
    from petuum_mpi.data.synth import make_classification, make_regression

    X, y, _ = make_regression(200, 60, nnz=2000, group_size=4, corr=0.8, seed=4)
    Xc, yc, _ = make_classification(300, 40, nnz=3000, seed=5)
    reg, clf = os.path.join(shared_tmp, "reg"), os.path.join(shared_tmp, "clf")
    jp, jl = os.path.join(shared_tmp, "path.toml"), os.path.join(shared_tmp, "logit.toml")
    out = os.path.join(shared_tmp, "runs")
    if comm.rank == 0:
        write_matrix(reg, X, y, n_shards=2)
        write_matrix(clf, Xc, yc, n_shards=2, task="classification", n_classes=2)
        _write_job(jp, "lasso", reg, out, "[model]\nn_alphas = 5\neps = 0.05\ntol = 1e-9\nfit_intercept = false\n")
        _write_job(jl, "l1_logistic", clf, out, "[model]\nC = 0.5\ntol = 1e-7\n")
    comm.Barrier()
    s = run_job_file(jp, [], comm)
    comm.Barrier()
    assert s["n_alphas"] == 5
    with h5py.File(os.path.join(out, "lasso", "model.h5"), "r") as f:
        alphas, coefs = f["alphas"][()], f["coefs"][()]
    _, rc, _ = sklm.lasso_path(X.toarray(), y, alphas=alphas, tol=1e-12, max_iter=100000)
    np.testing.assert_allclose(coefs, rc, atol=1e-5)
    s = run_job_file(jl, [], comm)
    comm.Barrier()
    from petuum_mpi.apps.logistic_l1 import objective

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sklm.LogisticRegression(l1_ratio=1.0, C=0.5, solver="saga", tol=1e-12, max_iter=100000).fit(Xc, yc)
    fr = objective(Xc, yc, ref.coef_, ref.intercept_, 0.5)
    assert abs(s["objective"] - fr) <= 1e-5 * fr
    rows = [json.loads(line) for line in open(os.path.join(out, "l1_logistic", "metrics.jsonl"))]
    assert all({"iter", "objective", "nnz", "rounds"} <= set(r) for r in rows)
    comm.Barrier()


@pytest.mark.mpi
def test_sap_serialises_sparse_dependent_columns_a_row_sample_misses(comm):
    """Pairs of identical sparse columns (|corr| = 1), 8 non-zeros each in 20,000
    rows: a 1,000-row sample holds ~0.4 of a column's non-zeros and reads such pairs
    as independent; the filter must see every row (summed over the ranks' rows)."""
    from petuum_mpi.strads import gather_row_sample

    n, half = 20000, 150
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.choice(n, 8, replace=False) for _ in range(half)])
    cols = np.repeat(np.arange(half), 8)
    vals = rng.standard_normal(len(rows))
    A = sp.csc_matrix((vals, (rows, cols)), shape=(n, half))
    X = sp.hstack([A, A]).tocsr()  # column j and j + half are equal
    lo, hi = comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size
    sample = gather_row_sample(X[lo:hi], n, max_rows=1000, seed=0, comm=comm)
    if comm.rank != 0:
        assert sample is None
        return
    sched = SAPScheduler(2 * half, round_size=64, seed=1, rho=0.1, sample=sample, warmup_sweeps=0.0)
    sched.weight[:] = 1.0
    for _ in range(200):
        v = sched.schedule()
        assert len(v) > 1
        assert not np.isin(v + half, v).any(), v  # never both of an identical pair in one round
    assert sched.rejected > 0


@pytest.mark.mpi
def test_engine_reports_root_wait_fraction(comm):
    app = Separable(comm)
    eng = Engine(app, make_scheduler("cyclic", 50, round_size=5), comm, serial_fusion=False)
    eng.run(200)
    st = eng.stats()
    assert st["time_rounds"] > 0 and 0.0 <= st["root_wait_fraction"] <= 1.0
    assert st["time_schedule"] <= st["time_rounds"]


class Recorder:
    """Toy app that records the rounds (values do not matter here)."""

    partial_width = 1

    def __init__(self):
        self.rounds = []

    def push(self, v):
        return np.zeros(len(v))

    def pull(self, v, summed):
        return summed.copy()

    def apply(self, v, values):
        self.rounds.append(v.copy())
        return np.random.default_rng(len(self.rounds)).random(len(v))


@pytest.mark.mpi
@pytest.mark.parametrize("depth", [0, 1])
@pytest.mark.parametrize("sparse", [True, False])
def test_engine_sap_rounds_never_hold_dependent_columns(comm, sparse, depth):
    """Engine rounds at any rank count, rows split over the ranks: no round (and no
    round against the rounds still in flight) holds two columns with exact
    |x_j . x_k| / (|x_j| |x_k|) >= rho (dense: centred, all rows in the sample)."""
    from petuum_mpi.data.synth import make_regression
    from petuum_mpi.strads import gather_row_sample

    rho = 0.3
    if sparse:
        X, _, _ = make_regression(600, 300, nnz=9000, group_size=4, corr=0.9, seed=1)
        X = sp.csr_matrix(X)
        D = X.toarray()
    else:
        D = correlated_sample(n=600, groups=75, size=4, seed=1)
        X = D
        D = D - D.mean(axis=0)
    nrm = np.linalg.norm(D, axis=0)
    nrm[nrm == 0] = 1.0
    C = np.abs((D / nrm).T @ (D / nrm)) - np.eye(D.shape[1])
    assert C.max() > 0.7  # dependent columns exist
    n = X.shape[0]
    lo, hi = comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size
    sample = gather_row_sample(X[lo:hi], n, max_rows=1000, seed=0, comm=comm)
    sched = make_scheduler("sap", X.shape[1], round_size=16, depth=depth, seed=3, rho=rho, sample=sample,
                           warmup_sweeps=0.5)
    app = Recorder()
    eng = Engine(app, sched, comm, pipeline_depth=depth, serial_fusion=False)
    eng.run(3000)
    assert len(app.rounds) > 100
    for t, v in enumerate(app.rounds):
        assert C[np.ix_(v, v)].max(initial=0.0) < rho + 1e-5, (t, v)
        for old in app.rounds[max(0, t - depth) : t]:
            assert C[np.ix_(v, old)].max(initial=0.0) < rho + 1e-5
    if comm.rank == 0:
        assert eng.stats()["rejected"] > 0


def test_sap_view_of_x_is_built_only_for_parallel_rounds(monkeypatch):
    """A fit that never runs parallel rounds (Gram solver, or one rank's fused exact
    rounds) does not gather sap's view of X (it cost genomics-like fits seconds)."""
    import petuum_mpi.strads.sample as sample_mod
    from petuum_mpi.apps.lasso import Lasso
    from petuum_mpi.data.synth import make_regression

    calls = []
    real = sample_mod.gather_row_sample
    monkeypatch.setattr(sample_mod, "gather_row_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    X, y, _ = make_regression(300, 200, nnz=6000, group_size=4, corr=0.8, seed=2)
    for kw in ({}, {"precompute": False}):  # Gram path; one rank's fused rounds
        m = Lasso(alpha=0.01, scheduler="sap", **kw).fit(X, y)
        assert not m.telemetry_["rounds"] or m.telemetry_["exact"]
    assert calls == []
    Lasso(alpha=0.01, scheduler="sap", precompute=False, serial_fusion=False, max_iter=3).fit(X, y)
    assert calls == [1]  # parallel rounds: built once, on the first round
