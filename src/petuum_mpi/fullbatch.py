"""Distributed full-batch optimisers for smooth objectives summed over ranks.

The objective is ``F(x) = sum_r f_r(x)``: rank ``r`` knows its share ``f_r`` (e.g. the loss
of its rows; add a penalty on one rank only). :func:`minimize` calls the user's callables,
which return this rank's share, and sums them with one ``Allreduce`` per evaluation:

* ``fun_grad(x) -> (f_r, grad f_r)``: one Allreduce of ``[f, grad]`` per evaluation;
* ``hessp(x, v) -> H_r(x) v``: one Allreduce per conjugate-gradient step;
* ``hess_diag(x) -> diag H_r(x)`` (optional preconditioner): one Allreduce per Newton step.

Per Newton step: one ``fun_grad`` (more only when the line search backtracks), one
``hess_diag`` if given, one ``hessp`` per CG step; the CG vectors stay on every rank.

Every rank runs the same deterministic code on the same summed values, so every rank
takes the same decisions and returns the same ``x`` (no broadcast needed).

Methods (no step size to tune; both are globally convergent for smooth convex ``F`` with
a convergence speed that the conditioning only slows, never breaks):

* ``"newton-cg"`` (default): line-search Newton with truncated preconditioned conjugate
  gradient (LIBLINEAR >= 2.40's ``NEWTON``): CG stops by Nash & Sofer's rule on the
  quadratic model (``i (Q_{i-1} - Q_i) <= cgtol |Q_i|``, forcing term
  ``cgtol = min(0.5, sqrt(||g||_M' / ||g0||_M'))``), then an Armijo backtracking line search
  (``c1 = 0.01``, halving). With ``hess_diag`` the preconditioner is ``0.9 + 0.1 diag H``.
  Measured (Hessian products to 1e-4 of the optimum, plain / preconditioned): ill-conditioned
  sparse 50k x 2000 513 / 383 (the trust-region Newton with Steihaug CG this replaced: 1018,
  43 steps against 12), 200k x 50k sparse 9 / 9 (12), ill-conditioned dense 5000 x 50 65 / 51
  (44). The trust region's 43 steps each cut the gap to the optimum by only 5-30 % there;
  the line search took the full step (``a = 1``) on every step on the two sparse sets.
* ``"lbfgs"``: limited-memory BFGS (``memory`` pairs) with a strong-Wolfe line search
  (bracketing + safeguarded cubic interpolation, Nocedal & Wright alg. 3.5/3.6;
  ``c1 = 1e-4``, ``c2 = 0.9``).

Convergence test (scikit-learn's ``tol`` for its ``lbfgs`` and ``newton-cg`` solvers):
``max_i |grad_i F(x)| <= tol``, checked at ``x0`` and after every iteration. The run also
counts as converged (as scipy's L-BFGS-B ``ftol = 64 eps`` that scikit-learn uses) when an
iteration changes ``F`` by at most ``64 eps max(|F|, 1)`` relative: ``F`` cannot be
decreased further in floating point (and Newton-CG when its line search fails with a
predicted decrease ``|g.s|`` that small). It stops unconverged after ``max_iter`` iterations or
when no step gives a decrease any more (``message`` says which); the caller then warns.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import UsageError
from .runtime import allreduce_sum, get_comm

__all__ = ["Result", "minimize", "METHODS"]

METHODS = ("newton-cg", "lbfgs")
_FTOL = 64 * np.finfo(float).eps
_PC_MIX = 0.1


@dataclass
class Result:
    """Outcome of :func:`minimize` (identical on every rank)."""

    x: np.ndarray
    fun: float
    grad_max: float                  # max |grad F(x)|
    n_iter: int                      # outer iterations (Newton steps / L-BFGS steps)
    converged: bool
    message: str
    n_fev: int = 0                   # fun_grad evaluations (= its Allreduces)
    n_hessp: int = 0                 # Hessian-vector products (= their Allreduces)
    history: list = field(default_factory=list)   # per iteration: iter, fun, grad_max, n_fev, n_hessp, time


class _Summed:
    """The callables, summed over ranks (one Allreduce each; in place, blocking)."""

    def __init__(self, comm, fun_grad, hessp, hess_diag, n):
        self.comm = comm
        self.P = comm.size
        self._fg, self._hv, self._hd = fun_grad, hessp, hess_diag
        self.buf = np.empty(n + 1)
        self.n_fev = 0
        self.n_hessp = 0

    def _allreduce(self, buf):
        return allreduce_sum(buf, self.comm, out=buf)

    def fg(self, x):
        self.n_fev += 1
        f, g = self._fg(x)
        buf = self.buf
        buf[0] = f
        buf[1:] = g
        self._allreduce(buf)
        f = float(buf[0])
        return (f if math.isfinite(f) else math.inf), buf[1:].copy()

    def hv(self, x, v):
        self.n_hessp += 1
        return self._allreduce(np.array(self._hv(x, v), dtype=np.float64, copy=True))

    def hd(self, x):
        return self._allreduce(np.array(self._hd(x), dtype=np.float64, copy=True))


def minimize(fun_grad, x0, *, hessp=None, hess_diag=None, comm=None, method="newton-cg", tol=1e-4, max_iter=100,
             memory=10, callback=None) -> Result:
    """Minimise ``F = sum over ranks of fun_grad`` from ``x0`` (collective; see the module doc).

    Parameters
    ----------
    fun_grad : callable ``x -> (f, g)``, this rank's share of the objective and gradient
    x0 : (n,) starting point, the same on every rank
    hessp : callable ``(x, v) -> H v`` (this rank's share); required by ``newton-cg``
    hess_diag : callable ``x -> diag H`` (this rank's share), optional (CG preconditioner)
    comm : communicator, default ``COMM_WORLD``
    method : ``"newton-cg"`` or ``"lbfgs"``
    tol : stop when ``max |grad F| <= tol``
    max_iter : maximum outer iterations
    memory : L-BFGS pairs
    callback : ``callback(n_iter, x, fun, grad_max)`` after each iteration on every rank;
        returning True stops the run (``converged`` False unless the test holds).

    Returns
    -------
    Result
    """
    if method not in METHODS:
        raise UsageError(f"minimize: method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "newton-cg" and hessp is None:
        raise UsageError("minimize: method 'newton-cg' needs hessp")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise UsageError(f"minimize: tol must be a number >= 0, got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 0):
        raise UsageError(f"minimize: max_iter must be an integer >= 0, got {max_iter!r}")
    if not (isinstance(memory, (int, np.integer)) and memory >= 1):
        raise UsageError(f"minimize: memory must be an integer >= 1, got {memory!r}")
    x = np.array(x0, dtype=np.float64, copy=True).ravel()
    comm = get_comm(comm)
    ev = _Summed(comm, fun_grad, hessp, hess_diag, x.size)
    run = _newton_cg if method == "newton-cg" else _lbfgs
    res = run(ev, x, float(tol), int(max_iter), int(memory), callback)
    res.n_fev, res.n_hessp = ev.n_fev, ev.n_hessp
    return res


class _Track:
    """History, stopping tests and callback shared by the methods."""

    def __init__(self, ev, tol, max_iter, callback):
        self.ev, self.tol, self.max_iter, self.callback = ev, tol, max_iter, callback
        self.t0 = time.perf_counter()
        self.history = []

    def record(self, k, x, f, g):
        gmax = float(np.max(np.abs(g))) if g.size else 0.0
        self.history.append({"iter": k, "fun": f, "grad_max": gmax, "n_fev": self.ev.n_fev,
                             "n_hessp": self.ev.n_hessp, "time": time.perf_counter() - self.t0})
        stop = bool(self.callback(k, x, f, gmax)) if (self.callback is not None and k > 0) else False
        return gmax, stop

    def result(self, x, f, gmax, k, converged, message):
        return Result(x=x, fun=f, grad_max=gmax, n_iter=k, converged=converged, message=message,
                      history=self.history)


def _dot(*v):
    """``sum_i v0_i v1_i ...`` without BLAS: a threaded ``ddot`` (OpenBLAS threads vectors of
    more than 10k entries) waits for its helper threads on every call, and under load one
    wait is a scheduler time slice (measured: 40 ms per CG step on 50k parameters, beside a
    20 ms Hessian product); ``einsum`` is single-threaded and a few microseconds."""
    return float(np.einsum(_EINSUM[len(v)], *v))


_EINSUM = {2: "i,i->", 3: "i,i,i->"}


def _no_progress(f_old, f_new):
    return abs(f_old - f_new) <= _FTOL * max(abs(f_old), abs(f_new), 1.0)


# ----------------------------------------------------------------------------- Newton-CG


def _pcg(ev, x, g, M, cgtol, max_cg):
    """Newton direction: approximate minimiser of the model ``Q(s) = g.s + s.H s/2`` by
    preconditioned CG from ``s = 0``, stopped by Nash & Sofer's rule (LIBLINEAR >= 2.40):
    at step ``i`` when ``i (Q_{i-1} - Q_i) <= cgtol |Q_i|`` (the model's last decrease is
    small beside its total), or at curvature <= 0 (the first step then returns the
    preconditioned steepest-descent direction). Returns ``(s, cg steps)``; ``g.s < 0``."""
    s = np.zeros_like(g)
    r = -g
    z = r / M
    d = z.copy()
    rz = _dot(r, z)
    Q = 0.0
    for i in range(1, max_cg + 1):
        Hd = ev.hv(x, d)
        dHd = _dot(d, Hd)
        if not dHd > 0:
            return (d if i == 1 else s), i
        a = rz / dHd
        s += a * d
        r -= a * Hd
        Qn = -0.5 * (_dot(s, r) - _dot(s, g))
        dQ = Qn - Q
        if not (Qn <= 0 and dQ <= 0) or i * dQ >= cgtol * Qn:
            return s, i
        Q = Qn
        z = r / M
        rz_new = _dot(r, z)
        d *= rz_new / rz
        d += z
        rz = rz_new
    return s, max_cg


def _newton_cg(ev, x, tol, max_iter, memory, callback, max_cg=250, eps_cg=0.5, c1=0.01, max_ls=20):
    tr = _Track(ev, tol, max_iter, callback)
    f, g = ev.fg(x)
    if not math.isfinite(f):
        raise UsageError("minimize: the objective is not finite at x0")
    gmax, _ = tr.record(0, x, f, g)
    if gmax <= tol:
        return tr.result(x, f, gmax, 0, True, f"max |grad| <= tol ({tol:g})")
    gnorm0 = None
    for k in range(1, max_iter + 1):
        if ev._hd is not None:  # LIBLINEAR's mix of 1 and the Jacobi diagonal
            M = (1.0 - _PC_MIX) + _PC_MIX * np.maximum(ev.hd(x), 0.0)
        else:
            M = np.ones_like(x)
        gnorm = math.sqrt(_dot(g, g / M))
        if gnorm0 is None:
            gnorm0 = max(gnorm, np.finfo(float).tiny)
        # forcing term: the CG tolerance shrinks with the gradient (superlinear near the optimum)
        s, _ = _pcg(ev, x, g, M, min(eps_cg, math.sqrt(gnorm / gnorm0)), min(max_cg, x.size + 1))
        gs = _dot(g, s)
        if not gs < 0:  # rounding in CG: fall back to the preconditioned gradient
            s = -g / M
            gs = _dot(g, s)
        a = 1.0  # Armijo backtracking (LIBLINEAR: c1 = 0.01, halving, 20 trials); a = 1 nearly always holds
        tiny = abs(gs) <= _FTOL * max(abs(f), 1.0)  # a decrease below F's rounding: F cannot judge the step
        for _ in range(max_ls):
            f_new, g_new = ev.fg(x + a * s)
            if f_new - f <= c1 * a * gs:
                break
            if tiny and np.abs(g_new).max() < gmax:  # ... then the gradient does (a smaller one: closer)
                break
            a *= 0.5
        else:
            if abs(gs) <= _FTOL * max(abs(f), 1.0):
                return tr.result(x, f, gmax, k - 1, True, "predicted decrease of F <= 64 eps relative")
            return tr.result(x, f, gmax, k - 1, False, "line search found no decrease (precision limit?)")
        f_old = f
        x, f, g = x + a * s, f_new, g_new
        gmax, stop = tr.record(k, x, f, g)
        if gmax <= tol:
            return tr.result(x, f, gmax, k, True, f"max |grad| <= tol ({tol:g})")
        if _no_progress(f_old, f):
            return tr.result(x, f, gmax, k, True, "relative decrease of F <= 64 eps")
        if stop:
            return tr.result(x, f, gmax, k, False, "stopped by callback")
    return tr.result(x, f, gmax, max_iter, False, f"max_iter ({max_iter}) reached")


# ----------------------------------------------------------------------------- L-BFGS


def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating (a, fa, da), (b, fb, db), or None."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    rad = d1 * d1 - da * db
    if rad < 0:
        return None
    d2 = math.copysign(math.sqrt(rad), b - a)
    den = db - da + 2.0 * d2
    if den == 0:
        return None
    t = b - (b - a) * (db + d2 - d1) / den
    return t if math.isfinite(t) else None


def _wolfe(ev, x, f0, d0, p, a1, c1=1e-4, c2=0.9, max_ls=30):
    """Step ``a`` along ``p`` with the strong Wolfe conditions; returns ``(a, f, g)`` or None."""

    def phi(a):
        f, g = ev.fg(x + a * p)
        return f, g, _dot(g, p)

    def zoom(lo, hi):
        for _ in range(max_ls):
            a_lo, f_lo, _, d_lo = lo
            a_hi, f_hi, _, d_hi = hi
            w = a_hi - a_lo
            a = _cubic_min(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi) if math.isfinite(f_hi) else None
            lo_b, hi_b = min(a_lo, a_hi) + 0.1 * abs(w), max(a_lo, a_hi) - 0.1 * abs(w)
            if a is None or not lo_b <= a <= hi_b:
                a = a_lo + 0.5 * w
            f, g, d = phi(a)
            if f > f0 + c1 * a * d0 or f >= f_lo:
                hi = (a, f, g, d)
            else:
                if abs(d) <= -c2 * d0:
                    return a, f, g
                if d * (a_hi - a_lo) >= 0:
                    hi = lo
                lo = (a, f, g, d)
            if abs(hi[0] - lo[0]) <= 1e-16 * max(abs(lo[0]), 1e-300):
                break
        return (lo[0], lo[1], lo[2]) if lo[0] > 0 else None

    prev = (0.0, f0, None, d0)
    a = a1
    for i in range(max_ls):
        f, g, d = phi(a)
        if f > f0 + c1 * a * d0 or (i > 0 and f >= prev[1]):
            return zoom(prev, (a, f, g, d))
        if abs(d) <= -c2 * d0:
            return a, f, g
        if d >= 0:
            return zoom((a, f, g, d), prev)
        prev = (a, f, g, d)
        a *= 4.0
    return (prev[0], prev[1], prev[2]) if prev[0] > 0 else None


def _lbfgs(ev, x, tol, max_iter, memory, callback):
    tr = _Track(ev, tol, max_iter, callback)
    f, g = ev.fg(x)
    if not math.isfinite(f):
        raise UsageError("minimize: the objective is not finite at x0")
    gmax, _ = tr.record(0, x, f, g)
    if gmax <= tol:
        return tr.result(x, f, gmax, 0, True, f"max |grad| <= tol ({tol:g})")
    S, Y, rho = [], [], []
    for k in range(1, max_iter + 1):
        q = g.copy()  # two-loop recursion: p = -H g
        al = []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
            a = r * _dot(s, q)
            al.append(a)
            q -= a * y
        if S:
            q *= _dot(S[-1], Y[-1]) / _dot(Y[-1], Y[-1])
        for (s, y, r), a in zip(zip(S, Y, rho), reversed(al)):
            q += (a - r * _dot(y, q)) * s
        p = -q
        d0 = _dot(g, p)
        if not d0 < 0:  # not a descent direction: restart from the gradient
            S, Y, rho = [], [], []
            p = -g
            d0 = _dot(g, p)
        a1 = 1.0 if S else min(1.0, 1.0 / math.sqrt(-d0))
        ls = _wolfe(ev, x, f, d0, p, a1)
        if ls is None:
            return tr.result(x, f, gmax, k - 1, False, "line search found no decrease (precision limit?)")
        a, f_new, g_new = ls
        s = a * p
        y = g_new - g
        sy = _dot(s, y)
        if sy > 1e-10 * _dot(y, y) and sy > 0:
            S.append(s)
            Y.append(y)
            rho.append(1.0 / sy)
            if len(S) > memory:
                S.pop(0), Y.pop(0), rho.pop(0)
        f_old = f
        x, f, g = x + s, f_new, g_new
        gmax, stop = tr.record(k, x, f, g)
        if gmax <= tol:
            return tr.result(x, f, gmax, k, True, f"max |grad| <= tol ({tol:g})")
        if _no_progress(f_old, f):
            return tr.result(x, f, gmax, k, True, "relative decrease of F <= 64 eps")
        if stop:
            return tr.result(x, f, gmax, k, False, "stopped by callback")
    return tr.result(x, f, gmax, max_iter, False, f"max_iter ({max_iter}) reached")
