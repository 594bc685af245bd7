"""Writing datasets: shards first, ``manifest.json`` last (atomic rename).

A crash while writing leaves either the previous complete dataset (its manifest is
removed before any shard is replaced) or a folder without a manifest, which every
reader rejects; never a manifest pointing at half-written shards.
"""

from __future__ import annotations

import glob
import os
import shutil
from typing import Callable

import numpy as np

from ..errors import DataError
from . import validate as V
from .format import FORMAT_VERSION, MANIFEST, SPARSE_ARRAYS, TASKS, Dataset, file_sha256, open_dataset, \
    shard_name, to_jsonable, write_manifest

TRUTH_FILE = "truth.h5"
VOCAB_FILE = "vocab.txt"
IDMAP_FILE = "ids.h5"
_OWN_FILES = ("shard-*.h5", "shard-*.h5.tmp", TRUTH_FILE, VOCAB_FILE, IDMAP_FILE, MANIFEST + ".tmp")


def shard_bounds(n_rows: int, n_shards: int | None = None, rows_per_shard: int | None = None,
                 shard_sizes=None) -> list[tuple[int, int]]:
    """Row ranges of the shards: ``n_shards`` balanced blocks, blocks of ``rows_per_shard``,
    or explicit ``shard_sizes`` (may contain zeros). Default: one shard."""
    given = sum(x is not None for x in (n_shards, rows_per_shard, shard_sizes))
    if given > 1:
        raise DataError("give only one of n_shards, rows_per_shard, shard_sizes")
    if shard_sizes is not None:
        sizes = [int(s) for s in shard_sizes]
        if any(s < 0 for s in sizes) or sum(sizes) != n_rows:
            raise DataError(f"shard_sizes {sizes} must be >= 0 and add up to {n_rows} rows")
        ends = np.cumsum([0] + sizes)
        return [(int(ends[i]), int(ends[i + 1])) for i in range(len(sizes))]
    if rows_per_shard is not None:
        if int(rows_per_shard) < 1:
            raise DataError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        r = int(rows_per_shard)
        return [(a, min(a + r, n_rows)) for a in range(0, n_rows, r)] or [(0, 0)]
    n = 1 if n_shards is None else int(n_shards)
    if n < 1:
        raise DataError(f"n_shards must be >= 1, got {n_shards}")
    if n > max(n_rows, 1):
        raise DataError(f"n_shards={n} is more than the {n_rows} rows of the dataset")
    return [(i * n_rows // n, (i + 1) * n_rows // n) for i in range(n)]


def prepare_folder(path: str, overwrite: bool) -> None:
    """Create ``path`` or, with ``overwrite``, remove the previous dataset's own files
    (manifest first). Refuses a non-empty folder otherwise."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"{path}: exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path):
        if not overwrite:
            what = "a dataset" if os.path.exists(os.path.join(path, MANIFEST)) else "a non-empty folder"
            raise DataError(f"{path}: {what} already exists (pass overwrite=True / --overwrite to replace it)")
        m = os.path.join(path, MANIFEST)
        if os.path.exists(m):
            os.remove(m)
        for pat in _OWN_FILES:
            for p in glob.glob(os.path.join(path, pat)):
                os.remove(p)
    os.makedirs(path, exist_ok=True)


def write_shard(path: str, index: int, kind: str, arrays: dict, row_start: int, n_rows: int, nnz: int) -> dict:
    """Write one shard file (via a temporary name) and return its manifest entry."""
    import h5py

    name = shard_name(index)
    final = os.path.join(path, name)
    tmp = final + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["kind"] = kind
        f.attrs["row_start"] = int(row_start)
        f.attrs["n_rows"] = int(n_rows)
        f.attrs["nnz"] = int(nnz)
        for k, a in arrays.items():
            f.create_dataset(k, data=a)
    os.replace(tmp, final)
    return {"file": name, "row_start": int(row_start), "n_rows": int(n_rows), "nnz": int(nnz),
            "sha256": file_sha256(final)}


def save_arrays_h5(path: str, arrays: dict, attrs: dict | None = None) -> None:
    """Save named arrays (and scalar attributes) to one HDF5 file (truth, id maps)."""
    import h5py

    with h5py.File(path, "w") as f:
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        for k, a in arrays.items():
            a = np.asarray(a)
            if a.dtype.kind == "U":
                a = a.astype(h5py.string_dtype())
            f.create_dataset(k, data=a)


def load_arrays_h5(path: str) -> tuple[dict, dict]:
    """Arrays and attributes of a file written by :func:`save_arrays_h5`."""
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f.keys()}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return arrays, attrs


def _write_dataset(path, kind, n_rows, n_cols, nnz, bounds, get_shard: Callable, head: dict, meta, truth,
                   files: dict, overwrite: bool) -> Dataset:
    prepare_folder(path, overwrite)
    shards = []
    for i, (a, b) in enumerate(bounds):
        arrays, k = get_shard(a, b)
        shards.append(write_shard(path, i, kind, arrays, a, b - a, k))
    meta = dict(to_jsonable(meta or {}))
    if truth is not None:
        tarrays, tattrs = truth if isinstance(truth, tuple) else (truth, {})
        save_arrays_h5(os.path.join(path, TRUTH_FILE), tarrays, tattrs)
        meta["truth"] = TRUTH_FILE
    for key, (name, writer) in files.items():
        writer(os.path.join(path, name))
        meta[key] = name
    man = {"format_version": FORMAT_VERSION, "kind": kind}
    man.update(head)
    man.update({"n_rows": int(n_rows), "n_cols": int(n_cols), "nnz": int(nnz), "shards": shards, "meta": meta})
    write_manifest(path, man)
    return open_dataset(path, check_shards=False)


def _index_dtype(n: int):
    return np.int32 if n <= np.iinfo(np.int32).max else np.int64


def write_matrix(path, X, y, *, n_shards=None, rows_per_shard=None, shard_sizes=None, task="regression",
                 n_classes=None, dtype=None, meta=None, truth=None, overwrite=False, validate=True) -> Dataset:
    """Write a design matrix and targets as a sharded dataset.

    Parameters
    ----------
    path : str
        Output folder (created; must not hold a dataset unless ``overwrite``).
    X : ndarray (n_rows, n_cols) or scipy.sparse matrix
        Dense arrays are stored dense, sparse ones as per-shard CSR.
    y : array (n_rows,)
        Float targets (regression) or integer labels in ``[0, n_classes)``.
    n_shards, rows_per_shard, shard_sizes : int, int, list of int
        How rows are cut into shards (one of them; default one shard).
    task : {"regression", "classification"}
    n_classes : int, optional
        Default ``max(y) + 1`` for classification.
    dtype : numpy dtype, optional
        Stored value type (float64 or float32); default X's float type.
    meta : dict, optional
        Free-form provenance stored in the manifest.
    truth : dict of arrays or (arrays, attrs), optional
        Planted truth saved as ``truth.h5`` and named in ``meta["truth"]``.
    overwrite : bool
    validate : bool
        Check values (finite, indices in range, labels) before writing.

    Returns
    -------
    Dataset
    """
    import scipy.sparse as sp

    if task not in TASKS:
        raise DataError(f"task must be one of {TASKS}, got {task!r}")
    sparse = sp.issparse(X)
    if not sparse:
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"X must be 2-D, got shape {X.shape}")
    n_rows, n_cols = X.shape
    y = np.asarray(y)
    if y.shape != (n_rows,):
        raise DataError(f"y has shape {y.shape} but X has {n_rows} rows")
    if dtype is None:
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise DataError(f"dtype must be float32 or float64, got {dtype}")
    if task == "classification":
        if y.size and y.dtype.kind == "f" and not np.all(y == np.round(y)):
            raise DataError("classification labels must be integers (see convert's class mapping)")
        if n_classes is None:
            n_classes = int(y.max()) + 1 if y.size else 1
        y = y.astype(np.int64)
    else:
        y = y.astype(np.float64)
    if sparse:
        X = sp.csr_matrix(X)
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        indptr = X.indptr.astype(np.int64)
        indices = X.indices.astype(_index_dtype(n_cols), copy=False)
        data = X.data.astype(dtype, copy=False)
        nnz = int(indptr[-1])
        if validate:
            V.check_sparse("matrix", indptr, indices, data, n_cols, 0, "X")
    else:
        X = X.astype(dtype, copy=False)
        nnz = int(np.count_nonzero(X))
        if validate:
            V.check_dense(X, 0, "X")
    if validate:
        V.check_targets(y, task, n_classes, 0, "y")
    bounds = shard_bounds(n_rows, n_shards, rows_per_shard, shard_sizes)

    def get(a, b):
        if sparse:
            p0, p1 = indptr[a], indptr[b]
            return ({"indptr": indptr[a:b + 1] - p0, "indices": indices[p0:p1], "data": data[p0:p1],
                     "y": y[a:b]}, int(p1 - p0))
        Xb = X[a:b]
        return {"X": Xb, "y": y[a:b]}, int(np.count_nonzero(Xb))

    head = {"layout": "sparse" if sparse else "dense", "dtype": dtype.name, "task": task,
            "n_classes": int(n_classes) if task == "classification" else None}
    return _write_dataset(path, "matrix", n_rows, n_cols, nnz, bounds, get, head, meta, truth, {}, overwrite)


def write_bow(path, doc_ptr, word_ids, counts, n_words, *, vocab=None, n_shards=None, rows_per_shard=None,
              shard_sizes=None, meta=None, truth=None, overwrite=False, validate=True) -> Dataset:
    """Write a bag-of-words corpus (CSR-like: ``doc_ptr``, ``word_ids``, ``counts``).

    ``vocab`` (list of ``n_words`` strings) is stored as ``vocab.txt``. Other
    parameters as in :func:`write_matrix`. Documents must be non-empty and counts
    positive.
    """
    doc_ptr = np.asarray(doc_ptr, dtype=np.int64)
    word_ids = np.asarray(word_ids)
    counts = np.asarray(counts)
    if word_ids.size and word_ids.dtype.kind not in "iu" or counts.size and counts.dtype.kind not in "iu":
        raise DataError("word_ids and counts must be integer arrays")
    word_ids = word_ids.astype(np.int32)
    counts = counts.astype(np.int32)
    n_docs = doc_ptr.size - 1
    if n_docs < 0:
        raise DataError("doc_ptr must have n_docs + 1 entries")
    if validate:
        V.check_sparse("bow", doc_ptr, word_ids, counts, int(n_words), 0, "corpus")
    files = {}
    if vocab is not None:
        vocab = [str(w) for w in vocab]
        if len(vocab) != n_words:
            raise DataError(f"vocab has {len(vocab)} words but n_words={n_words}")
        bad = [w for w in vocab if "\n" in w or "\r" in w]
        if bad:
            raise DataError(f"vocab word {bad[0]!r} contains a newline")

        def wv(p):
            with open(p, "w", encoding="utf-8") as f:
                f.write("\n".join(vocab) + ("\n" if vocab else ""))

        files["vocab"] = (VOCAB_FILE, wv)
    bounds = shard_bounds(n_docs, n_shards, rows_per_shard, shard_sizes)

    def get(a, b):
        p0, p1 = doc_ptr[a], doc_ptr[b]
        return {"doc_ptr": doc_ptr[a:b + 1] - p0, "word_ids": word_ids[p0:p1], "counts": counts[p0:p1]}, int(p1 - p0)

    head = {"layout": "sparse", "dtype": "int32", "n_tokens": int(counts.sum(dtype=np.int64))}
    return _write_dataset(path, "bow", n_docs, n_words, int(doc_ptr[-1]), bounds, get, head, meta, truth, files,
                          overwrite)


def write_ratings(path, users, items, values, n_users, n_items, *, id_map=None, n_shards=None,
                  rows_per_shard=None, shard_sizes=None, meta=None, truth=None, overwrite=False,
                  validate=True) -> Dataset:
    """Write rating triples ``(user, item, value)`` with dense ids ``0..n-1``.

    Triples are sorted by (user, item); shards are contiguous blocks of users
    (``rows_per_shard`` counts users). ``id_map`` (dict with ``user_ids``,
    ``item_ids``: raw id of each dense id) is stored as ``ids.h5``.
    """
    users = np.asarray(users)
    items = np.asarray(items)
    values = np.asarray(values, dtype=np.float64)
    if not (users.shape == items.shape == values.shape) or users.ndim != 1:
        raise DataError(f"users, items, values must be 1-D of equal length, got {users.shape}, {items.shape}, "
                        f"{values.shape}")
    n_users, n_items = int(n_users), int(n_items)
    if users.size and (users.min() < 0 or users.max() >= n_users):
        pos = int(np.flatnonzero((users < 0) | (users >= n_users))[0])
        raise DataError(f"ratings: user id {int(users[pos])} out of range [0, {n_users}) at triple {pos}")
    order = np.lexsort((items, users))
    if not np.all(order == np.arange(order.size)):
        users, items, values = users[order], items[order], values[order]
    user_ptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=user_ptr[1:])
    items = items.astype(np.int32)
    if validate:
        V.check_sparse("ratings", user_ptr, items, values, n_items, 0, "ratings")
    files = {}
    if id_map is not None:
        files["id_map"] = (IDMAP_FILE, lambda p: save_arrays_h5(p, id_map))
    bounds = shard_bounds(n_users, n_shards, rows_per_shard, shard_sizes)

    def get(a, b):
        p0, p1 = user_ptr[a], user_ptr[b]
        return {"user_ptr": user_ptr[a:b + 1] - p0, "items": items[p0:p1], "values": values[p0:p1]}, int(p1 - p0)

    head = {"layout": "sparse", "dtype": "float64", "n_users": n_users, "n_items": n_items}
    return _write_dataset(path, "ratings", n_users, n_items, int(user_ptr[-1]), bounds, get, head, meta, truth,
                          files, overwrite)


def copy_meta_files(src: Dataset, dst_path: str) -> None:
    """Copy the truth / vocab / id-map files a dataset names in its meta."""
    for key in ("truth", "vocab", "id_map"):
        p = src.meta_file(key)
        if p and os.path.isfile(p):
            shutil.copyfile(p, os.path.join(dst_path, os.path.basename(p)))


__all__ = ["write_matrix", "write_bow", "write_ratings", "shard_bounds", "save_arrays_h5", "load_arrays_h5",
           "SPARSE_ARRAYS"]
