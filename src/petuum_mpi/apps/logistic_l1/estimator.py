"""L1-regularised logistic regression by proximal-Newton coordinate descent (newGLMNET).

Objective, as ``sklearn.linear_model.LogisticRegression(penalty="l1", C=C)`` with
``solver="saga"`` (intercept not penalised) or ``solver="liblinear"`` when
``fit_intercept=False``::

    C * sum_i log(1 + exp(-y_i (x_i . w + b))) + ||w||_1,     y_i in {-1, +1}

Each outer iteration builds the quadratic model of the loss at ``w`` (per-row
derivatives), runs engine rounds of coordinate descent on it (push: partial
``sum_i x_ij (g_i + h_i q_i)`` and ``sum_i h_i x_ij^2``; pull: the soft-thresholded
Newton step) over a working set (support plus violators ``|grad_j| > 1``), then a
backtracking line search (all step sizes' losses in one Allreduce). It stops when
the largest minimum-norm subgradient is at most ``tol`` times its value at w = 0.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError, DataError, UsageError, convergence_warning
from ..runtime import get_comm, warm_once
from ..strads.engine import Engine, allreduce_sum
from ..strads.sample import gather_row_sample
from ..strads.schedulers import SCHEDULERS, make_scheduler
from . import logistic_l1_kernels as K
from .lasso import _check, check_engine_params, load_local

class LogisticProblem:
    """One rank's rows; engine variables are the features plus the intercept (id p)."""

    partial_width = 2

    def __init__(self, X_local, y_local, n_total, fit_intercept=True, comm=None):
        self.comm = get_comm(comm)
        self.sparse = sp.issparse(X_local)
        if self.sparse:
            Xc = sp.csc_matrix(X_local, dtype=np.float64)
            self.indptr, self.indices, self.data = Xc.indptr.astype(np.int64), Xc.indices.astype(np.int32), Xc.data
            self.X = None
            self._csc = Xc
            nnz = np.diff(self.indptr).astype(np.float64)
        else:
            self.X = np.asfortranarray(X_local, dtype=np.float64)
            nnz = np.full(self.X.shape[1], float(self.X.shape[0]))
        self.n_local, self.p = X_local.shape
        self.n = int(n_total)
        yl = np.asarray(y_local).ravel()
        classes = np.unique(np.concatenate(self.comm.allgather(np.unique(yl))))
        if len(classes) != 2:
            raise DataError(f"l1 logistic regression needs exactly 2 classes in y, found {len(classes)}")
        self.classes_ = classes
        self.y = np.where(yl == classes[1], 1.0, -1.0)
        self.fit_intercept = bool(fit_intercept)
        self.cost = np.concatenate([allreduce_sum(nnz, self.comm), [float(self.n)]])
        self.nv = self.p + 1  # variable p = intercept
        self.w = np.zeros(self.nv)
        self.z = np.zeros(self.n_local)
        self.g = np.zeros(self.n_local)
        self.h = np.zeros(self.n_local)
        self.q = np.zeros(self.n_local)
        self.d = np.zeros(self.nv)
        self.C = 1.0

    def push(self, vars_):
        out = np.empty(2 * len(vars_))
        if self.sparse:
            K.partial_sparse(self.indptr, self.indices, self.data, self.p, vars_, self.g, self.h, self.q, out)
        else:
            K.partial_dense(self.X, vars_, self.g, self.h, self.q, out)
        return out

    def pull(self, vars_, summed):
        out = np.empty(len(vars_))
        K.newton_values(vars_, summed, self.w, self.d, self.p, out)
        return out

    def apply(self, vars_, values):
        change = np.empty(len(vars_))
        if self.sparse:
            K.apply_sparse(self.indptr, self.indices, self.data, self.p, vars_, values, self.d, self.q, change)
        else:
            K.apply_dense(self.X, vars_, values, self.d, self.q, change)
        return change

    def derivatives(self, engine=None):
        loc = K.row_derivatives(self.y, self.z, self.C, self.g, self.h)
        return loc  # local C * loss

    def gradient(self, engine):
        """Full gradient of C * loss (features and intercept) and the objective. Collective."""
        loss_loc = self.derivatives()
        self.q[:] = 0.0
        allv = np.arange(self.nv if self.fit_intercept else self.p, dtype=np.int64)
        part = self.push(allv)[0::2]
        tot = engine.allreduce(np.concatenate([part, [loss_loc]]))
        grad = np.zeros(self.nv)
        grad[: len(allv)] = tot[:-1]
        obj = tot[-1] + np.abs(self.w[: self.p]).sum()
        return grad, obj


def _min_norm_subgrad(grad, w, p):
    v = np.empty_like(grad)
    gw, ww = grad[:p], w[:p]
    v[:p] = np.where(ww > 0, gw + 1, np.where(ww < 0, gw - 1, np.sign(gw) * np.maximum(np.abs(gw) - 1, 0)))
    v[p:] = grad[p:]
    return v


class L1LogisticRegression:
    """L1 logistic regression on the STRADS engine (binary).

    Parameters: ``C`` (inverse regularisation, as sklearn), ``fit_intercept``,
    ``tol`` (on the min-norm subgradient, relative to w = 0), ``max_iter`` (Newton
    iterations), ``warm_start``; engine: ``scheduler``, ``round_size``, ``rho``,
    ``eta``, ``warmup_sweeps``, ``pipeline_depth``, ``inner_sweeps``, ``comm``.
    ``alpha = 1 / (C * n)`` gives the mean-loss form ``mean loss + alpha ||w||_1``.
    """

    def __init__(self, C=1.0, fit_intercept=True, tol=1e-4, max_iter=100, warm_start=False, scheduler="cyclic",
                 round_size=None, rho=0.1, eta=1e-2, warmup_sweeps=1, pipeline_depth=0, inner_sweeps=10,
                 sample_rows=1000, random_state=0, comm=None):
        self.C, self.fit_intercept, self.tol, self.max_iter, self.warm_start = C, fit_intercept, tol, max_iter, warm_start
        self.scheduler, self.round_size, self.rho, self.eta = scheduler, round_size, rho, eta
        self.warmup_sweeps, self.pipeline_depth, self.inner_sweeps = warmup_sweeps, pipeline_depth, inner_sweeps
        self.sample_rows, self.random_state, self.comm = sample_rows, random_state, comm

    def _validate(self):
        _check("C", self.C, float, 0.0, lo_open=True)
        _check("fit_intercept", self.fit_intercept, bool)
        _check("tol", self.tol, float, 0.0)
        _check("max_iter", self.max_iter, int, 1)
        _check("warm_start", self.warm_start, bool)
        check_engine_params(self)
        _check("inner_sweeps", self.inner_sweeps, int, 1)
        _check("sample_rows", self.sample_rows, int, 2)

    def fit(self, X, y=None, on_epoch=None):
        """Fit (collective): full arrays on every rank, or a dataset path."""
        self._validate()
        comm = get_comm(self.comm)
        Xl, yl, n, p = load_local(X, y, comm, task="classification", app=type(self).__name__)  # bad input fails before the kernels load
        warm_once(K.warmup, comm)
        prob = LogisticProblem(Xl, yl, n, self.fit_intercept, comm)
        prob.C = float(self.C)
        if self.warm_start and getattr(self, "coef_", None) is not None:
            prob.w[:p] = self.coef_.ravel()
            prob.w[p] = self.intercept_[0] if self.fit_intercept else 0.0
            prob.z = np.asarray(Xl @ prob.w[:p]).ravel() + prob.w[p]
        sample = gather_row_sample(Xl, n, self.sample_rows, self.random_state, comm) if self.scheduler == "sap" \
            else None
        U = self.round_size or int(np.clip(65536.0 / max(1.0, prob.cost[:p].mean() / comm.size), 8, 4096))
        sched = make_scheduler(self.scheduler, prob.nv, U, self.pipeline_depth, self.random_state, prob.cost,
                               self.eta, self.warmup_sweeps, self.rho, sample if comm.rank == 0 else None)
        eng = Engine(prob, sched, comm, self.pipeline_depth)
        t0 = time.perf_counter()
        # reference subgradient at w = 0 (sklearn-like relative stopping rule)
        wsave, zsave = prob.w.copy(), prob.z.copy()
        prob.w[:] = 0.0
        prob.z[:] = 0.0
        g0, _ = prob.gradient(eng)
        v0 = np.abs(_min_norm_subgrad(g0, prob.w, p)).max()
        prob.w, prob.z = wsave, zsave
        it = 0
        viol = np.inf
        obj = np.inf
        U_cur = U
        while True:
            grad, obj = prob.gradient(eng)
            v = _min_norm_subgrad(grad, prob.w, p)
            viol = float(np.abs(v).max())
            if on_epoch is not None:
                row = {"iter": it, "time": time.perf_counter() - t0, "objective": obj, "subgrad": viol,
                       "nnz": int(np.count_nonzero(prob.w[:p]))}
                row.update(eng.stats())
                on_epoch(row)
            if viol <= self.tol * max(v0, 1e-300) or it >= self.max_iter:
                break
            it += 1
            # working set: support, violators, intercept
            ws = np.nonzero((prob.w[:p] != 0) | (np.abs(grad[:p]) > 1.0 - 1e-9))[0]
            if self.fit_intercept:
                ws = np.append(ws, p)
            ws = ws.astype(np.int64)
            sched.set_active(ws)
            sched.set_round_size(min(U_cur, max(1, len(ws))))
            prob.d[:] = 0.0
            prob.q[:] = 0.0
            for _ in range(self.inner_sweeps):
                eng.run(len(ws))
            # line search on C*loss + ||w||_1 along d (one Allreduce for all steps)
            ts = 0.5 ** np.arange(20)
            ll = np.empty(len(ts))
            K.line_losses(prob.y, prob.z, prob.q, ts, prob.C, ll)
            ll = eng.allreduce(ll)
            wn = prob.w[None, :p] + ts[:, None] * prob.d[None, :p]
            F = ll + np.abs(wn).sum(axis=1)
            delta = float(grad @ prob.d) + np.abs(prob.w[:p] + prob.d[:p]).sum() - np.abs(prob.w[:p]).sum()
            ok = np.nonzero(F <= obj + 0.01 * ts * delta)[0]
            if len(ok) == 0:
                U_cur = max(1, U_cur // 2)  # parallel rounds overshot: smaller rounds
                continue
            t = ts[ok[0]]
            prob.w += t * prob.d
            prob.z += t * prob.q
        if viol > self.tol * max(v0, 1e-300):
            warnings.warn(f"L1 logistic regression did not converge in {self.max_iter} iterations "
                          f"(subgradient {viol:.3e} > tol * {v0:.3e})", convergence_warning(), stacklevel=2)
        self.coef_ = prob.w[None, :p].copy()
        self.intercept_ = np.array([prob.w[p] if self.fit_intercept else 0.0])
        self.classes_ = prob.classes_
        self.n_iter_ = np.array([it])
        self.objective_ = float(obj)
        self.telemetry_ = eng.stats()
        return self

    def decision_function(self, X):
        if getattr(self, "coef_", None) is None:
            raise UsageError("this L1LogisticRegression is not fitted yet: call fit first")
        return np.asarray(X @ self.coef_[0]).ravel() + self.intercept_[0]

    def predict_proba(self, X):
        z = self.decision_function(X)
        p1 = 1.0 / (1.0 + np.exp(-z))
        return np.column_stack([1 - p1, p1])

    def predict(self, X):
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    def score(self, X, y):
        return float(np.mean(self.predict(X) == np.asarray(y)))


def objective(X, y, coef, intercept, C):
    """C * sum log-loss + ||w||_1 with labels mapped to -1/+1 (classes sorted)."""
    classes = np.unique(y)
    s = np.where(np.asarray(y) == classes[1], 1.0, -1.0)
    z = np.asarray(X @ np.ravel(coef)).ravel() + float(np.ravel(intercept)[0] if np.size(intercept) else 0.0)
    return C * np.logaddexp(0, -s * z).sum() + np.abs(coef).sum()


from .lasso import run_job as _run_job  # noqa: E402
from .lasso import schema as _schema  # noqa: E402

SCHEMA = _schema


def run_job(job, ctx):
    """Job runner (see apps/lasso.py: run_job handles all three apps)."""
    return _run_job(job, ctx)
