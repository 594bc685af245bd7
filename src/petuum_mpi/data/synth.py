"""Synthetic data with a planted truth, reproducible from a seed (vectorised NumPy).

* :func:`make_regression` -- sparse (or dense) design with correlated feature groups
  and a sparse true coefficient vector (the Lasso benchmark's data).
* :func:`make_classification` -- binary / multiclass labels from a planted linear model.
* :func:`make_ill_conditioned_classification` -- collinear, badly scaled, imbalanced
  classification data (condition number > 1e6), dense or sparse.
* :func:`make_ratings` -- low-rank ratings plus Gaussian noise.
* :func:`make_heavy_tailed_ratings` -- real-like star ratings: power-law users and items,
  few ratings per user, integer stars 1-5 from biases + low rank + noise, train/test split.
* :func:`make_lda_corpus` -- documents drawn from an LDA model with planted topics.
* :func:`synth_dataset` -- any of these written as a dataset (truth in ``truth.h5``)
  or as raw text (LIBSVM / ratings CSV / UCI bag-of-words) with the truth beside it.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ..errors import DataError


def _unique_cells(rng, cells: int, m: int) -> np.ndarray:
    """About ``m`` distinct sorted cell ids out of ``cells`` (exactly ``m`` when dense)."""
    if m >= cells:
        return np.arange(cells, dtype=np.int64)
    if m > cells // 2:
        return np.sort(rng.choice(cells, size=m, replace=False)).astype(np.int64)
    draws = int(round(-cells * np.log1p(-m / cells)))  # expected distinct count = m
    return np.unique(rng.integers(0, cells, size=draws, dtype=np.int64))


def _features(rng, n_rows, n_cols, nnz, group_size, corr, dense):
    if not 0.0 <= corr < 1.0:
        raise DataError(f"corr must be in [0, 1), got {corr}")
    if group_size < 1:
        raise DataError(f"group_size must be >= 1, got {group_size}")
    gs = int(group_size)
    n_groups = -(-n_cols // gs)
    a, b = np.sqrt(corr), np.sqrt(1.0 - corr)
    if dense:
        Z = rng.standard_normal((n_rows, n_groups))
        X = rng.standard_normal((n_rows, n_groups * gs))
        X *= b
        X += a * np.repeat(Z, gs, axis=1)
        return np.ascontiguousarray(X[:, :n_cols])
    if nnz is None:
        nnz = max(1, int(0.01 * n_rows * n_cols))
    m = max(1, int(round(nnz / gs)))
    if m > n_rows * n_groups:
        raise DataError(f"nnz={nnz} is more than the matrix holds ({n_rows} x {n_cols})")
    key = _unique_cells(rng, n_rows * n_groups, m)
    r = key // n_groups
    g = key - r * n_groups
    del key
    vals = rng.standard_normal((r.size, gs))
    vals *= b
    vals += a * rng.standard_normal(r.size)[:, None]
    cols = g[:, None] * gs + np.arange(gs)
    if n_cols % gs:
        keep = (cols < n_cols).ravel()
        cols, vals = cols.ravel()[keep], vals.ravel()[keep]
        counts = np.bincount(np.repeat(r, gs)[keep], minlength=n_rows)
    else:
        cols, vals = cols.ravel(), vals.ravel()
        counts = np.bincount(r, minlength=n_rows) * gs
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    idt = np.int32 if n_cols < 2 ** 31 else np.int64
    return sp.csr_matrix((vals, cols.astype(idt), indptr), shape=(n_rows, n_cols))


def make_regression(n_rows: int, n_cols: int, nnz: int | None = None, group_size: int = 4, corr: float = 0.8,
                    n_informative: int | None = None, noise: float = 0.1, dense: bool = False, seed=0):
    """Regression data with correlated feature groups and a sparse planted coefficient vector.

    Columns come in groups of ``group_size`` sharing a latent factor: every stored
    value of a group in a row is ``sqrt(corr) z + sqrt(1 - corr) e`` (z shared, e
    own), and a group's columns are non-zero in the same rows, so the correlation of
    two columns of a group is ``corr``. ``y = X coef + noise * N(0, 1)``.

    Parameters
    ----------
    nnz : int, optional
        Target number of non-zeros (sparse; default 1 % density). Rows pick groups
        at random (distinct (row, group) cells, count equal to ``nnz`` in expectation).
    n_informative : int, optional
        Non-zeros of ``coef`` (default ``max(1, n_cols // 100)``), magnitudes in
        [1, 2), random signs, at random columns.
    dense : bool
        Dense ndarray instead of CSR.

    Returns
    -------
    X : scipy.sparse.csr_matrix or ndarray, y : ndarray, coef : ndarray
    """
    rng = np.random.default_rng(seed)
    X = _features(rng, n_rows, n_cols, nnz, group_size, corr, dense)
    k = max(1, n_cols // 100) if n_informative is None else int(n_informative)
    coef = np.zeros(n_cols)
    idx = rng.choice(n_cols, size=min(k, n_cols), replace=False)
    coef[idx] = rng.choice([-1.0, 1.0], size=idx.size) * (1.0 + rng.random(idx.size))
    y = X @ coef + noise * rng.standard_normal(n_rows)
    return X, y, coef


def make_classification(n_rows: int, n_cols: int, n_classes: int = 2, nnz: int | None = None, group_size: int = 4,
                        corr: float = 0.5, n_informative: int | None = None, scale: float = 2.0,
                        dense: bool = False, seed=0):
    """Labels from a planted linear model on features as in :func:`make_regression`.

    Binary: ``P(y=1) = sigmoid(X coef)``; multiclass: ``y = argmax_k (X W_k + Gumbel)``
    (i.e. softmax sampling). Informative weights are ``scale * N(0, 1)`` on
    ``n_informative`` columns (default ``max(1, n_cols // 10)``).

    Returns
    -------
    X, y (int64 in [0, n_classes)), coef (n_cols,) for binary or (n_classes, n_cols)
    """
    if n_classes < 2:
        raise DataError(f"n_classes must be >= 2, got {n_classes}")
    rng = np.random.default_rng(seed)
    X = _features(rng, n_rows, n_cols, nnz, group_size, corr, dense)
    k = max(1, n_cols // 10) if n_informative is None else int(n_informative)
    n_out = 1 if n_classes == 2 else n_classes
    W = np.zeros((n_out, n_cols))
    for j in range(n_out):
        idx = rng.choice(n_cols, size=min(k, n_cols), replace=False)
        W[j, idx] = scale * rng.standard_normal(idx.size)
    logits = np.asarray(X @ W.T)
    if n_classes == 2:
        p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        y = (rng.random(n_rows) < p).astype(np.int64)
        return X, y, W[0]
    y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)
    return X, y, W



def _imbalanced_labels(rng, logits, class_fraction):
    """Labels sampled from ``softmax(logits + shift)`` (binary: one logit column,
    sigmoid) with the per-class shift set so the expected share of class 0 (binary:
    of class 1) is ``class_fraction`` and the other classes share the rest evenly."""
    n, k = logits.shape
    if k == 1:
        lo, hi = -60.0, 60.0
        for _ in range(80):  # bisection on the intercept for the mean probability
            mid = 0.5 * (lo + hi)
            if np.mean(1.0 / (1.0 + np.exp(-(logits[:, 0] + mid)))) < class_fraction:
                lo = mid
            else:
                hi = mid
        p = 1.0 / (1.0 + np.exp(-(logits[:, 0] + 0.5 * (lo + hi))))
        return (rng.random(n) < p).astype(np.int64)
    logits = logits - logits.max(axis=1, keepdims=True)
    lo, hi = -60.0, 60.0
    for _ in range(80):  # bisection on class 0's shift for its mean probability
        mid = 0.5 * (lo + hi)
        e = np.exp(logits)
        e[:, 0] *= np.exp(mid)
        if np.mean(e[:, 0] / e.sum(axis=1)) < class_fraction:
            lo = mid
        else:
            hi = mid
    logits[:, 0] += 0.5 * (lo + hi)
    return np.argmax(logits + rng.gumbel(size=logits.shape), axis=1).astype(np.int64)


def make_ill_conditioned_classification(n_rows: int, n_cols: int, n_classes: int = 2, dense: bool = True,
                                        nnz: int | None = None, n_latent: int | None = None,
                                        collinear_noise: float = 1e-3, scale_decades: float = 1.5,
                                        class_fraction: float = 0.1, signal: float = 2.0, seed=0):
    """Classification data that are hard for first-order solvers, like real data.

    * collinear: every column is a mix of ``n_latent`` (default ``max(2, n_cols // 4)``)
      shared factors plus ``collinear_noise`` own noise (dense) / groups of 8 columns
      share their rows and nearly their values (sparse);
    * badly scaled: column ``j`` is multiplied by ``10**u_j``, ``u_j`` uniform in
      ``[-scale_decades, scale_decades]``; dense columns are also off-centre (mean shifts
      of a few standard deviations, like raw counts or amounts);
    * imbalanced: class 1 (binary) / class 0 (multiclass) has an expected share of
      ``class_fraction`` of the rows;
    * sparse (``dense=False``): column frequencies follow a power law (a few columns in
      most rows, most columns rare), positive values as in word counts; ``nnz`` defaults
      to 2 % density.

    Labels are sampled from a planted linear model on the factors (``signal`` scales its
    logits), so the classes overlap and the L2-penalised optimum is finite. With the
    defaults the condition number of ``X`` exceeds 1e6.

    Returns
    -------
    X (ndarray or CSR), y (int64 in [0, n_classes)), coef_latent (n_latent, n_out)
    """
    if n_classes < 2:
        raise DataError(f"n_classes must be >= 2, got {n_classes}")
    if n_cols < 2 or n_rows < 2:
        raise DataError(f"need at least 2 rows and 2 columns, got {n_rows} x {n_cols}")
    if not 0.0 < class_fraction < 1.0:
        raise DataError(f"class_fraction must be in (0, 1), got {class_fraction}")
    rng = np.random.default_rng(seed)
    n_out = 1 if n_classes == 2 else n_classes
    scale = 10.0 ** rng.uniform(-scale_decades, scale_decades, n_cols)
    if dense:
        k = max(2, n_cols // 4) if n_latent is None else int(n_latent)
        Z = rng.standard_normal((n_rows, k))
        A = rng.standard_normal((k, n_cols)) / np.sqrt(k)
        X = Z @ A + collinear_noise * rng.standard_normal((n_rows, n_cols))
        X += rng.uniform(-3.0, 3.0, n_cols)
        X *= scale
        V = signal * rng.standard_normal((k, n_out))
        y = _imbalanced_labels(rng, Z @ V, class_fraction)
        return np.ascontiguousarray(X), y, V
    gs = 8
    n_groups = -(-n_cols // gs)
    k = n_groups if n_latent is None else int(n_latent)
    if nnz is None:
        nnz = max(1, int(0.02 * n_rows * n_cols))
    freq = 1.0 / np.arange(1, n_groups + 1) ** 0.9
    freq = np.minimum(freq * (nnz / gs) / (n_rows * freq.sum()), 0.9)  # P(row holds group g)
    hold = rng.random((n_rows, n_groups)) < freq
    r, g = np.nonzero(hold)
    base = rng.poisson(1.0, r.size) + 1.0  # a count-like value per (row, group)
    vals = base[:, None] * (1.0 + collinear_noise * rng.standard_normal((r.size, gs)))
    cols = g[:, None] * gs + np.arange(gs)
    keep = (cols < n_cols).ravel()
    cols, vals = cols.ravel()[keep], (vals * scale[np.minimum(cols, n_cols - 1)]).ravel()[keep]
    counts = np.bincount(np.repeat(r, gs)[keep], minlength=n_rows)
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    X = sp.csr_matrix((vals, cols.astype(np.int32), indptr), shape=(n_rows, n_cols))
    V = signal * rng.standard_normal((n_groups, n_out))
    G = sp.csr_matrix((base, g, np.r_[0, np.cumsum(np.bincount(r, minlength=n_rows))]), shape=(n_rows, n_groups))
    y = _imbalanced_labels(rng, np.asarray(G @ V) - np.asarray(G @ V).mean(0), class_fraction)
    return X, y, V


def make_ratings(n_users: int, n_items: int, rank: int = 10, noise: float = 0.1, density: float = 0.05,
                 offset: float = 0.0, seed=0):
    """Low-rank ratings ``offset + U_u . V_i + noise * N(0, 1)`` on a random ``density``
    fraction of distinct (user, item) cells (that many in expectation).

    ``U`` (n_users, rank) and ``V`` (n_items, rank) have N(0, 1/sqrt(rank)) entries, so
    the noiseless ratings have unit variance.

    Returns
    -------
    users, items (int32), values (float64), U, V
    """
    if not 0.0 < density <= 1.0:
        raise DataError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    s = rank ** -0.25
    U = s * rng.standard_normal((n_users, rank))
    Vm = s * rng.standard_normal((n_items, rank))
    m = max(1, int(round(density * n_users * n_items)))
    key = _unique_cells(rng, n_users * n_items, m)
    users = (key // n_items).astype(np.int32)
    items = (key - users.astype(np.int64) * n_items).astype(np.int32)
    values = offset + np.einsum("ij,ij->i", U[users], Vm[items]) + noise * rng.standard_normal(key.size)
    return users, items, values, U, Vm


def make_heavy_tailed_ratings(n_users: int, n_items: int, rank: int = 5, median_per_user: float = 8.0,
                              user_alpha: float = 1.3, item_exponent: float = 0.9, signal: float = 0.5,
                              user_bias: float = 0.4, item_bias: float = 0.5, noise: float = 0.8,
                              mean: float = 3.6, test_fraction: float = 0.1, seed=0):
    """Star ratings that look like real ones (MovieLens-like sparsity, heavy tails).

    * Users: ratings per user ``n_u`` Pareto with tail exponent ``user_alpha`` (heavy tail:
      a few users rate hundreds of items) and median ``median_per_user``, at least 1 and
      at most ``n_items // 2``.
    * Items: popularity Zipf-like, ``p_i ~ rank_i^-item_exponent`` (random item order);
      each user's items are drawn by popularity (duplicates dropped).
    * Values: ``stars = clip(round(mean + b_u + c_i + U_u . V_i + noise * N(0, 1)), 1, 5)``
      with ``b_u ~ N(0, user_bias^2)``, ``c_i ~ N(0, item_bias^2)`` and ``U_u . V_i`` of
      variance ``signal`` (``rank`` components of equal weight; ``signal`` large = strong
      planted structure).
    * Split: a random ``test_fraction`` of the ratings is the test set.

    Returns
    -------
    train, test : tuples ``(users int32, items int32, stars float64)``
    truth : dict with ``U``, ``V``, ``user_bias``, ``item_bias``, ``mean`` and ``clean``
        (the noiseless latent value ``mean + b_u + c_i + U_u . V_i`` of each train rating)
    """
    if n_users < 1 or n_items < 2:
        raise DataError(f"need at least 1 user and 2 items, got {n_users} x {n_items}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    x_m = median_per_user / 2.0 ** (1.0 / user_alpha)
    n_u = np.floor(x_m * (1.0 - rng.random(n_users)) ** (-1.0 / user_alpha)).astype(np.int64)
    n_u = np.clip(n_u, 1, n_items // 2)
    pop = rng.permutation(np.arange(1, n_items + 1, dtype=np.float64) ** -item_exponent)
    cdf = np.cumsum(pop)
    cdf /= cdf[-1]
    users = np.repeat(np.arange(n_users, dtype=np.int64), n_u)
    items = np.minimum(np.searchsorted(cdf, rng.random(users.size), side="right"), n_items - 1)
    key = np.unique(users * n_items + items)
    users = (key // n_items).astype(np.int32)
    items = (key - users.astype(np.int64) * n_items).astype(np.int32)
    s = (signal / rank) ** 0.25
    U = s * rng.standard_normal((n_users, rank))
    V = s * rng.standard_normal((n_items, rank))
    bu = user_bias * rng.standard_normal(n_users)
    bi = item_bias * rng.standard_normal(n_items)
    clean = mean + bu[users] + bi[items] + np.einsum("nk,nk->n", U[users], V[items])
    stars = np.clip(np.rint(clean + noise * rng.standard_normal(clean.size)), 1.0, 5.0)
    te = rng.random(users.size) < test_fraction
    tr = ~te
    truth = {"U": U, "V": V, "user_bias": bu, "item_bias": bi, "mean": mean, "clean": clean[tr]}
    return (users[tr], items[tr], stars[tr]), (users[te], items[te], stars[te]), truth


def make_lda_corpus(n_docs: int, n_words: int, n_topics: int, doc_length: float = 100.0, alpha: float = 0.1,
                    beta: float = 0.01, seed=0):
    """A corpus drawn from LDA: ``phi_k ~ Dir(beta)``, ``theta_d ~ Dir(alpha)``, document
    length ``max(1, Poisson(doc_length))``, each token's topic ``z ~ theta_d`` and word
    ``w ~ phi_z``.

    Returns
    -------
    doc_ptr (int64), word_ids (int32), counts (int32), phi (n_topics, n_words), theta (n_docs, n_topics)
    """
    rng = np.random.default_rng(seed)
    K, V, D = int(n_topics), int(n_words), int(n_docs)
    phi = rng.dirichlet(np.full(V, beta), size=K)
    theta = rng.dirichlet(np.full(K, alpha), size=D)
    lens = np.maximum(1, rng.poisson(doc_length, size=D))
    doc = np.repeat(np.arange(D, dtype=np.int64), lens)
    N = doc.size
    cdf_t = np.cumsum(theta, axis=1)
    cdf_t /= cdf_t[:, -1:]
    cdf_t += np.arange(D)[:, None]
    z = np.searchsorted(cdf_t.ravel(), doc + rng.random(N), side="right") - doc * K
    np.clip(z, 0, K - 1, out=z)
    cdf_w = np.cumsum(phi, axis=1)
    cdf_w /= cdf_w[:, -1:]
    cdf_w += np.arange(K)[:, None]
    w = np.searchsorted(cdf_w.ravel(), z + rng.random(N), side="right") - z * V
    np.clip(w, 0, V - 1, out=w)
    key, counts = np.unique(doc * V + w, return_counts=True)
    d = key // V
    doc_ptr = np.zeros(D + 1, np.int64)
    np.cumsum(np.bincount(d, minlength=D), out=doc_ptr[1:])
    return doc_ptr, (key - d * V).astype(np.int32), counts.astype(np.int32), phi, theta


def vocab_words(n_words: int) -> list[str]:
    """Placeholder vocabulary ``word00000``, ``word00001``..."""
    width = max(5, len(str(n_words - 1)))
    return [f"word{j:0{width}d}" for j in range(n_words)]


# ----------------------------------------------------------------------------- datasets

def _truth_path(raw_out: str) -> str:
    stem, _ = os.path.splitext(raw_out)
    return stem + ".truth.h5"


def synth_dataset(kind: str, out: str, *, raw: bool = False, seed: int = 0, n_shards=None, rows_per_shard=None,
                  overwrite: bool = False, precision: int | None = None, **params) -> str:
    """Generate ``kind`` ("regression", "classification", "ratings", "lda") and write it.

    As a dataset folder (truth in ``truth.h5``, parameters and seed in ``meta``) or,
    with ``raw=True``, as text: LIBSVM (1-based) for regression/classification,
    ``userId,movieId,rating`` CSV for ratings, UCI ``docword`` + ``vocab`` (the vocab
    file name replaces "docword" by "vocab" in OUT's name) for lda; the truth is
    written beside as ``<OUT stem>.truth.h5``; ``precision`` (significant digits of
    LIBSVM values, default exact) keeps text small. Returns the main output path.
    """
    from .convert import export_libsvm, export_ratings_csv, export_uci_bow
    from .writer import save_arrays_h5, write_bow, write_matrix, write_ratings

    params = {k: v for k, v in params.items() if v is not None}
    meta = {"generator": f"petuum_mpi.data.synth.{kind}", "seed": int(seed), "params": dict(params)}
    if raw and os.path.exists(out) and not overwrite:
        raise DataError(f"{out}: already exists (pass overwrite=True / --overwrite to replace it)")
    kw = dict(n_shards=n_shards, rows_per_shard=rows_per_shard, meta=meta, overwrite=overwrite)
    if kind in ("regression", "classification"):
        n_rows = int(params.pop("n_rows", 1000))
        n_cols = int(params.pop("n_cols", 1000))
        if kind == "regression":
            X, y, coef = make_regression(n_rows, n_cols, seed=seed, **params)
            truth = {"coef": coef}
            tattrs = {"noise": float(params.get("noise", 0.1)), "corr": float(params.get("corr", 0.8)),
                      "group_size": int(params.get("group_size", 4))}
            task = "regression"
        else:
            X, y, coef = make_classification(n_rows, n_cols, seed=seed, **params)
            truth = {"coef": coef}
            tattrs = {"n_classes": int(params.get("n_classes", 2))}
            task = "classification"
        if raw:
            export_libsvm(out, X, y, comment=f"petuum_mpi synth {kind} seed={seed} {params}", precision=precision)
            save_arrays_h5(_truth_path(out), truth, tattrs)
            return out
        write_matrix(out, X, y, task=task, n_classes=params.get("n_classes", 2) if task == "classification" else None,
                     truth=(truth, tattrs), **kw)
        return out
    if kind == "ratings":
        n_users = int(params.pop("n_users", 1000))
        n_items = int(params.pop("n_items", 500))
        users, items, values, U, Vm = make_ratings(n_users, n_items, seed=seed, **params)
        truth = {"U": U, "V": Vm}
        tattrs = {"noise": float(params.get("noise", 0.1)), "offset": float(params.get("offset", 0.0)),
                  "rank": int(params.get("rank", 10))}
        meta["noise"] = tattrs["noise"]
        if raw:
            export_ratings_csv(out, users + 1, items + 1, values)  # 1-based ids like MovieLens
            save_arrays_h5(_truth_path(out), truth, tattrs)
            return out
        write_ratings(out, users, items, values, n_users, n_items, truth=(truth, tattrs), **kw)
        return out
    if kind == "lda":
        n_docs = int(params.pop("n_docs", 1000))
        n_words = int(params.pop("n_words", 1000))
        n_topics = int(params.pop("n_topics", 10))
        doc_ptr, word_ids, counts, phi, theta = make_lda_corpus(n_docs, n_words, n_topics, seed=seed, **params)
        truth = {"phi": phi, "theta": theta}
        tattrs = {"alpha": float(params.get("alpha", 0.1)), "beta": float(params.get("beta", 0.01)),
                  "n_topics": n_topics}
        vocab = vocab_words(n_words)
        if raw:
            d, b = os.path.split(out)
            vb = b.replace("docword", "vocab") if "docword" in b else b + ".vocab"
            export_uci_bow(out, doc_ptr, word_ids, counts, n_words, os.path.join(d, vb), vocab)
            save_arrays_h5(_truth_path(out), truth, tattrs)
            return out
        write_bow(out, doc_ptr, word_ids, counts, n_words, vocab=vocab, truth=(truth, tattrs), **kw)
        return out
    raise DataError(f"unknown synthetic kind {kind!r} (regression, classification, ratings, lda)")


# ----------------------------------------------------------------------------- committed samples

#: The raw samples in the repository's ``data/`` folder: (kind, file, seed, parameters).
SAMPLES = [
    ("regression", "lasso_sample.svm", 1,
     dict(n_rows=2000, n_cols=5000, nnz=100_000, group_size=4, corr=0.8, n_informative=50, noise=0.1)),
    ("classification", "clf_sample.svm", 2,
     dict(n_rows=1000, n_cols=500, nnz=25_000, n_classes=2, group_size=4, corr=0.5, n_informative=50)),
    ("ratings", "ratings_sample.csv", 3,
     dict(n_users=500, n_items=300, rank=5, noise=0.1, density=0.05, offset=3.0)),
    ("lda", "docword.sample.txt", 4,
     dict(n_docs=300, n_words=500, n_topics=5, doc_length=80, alpha=0.1, beta=0.01)),
]


def make_samples(raw_dir: str, overwrite: bool = False) -> list[str]:
    """(Re)generate the raw sample files of ``data/`` into ``raw_dir``."""
    os.makedirs(raw_dir, exist_ok=True)
    out = []
    for kind, name, seed, params in SAMPLES:
        out.append(synth_dataset(kind, os.path.join(raw_dir, name), raw=True, seed=seed, overwrite=overwrite,
                                 precision=6, **params))
    return out
