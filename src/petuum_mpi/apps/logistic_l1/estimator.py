"""L1-regularised logistic regression by proximal-Newton coordinate descent (newGLMNET) on STRADS.

Objective, as ``sklearn.linear_model.LogisticRegression(penalty="l1", C=C)`` with
``solver="saga"`` (intercept not penalised) or ``solver="liblinear"`` when
``fit_intercept=False``::

    C * sum_i log(1 + exp(-y_i (x_i . w + b))) + ||w||_1,     y_i in {-1, +1}

Each outer iteration builds the quadratic model of the loss at ``w`` (per-row
derivatives), runs the driver's engine rounds of coordinate descent on it (push:
partial ``sum_i x_ij (g_i + h_i q_i)`` and ``sum_i h_i x_ij^2``; pull: the
soft-thresholded Newton step) over a working set (support plus violators
``|grad_j| > 1``), then a backtracking line search (all step sizes' losses in one
Allreduce; none accepted: the sweeper's rounds shrink). It stops when the largest
minimum-norm subgradient is at most ``tol`` times its value at w = 0.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model._base import LinearClassifierMixin

from ...drivers import ModelParallelEstimator, Run
from ...errors import convergence_warning
from ...estimator import InputError, Param, binary_labels, local_rows
from ...linear.rows import as_columns
from ...runtime import allreduce_sum, get_comm, one_blas_thread, warm_once
from ...strads.glm import ENGINE_PARAMS, make_sweeper
from . import kernels as K


class LogisticProblem:
    """One rank's rows; engine variables are the features plus the intercept (id p)."""

    partial_width = 2

    def __init__(self, X_local, y_pm, n_total, fit_intercept, reduce):
        self.sparse = sp.issparse(X_local)
        if self.sparse:
            Xc = sp.csc_matrix(X_local, dtype=np.float64)
            self.indptr, self.indices, self.data = Xc.indptr.astype(np.int64), Xc.indices.astype(np.int32), Xc.data
            self.X = None
            nnz = np.diff(self.indptr).astype(np.float64)
        else:
            self.X = np.asfortranarray(X_local, dtype=np.float64)
            nnz = np.full(self.X.shape[1], float(self.X.shape[0]))
        self.cols = as_columns(Xc if self.sparse else self.X)  # column j = row j of the transpose
        self.n_local, self.p = X_local.shape
        self.n = int(n_total)
        self.y = np.asarray(y_pm, dtype=np.float64)
        self.fit_intercept = bool(fit_intercept)
        self.cost = np.concatenate([reduce(nnz), [float(self.n)]])
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
        K.partial(self.cols, self.p, vars_, self.g, self.h, self.q, out)
        return out

    def pull(self, vars_, summed):
        out = np.empty(len(vars_))
        K.newton_values(vars_, summed, self.w, self.d, self.p, out)
        return out

    def apply(self, vars_, values):
        change = np.empty(len(vars_))
        K.apply(self.cols, self.p, vars_, values, self.d, self.q, change)
        return change

    def gradient(self, reduce):
        """Full gradient of C * loss (features and intercept) and the objective. Collective."""
        loss_loc = K.row_derivatives(self.y, self.z, self.C, self.g, self.h)  # local C * loss
        self.q[:] = 0.0
        allv = np.arange(self.nv if self.fit_intercept else self.p, dtype=np.int64)
        part = self.push(allv)[0::2]
        tot = reduce(np.concatenate([part, [loss_loc]]))
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


class L1LogisticRegression(LinearClassifierMixin, ModelParallelEstimator):
    """L1 logistic regression (binary) by proximal-Newton coordinate descent on STRADS.

    ``C`` as scikit-learn (inverse L1 strength); ``alpha = 1 / (C * n)`` gives the
    mean-loss form ``mean loss + alpha ||w||_1``. ``tol`` is on the min-norm
    subgradient, relative to w = 0; ``max_iter`` counts Newton iterations.
    """

    app_name = "l1_logistic"
    params = {
        "C": Param(1.0, float, lo=0.0, lo_open=True, doc="inverse L1 strength (scikit-learn's C)"),
        "fit_intercept": Param(True, bool, doc="fit an unpenalised intercept"),
        "tol": Param(1e-4, float, lo=0.0, doc="stop when the min-norm subgradient <= tol x its value at w = 0"),
        "max_iter": Param(100, int, lo=1, doc="most Newton iterations"),
        "warm_start": Param(False, bool, doc="start from the previous solution"),
        "inner_sweeps": Param(10, int, lo=1, doc="coordinate-descent sweeps per Newton iteration"),
        **ENGINE_PARAMS,
        "scheduler": Param("cyclic", str, choices=ENGINE_PARAMS["scheduler"].choices, section="engine",
                           doc="variable scheduler"),
    }

    partial_width = 2  # gradient and Hessian diagonal

    # ---------------------------------------------------------------- the driver's hooks
    def push(self, r, v):
        return r.prob.push(v)

    def pull(self, r, v, summed):
        return r.prob.pull(v, summed)

    def apply(self, r, v, values):
        return r.prob.apply(v, values)

    # ---------------------------------------------------------------- fit
    def _labels(self, r, X, y, yl, start, n):
        """+-1 labels of this rank's rows; ``classes_`` from all labels (a dataset's come from every rank)."""
        is_path = isinstance(X, (str, bytes)) or hasattr(X, "__fspath__")
        y_all = r.gather_rows(yl, start, n) if is_path else np.asarray(y)
        try:
            ys = binary_labels(y_all, self)
        except InputError as e:
            if "Only binary" not in str(e):
                raise
            raise InputError(f"{e} ({type(self).__name__} needs exactly 2 classes in y, found "
                             f"{np.unique(np.ravel(y_all)).size})") from None
        return np.ravel(ys)[start:start + len(yl)]

    @one_blas_thread()  # a rank is a core
    def fit(self, X, y=None, *, test=None, callback=None):
        """Fit (collective): ``X`` a dataset folder or full arrays on every rank; ``test`` adds ``test_score``
        (accuracy) to the last metrics row."""
        p = self._check_params()
        comm = get_comm(p.comm)
        r = Run(p=p, comm=comm, rank=comm.rank, size=comm.size, seed=p.random_state, costs=None)
        r.allreduce = lambda x: allreduce_sum(x, comm)  # buffer Allreduce (the engine's, once it exists)
        if y is None and not isinstance(X, (str, bytes)) and not hasattr(X, "__fspath__"):
            binary_labels(None, self)  # raises: y is required with arrays
        r.X, yl, start, n = local_rows(X, y, comm, "csc", est=self, task="classification")
        ys = self._labels(r, X, y, yl, start, n)  # bad input fails before the kernels load
        warm_once(K.warmup, comm)
        prob = r.prob = LogisticProblem(r.X, ys, n, p.fit_intercept, r.allreduce)
        prob.C = p.C
        d = prob.p
        if p.warm_start and getattr(self, "coef_", None) is not None and np.size(self.coef_) == d:
            prob.w[:d] = np.ravel(self.coef_)
            prob.w[d] = self.intercept_[0] if p.fit_intercept else 0.0
            prob.z = np.asarray(r.X @ prob.w[:d]).ravel() + prob.w[d]
        U = p.round_size or int(np.clip(65536.0 / max(1.0, prob.cost[:d].mean() / comm.size), 8, 4096))
        # one rank too: Jacobi rounds (no solo kernel)
        sw = make_sweeper(self, r, prob.nv, prob.cost, r.X, n, round_size=U, serial_fusion=False)
        reduce = r.allreduce
        t0 = time.perf_counter()
        self.history_ = []
        # reference subgradient at w = 0 (sklearn-like relative stopping rule)
        wsave, zsave = prob.w.copy(), prob.z.copy()
        prob.w[:] = 0.0
        prob.z[:] = 0.0
        g0, _ = prob.gradient(reduce)
        v0 = np.abs(_min_norm_subgrad(g0, prob.w, d)).max()
        prob.w, prob.z = wsave, zsave
        it, U_cur = 0, U
        while True:
            grad, obj = prob.gradient(reduce)
            viol = float(np.abs(_min_norm_subgrad(grad, prob.w, d)).max())
            row = {"iter": it, "time": time.perf_counter() - t0, "objective": float(obj), "subgrad": viol,
                   "gap": viol / max(v0, 1e-300), "nnz": int(np.count_nonzero(prob.w[:d])), **sw.engine.stats()}
            self.history_.append(row)
            if callback is not None:
                callback(row)
            if viol <= p.tol * max(v0, 1e-300) or it >= p.max_iter:
                break
            it += 1
            # working set: support, violators, intercept
            ws = np.nonzero((prob.w[:d] != 0) | (np.abs(grad[:d]) > 1.0 - 1e-9))[0]
            if p.fit_intercept:
                ws = np.append(ws, d)
            ws = ws.astype(np.int64)
            sw.sched.set_active(ws)
            sw.sched.set_round_size(min(U_cur, max(1, len(ws))))
            prob.d[:] = 0.0
            prob.q[:] = 0.0
            for _ in range(p.inner_sweeps):
                sw.engine.run(len(ws))
            # line search on C*loss + ||w||_1 along d (one Allreduce for all steps)
            ts = 0.5 ** np.arange(20)
            ll = np.empty(len(ts))
            K.line_losses(prob.y, prob.z, prob.q, ts, prob.C, ll)
            ll = reduce(ll)
            F = ll + np.abs(prob.w[None, :d] + ts[:, None] * prob.d[None, :d]).sum(axis=1)
            delta = float(grad @ prob.d) + np.abs(prob.w[:d] + prob.d[:d]).sum() - np.abs(prob.w[:d]).sum()
            ok = np.nonzero(F <= obj + 0.01 * ts * delta)[0]
            if len(ok) == 0:
                sw.shrink()  # parallel rounds overshot: smaller rounds
                sw.rejected += 1
                U_cur = int(sw.sched.round_size)
                continue
            prob.w += ts[ok[0]] * prob.d
            prob.z += ts[ok[0]] * prob.q
        if viol > p.tol * max(v0, 1e-300):
            warnings.warn(f"L1 logistic regression did not converge in {p.max_iter} iterations "
                          f"(subgradient {viol:.3e} > tol * {v0:.3e})", convergence_warning(), stacklevel=2)
        self.coef_ = prob.w[None, :d].copy()
        self.intercept_ = np.array([prob.w[d] if p.fit_intercept else 0.0])
        self.n_iter_ = int(it)
        self.objective_ = float(obj)
        self.telemetry_ = {**sw.stats(), "time": time.perf_counter() - t0}
        if test is not None:
            Xt, yt, _, _ = local_rows(test, None, comm, "csr", est=self, reset=False, task="classification")
            s = r.allreduce(np.array([float(np.sum(self.predict(Xt) == np.asarray(yt))), float(len(yt))]))
            self.history_[-1]["test_score"] = float(s[0] / s[1])
        return self

    def predict_proba(self, X):
        p1 = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p1, p1])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.sparse = True
        return tags


def objective(X, y, coef, intercept, C):
    """C * sum log-loss + ||w||_1 with labels mapped to -1/+1 (classes sorted)."""
    classes = np.unique(y)
    s = np.where(np.asarray(y) == classes[1], 1.0, -1.0)
    z = np.asarray(X @ np.ravel(coef)).ravel() + float(np.ravel(intercept)[0] if np.size(intercept) else 0.0)
    return C * np.logaddexp(0, -s * z).sum() + np.abs(coef).sum()
