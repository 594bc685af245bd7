"""Data shapes and the penalty scale shared by the Lasso benchmarks (bench_lasso, bench_schedulers,
scaling_model). No side effects on import."""

import numpy as np


def alpha_max(X, y, fit_intercept):
    """The smallest alpha whose Lasso solution is all zeros (scikit-learn's objective)."""
    yc = y - y.mean() if fit_intercept else y
    g = np.asarray(X.T @ yc).ravel()
    if fit_intercept:
        g = g - np.asarray(X.mean(axis=0)).ravel() * yc.sum()
    return np.abs(g).max() / len(y)


def genotypes(n, p, block=8, seed=2):
    """0/1/2 minor-allele counts; columns in blocks of ``block`` share a haplotype (linkage)."""
    rng = np.random.default_rng(seed)
    maf = rng.uniform(0.05, 0.5, p)
    base = rng.random((n, p // block + 1)).repeat(block, axis=1)[:, :p]
    noise = rng.random((n, p))
    u = np.where(rng.random((n, p)) < 0.8, base, noise)  # 80 % of a row's block shares one draw
    G = (u < maf).astype(np.float64) + (np.roll(u, 1, axis=0) < maf)
    coef = np.zeros(p)
    idx = rng.choice(p, 50, replace=False)
    coef[idx] = rng.standard_normal(50)
    y = G @ coef + rng.standard_normal(n)
    return np.asfortranarray(G), y
