"""The on-disk dataset format (version 1): a folder with ``manifest.json`` and HDF5 shards.

See ``docs/data-format.md`` for the full description. This module holds the
constants, the manifest reader/validator (:func:`open_dataset`), checksums and the
per-kind table of shard arrays. It is serial: it never touches MPI.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("matrix", "bow", "ratings")
TASKS = ("regression", "classification")

#: For each kind (and layout): names of (row pointer, column index, value) arrays of
#: the CSR-like shard layout, and of the per-row target (or None).
SPARSE_ARRAYS = {
    "matrix": ("indptr", "indices", "data"),
    "bow": ("doc_ptr", "word_ids", "counts"),
    "ratings": ("user_ptr", "items", "values"),
}


def shard_name(i: int) -> str:
    """File name of shard ``i`` (``shard-00000.h5``)."""
    return f"shard-{i:05d}.h5"


def file_sha256(path: str, block: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(block)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


@dataclass
class Shard:
    """One shard entry of a manifest."""

    file: str
    row_start: int
    n_rows: int
    nnz: int
    sha256: str

    @property
    def row_stop(self) -> int:
        return self.row_start + self.n_rows


@dataclass
class Dataset:
    """A validated dataset folder (from :func:`open_dataset`).

    Attributes
    ----------
    path : str
        The dataset folder.
    kind : {"matrix", "bow", "ratings"}
    n_rows : int
        Rows (matrix), documents (bow) or users (ratings).
    n_cols : int
        Features (matrix), vocabulary size (bow) or items (ratings).
    nnz : int
        Stored non-zeros, (doc, word) pairs, or ratings.
    shards : list of Shard
    meta : dict
    dense : bool
        True for a dense matrix (``layout == "dense"``).
    task, n_classes :
        For matrices: ``"regression"`` / ``"classification"`` and the class count.
    """

    path: str
    kind: str
    n_rows: int
    n_cols: int
    nnz: int
    dtype: str
    layout: str
    shards: list
    meta: dict = field(default_factory=dict)
    task: str | None = None
    n_classes: int | None = None
    n_tokens: int | None = None
    manifest: dict = field(default_factory=dict, repr=False)

    @property
    def dense(self) -> bool:
        return self.layout == "dense"

    @property
    def n_users(self) -> int:
        return self.n_rows

    @property
    def n_items(self) -> int:
        return self.n_cols

    @property
    def n_docs(self) -> int:
        return self.n_rows

    @property
    def n_words(self) -> int:
        return self.n_cols

    def shard_path(self, s: Shard) -> str:
        return os.path.join(self.path, s.file)

    def meta_file(self, key: str) -> str | None:
        """Absolute path of a file named in ``meta[key]`` (truth, vocab, id map), or None."""
        name = self.meta.get(key)
        return os.path.join(self.path, name) if name else None


def _req(m: dict, key: str, typ, where: str):
    if key not in m:
        raise DataError(f"{where}: missing key '{key}'")
    v = m[key]
    if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise DataError(f"{where}: key '{key}' must be an integer, got {v!r}")
    if typ is str and not isinstance(v, str):
        raise DataError(f"{where}: key '{key}' must be a string, got {v!r}")
    if typ is int and v < 0:
        raise DataError(f"{where}: key '{key}' must be >= 0, got {v}")
    return v


def read_manifest(path: str) -> dict:
    """Parse ``path/manifest.json`` (DataError naming the file if absent or not JSON)."""
    if not os.path.isdir(path):
        if os.path.isfile(path) and os.path.basename(path) == MANIFEST:
            path = os.path.dirname(path) or "."
        else:
            raise DataError(f"dataset folder not found: {path}")
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isfile(mpath):
        raise DataError(f"{mpath}: manifest not found (not a petuum_mpi dataset folder?)")
    try:
        with open(mpath, encoding="utf-8") as f:
            m = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{mpath}: not valid JSON ({e})") from None
    if not isinstance(m, dict):
        raise DataError(f"{mpath}: manifest must be a JSON object")
    return m


def _check_shard_file(ds: Dataset, s: Shard, where: str) -> None:
    """Open one shard and compare its arrays' shapes and attributes to the manifest."""
    import h5py

    p = ds.shard_path(s)
    if not os.path.isfile(p):
        raise DataError(f"{p}: shard file missing (listed in {where})")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DataError(f"{p}: cannot open shard as HDF5 ({e})") from None
    with f:
        a = f.attrs
        for key, want in (("kind", ds.kind), ("row_start", s.row_start), ("n_rows", s.n_rows), ("nnz", s.nnz)):
            if key in a:
                got = a[key]
                got = got.decode() if isinstance(got, bytes) else got
                if (str(got) if isinstance(want, str) else int(got)) != want:
                    raise DataError(f"{p}: shard attribute {key}={got!r} but manifest says {want!r}")

        def shape(name):
            if name not in f:
                raise DataError(f"{p}: shard has no array '{name}'")
            return f[name].shape

        if ds.kind == "matrix" and ds.dense:
            if shape("X") != (s.n_rows, ds.n_cols):
                raise DataError(
                    f"{p}: X has shape {shape('X')} but manifest says ({s.n_rows}, {ds.n_cols})"
                )
        else:
            ptr, idx, val = SPARSE_ARRAYS[ds.kind]
            if shape(ptr) != (s.n_rows + 1,):
                raise DataError(f"{p}: {ptr} has {shape(ptr)[0] if shape(ptr) else 0} entries but manifest says "
                                f"{s.n_rows} rows (+1)")
            for name in (idx, val):
                if shape(name) != (s.nnz,):
                    raise DataError(f"{p}: {name} has {shape(name)} entries but manifest says nnz={s.nnz}")
        if ds.kind == "matrix" and shape("y") != (s.n_rows,):
            raise DataError(f"{p}: y has shape {shape('y')} but manifest says {s.n_rows} rows")


def open_dataset(path: str, check_shards: bool = True) -> Dataset:
    """Open and validate a dataset folder (serial).

    Parameters
    ----------
    path : str
        Dataset folder (or its ``manifest.json``).
    check_shards : bool
        Also open every shard and compare array shapes to the manifest (cheap:
        metadata only). Checksums are verified by the readers, not here.

    Raises
    ------
    DataError
        Missing folder or manifest, bad JSON, unknown version or kind, shard files
        missing, or manifest and shards disagreeing on rows, nnz or shape. The
        message names the file.
    """
    if isinstance(path, Dataset):
        return path
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.basename(path) == MANIFEST:
        path = os.path.dirname(path) or "."
    m = read_manifest(path)
    where = os.path.join(path, MANIFEST)
    ver = m.get("format_version")
    if ver != FORMAT_VERSION:
        raise DataError(f"{where}: unsupported format_version {ver!r} (this petuum_mpi reads {FORMAT_VERSION})")
    kind = _req(m, "kind", str, where)
    if kind not in KINDS:
        raise DataError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
    layout = m.get("layout", "sparse")
    if layout not in ("sparse", "dense") or (layout == "dense" and kind != "matrix"):
        raise DataError(f"{where}: bad layout {layout!r} for kind {kind!r}")
    n_rows = _req(m, "n_rows", int, where)
    n_cols = _req(m, "n_cols", int, where)
    nnz = _req(m, "nnz", int, where)
    dtype = m.get("dtype", "float64")
    try:
        np.dtype(dtype)
    except TypeError:
        raise DataError(f"{where}: bad dtype {dtype!r}") from None
    raw = m.get("shards")
    if not isinstance(raw, list):
        raise DataError(f"{where}: 'shards' must be a list")
    shards = []
    row = 0
    total = 0
    for i, e in enumerate(raw):
        w = f"{where}: shards[{i}]"
        if not isinstance(e, dict):
            raise DataError(f"{w} must be an object")
        s = Shard(
            file=_req(e, "file", str, w),
            row_start=_req(e, "row_start", int, w),
            n_rows=_req(e, "n_rows", int, w),
            nnz=_req(e, "nnz", int, w),
            sha256=str(e.get("sha256", "")),
        )
        if os.path.basename(s.file) != s.file:
            raise DataError(f"{w}: file name {s.file!r} must be a plain name inside the dataset folder")
        if s.row_start != row:
            raise DataError(f"{w} ({s.file}): row_start={s.row_start} but previous shards end at row {row}")
        row += s.n_rows
        total += s.nnz
        shards.append(s)
    if row != n_rows:
        raise DataError(f"{where}: shards hold {row} rows but n_rows={n_rows}")
    if total != nnz:
        raise DataError(f"{where}: shards hold nnz={total} but manifest nnz={nnz}")
    task = m.get("task")
    n_classes = m.get("n_classes")
    if kind == "matrix":
        task = task or "regression"
        if task not in TASKS:
            raise DataError(f"{where}: unknown task {task!r} (expected regression or classification)")
        if task == "classification":
            if not isinstance(n_classes, int) or n_classes < 1:
                raise DataError(f"{where}: classification needs an integer n_classes >= 1, got {n_classes!r}")
        else:
            n_classes = None
    meta = m.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"{where}: 'meta' must be an object")
    ds = Dataset(path=path, kind=kind, n_rows=n_rows, n_cols=n_cols, nnz=nnz, dtype=str(dtype), layout=layout,
                 shards=shards, meta=meta, task=task, n_classes=n_classes, n_tokens=m.get("n_tokens"), manifest=m)
    if check_shards:
        for s in shards:
            _check_shard_file(ds, s, where)
        for key in ("vocab", "truth", "id_map"):
            p = ds.meta_file(key)
            if p and not os.path.isfile(p):
                raise DataError(f"{p}: file named in meta['{key}'] is missing")
    return ds


def write_manifest(path: str, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (temporary file, fsync, rename)."""
    tmp = os.path.join(path, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(path, MANIFEST))


def to_jsonable(v: Any) -> Any:
    """NumPy scalars/arrays -> plain Python for the manifest's ``meta``."""
    if isinstance(v, dict):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v
