"""Value checks shared by the writers and the readers (vectorised NumPy).

Each check raises :class:`DataError` naming ``where`` (a shard file or an input
array) and the first offending global row.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

_WHAT = {
    "matrix": ("row", "column index", "value"),
    "bow": ("document", "word id", "count"),
    "ratings": ("user", "item id", "rating"),
}


def check_ptr(ptr: np.ndarray, nnz: int, row0: int, where: str, kind: str = "matrix") -> None:
    """Row pointer starts at 0, never decreases and ends at ``nnz``."""
    row = _WHAT[kind][0]
    if ptr.size == 0:
        raise DataError(f"{where}: empty row pointer")
    if ptr[0] != 0:
        raise DataError(f"{where}: row pointer starts at {int(ptr[0])}, expected 0 ({row} {row0})")
    d = np.diff(ptr)
    bad = np.flatnonzero(d < 0)
    if bad.size:
        r = int(bad[0])
        raise DataError(f"{where}: row pointer not monotone at {row} {row0 + r} ({int(ptr[r])} -> {int(ptr[r + 1])})")
    if ptr[-1] != nnz:
        raise DataError(f"{where}: row pointer ends at {int(ptr[-1])} but {nnz} entries are stored")


def _row_of(ptr: np.ndarray, pos: int) -> int:
    return int(np.searchsorted(ptr, pos, side="right") - 1)


def check_sparse(kind: str, ptr, idx, val, n_cols: int, row0: int, where: str) -> None:
    """Indices in ``[0, n_cols)``, values finite (counts positive integers for bow)."""
    row, iname, vname = _WHAT[kind]
    check_ptr(ptr, idx.size, row0, where, kind)
    if idx.size:
        lo, hi = idx.min(), idx.max()
        if lo < 0 or hi >= n_cols:
            pos = int(np.flatnonzero((idx < 0) | (idx >= n_cols))[0])
            raise DataError(
                f"{where}: {iname} {int(idx[pos])} out of range [0, {n_cols}) at {row} {row0 + _row_of(ptr, pos)}"
            )
    if kind == "bow":
        if val.size and val.min() <= 0:
            pos = int(np.flatnonzero(val <= 0)[0])
            raise DataError(
                f"{where}: count {int(val[pos])} must be positive at document {row0 + _row_of(ptr, pos)}"
            )
        empty = np.flatnonzero(np.diff(ptr) == 0)
        if empty.size:
            raise DataError(f"{where}: document {row0 + int(empty[0])} is empty ({empty.size} empty documents)")
    elif val.size and val.dtype.kind == "f":
        fin = np.isfinite(val)
        if not fin.all():
            pos = int(np.flatnonzero(~fin)[0])
            raise DataError(f"{where}: {vname} {val[pos]} (not finite) at {row} {row0 + _row_of(ptr, pos)}")


def check_dense(X: np.ndarray, row0: int, where: str) -> None:
    """All values finite."""
    if X.size and X.dtype.kind == "f":
        fin = np.isfinite(X)
        if not fin.all():
            r, c = np.argwhere(~fin)[0]
            raise DataError(f"{where}: value {X[r, c]} (not finite) at row {row0 + int(r)}, column {int(c)}")


def check_targets(y: np.ndarray, task: str, n_classes, row0: int, where: str) -> None:
    """Targets finite; class labels integers in ``[0, n_classes)``."""
    if y.size == 0:
        return
    if y.dtype.kind == "f":
        fin = np.isfinite(y)
        if not fin.all():
            r = int(np.flatnonzero(~fin)[0])
            raise DataError(f"{where}: target y={y[r]} (not finite) at row {row0 + r}")
    if task == "classification":
        bad = (y < 0) | (y >= n_classes)
        if y.dtype.kind == "f":
            bad |= y != np.round(y)
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: label {y[r]} outside [0, {n_classes}) at row {row0 + r}")
