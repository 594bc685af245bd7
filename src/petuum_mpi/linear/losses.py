"""Losses of linear models for Numba kernels, selected at compile time.

A loss is an instance of one of the marker classes below (empty namedtuples: each is
its own Numba type, so a kernel taking ``loss`` compiles once per loss and the loss
functions inline with no per-row dispatch). Per row, on the margins ``z`` (C,):

* ``row_loss(loss, z, y, s) -> value``: ``z`` becomes ``dloss/dz`` in place; when
  ``s.shape[0] > 0`` the row's curvature state is written to ``s`` (C,);
* ``columns(loss, k) -> C``: the model's margins per row given its ``k`` columns:
  ``k`` for the multinomial loss, else the compile-time constant 1, so that the
  per-column loops of a kernel vanish for single-margin losses (measured 1.7x on a
  sparse Hessian product, 3x on an SVRG pass, against a run-time ``C == 1``);
* ``row_hess(loss, s, u)``: ``u <- H u`` with ``H`` the row's Hessian in the margins
  (from ``s``); ``row_hdiag(loss, s, c)``: its diagonal entry ``c``.

| loss | labels | value at margin m | C | Hessian |
|---|---|---|---|---|
| ``Logistic`` | 0/1 | ``log(1 + exp(-y' m))``, ``y' = 2y - 1`` | 1 | ``p (1 - p)`` |
| ``Multinomial`` | ``0..C-1`` | ``logsumexp(z) - z_y`` | C >= 2 | ``diag(p) - p p^T`` |
| ``Squared`` | real | ``(m - y)^2 / 2`` | 1 | 1 |
| ``Hinge`` | 0/1 | ``max(0, 1 - y' m)`` | 1 | none (SGD only) |
| ``SquaredHinge`` | 0/1 | ``max(0, 1 - y' m)^2`` | 1 | ``2 [y' m < 1]`` (generalised) |
"""

from __future__ import annotations

import math
from collections import namedtuple

from numba import types
from numba.extending import overload

from ..errors import UsageError
from .rows import _stub

__all__ = ["Logistic", "Multinomial", "Squared", "Hinge", "SquaredHinge", "by_name", "columns", "row_loss", "row_hess",
           "row_hdiag"]

Logistic = namedtuple("Logistic", [])
Multinomial = namedtuple("Multinomial", [])
Squared = namedtuple("Squared", [])
Hinge = namedtuple("Hinge", [])
SquaredHinge = namedtuple("SquaredHinge", [])

NAMES = {"log_loss": Logistic, "squared_error": Squared, "hinge": Hinge, "squared_hinge": SquaredHinge}
SMOOTH = (Logistic, Multinomial, Squared, SquaredHinge)   # have a (generalised) Hessian
CLASSIFIERS = (Logistic, Multinomial, Hinge, SquaredHinge)


def by_name(name, n_classes=2):
    """The loss of a scikit-learn name (``log_loss``: multinomial when ``n_classes > 2``)."""
    if name not in NAMES:
        raise UsageError(f"loss: must be one of {sorted(NAMES)}, got {name!r}")
    if name == "log_loss" and n_classes > 2:
        return Multinomial()
    if n_classes > 2:
        raise UsageError(f"loss {name!r} is binary: got {n_classes} classes")
    return NAMES[name]()


def n_columns(loss, n_classes=2):
    """Margins per row: ``n_classes`` for the multinomial loss, else 1."""
    return n_classes if isinstance(loss, Multinomial) else 1


columns = _stub("columns")
row_loss = _stub("row_loss")
row_hess = _stub("row_hess")
row_hdiag = _stub("row_hdiag")


def _is(loss, cls):
    return isinstance(loss, types.BaseTuple) and getattr(loss, "instance_class", None) is cls


@overload(columns, jit_options={"cache": True}, inline="always")
def _columns(loss, k):
    if _is(loss, Multinomial):
        return lambda loss, k: k
    if isinstance(loss, types.BaseTuple) and getattr(loss, "instance_class", None) in CLASSIFIERS + (Squared,):
        return lambda loss, k: 1


@overload(row_loss, jit_options={"cache": True}, inline="always")
def _row_loss(loss, z, y, s):
    if _is(loss, Logistic):
        def impl(loss, z, y, s):
            m = z[0]
            if m >= 0:
                e = math.exp(-m)
                p = 1.0 / (1.0 + e)
                v = math.log1p(e) + (1.0 - y) * m
            else:
                e = math.exp(m)
                p = e / (1.0 + e)
                v = math.log1p(e) - y * m
            z[0] = p - y
            if s.shape[0] > 0:
                s[0] = p * (1.0 - p)
            return v
        return impl
    if _is(loss, Squared):
        def impl(loss, z, y, s):
            r = z[0] - y
            z[0] = r
            if s.shape[0] > 0:
                s[0] = 1.0
            return 0.5 * r * r
        return impl
    if _is(loss, Hinge):
        def impl(loss, z, y, s):
            yy = 2.0 * y - 1.0
            h = 1.0 - yy * z[0]
            if s.shape[0] > 0:
                s[0] = 0.0
            if h > 0.0:
                z[0] = -yy
                return h
            z[0] = 0.0
            return 0.0
        return impl
    if _is(loss, SquaredHinge):
        def impl(loss, z, y, s):
            yy = 2.0 * y - 1.0
            h = 1.0 - yy * z[0]
            if h > 0.0:
                z[0] = -2.0 * yy * h
                if s.shape[0] > 0:
                    s[0] = 2.0
                return h * h
            z[0] = 0.0
            if s.shape[0] > 0:
                s[0] = 0.0
            return 0.0
        return impl
    if _is(loss, Multinomial):
        def impl(loss, z, y, s):
            C = z.shape[0]
            mx = z[0]
            for c in range(1, C):
                if z[c] > mx:
                    mx = z[c]
            t = 0.0
            for c in range(C):
                t += math.exp(z[c] - mx)
            lse = mx + math.log(t)
            yc = int(y)
            v = lse - z[yc]
            keep = s.shape[0] > 0
            for c in range(C):
                p = math.exp(z[c] - lse)
                z[c] = p
                if keep:
                    s[c] = p
            z[yc] -= 1.0
            return v
        return impl


@overload(row_hess, jit_options={"cache": True}, inline="always")
def _row_hess(loss, s, u):
    if _is(loss, Multinomial):
        def impl(loss, s, u):
            pu = 0.0
            for c in range(u.shape[0]):
                pu += s[c] * u[c]
            for c in range(u.shape[0]):
                u[c] = s[c] * (u[c] - pu)
        return impl
    if isinstance(loss, types.BaseTuple) and getattr(loss, "instance_class", None) in CLASSIFIERS + (Squared,):
        def impl(loss, s, u):
            u[0] *= s[0]
        return impl


@overload(row_hdiag, jit_options={"cache": True}, inline="always")
def _row_hdiag(loss, s, c):
    if _is(loss, Multinomial):
        return lambda loss, s, c: s[c] * (1.0 - s[c])
    if isinstance(loss, types.BaseTuple) and getattr(loss, "instance_class", None) in CLASSIFIERS + (Squared,):
        return lambda loss, s, c: s[0]
