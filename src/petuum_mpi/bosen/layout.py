"""How a table's rows are cut into units and spread over ranks.

A *unit* is one column block of one row. Narrow rows are one unit; a wide row
(more than ``WIDE_ROW_BYTES``) is cut into at least ``P`` column blocks of at
most ``MAX_UNIT_BYTES`` each, so a single huge row (a 10M-entry weight vector)
is spread over every rank. Unit ``u = row * n_blocks + block`` lives on rank
``u % P`` in slot ``u // P`` of that rank's shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError

DTYPES = ("float32", "float64", "int32", "int64")
CONSISTENCY = ("bsp", "ssp", "essp", "asp")
WIDE_ROW_BYTES = 64 * 1024
MIN_UNIT_BYTES = 16 * 1024
MAX_UNIT_BYTES = 512 * 1024


@dataclass
class TableSpec:
    """Declaration of one table.

    Parameters
    ----------
    name : str
        Table name used by ``get``/``inc``.
    rows, cols : int
        Shape of the dense table.
    dtype : {"float32", "float64", "int32", "int64"}
    init : scalar or array of shape (rows, cols), default 0
        Initial values (the same on every rank).
    consistency : {"bsp", "ssp", "essp", "asp"} or None
        Per-table model; None uses the server's default.
    staleness : int or None
        Per-table staleness ``s`` (ignored for bsp, where s = 0); None = server default.
    block_cols : int or None
        Force the column-block width (default: chosen from the row size).
    managed_bytes : float or None
        Managed communication (docs/bosen.md): this rank may send up to this many bytes
        per second of the table's pending incs between clocks, the largest relative
        changes first (the rest goes at ``clock()``). None (default): off. Not with bsp.
    cache_mb : float or None
        Bound on this table's per-rank cache of fetched copies: beyond it the least recently
        read units are evicted and fetched again when read (a single read may not need more).
        None (default): the whole table is cached.
    oplog_mb : float or None
        Bound on this rank's pending incs of the table (oplog and held deltas): touched units
        get rows of a pool of this size; when it is full the pending incs are sent early
        (visible sooner, never later; docs/bosen.md). None (default): a dense table-sized
        oplog. Not with bsp.
    """

    name: str
    rows: int
    cols: int
    dtype: str = "float64"
    init: Any = 0
    consistency: str | None = None
    staleness: int | None = None
    block_cols: int | None = None
    managed_bytes: float | None = None
    cache_mb: float | None = None
    oplog_mb: float | None = None


class Layout:
    """Unit geometry of one table on ``P`` ranks."""

    def __init__(self, spec: TableSpec, nranks: int):
        self.spec = spec
        self.rows, self.cols, self.P = spec.rows, spec.cols, nranks
        self.dtype = np.dtype(spec.dtype)
        isz = self.dtype.itemsize
        row_bytes = self.cols * isz
        if spec.block_cols is not None:
            bw = int(spec.block_cols)
        elif row_bytes <= WIDE_ROW_BYTES:
            bw = self.cols
        else:
            nb = max(min(nranks, -(-row_bytes // MIN_UNIT_BYTES)), -(-row_bytes // MAX_UNIT_BYTES))
            bw = -(-self.cols // nb)
        self.bw = max(1, min(bw, self.cols))
        self.nb = -(-self.cols // self.bw)
        self.width = self.nb * self.bw  # padded row width
        self.n_units = self.rows * self.nb
        # slots this rank owns: units me, me+P, me+2P, ...
        self.unit_bytes = self.bw * isz

    def n_slots(self, rank: int) -> int:
        return max(0, -(-(self.n_units - rank) // self.P))

    def owned_units(self, rank: int) -> np.ndarray:
        return np.arange(rank, self.n_units, self.P, dtype=np.int64)

    def units_of_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.nb == 1:
            return rows.astype(np.int64, copy=False)
        return (rows.astype(np.int64)[:, None] * self.nb + np.arange(self.nb, dtype=np.int64)).ravel()


def by_owner(units: np.ndarray, P: int) -> list[tuple[int, np.ndarray]]:
    """``units`` (sorted) split by owning rank: ``[(rank, its units, sorted), ...]``, non-empty only."""
    if P == 1:
        return [(0, units)]
    own = units % P
    order = np.argsort(own, kind="stable")
    su, so = units[order], own[order]
    bounds = np.searchsorted(so, np.arange(P + 1))
    return [(o, su[bounds[o] : bounds[o + 1]]) for o in range(P) if bounds[o + 1] > bounds[o]]


def validate_spec(spec: Any) -> TableSpec:
    if isinstance(spec, dict):
        try:
            spec = TableSpec(**spec)
        except TypeError as e:
            raise UsageError(f"table declaration {spec!r}: {e}") from None
    if not isinstance(spec, TableSpec):
        raise UsageError(f"table declaration must be a TableSpec or a dict, got {type(spec).__name__}")
    n = spec.name
    if not isinstance(n, str) or not n:
        raise UsageError(f"table name must be a non-empty string, got {n!r}")
    for k in ("rows", "cols"):
        v = getattr(spec, k)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise UsageError(f"table {n!r}: {k} must be a positive integer, got {v!r}")
    if not _is_dtype(spec.dtype) or str(np.dtype(spec.dtype)) not in DTYPES:
        raise UsageError(f"table {n!r}: dtype must be one of {', '.join(DTYPES)}, got {spec.dtype!r}")
    spec.dtype = str(np.dtype(spec.dtype))
    if spec.consistency is not None and spec.consistency not in CONSISTENCY:
        raise UsageError(f"table {n!r}: consistency must be one of {', '.join(CONSISTENCY)}, got {spec.consistency!r}")
    if spec.staleness is not None and (not isinstance(spec.staleness, (int, np.integer)) or spec.staleness < 0):
        raise UsageError(f"table {n!r}: staleness must be an integer >= 0, got {spec.staleness!r}")
    if spec.block_cols is not None and (not isinstance(spec.block_cols, (int, np.integer)) or spec.block_cols < 1):
        raise UsageError(f"table {n!r}: block_cols must be a positive integer, got {spec.block_cols!r}")
    mb = spec.managed_bytes
    if mb is not None and (isinstance(mb, bool) or not isinstance(mb, (int, float, np.integer, np.floating))
                           or not mb > 0):
        raise UsageError(f"table {n!r}: managed_bytes must be a number > 0 (bytes per second) or None, got {mb!r}")
    for k in ("cache_mb", "oplog_mb"):
        cm = getattr(spec, k)
        if cm is not None and (isinstance(cm, bool) or not isinstance(cm, (int, float, np.integer, np.floating))
                               or not cm > 0):
            raise UsageError(f"table {n!r}: {k} must be a number > 0 or None, got {cm!r}")
    init = spec.init
    if not np.isscalar(init):
        arr = np.asarray(init)
        if arr.shape != (spec.rows, spec.cols):
            raise UsageError(f"table {n!r}: init has shape {arr.shape}, expected ({spec.rows}, {spec.cols})")
    return spec


def _is_dtype(d: Any) -> bool:
    try:
        np.dtype(d)
        return True
    except TypeError:
        return False
