"""Numba kernels for matrix factorization by SGD (parameter-server style).

Model: ``r_ui ~ mu + b_u + c_i + U[u] . V[i]`` with rank ``K = U.shape[1]``
(``K = 0`` gives the biases-only model). A worker holds its ratings and the
user factors ``U`` / user biases ``b_u`` of its users locally; the item
factors ``V`` and item biases ``c`` are parameter-server rows. The SGD kernel
updates the local copies of ``V``/``c`` in place (read-my-writes) and adds
every change to the delta buffers ``dV``/``dc`` that the caller ships to the
server and then zeroes.

Per rating, with ``e = r - prediction`` and step ``eta``::

    U[u] += eta * (e * V[i] - lam * U[u])
    V[i] += eta * (e * U[u]_old - lam * V[i])
    b_u  += eta * (e - lam_bias * b_u)        (if biases)
    c_i  += eta * (e - lam_bias * c_i)

i.e. SGD on ``1/2 sum_(u,i) [e_ui^2 + lam (|U_u|^2 + |V_i|^2) + lam_bias (b_u^2 + c_i^2)]``
(each factor is penalised once per rating it appears in, Petuum/Funk style);
:func:`sgd_pass_rows` takes a penalty per user and item row instead.
``nonneg=True`` projects ``U[u]`` and ``V[i]`` onto ``>= 0`` after each update (NMF).

Arrays: ``users``/``items`` int32 or int64, ``ratings`` float; ``U``, ``V``,
``dV`` C-contiguous float32 or float64 of one dtype. Shuffle the ratings once
(or per epoch) before calling: the kernel visits them in array order.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True, nogil=True)
def _sgd(users, items, ratings, U, V, bu, bi, mu, eta, regu, su, regi, si, use_bias, nonneg, dV, dbi, track,
         Gu, Gi, ada):
    """The one SGD loop behind :func:`sgd_epoch`, :func:`sgd_pass`, :func:`sgd_pass_rows` and
    :func:`sgd_pass_ada`.

    ``regu[u * su]`` / ``regi[i * si]`` = (factor, bias) penalty per visit of user ``u`` /
    item ``i`` (``su = 0``: one row for all); the shrink factor ``eta * lam`` is capped at
    1 (never past 0, whatever the penalty). ``track``: add every change of ``V``/``bi`` to
    ``dV``/``dbi``. ``ada``: per-row AdaGrad steps ``eta / sqrt(Gu[u])`` / ``eta / sqrt(Gi[i])``,
    then ``G += |gradient of the factor row|^2 / K`` (LIBMF's rule; the biases take the row's step)."""
    K = U.shape[1]
    n = ratings.shape[0]
    sse = 0.0
    for t in range(n):
        u = users[t]
        i = items[t]
        pu = u * su
        pi = i * si
        eu = eta
        ei = eta
        if ada:
            eu = eta / np.sqrt(Gu[u])
            ei = eta / np.sqrt(Gi[i])
        pred = mu
        if use_bias:
            pred += bu[u] + bi[i]
        dot = 0.0
        for k in range(K):
            dot += U[u, k] * V[i, k]
        e = ratings[t] - (pred + dot)
        sse += e * e
        if use_bias:
            bu[u] += eu * e - min(eu * regu[pu, 1], 1.0) * bu[u]
            nb = bi[i] + ei * e - min(ei * regi[pi, 1], 1.0) * bi[i]
            if track:
                dbi[i] += nb - bi[i]
            bi[i] = nb
        lu = min(eu * regu[pu, 0], 1.0)
        li = min(ei * regi[pi, 0], 1.0)
        gu = 1.0 - lu
        gv = 1.0 - li
        au = 0.0
        av = 0.0
        for k in range(K):
            uk = U[u, k]
            vk = V[i, k]
            nu = gu * uk + eu * e * vk
            nv = gv * vk + ei * e * uk
            if ada:
                x = e * vk - regu[pu, 0] * uk
                y = e * uk - regi[pi, 0] * vk
                au += x * x
                av += y * y
            if nonneg:
                nu = nu if nu > 0.0 else 0.0
                nv = nv if nv > 0.0 else 0.0
            U[u, k] = nu
            V[i, k] = nv
            if track:
                dV[i, k] += nv - vk
        if ada and K > 0:
            Gu[u] += au / K
            Gi[i] += av / K
    return sse


@njit(cache=True, fastmath=True, nogil=True)
def sgd_epoch(users, items, ratings, U, V, dV, bu, bi, dbi, mu, eta, lam, lam_bias, use_bias, nonneg):
    """One SGD pass over ``ratings`` in array order, adding every change of ``V``/``bi``
    to the delta buffers ``dV``/``dbi``.

    Parameters
    ----------
    users, items : int arrays (n,)
        Row of ``U`` and row of ``V`` of each rating.
    ratings : float array (n,)
    U : (n_users, K) local user factors, updated in place.
    V : (n_items, K) local copy of the item-factor table, updated in place.
    dV : (n_items, K) delta buffer: every change to ``V`` is added here.
    bu : (n_users,) user biases (unused if ``use_bias`` is False).
    bi, dbi : (n_items,) item biases (local copy) and their delta buffer.
    mu : float, global mean (fixed).
    eta : float, step size of this pass.
    lam, lam_bias : float, L2 penalties of factors and biases (per rating).
    use_bias, nonneg : bool.

    Returns
    -------
    float
        Sum of squared errors seen during the pass (before each update).
    """
    reg = np.array([[lam, lam_bias]])
    return _sgd(users, items, ratings, U, V, bu, bi, mu, eta, reg, 0, reg, 0, use_bias, nonneg, dV, dbi, True,
                _no_acc(), _no_acc(), False)


@njit(cache=True, fastmath=True, nogil=True)
def sgd_pass(users, items, ratings, U, V, bu, bi, mu, eta, lam, lam_bias, use_bias, nonneg):
    """:func:`sgd_epoch` without delta buffers: the caller ships ``V - V_read`` and
    ``bi - bi_read`` itself (one dense subtraction per clock), which halves the random
    memory traffic per update. Same parameters otherwise; returns the summed squared
    errors seen during the pass."""
    reg = np.array([[lam, lam_bias]])
    return _sgd(users, items, ratings, U, V, bu, bi, mu, eta, reg, 0, reg, 0, use_bias, nonneg, V, bi, False,
                _no_acc(), _no_acc(), False)


@njit(cache=True, fastmath=True, nogil=True)
def sgd_pass_rows(users, items, ratings, U, V, bu, bi, mu, eta, regu, regi, use_bias, nonneg):
    """:func:`sgd_pass` with a penalty per row: ``regu`` (n_users, 2) and ``regi``
    (n_items, 2) hold the (factor, bias) penalty applied at each visit of that user /
    item (e.g. ``lam + lam_row / n_u``: the visits of one epoch add up to
    ``lam n_u + lam_row``)."""
    return _sgd(users, items, ratings, U, V, bu, bi, mu, eta, regu, 1, regi, 1, use_bias, nonneg, V, bi, False,
                _no_acc(), _no_acc(), False)


@njit(cache=True, fastmath=True, nogil=True)
def sgd_pass_ada(users, items, ratings, U, V, bu, bi, mu, eta, regu, regi, Gu, Gi, use_bias, nonneg):
    """:func:`sgd_pass_rows` with LIBMF's per-row AdaGrad steps: user ``u`` steps by
    ``eta / sqrt(Gu[u])``, item ``i`` by ``eta / sqrt(Gi[i])`` (float64 accumulators, start at 1),
    and each visit adds the mean squared gradient of the factor row to its accumulator."""
    return _sgd(users, items, ratings, U, V, bu, bi, mu, eta, regu, 1, regi, 1, use_bias, nonneg, V, bi, False,
                Gu, Gi, True)


@njit(cache=True, inline="always")
def _no_acc():
    """A 1-element accumulator for the loops without AdaGrad (never read)."""
    return np.ones(1)


@njit(cache=True, fastmath=True, nogil=True)
def predict(users, items, U, V, bu, bi, mu, use_bias):
    """Predicted ratings of the pairs ``(users[t], items[t])`` (float64 array)."""
    n = users.shape[0]
    K = U.shape[1]
    out = np.empty(n, dtype=np.float64)
    for t in range(n):
        u = users[t]
        i = items[t]
        p = mu
        if use_bias:
            p += bu[u] + bi[i]
        for k in range(K):
            p += U[u, k] * V[i, k]
        out[t] = p
    return out


@njit(cache=True, fastmath=True, nogil=True)
def sse(users, items, ratings, U, V, bu, bi, mu, use_bias):
    """Sum of squared errors over the ratings (divide by count and sqrt for RMSE;
    in a multi-rank job sum SSE and counts over ranks first)."""
    n = ratings.shape[0]
    K = U.shape[1]
    s = 0.0
    for t in range(n):
        u = users[t]
        i = items[t]
        p = mu
        if use_bias:
            p += bu[u] + bi[i]
        for k in range(K):
            p += U[u, k] * V[i, k]
        e = ratings[t] - p
        s += e * e
    return s


@njit(cache=True, nogil=True)
def rmse(users, items, ratings, U, V, bu, bi, mu, use_bias):
    """Root mean squared error over the ratings (0.0 if there are none)."""
    n = ratings.shape[0]
    if n == 0:
        return 0.0
    return np.sqrt(sse(users, items, ratings, U, V, bu, bi, mu, use_bias) / n)


@njit(cache=True, inline="always")
def _above(hv, hi, a, b):
    """Entry a belongs above entry b in the min-heap (ties: the larger id is "smaller", so smaller ids win)."""
    return hv[a] < hv[b] or (hv[a] == hv[b] and hi[a] > hi[b])


@njit(cache=True, inline="always")
def _swap(hv, hi, a, b):
    tv = hv[a]
    hv[a] = hv[b]
    hv[b] = tv
    ti = hi[a]
    hi[a] = hi[b]
    hi[b] = ti


@njit(cache=True, nogil=True)
def _sift_down(hv, hi, pos, n):
    # min-heap on hv (ties: larger id is "smaller", so smaller ids win)
    while True:
        left = 2 * pos + 1
        if left >= n:
            return
        c = left
        right = left + 1
        if right < n and _above(hv, hi, right, left):
            c = right
        if _above(hv, hi, c, pos):
            _swap(hv, hi, c, pos)
            pos = c
        else:
            return


@njit(cache=True, nogil=True)
def top_k_items(u_vec, V, bi, bu_u, mu, use_bias, k, exclude):
    """The ``k`` items of highest predicted rating for one user.

    Parameters
    ----------
    u_vec : (K,) the user's factor row.
    V, bi : item factors and biases.
    bu_u, mu : the user's bias and the global mean (only shift the scores).
    k : int, number of items wanted.
    exclude : int array of item ids to skip (e.g. already rated); may be empty.

    Returns
    -------
    ids : int64 (m,), scores : float64 (m,)
        ``m = min(k, n_items - n_excluded)`` items, best first (ties: lower id first).
        Cost O(n_items * K + n_items log k).
    """
    n_items = V.shape[0]
    K = V.shape[1]
    skip = np.zeros(n_items, dtype=np.bool_)
    for j in range(exclude.shape[0]):
        skip[exclude[j]] = True
    hv = np.empty(max(k, 1), dtype=np.float64)
    hi = np.empty(max(k, 1), dtype=np.int64)
    m = 0
    for i in range(n_items):
        if skip[i]:
            continue
        s = mu
        if use_bias:
            s += bu_u + bi[i]
        for f in range(K):
            s += u_vec[f] * V[i, f]
        if m < k:
            # insert: append and sift up
            pos = m
            hv[pos] = s
            hi[pos] = i
            m += 1
            while pos > 0:
                par = (pos - 1) // 2
                if _above(hv, hi, pos, par):
                    _swap(hv, hi, pos, par)
                    pos = par
                else:
                    break
        elif k > 0 and s > hv[0]:
            hv[0] = s
            hi[0] = i
            _sift_down(hv, hi, 0, m)
    # pop the heap: ascending order, then reverse
    ids = np.empty(m, dtype=np.int64)
    scores = np.empty(m, dtype=np.float64)
    n = m
    while n > 0:
        ids[n - 1] = hi[0]
        scores[n - 1] = hv[0]
        n -= 1
        hv[0] = hv[n]
        hi[0] = hi[n]
        _sift_down(hv, hi, 0, n)
    return ids, scores


def step_size(eta0: float, epoch: int, decay: float = 0.0, power: float = 1.0) -> float:
    """Step-size schedule ``eta0 / (1 + decay * epoch) ** power`` (``decay=0``: constant)."""
    return eta0 / (1.0 + decay * epoch) ** power
