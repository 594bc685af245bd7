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
