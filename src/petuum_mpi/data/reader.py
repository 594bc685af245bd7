"""Partitioned, collective readers: each rank reads only its contiguous block of rows.

Every reader is collective over ``comm`` (default ``MPI.COMM_WORLD``) and works at
any number of ranks over any number of shards. Rank 0 validates the manifest and
broadcasts it; row weights for balancing (non-zeros, tokens, ratings per row) are
computed shard-parallel and combined on rank 0, which broadcasts the ranges. Each
rank then opens (read-only, serial h5py) only the shards overlapping its range and
reads only its rows. A problem found on any rank (corrupt shard, checksum, NaN,
index out of range...) makes *all* ranks raise the same :class:`DataError`, so no
rank is left waiting in a later collective.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import DataError, collective
from ..runtime import get_comm
from . import validate as V
from .format import SPARSE_ARRAYS, Dataset, Shard, file_sha256, open_dataset

__all__ = ["open_dataset", "partition_rows", "read_matrix", "read_bow", "read_ratings", "LocalMatrix",
           "LocalCorpus", "LocalRatings", "read_rows"]


# ----------------------------------------------------------------------------- partitioning

def partition_rows(n_rows: int, size: int, weights=None) -> list[tuple[int, int]]:
    """Split ``n_rows`` rows into ``size`` contiguous, non-empty ranges.

    Parameters
    ----------
    n_rows : int
    size : int
        Number of parts (ranks).
    weights : array of n_rows non-negative numbers, optional
        Per-row cost (e.g. non-zeros); ranges then hold nearly equal total weight
        instead of nearly equal row counts. Every range still gets >= 1 row.

    Returns
    -------
    list of (start, stop)
        Covers ``[0, n_rows)`` exactly once, in order.

    Raises
    ------
    DataError
        ``n_rows == 0`` or fewer rows than parts.
    """
    n_rows, size = int(n_rows), int(size)
    if size < 1:
        raise DataError(f"cannot partition over {size} ranks")
    if n_rows == 0:
        raise DataError("empty dataset: it has no rows to partition")
    if n_rows < size:
        raise DataError(f"cannot split {n_rows} rows over {size} ranks (every rank needs at least one row); "
                        f"run with at most {n_rows} ranks")
    if weights is None or size == 1:
        return [(i * n_rows // size, (i + 1) * n_rows // size) for i in range(size)]
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_rows,):
        raise DataError(f"weights has shape {w.shape}, expected ({n_rows},)")
    if w.size and (w.min() < 0 or not np.all(np.isfinite(w))):
        raise DataError("row weights must be finite and >= 0")
    cw = np.cumsum(w)
    total = cw[-1]
    if total <= 0:
        return partition_rows(n_rows, size)
    t = total * np.arange(1, size) / size
    j = np.searchsorted(cw, t, side="left")
    prev = np.where(j > 0, cw[np.maximum(j - 1, 0)], 0.0)
    b = np.where(np.abs(cw[np.minimum(j, n_rows - 1)] - t) < np.abs(t - prev), j + 1, j)
    idx = np.arange(1, size)
    b = np.clip(b, idx, n_rows - size + idx)
    bounds = [0]
    for x in b:
        bounds.append(max(int(x), bounds[-1] + 1))
    bounds.append(n_rows)
    return [(bounds[i], bounds[i + 1]) for i in range(size)]


# ----------------------------------------------------------------------------- collective errors

def _raise_together(comm, err: str | None) -> None:
    """All ranks raise if any rank has an error (the lowest rank's message)."""
    if comm.size == 1:
        if err:
            raise DataError(err)
        return
    errs = comm.allgather(err)
    for r, e in enumerate(errs):
        if e:
            raise collective(DataError(e if comm.size == 1 else f"{e} [found on rank {r}]"))


def _together(comm, fn: Callable[[], Any]):
    """Run ``fn`` on every rank; if it raises a DataError (or an I/O error) on any rank,
    raise a DataError on all ranks."""
    res, err = None, None
    try:
        res = fn()
    except DataError as e:
        err = str(e)
    except (OSError, KeyError, ValueError) as e:  # unreadable HDF5 and the like
        err = f"cannot read dataset: {type(e).__name__}: {e}"
    _raise_together(comm, err)
    return res


def _open_on_root(path, comm) -> Dataset:
    if isinstance(path, Dataset):
        return path
    res, err = None, None
    if comm.rank == 0:
        try:
            res = open_dataset(path)
        except DataError as e:
            err = str(e)
    if comm.size > 1:
        res, err = comm.bcast((res, err), root=0)
    if err:
        raise DataError(err)
    return res


def _h5open(path: str):
    import h5py

    try:
        return h5py.File(path, "r", locking=False)
    except TypeError:  # pragma: no cover - old h5py
        return h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: cannot open shard as HDF5 ({e})") from None


def _verify(ds: Dataset, s: Shard) -> None:
    p = ds.shard_path(s)
    if not s.sha256:
        return
    try:
        got = file_sha256(p)
    except OSError as e:
        raise DataError(f"{p}: cannot read shard ({e})") from None
    if got != s.sha256:
        raise DataError(f"{p}: checksum mismatch (manifest sha256 {s.sha256[:12]}..., file {got[:12]}...): "
                        f"the shard is corrupt or was changed after writing")


def _row_weights_of_shard(ds: Dataset, s: Shard, by: str) -> np.ndarray:
    p = ds.shard_path(s)
    if ds.dense or by == "rows":
        return np.ones(s.n_rows)
    ptrn, _, valn = SPARSE_ARRAYS[ds.kind]
    with _h5open(p) as f:
        ptr = f[ptrn][()].astype(np.int64)
        V.check_ptr(ptr, s.nnz, s.row_start, p, ds.kind)
        if by == "tokens":
            cs = np.zeros(s.nnz + 1, dtype=np.int64)
            np.cumsum(f[valn][()], out=cs[1:])
            return (cs[ptr[1:]] - cs[ptr[:-1]]).astype(np.float64)
    return np.diff(ptr).astype(np.float64)


def _ranges(ds: Dataset, comm, by: str) -> tuple[int, int]:
    """This rank's (start, stop), balanced by ``by`` ("rows", "nnz", "tokens")."""
    size, rank = comm.size, comm.rank
    if ds.n_rows == 0:
        raise DataError(f"{ds.path}: empty dataset (0 rows)")
    if ds.n_rows < size:
        partition_rows(ds.n_rows, size)  # raises the readable error
    if by == "rows" or size == 1 or ds.dense:
        return partition_rows(ds.n_rows, size)[rank]
    mine = [i for i in range(len(ds.shards)) if i % size == rank]
    local = _together(comm, lambda: {i: _row_weights_of_shard(ds, ds.shards[i], by) for i in mine})
    parts = comm.gather(local, root=0)
    ranges = None
    if rank == 0:
        allw = {}
        for d in parts:
            allw.update(d)
        w = np.concatenate([allw[i] for i in range(len(ds.shards))]) if ds.shards else np.zeros(0)
        ranges = partition_rows(ds.n_rows, size, w)
    return comm.bcast(ranges, root=0)[rank]


# ----------------------------------------------------------------------------- range reading

def read_rows(ds: Dataset, start: int, stop: int, verify: bool = True) -> dict:
    """Read rows ``[start, stop)`` of a dataset (serial; validates values).

    Returns a dict with the kind's arrays: sparse ``ptr`` (int64, local, from 0),
    ``idx``, ``val``; dense ``X``; and ``y`` for matrices.
    """
    ptrs, idxs, vals, ys, Xs = [], [], [], [], []
    off = 0
    for s in ds.shards:
        if s.n_rows == 0 or s.row_stop <= start or s.row_start >= stop:
            continue
        p = ds.shard_path(s)
        if verify:
            _verify(ds, s)
        la, lb = max(start, s.row_start) - s.row_start, min(stop, s.row_stop) - s.row_start
        row0 = s.row_start + la
        with _h5open(p) as f:
            try:
                if ds.kind == "matrix" and ds.dense:
                    X = f["X"][la:lb]
                    V.check_dense(X, row0, p)
                    Xs.append(X)
                else:
                    pn, inn, vn = SPARSE_ARRAYS[ds.kind]
                    ptr = f[pn][la:lb + 1].astype(np.int64)
                    if ptr.size != lb - la + 1:
                        raise DataError(f"{p}: {pn} is shorter than the {s.n_rows} rows the manifest says")
                    if ptr[0] < 0 or ptr[-1] > s.nnz:
                        raise DataError(f"{p}: row pointer value out of range [0, {s.nnz}] near row {row0}")
                    d = np.diff(ptr)
                    if d.size and d.min() < 0:
                        r = int(np.flatnonzero(d < 0)[0])
                        raise DataError(f"{p}: row pointer not monotone at row {row0 + r}")
                    p0, p1 = int(ptr[0]), int(ptr[-1])
                    idx = f[inn][p0:p1]
                    val = f[vn][p0:p1]
                    ptr -= p0
                    V.check_sparse(ds.kind, ptr, idx, val, ds.n_cols, row0, p)
                    ptrs.append(ptr[1:] + off if ptrs else ptr + off)
                    off += p1 - p0
                    idxs.append(idx)
                    vals.append(val)
                if ds.kind == "matrix":
                    y = f["y"][la:lb]
                    V.check_targets(y, ds.task, ds.n_classes, row0, p)
                    ys.append(y)
            except (KeyError, OSError, ValueError) as e:
                raise DataError(f"{p}: cannot read shard ({type(e).__name__}: {e})") from None
    out = {}
    if ds.kind == "matrix" and ds.dense:
        out["X"] = np.concatenate(Xs) if Xs else np.zeros((0, ds.n_cols), dtype=ds.dtype)
    else:
        out["ptr"] = np.concatenate(ptrs) if ptrs else np.zeros(1, dtype=np.int64)
        out["idx"] = np.concatenate(idxs) if idxs else np.zeros(0, dtype=np.int32)
        out["val"] = np.concatenate(vals) if vals else np.zeros(0)
    if ds.kind == "matrix":
        ydt = np.int64 if ds.task == "classification" else np.float64
        out["y"] = np.concatenate(ys).astype(ydt, copy=False) if ys else np.zeros(0, dtype=ydt)
    return out


# ----------------------------------------------------------------------------- matrix

@dataclass
class LocalMatrix:
    """This rank's block of rows of a matrix dataset.

    ``X`` is a ``scipy.sparse.csr_matrix`` / ``csc_matrix`` (int32 indices when the
    column count allows) or a C-contiguous ndarray; ``y`` float64 (regression) or
    int64 labels (classification). Rows ``[row_start, row_stop)`` of ``n_rows``.
    """

    X: Any
    y: np.ndarray
    row_start: int
    row_stop: int
    n_rows: int
    n_cols: int
    nnz_total: int
    task: str
    n_classes: int | None
    meta: dict = field(default_factory=dict)
    dataset: Dataset | None = field(default=None, repr=False)

    @property
    def n_local(self) -> int:
        return self.row_stop - self.row_start


def read_matrix(path_or_dataset, comm=None, layout: str = "csr", balance: str = "rows", dtype=np.float64,
                verify: bool = True) -> LocalMatrix:
    """Read this rank's contiguous block of rows of a matrix dataset (collective).

    Parameters
    ----------
    path_or_dataset : str or Dataset
    comm : MPI communicator, optional
        Default ``MPI.COMM_WORLD``.
    layout : {"csr", "csc", "dense"}
    balance : {"rows", "nnz"}
        Equal row counts, or equal non-zeros per rank.
    dtype : float64 or float32
    verify : bool
        Check the SHA-256 of every shard this rank opens.

    Raises
    ------
    DataError
        On all ranks, if any rank finds a problem.
    """
    import scipy.sparse as sp

    comm = get_comm(comm)
    if layout not in ("csr", "csc", "dense"):
        raise DataError(f"layout must be 'csr', 'csc' or 'dense', got {layout!r}")
    if balance not in ("rows", "nnz"):
        raise DataError(f"balance must be 'rows' or 'nnz', got {balance!r}")
    dtype = np.dtype(dtype)
    ds = _open_on_root(path_or_dataset, comm)
    if ds.kind != "matrix":
        raise DataError(f"{ds.path}: is a {ds.kind!r} dataset, not a matrix")
    start, stop = _ranges(ds, comm, balance)
    blk = _together(comm, lambda: read_rows(ds, start, stop, verify))
    n = stop - start
    if ds.dense:
        X = np.ascontiguousarray(blk["X"], dtype=dtype)
        if layout != "dense":
            X = sp.csr_matrix(X) if layout == "csr" else sp.csc_matrix(X)
    else:
        ptr, idx = blk["ptr"], blk["idx"]
        if ptr[-1] <= np.iinfo(np.int32).max and idx.dtype == np.int32:
            ptr = ptr.astype(np.int32)
        X = sp.csr_matrix((blk["val"].astype(dtype, copy=False), idx, ptr), shape=(n, ds.n_cols))
        if layout == "csc":
            X = X.tocsc()
        elif layout == "dense":
            X = X.toarray()
    return LocalMatrix(X=X, y=blk["y"], row_start=start, row_stop=stop, n_rows=ds.n_rows, n_cols=ds.n_cols,
                       nnz_total=ds.nnz, task=ds.task, n_classes=ds.n_classes, meta=ds.meta, dataset=ds)


def require_task(part, task: str, app: str) -> None:
    """Refuse a matrix dataset whose task is not ``task`` (same on every rank: collective).

    ``part`` is a :class:`LocalMatrix` or :class:`Dataset`; ``app`` names the estimator
    in the message, which tells the user how to convert the data instead.
    """
    if part.task == task:
        return
    ds = part.dataset if isinstance(part, LocalMatrix) else part
    path = ds.path if ds is not None else "dataset"
    if part.task == "classification":
        what = f"classification dataset ({part.n_classes} classes)"
        hint = f"{app} fits real-valued targets: convert the data with --task regression"
    else:
        what = f"{part.task} dataset"
        hint = f"{app} needs class labels: convert the data with --task classification"
    raise collective(DataError(f"{path}: is a {what}; {hint}"))


# ----------------------------------------------------------------------------- bag of words

@dataclass
class LocalCorpus:
    """This rank's documents ``[doc_start, doc_stop)`` of a bag-of-words corpus (CSR-like)."""

    doc_ptr: np.ndarray
    word_ids: np.ndarray
    counts: np.ndarray
    doc_start: int
    doc_stop: int
    n_docs: int
    n_words: int
    n_tokens_total: int
    vocab: list | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.counts.sum(dtype=np.int64))


def _read_vocab(ds: Dataset, comm):
    def load():
        p = ds.meta_file("vocab")
        if not p:
            return None
        with open(p, encoding="utf-8") as f:
            words = f.read().split("\n")
        if words and words[-1] == "":
            words.pop()
        if len(words) != ds.n_cols:
            raise DataError(f"{p}: {len(words)} words but the corpus has n_words={ds.n_cols}")
        return words

    res, err = None, None
    if comm.rank == 0:
        try:
            res = load()
        except (DataError, OSError) as e:
            err = str(e)
    if comm.size > 1:
        res, err = comm.bcast((res, err), root=0)
    if err:
        raise DataError(err)
    return res


def read_bow(path, comm=None, balance: str = "tokens", verify: bool = True, load_vocab: bool = True) -> LocalCorpus:
    """Read this rank's documents of a bag-of-words corpus (collective).

    Parameters
    ----------
    balance : {"tokens", "docs", "nnz"}
        Equal tokens (sum of counts), documents, or distinct (doc, word) pairs per rank.

    Returns ``LocalCorpus`` with ``doc_ptr`` (int64, local), ``word_ids`` and
    ``counts`` (int32). Word ids >= n_words, empty documents and non-positive
    counts raise DataError on all ranks.
    """
    comm = get_comm(comm)
    if balance not in ("tokens", "docs", "nnz"):
        raise DataError(f"balance must be 'tokens', 'docs' or 'nnz', got {balance!r}")
    ds = _open_on_root(path, comm)
    if ds.kind != "bow":
        raise DataError(f"{ds.path}: is a {ds.kind!r} dataset, not a bag-of-words corpus")
    start, stop = _ranges(ds, comm, {"docs": "rows"}.get(balance, balance))
    blk = _together(comm, lambda: read_rows(ds, start, stop, verify))
    vocab = _read_vocab(ds, comm) if load_vocab else None
    return LocalCorpus(doc_ptr=blk["ptr"], word_ids=blk["idx"].astype(np.int32, copy=False),
                       counts=blk["val"].astype(np.int32, copy=False), doc_start=start, doc_stop=stop,
                       n_docs=ds.n_rows, n_words=ds.n_cols,
                       n_tokens_total=int(ds.n_tokens if ds.n_tokens is not None else -1), vocab=vocab,
                       meta=ds.meta)


# ----------------------------------------------------------------------------- ratings

@dataclass
class LocalRatings:
    """This rank's users ``[user_start, user_stop)`` with all their ratings.

    ``users`` are global ids (int32), sorted; ``user_ptr`` (int64) indexes the local
    users' ratings.
    """

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    user_ptr: np.ndarray
    user_start: int
    user_stop: int
    n_users: int
    n_items: int
    n_ratings_total: int
    meta: dict = field(default_factory=dict)


def read_ratings(path, comm=None, balance: str = "ratings", verify: bool = True) -> LocalRatings:
    """Read this rank's contiguous block of users and their ratings (collective).

    Parameters
    ----------
    balance : {"ratings", "users"}
        Equal numbers of ratings (default) or of users per rank.
    """
    comm = get_comm(comm)
    if balance not in ("ratings", "users"):
        raise DataError(f"balance must be 'ratings' or 'users', got {balance!r}")
    ds = _open_on_root(path, comm)
    if ds.kind != "ratings":
        raise DataError(f"{ds.path}: is a {ds.kind!r} dataset, not ratings")
    start, stop = _ranges(ds, comm, "nnz" if balance == "ratings" else "rows")
    blk = _together(comm, lambda: read_rows(ds, start, stop, verify))
    ptr = blk["ptr"]
    users = np.repeat(np.arange(start, stop, dtype=np.int32), np.diff(ptr))
    return LocalRatings(users=users, items=blk["idx"].astype(np.int32, copy=False),
                        values=blk["val"].astype(np.float64, copy=False), user_ptr=ptr, user_start=start,
                        user_stop=stop, n_users=ds.n_rows, n_items=ds.n_cols, n_ratings_total=ds.nnz,
                        meta=ds.meta)
