"""Numba kernels of the logistic-regression app that are specific to classification with the
logistic / multinomial loss: class probabilities and correct-count from margins. The model
math (margins, losses, full-batch, SGD and SVRG kernels) is :mod:`petuum_mpi.linear`, written
once for dense and CSR rows and every loss."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def proba_from_margins(Z):
    """Class probabilities (n, max(C, 2)) from margins (binary: columns [1-p, p])."""
    n = Z.shape[0]
    C = Z.shape[1]
    if C == 1:
        P = np.empty((n, 2), dtype=np.float64)
        for i in range(n):
            m = Z[i, 0]
            if m >= 0:
                p = 1.0 / (1.0 + math.exp(-m))
            else:
                e = math.exp(m)
                p = e / (1.0 + e)
            P[i, 1] = p
            P[i, 0] = 1.0 - p
        return P
    P = np.empty((n, C), dtype=np.float64)
    for i in range(n):
        mx = Z[i, 0]
        for c in range(1, C):
            mx = max(mx, Z[i, c])
        s = 0.0
        for c in range(C):
            P[i, c] = math.exp(Z[i, c] - mx)
            s += P[i, c]
        for c in range(C):
            P[i, c] /= s
    return P


@njit(cache=True, nogil=True)
def count_correct(Z, y):
    """Number of rows whose predicted class (from margins ``Z``) equals ``y``
    (sum over ranks, divide by the total count for accuracy)."""
    C = Z.shape[1]
    ok = 0
    for i in range(Z.shape[0]):
        if C == 1:
            pred = 1 if Z[i, 0] > 0 else 0
        else:
            pred = 0
            for c in range(1, C):
                if Z[i, c] > Z[i, pred]:
                    pred = c
        if pred == int(y[i]):
            ok += 1
    return ok
