"""Numba kernels of L1-regularised logistic regression (one call per round, no MPI).

Variable ``j == p`` (one past the last feature) is the intercept: a column of ones.
``g`` and ``h`` are the per-row first and second derivatives of ``C * loss`` at the
current margins; ``q = X d`` is the margin change of the current Newton direction.
"""

from __future__ import annotations

import numba
import numpy as np

from ...linear.rows import as_columns, entry, row_axpy, row_range


@numba.njit(cache=True)
def partial(cols, p, vars_, g, h, q, out):
    """out[2k] = sum_i x_ij (g_i + h_i q_i); out[2k+1] = sum_i h_i x_ij^2 (column j = row j
    of ``cols``, the transpose's row set; j == p is the intercept)."""
    n = g.shape[0]
    for k in range(vars_.shape[0]):
        j = vars_[k]
        s = 0.0
        t = 0.0
        if j == p:
            for i in range(n):
                s += g[i] + h[i] * q[i]
                t += h[i]
        else:
            p0, p1 = row_range(cols, j)
            for e in range(p0, p1):
                i, x = entry(cols, j, e)
                s += x * (g[i] + h[i] * q[i])
                t += h[i] * x * x
        out[2 * k] = s
        out[2 * k + 1] = t


@numba.njit(cache=True)
def newton_values(vars_, GH, w, d, p, out):
    """Minimise G delta + H/2 delta^2 + |w_j + d_j + delta| (no L1 on the intercept).

    Returns the new directions d_j."""
    for k in range(vars_.shape[0]):
        j = vars_[k]
        G = GH[2 * k]
        H = GH[2 * k + 1] + 1e-12
        u = w[j] + d[j]
        z = H * u - G
        if j == p:
            un = z / H
        elif z > 1.0:
            un = (z - 1.0) / H
        elif z < -1.0:
            un = (z + 1.0) / H
        else:
            un = 0.0
        out[k] = un - w[j]


@numba.njit(cache=True)
def apply(cols, p, vars_, dnew, d, q, change):
    """d[vars_] = dnew; q += x_j * delta_j (j == p: the intercept's column of ones)."""
    n = q.shape[0]
    for k in range(vars_.shape[0]):
        j = vars_[k]
        dd = dnew[k] - d[j]
        change[k] = abs(dd)
        if dd != 0.0:
            d[j] = dnew[k]
            if j == p:
                for i in range(n):
                    q[i] += dd
            else:
                row_axpy(cols, j, dd, q)


@numba.njit(cache=True)
def row_derivatives(y, z, C, g, h):
    """g_i = d(C log(1+exp(-y z)))/dz, h_i its second derivative; returns C * sum loss."""
    loss = 0.0
    for i in range(y.shape[0]):
        m = y[i] * z[i]
        if m > 0:
            e = np.exp(-m)
            s = 1.0 / (1.0 + e)  # sigma(m)
            loss += np.log1p(e)
        else:
            e = np.exp(m)
            s = e / (1.0 + e)
            loss += -m + np.log1p(e)
        g[i] = -C * y[i] * (1.0 - s)
        h[i] = C * s * (1.0 - s)
    return C * loss


@numba.njit(cache=True)
def line_losses(y, z, q, ts, C, out):
    """out[k] = C * sum_i log(1 + exp(-y_i (z_i + ts[k] q_i)))."""
    for k in range(ts.shape[0]):
        t = ts[k]
        s = 0.0
        for i in range(y.shape[0]):
            m = y[i] * (z[i] + t * q[i])
            if m > 0:
                s += np.log1p(np.exp(-m))
            else:
                s += -m + np.log1p(np.exp(m))
        out[k] = C * s


def warmup():
    import scipy.sparse as sp

    X = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(3, 2))
    S = sp.csc_matrix(X)
    v = np.arange(3, dtype=np.int64)
    y = np.array([1.0, -1.0, 1.0])
    z = np.zeros(3)
    g, h, q = np.zeros(3), np.zeros(3), np.zeros(3)
    out = np.zeros(6)
    row_derivatives(y, z, 1.0, g, h)
    for cols in (as_columns(X), as_columns(S)):
        partial(cols, 2, v, g, h, q, out)
    w, d, dn = np.zeros(3), np.zeros(3), np.zeros(3)
    newton_values(v, out, w, d, 2, dn)
    for cols in (as_columns(X), as_columns(S)):
        apply(cols, 2, v, dn, d.copy(), q.copy(), np.zeros(3))
    line_losses(y, z, q, np.ones(2), 1.0, np.zeros(2))
