"""Linear SVM by dual coordinate descent on STRADS (as scikit-learn's LinearSVC(dual=True)).

Minimises ``0.5 |w|^2 + C sum_i loss(y_i w.x_i)`` (hinge or squared hinge; the intercept
is a penalised constant feature, as liblinear). The scheduled variables are the dual
coefficients ``alpha_i``, one per *sample*, so each rank holds every sample but only a
block of the *features* (and of ``w``): ``push`` gives this rank's part of ``w.x_i``,
``pull`` turns the summed margin into the new ``alpha_i`` (a clipped Newton step, the
same on every rank), ``apply`` moves the local block of ``w``.

    mpiexec -n 2 python -m petuum_mpi run examples/svm.toml
"""

import numba
import numpy as np
from sklearn.linear_model._base import LinearClassifierMixin

from petuum_mpi.drivers import ModelParallelEstimator
from petuum_mpi.estimator import Param, binary_labels, local_columns


@numba.njit(cache=True)
def partial_margins(indptr, indices, data, w, vars_, out):
    for k in range(vars_.size):
        s = 0.0
        for p in range(indptr[vars_[k]], indptr[vars_[k] + 1]):
            s += data[p] * w[indices[p]]
        out[k] = s


@numba.njit(cache=True)
def move_w(indptr, indices, data, w, vars_, coef):
    for k in range(vars_.size):
        for p in range(indptr[vars_[k]], indptr[vars_[k] + 1]):
            w[indices[p]] += coef[k] * data[p]


@numba.njit(cache=True)
def solo_cd(ip, ix, dx, w, vars_, y, alpha, Q, D, U, change):
    """One rank: the updates of ``vars_`` one after the other (exact coordinate descent)."""
    m, c = np.empty(1), np.empty(1)
    for k in range(vars_.size):
        i = vars_[k]
        partial_margins(ip, ix, dx, w, vars_[k:k + 1], m)
        new = alpha[i] if Q[i] <= 0 else min(max(alpha[i] - (y[i] * m[0] - 1.0 + D * alpha[i]) / Q[i], 0.0), U)
        c[0], change[k], alpha[i] = (new - alpha[i]) * y[i], abs(new - alpha[i]), new
        move_w(ip, ix, dx, w, vars_[k:k + 1], c)


def warmup():
    a, v, i = np.zeros(1), np.zeros(1, np.int64), np.zeros(2, np.int32)
    solo_cd(i, i[:1], a, a.copy(), v, np.ones(1), a.copy(), np.ones(1), 0.0, 1.0, a.copy())


class LinearSVM(LinearClassifierMixin, ModelParallelEstimator):
    """Linear SVM (binary) by scheduled dual coordinate descent."""

    app_name = "linear_svm"
    params = {
        "C": Param(1.0, float, lo=0, lo_open=True, doc="inverse regularisation strength"),
        "loss": Param("squared_hinge", str, choices=("hinge", "squared_hinge"), doc="loss function"),
        "fit_intercept": Param(True, bool, doc="add a (penalised) constant feature of value 1"),
        "scheduler": Param("priority", str, choices=("cyclic", "random", "priority"), section="engine",
                           doc="which dual coefficients a round updates"),
        "tol": Param(1e-4, float, lo=0, lo_open=True, doc="stop when the duality gap <= tol x C n"),
    }
    undo_state = ("alpha", "w")
    monitor = "dual"
    warmup = warmup

    def read(self, r, X, y):
        if y is None and not isinstance(X, str):
            binary_labels(None, self)  # raises: y is required with arrays
        r.X, yv, r.lo, _ = local_columns(X, y, r.comm, self, ones=1.0 if self.fit_intercept else None)
        r.y = binary_labels(yv, self)

    def setup(self, r):
        n = r.X.shape[0]
        r.alpha, r.w = np.zeros(n), np.zeros(r.X.shape[1])
        r.D, r.U = (0.0, self.C) if self.loss == "hinge" else (0.5 / self.C, np.inf)
        r.Q = r.allreduce(np.asarray(r.X.multiply(r.X).sum(axis=1)).ravel()) + r.D  # diagonal of Q + D
        r.costs = np.diff(r.X.indptr).astype(np.float64) + 1.0
        return n

    def push(self, r, v):
        out = np.empty(len(v))
        partial_margins(r.X.indptr, r.X.indices, r.X.data, r.w, v, out)
        return out

    def pull(self, r, v, margin):
        G = r.y[v] * margin - 1.0 + r.D * r.alpha[v]  # gradient of the dual in alpha_v
        step = np.divide(G, r.Q[v], out=np.zeros(len(v)), where=r.Q[v] > 0)
        return np.clip(r.alpha[v] - step, 0.0, r.U)

    def apply(self, r, v, new):
        delta = new - r.alpha[v]
        r.alpha[v] = new
        move_w(r.X.indptr, r.X.indices, r.X.data, r.w, v, delta * r.y[v])
        return np.abs(delta)

    def solo(self, r, v):
        change = np.empty(len(v))
        solo_cd(r.X.indptr, r.X.indices, r.X.data, r.w, v, r.y, r.alpha, r.Q, r.D, r.U, change)
        return change

    def progress(self, r):
        m = r.allreduce(np.append(r.X @ r.w, r.w @ r.w))
        ww, xi = m[-1], np.maximum(0.0, 1.0 - r.y * m[:-1])
        primal = 0.5 * ww + self.C * (xi.sum() if self.loss == "hinge" else (xi ** 2).sum())
        dual = 0.5 * ww + 0.5 * r.D * (r.alpha @ r.alpha) - r.alpha.sum()
        return {"objective": primal, "dual": dual, "gap": (primal + dual) / (self.C * len(r.y)),
                "support": int(np.count_nonzero(r.alpha))}

    def finish(self, r):
        d = self.n_features_in_
        w = r.allreduce(np.concatenate([np.zeros(r.lo), r.w, np.zeros(d + self.fit_intercept - r.lo - r.w.size)]))
        self.coef_, self.intercept_ = w[None, :d], (w[d:] if self.fit_intercept else np.zeros(1))
        self.dual_coef_ = r.alpha.copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.input_tags.sparse = True
        return tags
