"""The L2-penalised logistic loss of one rank's rows, as the callables that
:func:`petuum_mpi.fullbatch.minimize` sums over ranks.

Objective (the ``logreg`` app's, scikit-learn's ``LogisticRegression(C=1/(n alpha))``)::

    F(W, b) = 1/n sum_i logloss(y_i, x_i W + b) + alpha/2 ||W||^2      (b unpenalised)

with ``n`` the number of rows on all ranks. Rank ``r`` contributes
``1/n sum_{i in rows(r)} logloss_i`` (and the penalty if ``with_penalty``: give it to
exactly one rank), so the sum over ranks is ``F``.

Parameter vector ``x``: ``W`` (n_features, C) row-major, then the C intercepts when
``fit_intercept``. ``C = 1`` for two classes (sigmoid), ``C = n_classes`` otherwise
(softmax). No MPI here.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ...errors import DataError, UsageError
from . import glm_kernels as GK

__all__ = ["LogisticLoss"]


class LogisticLoss:
    """Loss, gradient, Hessian products and Hessian diagonal of one rank's rows.

    Parameters
    ----------
    X : (n_local, n_features) ndarray or scipy sparse matrix
    y : (n_local,) class indices ``0..n_classes-1``
    n_classes : int >= 2
    alpha : float > 0, L2 strength
    fit_intercept : bool
    n_total : int, rows on all ranks (the mean's denominator)
    with_penalty : bool, add ``alpha/2 ||W||^2`` here (True on exactly one rank)
    """

    def __init__(self, X, y, n_classes, alpha, fit_intercept=True, n_total=None, with_penalty=True):
        if n_classes < 2:
            raise UsageError(f"LogisticLoss: n_classes must be >= 2, got {n_classes}")
        if not alpha > 0:
            raise UsageError(f"LogisticLoss: alpha must be > 0, got {alpha}")
        self.sparse = sp.issparse(X)
        if self.sparse:
            X = sp.csr_matrix(X, dtype=np.float64)
            self.indptr = X.indptr.astype(np.int64)
            self.indices = X.indices.view(np.uint32 if X.indices.dtype.itemsize == 4 else np.uint64)
            self.data = X.data
        else:
            X = np.ascontiguousarray(X, dtype=np.float64)
            if X.ndim != 2:
                raise DataError(f"LogisticLoss: X must be 2-D, got shape {X.shape}")
        self.X = X
        n, d = X.shape
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (n,):
            raise DataError(f"LogisticLoss: y has shape {y.shape}, expected ({n},)")
        if n and (y.min() < 0 or y.max() > n_classes - 1 or not np.array_equal(y, np.floor(y))):
            raise DataError(f"LogisticLoss: y must hold class indices 0..{n_classes - 1}")
        self.y = y
        self.C = 1 if n_classes == 2 else int(n_classes)
        self.d = d
        self.alpha = float(alpha)
        self.fit_intercept = bool(fit_intercept)
        self.n_total = int(n if n_total is None else n_total)
        if self.n_total < 1:
            raise DataError("LogisticLoss: no rows on any rank")
        self.with_penalty = bool(with_penalty)
        self.n_params = d * self.C + (self.C if self.fit_intercept else 0)
        # two cached curvature states (current iterate and the last trial point)
        self._slots = [[None, np.empty((n, self.C))], [None, np.empty((n, self.C))]]
        self._next = 0
        self._zero_b = np.zeros(self.C)

    # ------------------------------------------------------------------ helpers
    def unpack(self, x):
        """``(W (n_features, C), b (C,))`` views of the parameter vector ``x``."""
        k = self.d * self.C
        W = x[:k].reshape(self.d, self.C)
        b = x[k:] if self.fit_intercept else self._zero_b
        return W, b

    def x0(self):
        return np.zeros(self.n_params)

    def _state(self, x):
        for key, S in self._slots:
            if key is not None and np.array_equal(key, x):
                return S
        self.fun_grad(x)
        return self._state(x)

    # ------------------------------------------------------------------ callables
    def fun_grad(self, x):
        """This rank's share of ``(F(x), grad F(x))``."""
        slot = self._slots[self._next]
        self._next ^= 1
        slot[0] = None
        S = slot[1]
        W, b = self.unpack(np.ascontiguousarray(x, dtype=np.float64))
        g = np.zeros(self.n_params)
        gW, gb = g[: self.d * self.C].reshape(self.d, self.C), np.zeros(self.C)
        if self.sparse:
            loss = GK.fg_csr(self.indptr, self.indices, self.data, self.y, W, b, S, gW, gb)
        else:
            loss = GK.fg_dense(self.X, self.y, W, b, S, gW, gb)
        slot[0] = np.array(x, dtype=np.float64, copy=True)
        inv = 1.0 / self.n_total
        g *= inv
        f = loss * inv
        if self.fit_intercept:
            g[self.d * self.C:] = gb * inv
        if self.with_penalty:
            k = self.d * self.C
            f += 0.5 * self.alpha * float(x[:k] @ x[:k])
            g[:k] += self.alpha * x[:k]
        return f, g

    def hessp(self, x, v):
        """This rank's share of ``H(x) v``."""
        S = self._state(x)
        V, vb = self.unpack(np.ascontiguousarray(v, dtype=np.float64))
        h = np.zeros(self.n_params)
        HW, hb = h[: self.d * self.C].reshape(self.d, self.C), np.zeros(self.C)
        if self.sparse:
            GK.hessp_csr(self.indptr, self.indices, self.data, S, V, vb, HW, hb)
        else:
            GK.hessp_dense(self.X, S, V, vb, HW, hb)
        inv = 1.0 / self.n_total
        h *= inv
        if self.fit_intercept:
            h[self.d * self.C:] = hb * inv
        if self.with_penalty:
            k = self.d * self.C
            h[:k] += self.alpha * v[:k]
        return h

    def hess_diag(self, x):
        """This rank's share of the diagonal of ``H(x)``."""
        S = self._state(x)
        h = np.zeros(self.n_params)
        DW, db = h[: self.d * self.C].reshape(self.d, self.C), np.zeros(self.C)
        if self.sparse:
            GK.diag_csr(self.indptr, self.indices, self.data, S, DW, db)
        else:
            GK.diag_dense(self.X, S, DW, db)
        inv = 1.0 / self.n_total
        h *= inv
        if self.fit_intercept:
            h[self.d * self.C:] = db * inv
        if self.with_penalty:
            h[: self.d * self.C] += self.alpha
        return h


def warmup():
    """Compile the kernels on tiny inputs (for :func:`petuum_mpi.runtime.warm_once`)."""
    Xd = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    for nc in (2, 3):
        y = np.array([0.0, 1.0, nc - 1.0])
        for X in (Xd, sp.csr_matrix(Xd)):
            L = LogisticLoss(X, y, nc, 1.0)
            x = L.x0()
            L.fun_grad(x)
            L.hessp(x, np.ones_like(x))
            L.hess_diag(x)
