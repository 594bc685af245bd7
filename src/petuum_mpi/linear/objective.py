"""The L2-penalised loss of one rank's rows as the callables that
:func:`petuum_mpi.fullbatch.minimize` sums over ranks, for any smooth loss of
:mod:`.losses` (logistic / multinomial: scikit-learn's ``LogisticRegression(C=1/(n alpha))``;
squared: ``Ridge(alpha=n alpha)``; squared hinge: ``LinearSVC(loss='squared_hinge', C=1/(2 n alpha))``)::

    F(W, b) = 1/n sum_i loss(y_i, x_i W + b) + alpha/2 ||W||^2      (b unpenalised)

with ``n`` the number of rows on all ranks. Rank ``r`` contributes
``1/n sum_{i in rows(r)} loss_i`` (and the penalty if ``with_penalty``: give it to
exactly one rank), so the sum over ranks is ``F``.

Parameter vector ``x``: ``W`` (n_features, C) row-major, then the C intercepts when
``fit_intercept``. No MPI here.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError, UsageError
from . import kernels as K
from . import losses
from .rows import as_rows

__all__ = ["LinearObjective"]


class LinearObjective:
    """Loss, gradient, Hessian products and Hessian diagonal of one rank's rows.

    Parameters
    ----------
    X : (n_local, n_features) ndarray or scipy sparse matrix
    y : (n_local,) labels (class indices ``0..n_classes-1``; real values for the squared loss)
    loss : a smooth loss of :mod:`.losses` (``Logistic()``, ``Multinomial()``, ``Squared()``, ``SquaredHinge()``)
    alpha : float > 0, L2 strength
    fit_intercept : bool
    n_classes : int, columns of the multinomial loss (ignored otherwise)
    n_total : int, rows on all ranks (the mean's denominator)
    with_penalty : bool, add ``alpha/2 ||W||^2`` here (True on exactly one rank)
    """

    def __init__(self, X, y, loss, alpha, fit_intercept=True, n_classes=2, n_total=None, with_penalty=True):
        name = type(self).__name__
        if not isinstance(loss, losses.SMOOTH):
            raise UsageError(f"{name}: loss {type(loss).__name__} has no Hessian; use one of "
                             f"{[c.__name__ for c in losses.SMOOTH]}")
        if not alpha > 0:
            raise UsageError(f"{name}: alpha must be > 0, got {alpha}")
        self.X = as_rows(X)
        n, d = X.shape
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (n,):
            raise DataError(f"{name}: y has shape {y.shape}, expected ({n},)")
        self.C = losses.n_columns(loss, n_classes)
        if isinstance(loss, losses.CLASSIFIERS):
            top = max(self.C, 2) - 1
            if n and (y.min() < 0 or y.max() > top or not np.array_equal(y, np.floor(y))):
                raise DataError(f"{name}: y must hold class indices 0..{top}")
        elif n and not np.isfinite(y).all():
            raise DataError(f"{name}: y has a non-finite value at row {int(np.flatnonzero(~np.isfinite(y))[0])}")
        self.loss, self.y, self.d = loss, y, d
        self.alpha = float(alpha)
        self.fit_intercept = bool(fit_intercept)
        self.n_total = int(n if n_total is None else n_total)
        if self.n_total < 1:
            raise DataError(f"{name}: no rows on any rank")
        self.with_penalty = bool(with_penalty)
        self.n_params = d * self.C + (self.C if self.fit_intercept else 0)
        # two cached curvature states (current iterate and the last trial point)
        self._slots = [[None, np.empty((n, self.C))], [None, np.empty((n, self.C))]]
        self._next = 0
        self._zero_b = np.zeros(self.C)

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

    def _finish(self, h, hb, v, diag=False):
        """Mean over all rows, intercept part, penalty part (on the one rank that has it)."""
        k = self.d * self.C
        h *= 1.0 / self.n_total
        if self.fit_intercept:
            h[k:] = hb / self.n_total
        if self.with_penalty:
            h[:k] += self.alpha if diag else self.alpha * v[:k]
        return h

    def fun_grad(self, x):
        """This rank's share of ``(F(x), grad F(x))``."""
        slot = self._slots[self._next]
        self._next ^= 1
        slot[0] = None
        x = np.ascontiguousarray(x, dtype=np.float64)
        W, b = self.unpack(x)
        g = np.zeros(self.n_params)
        gb = np.zeros(self.C)
        loss = K.fg(self.loss, self.X, self.y, W, b, slot[1], K.no_state(), g[: self.d * self.C].reshape(W.shape), gb)
        slot[0] = x.copy()
        f = loss / self.n_total
        if self.with_penalty:
            k = self.d * self.C
            f += 0.5 * self.alpha * float(np.einsum("i,i->", x[:k], x[:k]))  # no threaded BLAS (see fullbatch._dot)
        return f, self._finish(g, gb, x)

    def hessp(self, x, v):
        """This rank's share of ``H(x) v``."""
        S = self._state(x)
        V, vb = self.unpack(np.ascontiguousarray(v, dtype=np.float64))
        h = np.zeros(self.n_params)
        hb = np.zeros(self.C)
        K.hessp(self.loss, self.X, S, V, vb, h[: self.d * self.C].reshape(V.shape), hb)
        return self._finish(h, hb, v)

    def hess_diag(self, x):
        """This rank's share of the diagonal of ``H(x)``."""
        S = self._state(x)
        h = np.zeros(self.n_params)
        hb = np.zeros(self.C)
        K.hess_diag(self.loss, self.X, S, h[: self.d * self.C].reshape(self.d, self.C), hb)
        return self._finish(h, hb, None, diag=True)


def warmup(loss_types=(losses.Logistic, losses.Multinomial)):
    """Compile the kernels on tiny inputs (for :func:`petuum_mpi.runtime.warm_once`)."""
    import scipy.sparse as sp

    Xd = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    for cls in loss_types:
        nc = 3 if cls is losses.Multinomial else 2
        y = np.array([0.0, 1.0, nc - 1.0])
        for X in (Xd, sp.csr_matrix(Xd)):
            L = LinearObjective(X, y, cls(), 1.0, n_classes=nc)
            x = L.x0()
            L.fun_grad(x)
            L.hessp(x, np.ones_like(x))
            L.hess_diag(x)
