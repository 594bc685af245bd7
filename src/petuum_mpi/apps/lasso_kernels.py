"""Numba kernels of the Lasso / ElasticNet app (one call per round, no MPI).

Every rank holds its rows of X column-major: dense ``X`` (n_local x p, Fortran
order) or CSC (``indptr, indices, data``). The residual kept is the raw
``r = y_c - X w`` (``y_c`` = y minus its global mean); the centred residual is
``r + (mu @ w)`` and the centred column is ``x_j - mu_j``, so for centred data
``x_jc . R_c = x_j . r - mu_j * sum(r)``: centring never densifies sparse X.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def partial_dense(X, vars_, r, rsum, mu, out):
    """out[k] = X[:, j] . r - mu[j] * rsum for j = vars_[k]."""
    n = X.shape[0]
    for k in range(vars_.shape[0]):
        j = vars_[k]
        s = 0.0
        for i in range(n):
            s += X[i, j] * r[i]
        out[k] = s - mu[j] * rsum


@numba.njit(cache=True)
def partial_sparse(indptr, indices, data, vars_, r, rsum, mu, out):
    for k in range(vars_.shape[0]):
        j = vars_[k]
        s = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            s += data[p] * r[indices[p]]
        out[k] = s - mu[j] * rsum


@numba.njit(cache=True)
def enet_values(vars_, g, w, nrm2, a, b, out):
    """Coordinate minimisers from the summed partials (Jacobi round)."""
    for k in range(vars_.shape[0]):
        j = vars_[k]
        tmp = g[k] + nrm2[j] * w[j]
        if nrm2[j] == 0.0:
            out[k] = 0.0
        elif tmp > a:
            out[k] = (tmp - a) / (nrm2[j] + b)
        elif tmp < -a:
            out[k] = (tmp + a) / (nrm2[j] + b)
        else:
            out[k] = 0.0


@numba.njit(cache=True)
def apply_dense(X, vars_, wnew, w, r, colsum, change):
    """w[vars_] = wnew; r -= X[:, j] * delta_j. Returns the change of sum(r)."""
    n = X.shape[0]
    ds = 0.0
    for k in range(vars_.shape[0]):
        j = vars_[k]
        d = wnew[k] - w[j]
        change[k] = abs(d)
        if d != 0.0:
            w[j] = wnew[k]
            for i in range(n):
                r[i] -= d * X[i, j]
            ds -= d * colsum[j]
    return ds


@numba.njit(cache=True)
def apply_sparse(indptr, indices, data, vars_, wnew, w, r, colsum, change):
    ds = 0.0
    for k in range(vars_.shape[0]):
        j = vars_[k]
        d = wnew[k] - w[j]
        change[k] = abs(d)
        if d != 0.0:
            w[j] = wnew[k]
            for p in range(indptr[j], indptr[j + 1]):
                r[indices[p]] -= d * data[p]
            ds -= d * colsum[j]
    return ds


@numba.njit(cache=True)
def cd_dense(X, vars_, w, r, rsum, mu, nrm2, colsum, a, b, change):
    """Sequential (exact) coordinate descent over vars_ on one rank. Returns sum(r)."""
    n = X.shape[0]
    for k in range(vars_.shape[0]):
        j = vars_[k]
        if nrm2[j] == 0.0:
            change[k] = 0.0
            continue
        s = 0.0
        for i in range(n):
            s += X[i, j] * r[i]
        tmp = s - mu[j] * rsum + nrm2[j] * w[j]
        if tmp > a:
            v = (tmp - a) / (nrm2[j] + b)
        elif tmp < -a:
            v = (tmp + a) / (nrm2[j] + b)
        else:
            v = 0.0
        d = v - w[j]
        change[k] = abs(d)
        if d != 0.0:
            w[j] = v
            for i in range(n):
                r[i] -= d * X[i, j]
            rsum -= d * colsum[j]
    return rsum


@numba.njit(cache=True)
def cd_sparse(indptr, indices, data, vars_, w, r, rsum, mu, nrm2, colsum, a, b, change):
    for k in range(vars_.shape[0]):
        j = vars_[k]
        if nrm2[j] == 0.0:
            change[k] = 0.0
            continue
        s = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            s += data[p] * r[indices[p]]
        tmp = s - mu[j] * rsum + nrm2[j] * w[j]
        if tmp > a:
            v = (tmp - a) / (nrm2[j] + b)
        elif tmp < -a:
            v = (tmp + a) / (nrm2[j] + b)
        else:
            v = 0.0
        d = v - w[j]
        change[k] = abs(d)
        if d != 0.0:
            w[j] = v
            for p in range(indptr[j], indptr[j + 1]):
                r[indices[p]] -= d * data[p]
            rsum -= d * colsum[j]
    return rsum


def warmup():
    """Compile (or load from cache) every kernel on tiny inputs."""
    import scipy.sparse as sp

    X = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(3, 2))
    S = sp.csc_matrix(X)
    v = np.arange(2, dtype=np.int64)
    r = np.ones(3)
    mu = np.zeros(2)
    out = np.zeros(2)
    w = np.zeros(2)
    nrm = np.ones(2)
    partial_dense(X, v, r, 0.0, mu, out)
    partial_sparse(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, v, r, 0.0, mu, out)
    enet_values(v, out, w, nrm, 0.1, 0.0, out)
    apply_dense(X, v, out, w.copy(), r.copy(), mu, out.copy())
    apply_sparse(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, v, out, w.copy(), r.copy(), mu,
                 out.copy())
    cd_dense(X, v, w.copy(), r.copy(), 0.0, mu, nrm, mu, 0.1, 0.0, out)
    cd_sparse(S.indptr.astype(np.int64), S.indices.astype(np.int32), S.data, v, w.copy(), r.copy(), 0.0, mu,
              nrm, mu, 0.1, 0.0, out)
    warmup_gram()


@numba.njit(cache=True)
def gram_cd(G, q, w, z, yy, a, b, target, max_sweeps):
    """Exact cyclic CD on a working set from its centred Gram matrix (no data access).

    ``G`` = X_Wc^T X_Wc, ``q`` = X_Wc^T R_c (updated in place), ``w`` the working-set
    coefficients (updated in place), ``z`` = X_Wc^T y_c, ``yy`` = ||y_c||^2. Sweeps until
    the working-set duality gap is at most ``target`` or ``max_sweeps`` sweeps ran.
    Returns (sweeps, gap, primal). Every rank gets bitwise the same result.
    """
    m = w.shape[0]
    sweeps = 0
    gap = np.inf
    primal = np.inf
    while sweeps < max_sweeps:
        for j in range(m):
            gjj = G[j, j]
            if gjj == 0.0:
                continue
            tmp = q[j] + gjj * w[j]
            if tmp > a:
                v = (tmp - a) / (gjj + b)
            elif tmp < -a:
                v = (tmp + a) / (gjj + b)
            else:
                v = 0.0
            d = v - w[j]
            if d != 0.0:
                w[j] = v
                for i in range(m):  # row j (= column j, G symmetric): contiguous
                    q[i] -= d * G[j, i]
        sweeps += 1
        # gap of the working-set problem: R2 = yy - w.z - w.q, R.y = yy - w.z
        wz = 0.0
        wq = 0.0
        l1 = 0.0
        w2 = 0.0
        dn = 0.0
        for j in range(m):
            wz += w[j] * z[j]
            wq += w[j] * q[j]
            l1 += abs(w[j])
            w2 += w[j] * w[j]
            xa = abs(q[j] - b * w[j])
            if xa > dn:
                dn = xa
        R2 = max(yy - wz - wq, 0.0)
        ry = yy - wz
        primal = 0.5 * (R2 + b * w2) + a * l1
        s = a / dn if dn > a else 1.0
        dual = -0.5 * s * s * (R2 + b * w2) + s * ry
        gap = primal - dual
        if gap <= target:
            break
    return sweeps, gap, primal


def warmup_gram():
    G = np.eye(2)
    q = np.ones(2)
    gram_cd(G, q, np.zeros(2), np.ones(2), 2.0, 0.1, 0.0, 1e-6, 3)
