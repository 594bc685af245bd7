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
from ...linear.rows import as_columns, row_axpy, row_dot


@numba.njit(cache=True)
def partial(cols, vars_, r, rsum, mu, out):
    """out[k] = x_j . r - mu[j] * rsum for j = vars_[k]."""
    for k in range(vars_.shape[0]):
        j = vars_[k]
        out[k] = row_dot(cols, j, r) - mu[j] * rsum


@numba.njit(cache=True)
def col_stats_sparse(indptr, data, colsum, colsq):
    """colsum[j], colsq[j] = sum and sum of squares of CSC column j."""
    for j in range(indptr.shape[0] - 1):
        s = 0.0
        s2 = 0.0
        for p in range(indptr[j], indptr[j + 1]):
            v = data[p]
            s += v
            s2 += v * v
        colsum[j] = s
        colsq[j] = s2


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
def apply(cols, vars_, wnew, w, r, colsum, change):
    """w[vars_] = wnew; r -= x_j * delta_j. Returns the change of sum(r)."""
    ds = 0.0
    for k in range(vars_.shape[0]):
        j = vars_[k]
        d = wnew[k] - w[j]
        change[k] = abs(d)
        if d != 0.0:
            w[j] = wnew[k]
            row_axpy(cols, j, -d, r)
            ds -= d * colsum[j]
    return ds


@numba.njit(cache=True)
def cd(cols, vars_, w, r, rsum, mu, nrm2, colsum, a, b, change):
    """Sequential (exact) coordinate descent over vars_ on one rank. Returns sum(r)."""
    for k in range(vars_.shape[0]):
        j = vars_[k]
        if nrm2[j] == 0.0:
            change[k] = 0.0
            continue
        tmp = row_dot(cols, j, r) - mu[j] * rsum + nrm2[j] * w[j]
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
            row_axpy(cols, j, -d, r)
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
    for cols in (as_columns(X), as_columns(S)):
        partial(cols, v, r, 0.0, mu, out)
        apply(cols, v, out, w.copy(), r.copy(), mu, out.copy())
        cd(cols, v, w.copy(), r.copy(), 0.0, mu, nrm, mu, 0.1, 0.0, out)
    col_stats_sparse(S.indptr.astype(np.int64), S.data, out.copy(), out.copy())
    enet_values(v, out, w, nrm, 0.1, 0.0, out)
    duality_gap(1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 3, 0.1, 0.0)  # EnetProblem.gap's call from Python
    warmup_gram()
    warmup_ws()


@numba.njit(cache=True, inline="always")
def _soft(tmp, a, den):
    if tmp > a:
        return (tmp - a) / den
    if tmp < -a:
        return (tmp + a) / den
    return 0.0


@numba.njit(cache=True)
def _ws_gap(w, q, z, yy, a, b):
    """(gap, primal) of the working-set problem from w, q = X^T R_c, z = X^T y_c."""
    wz = 0.0
    wq = 0.0
    l1 = 0.0
    w2 = 0.0
    dn = 0.0
    for j in range(w.shape[0]):
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
    return primal - dual, primal


@numba.njit(cache=True)
def _full_sweep(G, q, w, a, b):
    m = w.shape[0]
    for j in range(m):
        gjj = G[j, j]
        if gjj == 0.0:
            continue
        v = _soft(q[j] + gjj * w[j], a, gjj + b)
        d = v - w[j]
        if d != 0.0:
            w[j] = v
            for i in range(m):  # row j (= column j, G symmetric): contiguous
                q[i] -= d * G[j, i]


@numba.njit(cache=True)
def gram_cd(G, q, w, z, yy, a, b, target, max_sweeps):
    """Exact cyclic CD on a working set from its centred Gram matrix (no data access).

    ``G`` = X_Wc^T X_Wc, ``q`` = X_Wc^T R_c (updated in place), ``w`` the working-set
    coefficients (updated in place), ``z`` = X_Wc^T y_c, ``yy`` = ||y_c||^2. Sweeps until
    the working-set duality gap is at most ``target`` or ``max_sweeps`` sweeps ran.
    Returns (sweeps, gap, primal). Every rank gets bitwise the same result.

    Active-set phases (as glmnet): after a full sweep, the non-zero coefficients A are
    swept alone on a compact copy of ``G[A, A]`` (cost |A| per change instead of |W|)
    until the gap of the problem restricted to A is below ``target / 2``; ``q`` of the
    whole working set is then brought up to date in one pass and a full sweep checks
    that no other coefficient enters. The stopping test is always the full gap.
    """
    m = w.shape[0]
    sweeps = 0
    gap = np.inf
    primal = np.inf
    act = np.empty(m, dtype=np.int64)
    while sweeps < max_sweeps:
        _full_sweep(G, q, w, a, b)
        sweeps += 1
        gap, primal = _ws_gap(w, q, z, yy, a, b)
        if gap <= target or sweeps >= max_sweeps:
            break
        nA = 0
        for j in range(m):
            if w[j] != 0.0:
                act[nA] = j
                nA += 1
        if nA == 0 or 4 * nA > 3 * m:
            continue  # no gain from a compact active set
        GA = np.empty((nA, nA))
        qA = np.empty(nA)
        wA = np.empty(nA)
        zA = np.empty(nA)
        for k in range(nA):
            jk = act[k]
            qA[k] = q[jk]
            wA[k] = w[jk]
            zA[k] = z[jk]
            for l in range(nA):
                GA[k, l] = G[jk, act[l]]
        while sweeps < max_sweeps:
            _full_sweep(GA, qA, wA, a, b)
            sweeps += 1
            gA, _ = _ws_gap(wA, qA, zA, yy, a, b)
            if gA <= 0.5 * target:
                break
        for k in range(nA):  # q -= G[:, A] (wA - w[A]), rows of G contiguous
            jk = act[k]
            d = wA[k] - w[jk]
            if d != 0.0:
                w[jk] = wA[k]
                for i in range(m):
                    q[i] -= d * G[jk, i]
    return sweeps, gap, primal


@numba.njit(cache=True)
def gram_sparse(indptr, indices, data, W, n_rows, G):
    """G = X_W^T X_W for the CSC columns ``W`` (uncentred; ``G`` zero on entry), by rows.

    Transposes the selected columns into row lists (counting sort), then adds each
    row's outer product: cost nnz(X_W) + sum over rows of nnz_row^2.
    """
    m = W.shape[0]
    cnt = np.zeros(n_rows + 1, dtype=np.int64)
    for k in range(m):
        j = W[k]
        for p in range(indptr[j], indptr[j + 1]):
            cnt[indices[p] + 1] += 1
    for i in range(n_rows):
        cnt[i + 1] += cnt[i]
    nnz = cnt[n_rows]
    col = np.empty(nnz, dtype=np.int64)
    val = np.empty(nnz)
    pos = cnt[:-1].copy()
    for k in range(m):
        j = W[k]
        for p in range(indptr[j], indptr[j + 1]):
            i = indices[p]
            col[pos[i]] = k
            val[pos[i]] = data[p]
            pos[i] += 1
    for i in range(n_rows):
        for u in range(cnt[i], cnt[i + 1]):
            ku = col[u]
            vu = val[u]
            for t in range(u, cnt[i + 1]):
                G[ku, col[t]] += vu * val[t]
    # columns ascend within a row: only G[k, l >= k] was filled; mirror it in tiles
    # (a plain column-strided copy costs more than the products at |W| = 2048)
    T = 64
    for k0 in range(0, m, T):
        for l0 in range(k0, m, T):
            for k in range(k0, min(k0 + T, m)):
                for l in range(max(l0, k + 1), min(l0 + T, m)):
                    G[l, k] = G[k, l]


def warmup_gram():
    G = np.eye(2)
    q = np.ones(2)
    gram_cd(G, q, np.zeros(2), np.ones(2), 2.0, 0.1, 0.0, 1e-6, 3)
    gram_sparse(np.array([0, 1, 2], dtype=np.int64), np.array([0, 1], dtype=np.int32), np.ones(2),
                np.array([0, 1], dtype=np.int64), 2, np.zeros((2, 2)))


# ====================================================================== one rank: the working set on its columns
@numba.njit(cache=True)
def duality_gap(rr, rsum, ry, c, l1, w2, dual_norm, n, a, b):
    """(gap, primal) of the elastic net (scikit-learn's formulation A, unscaled) from the sums of
    the raw residual ``r = y_c - X w`` (rr = r.r, rsum = sum r, ry = r.y_c), c = mu.w, ||w||_1,
    ||w||^2 (0 when b = 0) and the dual norm max |X^T R_c - b w| over the variables considered."""
    R2 = max(rr + 2.0 * c * rsum + n * c * c, 0.0)
    primal = 0.5 * (R2 + b * w2) + a * l1
    s = a / dual_norm if dual_norm > a else 1.0
    dual = -0.5 * s * s * (R2 + b * w2) + s * ry
    return primal - dual, primal


@numba.njit(cache=True, inline="always")
def _coef_sums(w, mu):
    """(mu . w, ||w||_1, ||w||^2): the intercept shift and the penalties' sums."""
    c = 0.0
    l1 = 0.0
    w2 = 0.0
    for j in range(w.shape[0]):
        c += mu[j] * w[j]
        l1 += abs(w[j])
        w2 += w[j] * w[j]
    return c, l1, w2


@numba.njit(cache=True)
def _local_gap(cols, W, w, r, rsum, mu, y, n, a, b):
    """(gap, primal) of the problem restricted to ``W`` (``EnetProblem.gap(W)``'s figures, local data)."""
    dn = 0.0
    for k in range(W.shape[0]):
        j = W[k]
        xa = abs(row_dot(cols, j, r) - mu[j] * rsum - b * w[j])
        if xa > dn:
            dn = xa
    return gap_from(w, mu, r, rsum, y, dn, n, a, b)


@numba.njit(cache=True)
def _primal(w, r, rsum, mu, n, a, b):
    c, l1, w2 = _coef_sums(w, mu)
    rr = 0.0
    for i in range(r.shape[0]):
        rr += r[i] * r[i]
    return duality_gap(rr, rsum, 0.0, c, l1, w2, 0.0, n, a, b)[1]


@numba.njit(cache=True)
def anderson_point(hist, w_acc):
    """Anderson extrapolation of the iterates in the K + 1 rows of ``hist`` into ``w_acc``
    (``c = C^-1 1 / 1^T C^-1 1``, ``C = U^T U`` of the K differences, a 1e-10 x trace ridge).
    False (``w_acc`` undefined) when the iterates stopped moving."""
    K = hist.shape[0] - 1
    m = hist.shape[1]
    C = np.empty((K, K))
    for s in range(K):
        for t in range(s, K):
            v = 0.0
            for k in range(m):
                v += (hist[s + 1, k] - hist[s, k]) * (hist[t + 1, k] - hist[t, k])
            C[s, t] = v
            C[t, s] = v
    tr = 0.0
    for s in range(K):
        tr += C[s, s]
    if not tr > 0.0:
        return False
    for s in range(K):  # a little ridge: C is nearly singular once the iterates line up
        C[s, s] += 1e-10 * tr
    try:
        z = np.linalg.solve(C, np.ones(K))
    except Exception:  # singular: the iterates stopped moving
        return False
    zs = z.sum()
    if not (np.isfinite(zs) and zs != 0.0):
        return False
    for k in range(m):
        v = 0.0
        for s in range(K):
            v += z[s] * hist[s + 1, k]
        w_acc[k] = v / zs
    return True


@numba.njit(cache=True)
def gap_from(w, mu, r, rsum, y, dual_norm, n, a, b):
    """(gap, primal) from the coefficients, the whole residual and the dual norm over a working set."""
    c, l1, w2 = _coef_sums(w, mu)
    if b == 0.0:
        w2 = 0.0
    rr = 0.0
    ry = 0.0
    for i in range(r.shape[0]):
        rr += r[i] * r[i]
        ry += r[i] * y[i]
    return duality_gap(rr, rsum, ry, c, l1, w2, dual_norm, n, a, b)


@numba.njit(cache=True)
def ws_cd(cols, W, w, r, rsum, mu, nrm2, colsum, y, n, a, b, target, max_sweeps, K):
    """Cyclic CD over the working set ``W`` on this rank's columns (all rows local), with
    Anderson extrapolation every ``K`` sweeps (kept only when it lowers the objective).

    ``w``, ``r`` (raw residual ``y_c - X w``) are updated in place; the working-set gap
    (as ``EnetProblem.gap(W)``) is checked every ``K`` sweeps. Returns (sweeps, gap,
    primal, rsum, extrapolations kept). ``K = 0``: no extrapolation (gap checked every 5 sweeps).
    """
    m = W.shape[0]
    every = K if K > 0 else 5
    hist = np.empty((K + 1, m))
    change = np.empty(m)
    r_acc = np.empty_like(r)
    w_acc = np.empty(m)
    sweeps = 0
    accepted = 0
    gap = np.inf
    primal = np.inf
    while sweeps < max_sweeps:
        rsum = cd(cols, W, w, r, rsum, mu, nrm2, colsum, a, b, change)
        sweeps += 1
        if K > 0:
            h = (sweeps - 1) % (K + 1)
            for k in range(m):
                hist[h, k] = w[W[k]]
            if h == K:  # K + 1 iterates: extrapolate from their K differences
                if anderson_point(hist, w_acc):
                    r_acc[:] = r
                    rs_acc = rsum
                    p_old = _primal(w, r, rsum, mu, n, a, b)
                    for k in range(m):  # w_acc - w on r_acc, then swap in w_acc to score it
                        j = W[k]
                        d = w_acc[k] - w[j]
                        if d != 0.0:
                            row_axpy(cols, j, -d, r_acc)
                            rs_acc -= d * colsum[j]
                        hist[0, k] = w[j]  # keep w: hist is free now
                        w[j] = w_acc[k]
                    if _primal(w, r_acc, rs_acc, mu, n, a, b) < p_old:
                        r[:] = r_acc
                        rsum = rs_acc
                        accepted += 1
                    else:
                        for k in range(m):
                            w[W[k]] = hist[0, k]
        if sweeps % every == 0 or sweeps >= max_sweeps:
            gap, primal = _local_gap(cols, W, w, r, rsum, mu, y, n, a, b)
            if gap <= target:
                break
    return sweeps, gap, primal, rsum, accepted


@numba.njit(cache=True)
def vsum(x):
    """Sum in index order (the same bits on every rank for the same array, whatever its alignment)."""
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s


@numba.njit(cache=True)
def block_sweep(cols, mine, off, m, w, r, rsum, mu, nrm2, colsum, a, b, r_try, buf):
    """One rank's block of a block-Jacobi sweep: cyclic CD over ``mine`` from ``(w, r)`` on a copy
    of the residual; writes the residual change to ``buf[:n]``, the block's coefficient changes to
    ``buf[n + off : n + off + len(mine)]`` (the rest of ``buf[n : n + m]`` zero) and the change of
    sum(r) to ``buf[n + m]``. ``w`` and ``r`` are left as they were."""
    n = r.shape[0]
    r_try[:] = r
    for k in range(m):
        buf[n + k] = 0.0
    for k in range(mine.shape[0]):
        buf[n + off + k] = w[mine[k]]
    change = np.empty(mine.shape[0])
    rs = cd(cols, mine, w, r_try, rsum, mu, nrm2, colsum, a, b, change)
    for i in range(n):
        buf[i] = r_try[i] - r[i]
    for k in range(mine.shape[0]):
        j = mine[k]
        old = buf[n + off + k]
        buf[n + off + k] = w[j] - old
        w[j] = old
    buf[n + m] = rs - rsum


@numba.njit(cache=True)
def block_add(tot, W, w, r, rsum, f):
    """(w, r, sum(r)) += f x the summed changes ``tot`` (layout of :func:`block_sweep`). Returns sum(r)."""
    n = r.shape[0]
    m = W.shape[0]
    for i in range(n):
        r[i] += f * tot[i]
    for k in range(m):
        w[W[k]] += f * tot[n + k]
    return rsum + f * tot[n + m]


def warmup_ws():
    import scipy.sparse as sp

    X = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(3, 2))
    W = np.arange(2, dtype=np.int64)
    for cols in (as_columns(X), as_columns(sp.csc_matrix(X))):
        ws_cd(cols, W, np.zeros(2), np.ones(3), 3.0, np.zeros(2), np.ones(2), np.zeros(2), np.ones(3), 3, 0.1, 0.0,
              1e-9, 12, 5)
    vsum(np.ones(3))
    for cols in (as_columns(X), as_columns(sp.csc_matrix(X))):
        buf = np.zeros(6)
        block_sweep(cols, W[:1], 0, 2, np.zeros(2), np.ones(3), 3.0, np.zeros(2), np.ones(2), np.zeros(2), 0.1, 0.0,
                    np.empty(3), buf)
    block_add(buf, W, np.zeros(2), np.ones(3), 3.0, 0.5)
    gap_from(np.zeros(2), np.zeros(2), np.ones(3), 3.0, np.ones(3), 1.0, 3, 0.1, 0.0)
    anderson_point(np.arange(12.0).reshape(6, 2) ** 2, np.empty(2))
