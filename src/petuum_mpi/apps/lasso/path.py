"""Regularisation paths with warm starts (as ``sklearn.linear_model.enet_path`` / ``lasso_path``)."""

from __future__ import annotations

import warnings

import numpy as np

from ...errors import ConfigError, convergence_warning
from ...params import check_param
from ...runtime import one_blas_thread
from .estimator import ElasticNet, EnetProblem, solve_enet


def alpha_grid(prob: EnetProblem, l1_ratio=1.0, eps=1e-3, n_alphas=100) -> np.ndarray:
    """sklearn's grid: alpha_max = max|X_c^T y_c| / (n l1_ratio), geometric down to eps * alpha_max."""
    w0 = prob.w.copy()
    prob.set_coef(np.zeros(prob.p))
    prob.set_penalty(1.0, l1_ratio)
    _, _, XtA, dn = prob.gap(None)
    prob.set_coef(w0)
    alpha_max = dn / (prob.n * l1_ratio)
    if alpha_max <= np.finfo(np.float64).resolution:
        return np.full(n_alphas, np.finfo(np.float64).resolution)
    return np.geomspace(alpha_max, alpha_max * eps, num=n_alphas)


def enet_path(X, y=None, l1_ratio=0.5, eps=1e-3, n_alphas=100, alphas=None, fit_intercept=False, tol=1e-4,
              max_iter=1000, comm=None, on_alpha=None, **engine):
    """ElasticNet path with warm starts (like ``sklearn.linear_model.enet_path``).

    Note: sklearn's path functions do not centre (``fit_intercept=False`` here by
    default, as there). ``engine``: the engine parameters of :class:`ElasticNet`.
    Returns ``(alphas, coefs (n_features, n_alphas), dual_gaps)`` with alphas
    decreasing; ``on_alpha(i, alpha, problem, n_iter, gap, stats)`` after each. Collective.
    """
    est = ElasticNet(alpha=1.0, l1_ratio=l1_ratio, fit_intercept=fit_intercept, tol=tol, max_iter=max_iter,
                     comm=comm, **engine)
    p = est._check_params()
    check_param("eps", eps, float, 0.0, lo_open=True)
    check_param("n_alphas", n_alphas, int, 1)
    r, prob = est._problem(p, X, y)
    if alphas is None:
        alphas = alpha_grid(prob, p.l1_ratio, eps, n_alphas)
    else:
        alphas = np.sort(np.asarray(alphas, dtype=np.float64).ravel())[::-1]
        if len(alphas) == 0 or np.any(alphas <= 0):
            raise ConfigError("alphas: must be a non-empty list of positive numbers")
    coefs = np.empty((prob.p, len(alphas)))
    gaps = np.empty(len(alphas))
    with one_blas_thread():  # a rank is a core (also in on_alpha)
        for i, a in enumerate(alphas):
            _one_alpha(est, r, prob, p, i, a, coefs, gaps, on_alpha)
    return alphas, coefs, gaps


def _one_alpha(est, r, prob, p, i, a, coefs, gaps, on_alpha):
    n_iter, gap, tol_s, st = solve_enet(est, r, prob, a, p.l1_ratio)
    if gap > tol_s:
        warnings.warn(f"Objective did not converge at alpha={a:.4g}. Duality gap: {gap:.6e}, tolerance: "
                      f"{tol_s:.3e}", convergence_warning(), stacklevel=3)
    coefs[:, i] = prob.w
    gaps[i] = gap / prob.n
    if on_alpha is not None:
        on_alpha(i, a, prob, n_iter, gap, st)


def lasso_path(X, y=None, eps=1e-3, n_alphas=100, alphas=None, **kw):
    """Lasso path (``enet_path`` with ``l1_ratio=1``)."""
    return enet_path(X, y, l1_ratio=1.0, eps=eps, n_alphas=n_alphas, alphas=alphas, **kw)
