"""Lasso and ElasticNet by model-parallel coordinate descent on the STRADS engine.

Objective and conventions are scikit-learn's::

    (1 / (2 n)) ||y - X w - b||^2 + alpha * l1_ratio * ||w||_1
                                  + 0.5 * alpha * (1 - l1_ratio) * ||w||^2

``tol`` is on the duality gap exactly as in ``sklearn.linear_model._cd_fast``: the fit
stops when the gap of the unscaled problem (n times the objective above) is at most
``tol * ||y - mean(y)||^2``; ``dual_gap_`` is that gap divided by n.

Rows of X are split over the ranks; each rank keeps its rows column-major (dense
Fortran array or CSC) and its part of the residual. A fit is a sequence of
duality-gap checks (one pass over all columns plus one Allreduce); between them
the engine runs sweeps over a *working set* (the support plus the coefficients
closest to violating the optimality condition, Celer-style), after gap-safe
screening has removed coefficients that are provably zero. See docs/strads.md.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp

from ..config import Field, Section
from ..errors import ConfigError, DataError, UsageError, convergence_warning
from ..params import check_param as _check
from ..runtime import get_comm, warm_once
from ..strads.engine import Engine, allreduce_sum
from ..strads.sample import gather_row_sample
from ..strads.schedulers import SCHEDULERS, make_scheduler
from . import lasso_kernels as K

def __getattr__(name):  # ``ConvergenceWarning``, without importing scikit-learn with the app
    if name == "ConvergenceWarning":
        return convergence_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")




def row_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """Balanced contiguous block of rows of ``rank``."""
    return rank * n // size, (rank + 1) * n // size


class EnetProblem:
    """One rank's share of an ElasticNet problem: the engine's push / pull / apply.

    Holds the local rows of X (dense Fortran or CSC), the centred local y, the
    raw residual ``r = y_c - X w`` and its local sum; global column statistics
    (means, centred squared norms) come from one Allreduce at construction.
    """

    partial_width = 1

    def __init__(self, X_local, y_local, n_total: int, fit_intercept: bool = True, comm=None):
        self.comm = get_comm(comm)
        self.sparse = sp.issparse(X_local)
        if self.sparse:
            Xc = sp.csc_matrix(X_local, dtype=np.float64)
            Xc.sum_duplicates()
            self.indptr = Xc.indptr.astype(np.int64)
            self.indices = Xc.indices.astype(np.int32)
            self.data = Xc.data
            self.X = None
            nnz_col = np.diff(self.indptr).astype(np.float64)
            colsum = np.empty(Xc.shape[1])
            colsq = np.empty(Xc.shape[1])
            K.col_stats_sparse(self.indptr, self.data, colsum, colsq)
        else:
            self.X = np.asfortranarray(X_local, dtype=np.float64)
            colsum = self.X.sum(axis=0)
            colsq = np.einsum("ij,ij->j", self.X, self.X)
            nnz_col = np.full(self.X.shape[1], float(self.X.shape[0]))
        self.n_local, self.p = X_local.shape
        self.n = int(n_total)
        y_local = np.asarray(y_local, dtype=np.float64).ravel()
        if not np.all(np.isfinite(y_local)):
            raise DataError("y holds NaN or infinite values")
        if self.sparse:
            if not np.all(np.isfinite(self.data)):
                raise DataError("X holds NaN or infinite values")
        elif not np.all(np.isfinite(self.X)):
            raise DataError("X holds NaN or infinite values")
        stats = allreduce_sum(np.concatenate([colsum, colsq, nnz_col, [y_local.sum()]]), self.comm)
        p = self.p
        self.colsum = colsum  # local column sums (for sum(r) bookkeeping)
        self.cost = stats[2 * p : 3 * p]
        self.fit_intercept = bool(fit_intercept)
        if self.fit_intercept:
            self.mu = stats[:p] / self.n
            self.ybar = stats[3 * p] / self.n
        else:
            self.mu = np.zeros(p)
            self.ybar = 0.0
        self.nrm2 = np.maximum(stats[p : 2 * p] - self.n * self.mu ** 2, 0.0)
        self.nrm2[self.nrm2 < 1e-13 * max(1.0, float(stats[p : 2 * p].max(initial=0.0)))] = 0.0
        self.y = y_local - self.ybar
        self.yy = float(allreduce_sum(np.array([self.y @ self.y]), self.comm)[0])
        self.w = np.zeros(p)
        self.r = self.y.copy()
        self.rsum = float(self.r.sum())
        self.a = 0.0
        self.b = 0.0
        self._buf = np.empty(0)
        self._gcache = None  # (W, G) of the last Gram solve (G depends on W only)

    # ---------------------------------------------------------------- state
    def set_penalty(self, alpha: float, l1_ratio: float) -> None:
        self.a = alpha * l1_ratio * self.n
        self.b = alpha * (1.0 - l1_ratio) * self.n

    def set_coef(self, w) -> None:
        """Set w and recompute the local residual."""
        self.w = np.array(w, dtype=np.float64)
        self.w[self.nrm2 == 0] = 0.0
        if self.sparse:
            Xw = sp.csc_matrix((self.data, self.indices, self.indptr), shape=(self.n_local, self.p)) @ self.w
        else:
            Xw = self.X @ self.w
        self.r = self.y - Xw
        self.rsum = float(self.r.sum())

    def _partial(self, vars_, out):
        if self.sparse:
            K.partial_sparse(self.indptr, self.indices, self.data, vars_, self.r, self.rsum, self.mu, out)
        else:
            K.partial_dense(self.X, vars_, self.r, self.rsum, self.mu, out)

    # ---------------------------------------------------------------- engine API
    def push(self, vars_):
        out = np.empty(len(vars_))
        self._partial(vars_, out)
        return out

    def pull(self, vars_, summed):
        out = np.empty(len(vars_))
        K.enet_values(vars_, summed, self.w, self.nrm2, self.a, self.b, out)
        return out

    def apply(self, vars_, values):
        change = np.empty(len(vars_))
        if self.sparse:
            ds = K.apply_sparse(self.indptr, self.indices, self.data, vars_, values, self.w, self.r, self.colsum,
                                change)
        else:
            ds = K.apply_dense(self.X, vars_, values, self.w, self.r, self.colsum, change)
        self.rsum += ds
        return change

    def solo(self, vars_):
        change = np.empty(len(vars_))
        if self.sparse:
            self.rsum = K.cd_sparse(self.indptr, self.indices, self.data, vars_, self.w, self.r, self.rsum, self.mu,
                                    self.nrm2, self.colsum, self.a, self.b, change)
        else:
            self.rsum = K.cd_dense(self.X, vars_, self.w, self.r, self.rsum, self.mu, self.nrm2, self.colsum,
                                   self.a, self.b, change)
        return change

    # ---------------------------------------------------------------- duality gap
    def gap(self, vars_=None, engine=None):
        """Duality gap (sklearn's formulation A, unscaled) over ``vars_`` (all if None).

        Returns (gap, primal, XtA over vars_, dual_norm). Collective.
        """
        if vars_ is None:
            vars_ = np.arange(self.p, dtype=np.int64)
        m = len(vars_)
        buf = np.empty(m + 3)
        self._partial(vars_, buf[:m])
        buf[m] = self.r @ self.r
        buf[m + 1] = self.rsum
        buf[m + 2] = self.r @ self.y
        tot = engine.allreduce(buf) if engine is not None else allreduce_sum(buf, self.comm)
        xtr, rr, rs, ry = tot[:m], tot[m], tot[m + 1], tot[m + 2]
        c = float(self.mu @ self.w)
        R2 = max(rr + 2.0 * c * rs + self.n * c * c, 0.0)
        wv = self.w[vars_]
        XtA = xtr - self.b * wv
        dual_norm = float(np.abs(XtA).max(initial=0.0))
        w2 = float(self.w @ self.w) if self.b > 0 else 0.0
        l1 = float(np.abs(self.w).sum())
        primal = 0.5 * (R2 + self.b * w2) + self.a * l1
        scale = self.a / dual_norm if dual_norm > self.a else 1.0
        dual = -0.5 * scale * scale * (R2 + self.b * w2) + scale * ry
        return primal - dual, primal, XtA, dual_norm

    def gram(self, W, engine=None):
        """Centred Gram matrix and gradients of the working set ``W`` (one Allreduce).

        Returns ``(G, q, z)``: ``G = X_Wc^T X_Wc``, ``q = X_Wc^T R_c`` (centred
        residual), ``z = X_Wc^T y_c``; the same on every rank. Collective.
        """
        m = len(W)
        buf = np.empty(m * m + m)
        if self.sparse:
            buf[: m * m] = 0.0
            K.gram_sparse(self.indptr, self.indices, self.data, W, self.n_local, buf[: m * m].reshape(m, m))
        else:
            Xw = self.X[:, W]
            buf[: m * m] = (Xw.T @ Xw).ravel()
        self._partial(W, buf[m * m :])
        tot = engine.allreduce(buf) if engine is not None else allreduce_sum(buf, self.comm)
        G = tot[: m * m].reshape(m, m)
        q = tot[m * m :].copy()
        if self.fit_intercept:
            muW = self.mu[W]
            G -= self.n * np.outer(muW, muW)
        z = q + G @ self.w[W]
        return G, q, z

    def gram_ok(self, W, limit: int = 2048) -> bool:
        """Is a Gram matrix of ``W`` small enough (size and, dense, the column copy)?"""
        m = len(W)
        return 0 < m <= limit and (self.sparse or m * self.n_local * 8 <= (1 << 28))

    def intercept(self) -> float:
        return float(self.ybar - self.mu @ self.w) if self.fit_intercept else 0.0


GRAM_LIMIT = 2048  # precompute="auto": Gram solver on working sets up to this size


def _auto_round_size(prob: EnetProblem) -> int:
    nnz = float(prob.cost.mean()) if prob.p else 1.0
    per_rank = max(1.0, nnz / max(1, prob.comm.size))
    return int(np.clip(65536.0 / per_rank, 8, 4096))


def solve_enet(prob: EnetProblem, alpha, l1_ratio=1.0, tol=1e-4, max_iter=1000, scheduler="sap", round_size=None,
               rho=0.1, eta=1e-2, warmup_sweeps=1, pipeline_depth=0, screening=True, working_set=True,
               serial_fusion=True, precompute="auto", sample=None, seed=0, on_epoch=None, engine_stats=None):
    """Minimise the ElasticNet objective on ``prob`` from its current coefficients.

    Collective. Returns ``(n_iter, gap_unscaled, tol_unscaled, stats)``; ``n_iter``
    counts sweeps over the working set. ``on_epoch(dict)`` gets one record per sweep.

    ``precompute``: ``True`` solves each working-set problem by exact CD on its
    centred Gram matrix (one Allreduce of ``|W|^2`` values, then no communication);
    ``"auto"`` does so when ``|W| <= 2048``; ``False`` always runs the engine's rounds.
    """
    comm = prob.comm
    prob.set_penalty(alpha, l1_ratio)
    tol_s = tol * prob.yy
    U = int(round_size) if round_size else _auto_round_size(prob)
    sched = make_scheduler(scheduler, prob.p, U, pipeline_depth, seed, prob.cost, eta, warmup_sweeps, rho,
                           sample if comm.rank == 0 else None)
    eng = Engine(prob, sched, comm, pipeline_depth, serial_fusion)
    cand = np.nonzero(prob.nrm2 > 0)[0].astype(np.int64)
    n_iter = 0
    t_start = time.perf_counter()
    gap = np.inf
    ws_size = 0
    P_prev = np.inf
    stall = 0
    best_gap = np.inf
    gram_sweeps = 0
    gram_solves = 0
    rejected_sweeps = 0

    def record(gap_v, primal, n_iter, kind):
        if on_epoch is None:
            return
        row = {"iter": n_iter, "time": time.perf_counter() - t_start, "objective": primal / prob.n,
               "dual_gap": gap_v / prob.n, "nnz": int(np.count_nonzero(prob.w)), "check": kind}
        st = eng.stats()
        if st["rounds"] or not gram_solves:  # engine telemetry once the engine ran rounds
            row["round_size"] = int(sched.round_size)
            row.update(st)
        else:
            row.update({k: st[k] for k in ("rounds", "updates", "time_comm")})
        row["gram_sweeps"] = gram_sweeps
        on_epoch(row)

    while True:
        gap, primal, XtA, dual_norm = prob.gap(None, eng)
        record(gap, primal, n_iter, "global")
        if gap <= tol_s or n_iter >= max_iter or len(cand) == 0:
            break
        if screening and prob.a > 0:
            # gap-safe rule (Ndiaye et al. 2017), as in sklearn's _cd_fast
            theta = XtA[cand] / max(prob.a, dual_norm)
            d = (1.0 - np.abs(theta)) / np.sqrt(prob.nrm2[cand] + prob.b)
            out = d > np.sqrt(2.0 * gap) / prob.a
            gone = cand[out]
            nz = gone[prob.w[gone] != 0]
            if len(nz):
                prob.apply(nz, np.zeros(len(nz)))
            cand = cand[~out]
            if len(cand) == 0:
                continue
            score = d[~out]
        else:
            score = -np.abs(XtA[cand])
        if working_set and len(cand) > 200:
            supp = prob.w[cand] != 0
            n_supp = int(supp.sum())
            ws_size = min(len(cand), max(ws_size, 100, 2 * n_supp))
            if precompute == "auto" and n_supp + 100 <= GRAM_LIMIT:
                ws_size = min(ws_size, GRAM_LIMIT)  # stay with the Gram solver while the support allows
            key = np.where(supp, -np.inf, score)
            if ws_size < len(cand):  # the ws_size best: O(len(cand)), same on every rank
                W = np.sort(cand[np.argpartition(key, ws_size - 1)[:ws_size]])
            else:
                W = cand.copy()
            target = max(0.3 * gap, 0.5 * tol_s)
        else:
            W = cand
            target = tol_s
        use_gram = precompute is True or precompute == "auto"
        if use_gram and prob.gram_ok(W, 1 << 30 if precompute is True else GRAM_LIMIT):
            cache = prob._gcache
            if cache is not None and np.array_equal(cache[0], W):
                # same W: reuse G; fresh gradients from the residual (|W| values, no drift)
                G = cache[1]
                q = np.empty(len(W))
                prob._partial(W, q)
                q = eng.allreduce(q)
                z = q + G @ prob.w[W]
            else:
                G, q, z = prob.gram(W, eng)
                gram_solves += 1
            wW = prob.w[W].copy()
            # sweeps are cheap next to building G: solve the working set deeper
            t_gram = max(min(target, 1e-3 * gap), 0.5 * tol_s) if W is not cand else target
            sw, g_in, P = K.gram_cd(G, q, wW, z, prob.yy, prob.a, prob.b, t_gram, max_iter - n_iter)
            n_iter += int(sw)
            gram_sweeps += int(sw)
            prob.apply(W, wW)  # local residual update, no communication
            prob._gcache = (W, G)
            record(g_in, P, n_iter, "gram")
            continue
        sched.set_active(W)
        sched.set_round_size(min(U, max(1, len(W) // (2 + pipeline_depth))))
        P_prev = primal  # objective at the start of this working set
        while n_iter < max_iter:
            w_saved = None if eng.exact else prob.w.copy()
            eng.run(len(W))
            n_iter += 1
            g_in, P, _, _ = prob.gap(W, eng)
            # safeguard against parallel rounds that overshoot (correlated columns):
            # a sweep that raised the objective is undone and the round size halved
            if eng.exact:
                pass  # sequential CD: monotone, nothing to guard
            elif not np.isfinite(P) or P > P_prev + 1e-12 * abs(P_prev):
                if sched.round_size > 1 or not np.isfinite(P):
                    prob.set_coef(w_saved)  # local: r = y - X w, no communication
                    U = max(1, sched.round_size // 2)
                    sched.set_round_size(U)
                    stall = 0
                    rejected_sweeps += 1
                    continue
            elif g_in > 0.9 * best_gap:
                stall += 1
                if stall >= 10 and sched.round_size > 1:
                    U = max(1, sched.round_size // 2)
                    sched.set_round_size(U)
                    stall = 0
            else:
                stall = 0
            record(g_in, P, n_iter, "working_set")
            best_gap = min(best_gap, g_in)
            P_prev = P
            if g_in <= target:
                break
        best_gap = np.inf
        P_prev = np.inf
    stats = eng.stats()
    stats["final_round_size"] = int(sched.round_size)
    stats["working_set"] = int(ws_size)
    stats["candidates"] = int(len(cand))
    stats["gram_sweeps"] = int(gram_sweeps)
    stats["gram_solves"] = int(gram_solves)
    stats["rejected_sweeps"] = int(rejected_sweeps)
    if engine_stats is not None:
        for k, v in stats.items():
            engine_stats[k] = engine_stats.get(k, 0) + v if isinstance(v, (int, float)) and k.startswith(
                ("rounds", "updates", "rejected", "time_", "gram_")) else v
    return n_iter, gap, tol_s, stats


# ====================================================================== estimators
def check_engine_params(est) -> None:
    """Validate the STRADS engine parameters shared by every model-parallel estimator."""
    _check("scheduler", est.scheduler, str, choices=SCHEDULERS)
    _check("round_size", est.round_size, int, 1, none_ok=True)
    _check("rho", est.rho, float, 0.0, 1.0)
    _check("eta", est.eta, float, 0.0)
    _check("warmup_sweeps", est.warmup_sweeps, float, 0.0)
    _check("pipeline_depth", est.pipeline_depth, int, 0)




def load_local(X, y=None, comm=None, layout="csc", task=None, app=None):
    """This rank's rows: from full arrays given on every rank, or from a dataset path
    (which must have ``task``, "regression" or "classification", when given).

    Returns (X_local, y_local, n_total, n_features).
    """
    comm = get_comm(comm)
    if isinstance(X, (str, bytes)) or hasattr(X, "__fspath__"):
        try:
            from ..data import read_matrix
        except ImportError as e:  # pragma: no cover - until the data module lands
            raise UsageError(f"reading datasets needs petuum_mpi.data.read_matrix ({e})") from None
        part = read_matrix(str(X), comm, layout=layout)
        if task is not None:
            from ..data.reader import require_task

            require_task(part, task, app or "this estimator")
        if part.y is None:
            raise DataError(f"{X}: dataset has no targets (y)")
        return part.X, np.asarray(part.y, dtype=np.float64), int(part.n_rows), int(part.n_cols)
    if y is None:
        raise UsageError("fit(X, y): y is required when X is an array")
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise DataError(f"X must be 2-D, got shape {X.shape}")
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        y = y.ravel() if y.ndim == 2 and y.shape[1] == 1 else y
        if y.ndim != 1:
            raise DataError(f"y must be 1-D, got shape {y.shape}")
    n, p = X.shape
    if y.shape[0] != n:
        raise DataError(f"X has {n} rows but y has {y.shape[0]}")
    if n < comm.size:
        raise DataError(f"{n} rows cannot be split over {comm.size} ranks")
    lo, hi = row_range(n, comm.rank, comm.size)
    return X[lo:hi], y[lo:hi], n, p


class ElasticNet:
    """ElasticNet by model-parallel coordinate descent (STRADS engine).

    Parameters follow ``sklearn.linear_model.ElasticNet``: ``alpha``, ``l1_ratio``,
    ``fit_intercept``, ``max_iter`` (sweeps over the working set), ``tol`` (duality
    gap, scaled by ``||y_c||^2``), ``warm_start``. Engine parameters:

    scheduler : "cyclic", "random", "priority" or "sap".
    round_size : variables per round (None: about 64k non-zeros per rank per round).
    rho : dependency threshold of ``sap`` (|corr| >= rho never share a round).
    eta : priority floor, relative to the mean priority weight.
    warmup_sweeps : uniform sweeps before priorities are used.
    pipeline_depth : rounds issued before earlier rounds' results are in.
    screening : gap-safe screening of provably-zero coefficients.
    working_set : solve on growing working sets certified by the global gap.
    serial_fusion : at one rank, run each round as exact sequential CD in one kernel.
    precompute : ``"auto"`` (default), True or False: solve working-set problems by
        exact CD on their Gram matrix (one Allreduce per working set instead of one
        per round, and all sweeps of a working set in one kernel call); auto = when
        the working set has at most 2048 coefficients. False always runs the
        engine's scheduled rounds (the scheduler matters only then).
    sample_rows : rows of X the ``sap`` scheduler samples for correlations.
    comm : MPI communicator (default COMM_WORLD); ``fit`` is collective.
    """

    _l1_fixed = None

    def __init__(self, alpha=1.0, l1_ratio=0.5, fit_intercept=True, max_iter=1000, tol=1e-4, warm_start=False,
                 scheduler="sap", round_size=None, rho=0.1, eta=1e-2, warmup_sweeps=1, pipeline_depth=0,
                 screening=True, working_set=True, serial_fusion=True, precompute="auto", sample_rows=1000,
                 random_state=0, comm=None):
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.scheduler = scheduler
        self.round_size = round_size
        self.rho = rho
        self.eta = eta
        self.warmup_sweeps = warmup_sweeps
        self.pipeline_depth = pipeline_depth
        self.screening = screening
        self.working_set = working_set
        self.serial_fusion = serial_fusion
        self.precompute = precompute
        self.sample_rows = sample_rows
        self.random_state = random_state
        self.comm = comm

    def _validate(self):
        _check("alpha", self.alpha, float, 0.0, lo_open=True)
        _check("l1_ratio", self.l1_ratio, float, 0.0, 1.0, lo_open=True)
        _check("fit_intercept", self.fit_intercept, bool)
        _check("max_iter", self.max_iter, int, 1)
        _check("tol", self.tol, float, 0.0)
        _check("warm_start", self.warm_start, bool)
        check_engine_params(self)
        _check("screening", self.screening, bool)
        _check("working_set", self.working_set, bool)
        _check("serial_fusion", self.serial_fusion, bool)
        if not (self.precompute == "auto" or isinstance(self.precompute, (bool, np.bool_))):
            raise ConfigError(f"precompute: expected 'auto', True or False, got {self.precompute!r}")
        _check("sample_rows", self.sample_rows, int, 2)
        _check("random_state", self.random_state, int, 0)

    def _engine_kw(self, sample):
        return dict(scheduler=self.scheduler, round_size=self.round_size, rho=self.rho, eta=self.eta,
                    warmup_sweeps=self.warmup_sweeps, pipeline_depth=self.pipeline_depth, screening=self.screening,
                    working_set=self.working_set, serial_fusion=self.serial_fusion,
                    precompute=self.precompute if isinstance(self.precompute, str) else bool(self.precompute),
                    sample=sample,
                    seed=self.random_state)

    def _problem(self, X, y):
        comm = get_comm(self.comm)
        Xl, yl, n, p = load_local(X, y, comm, task="regression", app=type(self).__name__)  # bad input fails before the kernels load
        warm_once(K.warmup, comm)
        prob = EnetProblem(Xl, yl, n, self.fit_intercept, comm)
        sample = None
        if self.scheduler == "sap":
            sample = gather_row_sample(Xl, n, self.sample_rows, self.random_state, comm)
        return prob, sample

    def fit(self, X, y=None, on_epoch=None):
        """Fit on full arrays (every rank passes the same X, y) or a dataset path. Collective."""
        self._validate()
        prob, sample = self._problem(X, y)
        if self.warm_start and getattr(self, "coef_", None) is not None:
            if self.coef_.shape != (prob.p,):
                raise UsageError(f"warm_start: coef_ has {self.coef_.shape[0]} features, X has {prob.p}")
            prob.set_coef(self.coef_)
        l1 = self._l1_fixed if self._l1_fixed is not None else self.l1_ratio
        stats = {}
        n_iter, gap, tol_s, st = solve_enet(prob, self.alpha, l1, self.tol, self.max_iter, on_epoch=on_epoch,
                                            engine_stats=stats, **self._engine_kw(sample))
        if gap > tol_s:
            warnings.warn(f"Objective did not converge. You might want to increase the number of iterations. "
                          f"Duality gap: {gap:.6e}, tolerance: {tol_s:.3e}", convergence_warning(), stacklevel=2)
        self.coef_ = prob.w.copy()
        self.intercept_ = prob.intercept()
        self.n_iter_ = int(n_iter)
        self.dual_gap_ = float(gap / prob.n)
        self.n_features_in_ = prob.p
        self.telemetry_ = st
        return self

    def _require(self):
        if getattr(self, "coef_", None) is None:
            raise UsageError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def predict(self, X):
        """X @ coef_ + intercept_ (local, no communication)."""
        self._require()
        if X.shape[1] != self.coef_.shape[0]:
            raise DataError(f"X has {X.shape[1]} features, the model {self.coef_.shape[0]}")
        return np.asarray(X @ self.coef_).ravel() + self.intercept_

    def score(self, X, y):
        """Coefficient of determination R^2 (local)."""
        y = np.asarray(y, dtype=np.float64)
        pred = self.predict(X)
        u = ((y - pred) ** 2).sum()
        v = ((y - y.mean()) ** 2).sum()
        return 1.0 - u / v if v > 0 else 0.0


class Lasso(ElasticNet):
    """Lasso: ElasticNet with ``l1_ratio = 1`` (see :class:`ElasticNet`)."""

    _l1_fixed = 1.0

    def __init__(self, alpha=1.0, fit_intercept=True, max_iter=1000, tol=1e-4, warm_start=False, scheduler="sap",
                 round_size=None, rho=0.1, eta=1e-2, warmup_sweeps=1, pipeline_depth=0, screening=True,
                 working_set=True, serial_fusion=True, precompute="auto", sample_rows=1000, random_state=0,
                 comm=None):
        super().__init__(alpha, 1.0, fit_intercept, max_iter, tol, warm_start, scheduler, round_size, rho, eta,
                         warmup_sweeps, pipeline_depth, screening, working_set, serial_fusion, precompute,
                         sample_rows, random_state, comm)


def alpha_grid(prob: EnetProblem, l1_ratio=1.0, eps=1e-3, n_alphas=100) -> np.ndarray:
    """sklearn's grid: alpha_max = max|X_c^T y_c| / (n l1_ratio), geometric down to eps * alpha_max."""
    w0 = prob.w.copy()
    prob.set_coef(np.zeros(prob.p))
    prob.set_penalty(1.0, l1_ratio)
    _, _, XtA, dn = prob.gap(None)
    prob.set_coef(w0)
    alpha_max = dn / (prob.n * l1_ratio)
    if alpha_max <= np.finfo(np.float64).resolution:
        return np.full(n_alphas, np.finfo(np.float64).resolution)
    return np.geomspace(alpha_max, alpha_max * eps, num=n_alphas)


def enet_path(X, y=None, l1_ratio=0.5, eps=1e-3, n_alphas=100, alphas=None, fit_intercept=False, tol=1e-4,
              max_iter=1000, comm=None, on_alpha=None, **engine):
    """ElasticNet path with warm starts (like ``sklearn.linear_model.enet_path``).

    Note: sklearn's path functions do not centre (``fit_intercept=False`` here by
    default, as there). Returns ``(alphas, coefs (n_features, n_alphas), dual_gaps)``
    with alphas decreasing. Collective.
    """
    est = ElasticNet(alpha=1.0, l1_ratio=l1_ratio, fit_intercept=fit_intercept, tol=tol, max_iter=max_iter,
                     comm=comm, **engine)
    est._validate()
    _check("eps", eps, float, 0.0, lo_open=True)
    _check("n_alphas", n_alphas, int, 1)
    prob, sample = est._problem(X, y)
    if alphas is None:
        alphas = alpha_grid(prob, l1_ratio, eps, n_alphas)
    else:
        alphas = np.sort(np.asarray(alphas, dtype=np.float64).ravel())[::-1]
        if len(alphas) == 0 or np.any(alphas <= 0):
            raise ConfigError("alphas: must be a non-empty list of positive numbers")
    coefs = np.empty((prob.p, len(alphas)))
    gaps = np.empty(len(alphas))
    n_iters = []
    for i, a in enumerate(alphas):
        n_iter, gap, tol_s, st = solve_enet(prob, a, l1_ratio, tol, max_iter, **est._engine_kw(sample))
        if gap > tol_s:
            warnings.warn(f"Objective did not converge at alpha={a:.4g}. Duality gap: {gap:.6e}, tolerance: "
                          f"{tol_s:.3e}", convergence_warning(), stacklevel=2)
        coefs[:, i] = prob.w
        gaps[i] = gap / prob.n
        n_iters.append(n_iter)
        if on_alpha is not None:
            on_alpha(i, a, prob, n_iter, gap, st)
    return alphas, coefs, gaps


def lasso_path(X, y=None, eps=1e-3, n_alphas=100, alphas=None, **kw):
    """Lasso path (``enet_path`` with ``l1_ratio=1``)."""
    return enet_path(X, y, l1_ratio=1.0, eps=eps, n_alphas=n_alphas, alphas=alphas, **kw)


# ====================================================================== job runner
def schema(app: str = "lasso") -> dict:
    """Job-file sections of the ``lasso``, ``elastic_net`` and ``l1_logistic`` apps."""
    model = {
        "fit_intercept": Field(bool, default=True, help="fit an unpenalised intercept"),
        "max_iter": Field(int, default=1000 if app != "l1_logistic" else 100, min=1,
                          help="sweeps over the working set (Newton iterations for l1_logistic)"),
        "tol": Field(float, default=1e-4, min=0.0, help="duality-gap tolerance as in scikit-learn"),
        "warm_start": Field(bool, default=False, help="start from the previous solution (path)"),
    }
    if app == "l1_logistic":
        model["C"] = Field(float, default=1.0, min=0.0, min_exclusive=True, help="inverse L1 strength (sklearn C)")
        model["inner_sweeps"] = Field(int, default=10, min=1, help="CD sweeps per Newton iteration")
    else:
        model["alpha"] = Field(float, default=None, min=0.0, min_exclusive=True,
                               help="L1 strength (omit to compute a path)")
        model["n_alphas"] = Field(int, default=20, min=1, help="path length when alpha is omitted")
        model["eps"] = Field(float, default=1e-3, min=0.0, min_exclusive=True, help="alpha_min / alpha_max of path")
        if app == "elastic_net":
            model["l1_ratio"] = Field(float, default=0.5, min=0.0, max=1.0, min_exclusive=True,
                                      help="L1 share of the penalty")
    engine = {
        "scheduler": Field(str, default="sap" if app != "l1_logistic" else "cyclic", choices=SCHEDULERS,
                           help="variable scheduler"),
        "round_size": Field(int, default=None, min=1, help="variables per round (default: auto)"),
        "rho": Field(float, default=0.1, min=0.0, max=1.0, help="sap dependency threshold |corr|"),
        "eta": Field(float, default=1e-2, min=0.0, help="priority floor relative to the mean weight"),
        "warmup_sweeps": Field(float, default=1.0, min=0.0, help="uniform sweeps before priorities"),
        "pipeline_depth": Field(int, default=0, min=0, help="rounds in flight before results are in"),
        "sample_rows": Field(int, default=1000, min=2, help="rows sampled for sap correlations"),
    }
    if app != "l1_logistic":
        engine["screening"] = Field(bool, default=True, help="gap-safe screening")
        engine["working_set"] = Field(bool, default=True, help="working-set solver")
        engine["serial_fusion"] = Field(bool, default=True, help="one rank: exact sequential rounds")
        engine["precompute"] = Field(str, default="auto", choices=("auto", "true", "false"),
                                     help="Gram-matrix solver on small working sets (false: engine rounds only)")
    return {"model": Section(model, help="model hyperparameters"), "engine": Section(engine, help="STRADS engine")}


SCHEMA = schema


def run_job(job: dict, ctx) -> dict:
    """Run a ``lasso`` / ``elastic_net`` / ``l1_logistic`` job (collective)."""
    app = job.get("app", "lasso")
    m, e = job["model"], job["engine"]
    comm = ctx.comm
    seed = int(job.get("run", {}).get("seed", 0))
    every = int(job.get("run", {}).get("log_every", 1))
    train = job["data"]["train"]
    test = job["data"].get("test")
    counter = {"k": 0, "last": {}}
    bar = ctx.progress(m.get("n_alphas") if app != "l1_logistic" and m.get("alpha") is None else None, app)

    def log_row(row):
        counter["k"] += 1
        counter["last"] = row
        if counter["k"] % every == 0:
            ctx.rundir.log_metrics({k: v for k, v in row.items() if not isinstance(v, str)})
        figs = {k: row[k] for k in ("alpha", "objective", "dual_gap", "subgrad", "nnz") if k in row}
        bar.update(1, **figs)

    eng_kw = {k: e[k] for k in ("scheduler", "round_size", "rho", "eta", "warmup_sweeps", "pipeline_depth",
                                "sample_rows")}
    t0 = time.perf_counter()
    if app == "l1_logistic":
        from .logistic_l1 import L1LogisticRegression

        est = L1LogisticRegression(C=m["C"], fit_intercept=m["fit_intercept"], tol=m["tol"], max_iter=m["max_iter"],
                                   inner_sweeps=m["inner_sweeps"], random_state=seed, comm=comm, **eng_kw)
        est.fit(train, on_epoch=log_row)
        summary = {"objective": est.objective_, "nnz": int(np.count_nonzero(est.coef_)), "n_iter": int(est.n_iter_[0])}
        arrays = {"coef": est.coef_.ravel(), "intercept": est.intercept_, "classes": est.classes_.astype(np.float64)}
    else:
        eng_kw.update({k: e[k] for k in ("screening", "working_set", "serial_fusion")})
        eng_kw["precompute"] = {"auto": "auto", "true": True, "false": False}[e["precompute"]]
        l1 = m.get("l1_ratio", 1.0)
        if m["alpha"] is None:  # a path
            alphas_out = []

            def on_alpha(i, a, prob, n_iter, gap, st):
                alphas_out.append(a)
                row = {"iter": i, "alpha": a, "time": time.perf_counter() - t0, "dual_gap": gap / prob.n,
                       "nnz": int(np.count_nonzero(prob.w)), "n_iter": n_iter}
                row.update({k: v for k, v in st.items() if isinstance(v, (int, float))})
                log_row(row)

            alphas, coefs, gaps = enet_path(train, l1_ratio=l1, eps=m["eps"], n_alphas=m["n_alphas"],
                                            fit_intercept=m["fit_intercept"], tol=m["tol"], max_iter=m["max_iter"],
                                            comm=comm, on_alpha=on_alpha, random_state=seed, **eng_kw)
            summary = {"n_alphas": len(alphas), "alpha_min": float(alphas[-1]),
                       "nnz_last": int(np.count_nonzero(coefs[:, -1]))}
            arrays = {"alphas": alphas, "coefs": coefs, "dual_gaps": gaps}
            est = None
        else:
            est = ElasticNet(alpha=m["alpha"], l1_ratio=l1, fit_intercept=m["fit_intercept"], tol=m["tol"],
                             max_iter=m["max_iter"], warm_start=m["warm_start"], random_state=seed, comm=comm, **eng_kw)
            est.fit(train, on_epoch=log_row)
            summary = {"objective": None, "dual_gap": est.dual_gap_, "nnz": int(np.count_nonzero(est.coef_)),
                       "n_iter": est.n_iter_}
            summary.update({k: v for k, v in est.telemetry_.items()})
            summary["objective"] = counter["last"].get("objective")  # at the final gap check
            if summary["objective"] is None:
                summary.pop("objective")
            arrays = {"coef": est.coef_, "intercept": np.array([est.intercept_])}
    bar.close()
    summary["time"] = time.perf_counter() - t0
    if test and est is not None:
        Xt, yt, _, _ = load_local(test, None, comm, task="classification" if app == "l1_logistic" else "regression",
                                  app=app)
        if app == "l1_logistic":
            pred = est.predict(Xt)
            s = allreduce_sum(np.array([float(np.sum(pred == np.asarray(yt))), float(len(yt))]), comm)
            summary["test_accuracy"] = s[0] / s[1]
        else:
            res = yt - est.predict(Xt)
            s = allreduce_sum(np.array([res @ res, float(len(yt))]), comm)
            summary["test_mse"] = s[0] / s[1]
    ctx.rundir.save_model(arrays, {"app": app, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    ctx.rundir.log(f"{app}: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in summary.items()))
    return summary
