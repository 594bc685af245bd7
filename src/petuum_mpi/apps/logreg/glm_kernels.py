"""Numba kernels for full-batch logistic regression: loss, gradient, Hessian-vector
product and Hessian diagonal, binary (sigmoid) and multinomial (softmax), on dense and
CSR rows. No MPI: every kernel returns this rank's *sums* over its rows.

Model as in :mod:`petuum_mpi.apps.logreg.kernels`: ``W`` is ``(n_features, C)``
float64 C-contiguous, ``b`` the ``(C,)`` intercepts; ``C == 1`` is binary
(labels 0/1), ``C >= 2`` multinomial (labels ``0..C-1`` as floats).

Per layout, one row loop per quantity, shared by binary and multinomial:

* ``fg_*``: summed log-loss; ``gW += X^T R``, ``gb += sum_i R_i`` with ``R_i`` the
  residual ``dloss/dmargin`` (``p - y`` / ``softmax - onehot``); ``S[i]`` keeps the
  row's curvature state for later Hessian products (binary ``p (1 - p)``,
  multinomial the probabilities ``p``).
* ``hessp_*``: ``HW += X^T T``, ``hb += sum_i T_i`` with ``T_i = H_i (x_i V + vb)``,
  ``H_i`` the row's Hessian in the margins (binary ``p(1-p)``, multinomial
  ``diag(p) - p p^T``), from the state ``S`` of an ``fg_*`` call at the same point.
* ``diag_*``: the diagonal of the (data part of the) Hessian, for preconditioning.

Binary rows take a scalar path (1-D views of ``W``); the multinomial path loops over
the C columns inside the row.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernels import _dot_row as _dot_csr  # the SGD kernels' 4-accumulator CSR row dot

__all__ = ["fg_dense", "fg_csr", "hessp_dense", "hessp_csr", "diag_dense", "diag_csr"]


# ----------------------------------------------------------------------------- rows (shared)


@njit(cache=True, inline="always")
def _row_residual(z, yi, s):
    """Margins ``z`` (C,) -> residuals in place; curvature state -> ``s`` (C,); returns the
    row's log-loss."""
    C = z.shape[0]
    if C == 1:
        m = z[0]
        if m >= 0:
            e = math.exp(-m)
            p = 1.0 / (1.0 + e)
            loss = math.log1p(e) + (1.0 - yi) * m
        else:
            e = math.exp(m)
            p = e / (1.0 + e)
            loss = math.log1p(e) - yi * m
        z[0] = p - yi
        s[0] = p * (1.0 - p)
        return loss
    mx = z[0]
    for c in range(1, C):
        if z[c] > mx:
            mx = z[c]
    t = 0.0
    for c in range(C):
        t += math.exp(z[c] - mx)
    lse = mx + math.log(t)
    yc = int(yi)
    loss = lse - z[yc]
    for c in range(C):
        p = math.exp(z[c] - lse)
        s[c] = p
        z[c] = p
    z[yc] -= 1.0
    return loss


@njit(cache=True, inline="always")
def _row_hess(u, s):
    """Direction margins ``u`` (C,) -> ``H_i u`` in place (state ``s`` from :func:`_row_residual`)."""
    C = u.shape[0]
    if C == 1:
        u[0] *= s[0]
        return
    pu = 0.0
    for c in range(C):
        pu += s[c] * u[c]
    for c in range(C):
        u[c] = s[c] * (u[c] - pu)


@njit(cache=True, inline="always")
def _row_diag_weight(s, c):
    """Diagonal entry ``c`` of the row's margin Hessian."""
    if s.shape[0] == 1:
        return s[0]
    return s[c] * (1.0 - s[c])


# ----------------------------------------------------------------------------- CSR


@njit(cache=True, nogil=True)
def _margins_row_csr(p0, p1, indices, data, W, b, z):
    C = W.shape[1]
    for c in range(C):
        z[c] = b[c]
    for p in range(p0, p1):
        j = indices[p]
        x = data[p]
        for c in range(C):
            z[c] += x * W[j, c]


@njit(cache=True, nogil=True)
def _scatter_row_csr(p0, p1, indices, data, r, G):
    C = G.shape[1]
    for p in range(p0, p1):
        j = indices[p]
        x = data[p]
        for c in range(C):
            G[j, c] += x * r[c]


@njit(cache=True, nogil=True)
def fg_csr(indptr, indices, data, y, W, b, S, gW, gb):
    """Summed log-loss of the CSR rows at ``(W, b)``; adds the loss gradient sums to
    ``gW`` (n_features, C) and ``gb`` (C,); writes the curvature state ``S`` (n, C)."""
    n = indptr.shape[0] - 1
    d = W.shape[0]
    C = W.shape[1]
    loss = 0.0
    z = np.empty(C)
    if C == 1:
        w = W.reshape(d)
        g = gW.reshape(d)
        for i in range(n):
            p0 = indptr[i]
            p1 = indptr[i + 1]
            z[0] = b[0] + _dot_csr(p0, p1, indices, data, w)
            loss += _row_residual(z, y[i], S[i])
            r = z[0]
            gb[0] += r
            for p in range(p0, p1):
                g[indices[p]] += data[p] * r
        return loss
    for i in range(n):
        p0 = indptr[i]
        p1 = indptr[i + 1]
        _margins_row_csr(p0, p1, indices, data, W, b, z)
        loss += _row_residual(z, y[i], S[i])
        for c in range(C):
            gb[c] += z[c]
        _scatter_row_csr(p0, p1, indices, data, z, gW)
    return loss


@njit(cache=True, nogil=True)
def hessp_csr(indptr, indices, data, S, V, vb, HW, hb):
    """Adds the loss Hessian times ``(V, vb)`` summed over the CSR rows to ``(HW, hb)``."""
    n = indptr.shape[0] - 1
    d = V.shape[0]
    C = V.shape[1]
    u = np.empty(C)
    if C == 1:
        v = V.reshape(d)
        h = HW.reshape(d)
        for i in range(n):
            p0 = indptr[i]
            p1 = indptr[i + 1]
            t = S[i, 0] * (vb[0] + _dot_csr(p0, p1, indices, data, v))
            hb[0] += t
            for p in range(p0, p1):
                h[indices[p]] += data[p] * t
        return
    for i in range(n):
        p0 = indptr[i]
        p1 = indptr[i + 1]
        _margins_row_csr(p0, p1, indices, data, V, vb, u)
        _row_hess(u, S[i])
        for c in range(C):
            hb[c] += u[c]
        _scatter_row_csr(p0, p1, indices, data, u, HW)


@njit(cache=True, nogil=True)
def diag_csr(indptr, indices, data, S, DW, db):
    """Adds the diagonal of the loss Hessian summed over the CSR rows to ``(DW, db)``."""
    n = indptr.shape[0] - 1
    C = DW.shape[1]
    for i in range(n):
        s = S[i]
        for c in range(C):
            db[c] += _row_diag_weight(s, c)
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            x2 = data[p] * data[p]
            for c in range(C):
                DW[j, c] += x2 * _row_diag_weight(s, c)


# ----------------------------------------------------------------------------- dense


@njit(cache=True, nogil=True)
def _margins_row_dense(x, W, b, z):
    C = W.shape[1]
    for c in range(C):
        z[c] = b[c]
    for j in range(x.shape[0]):
        xj = x[j]
        for c in range(C):
            z[c] += xj * W[j, c]


@njit(cache=True, nogil=True)
def _scatter_row_dense(x, r, G):
    C = G.shape[1]
    for j in range(x.shape[0]):
        xj = x[j]
        for c in range(C):
            G[j, c] += xj * r[c]


@njit(cache=True, nogil=True)
def fg_dense(X, y, W, b, S, gW, gb):
    """Dense version of :func:`fg_csr` (``X`` (n, n_features) C-contiguous)."""
    n, d = X.shape
    C = W.shape[1]
    loss = 0.0
    z = np.empty(C)
    if C == 1:
        w = W.reshape(d)
        g = gW.reshape(d)
        for i in range(n):
            x = X[i]
            m = b[0]
            for j in range(d):
                m += x[j] * w[j]
            z[0] = m
            loss += _row_residual(z, y[i], S[i])
            r = z[0]
            gb[0] += r
            for j in range(d):
                g[j] += x[j] * r
        return loss
    for i in range(n):
        x = X[i]
        _margins_row_dense(x, W, b, z)
        loss += _row_residual(z, y[i], S[i])
        for c in range(C):
            gb[c] += z[c]
        _scatter_row_dense(x, z, gW)
    return loss


@njit(cache=True, nogil=True)
def hessp_dense(X, S, V, vb, HW, hb):
    """Dense version of :func:`hessp_csr`."""
    n, d = X.shape
    C = V.shape[1]
    u = np.empty(C)
    if C == 1:
        v = V.reshape(d)
        h = HW.reshape(d)
        for i in range(n):
            x = X[i]
            m = vb[0]
            for j in range(d):
                m += x[j] * v[j]
            t = S[i, 0] * m
            hb[0] += t
            for j in range(d):
                h[j] += x[j] * t
        return
    for i in range(n):
        x = X[i]
        _margins_row_dense(x, V, vb, u)
        _row_hess(u, S[i])
        for c in range(C):
            hb[c] += u[c]
        _scatter_row_dense(x, u, HW)


@njit(cache=True, nogil=True)
def diag_dense(X, S, DW, db):
    """Dense version of :func:`diag_csr`."""
    n, d = X.shape
    C = DW.shape[1]
    for i in range(n):
        s = S[i]
        x = X[i]
        for c in range(C):
            db[c] += _row_diag_weight(s, c)
        for j in range(d):
            x2 = x[j] * x[j]
            for c in range(C):
                DW[j, c] += x2 * _row_diag_weight(s, c)
