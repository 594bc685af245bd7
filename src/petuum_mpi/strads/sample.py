"""Gathering a row sample of a row-partitioned X on rank 0 (for the SAP filter)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..runtime import get_comm
from .schedulers import RowSample


def gather_row_sample(X_local, n_total: int, max_rows: int = 1000, seed: int = 0, comm=None):
    """Collective: rank 0 gets a :class:`RowSample` of about ``max_rows`` rows.

    Each rank picks ``round(max_rows * n_local / n_total)`` of its rows at random
    and sends them once; other ranks get ``None``.
    """
    comm = get_comm(comm)
    n_local = X_local.shape[0]
    if not sp.issparse(X_local):  # keep a dense sample below ~256 MB (float32)
        max_rows = min(max_rows, max(64, (1 << 26) // max(1, X_local.shape[1])))
    k = n_local if n_total <= max_rows else int(round(max_rows * n_local / max(n_total, 1)))
    k = min(k, n_local)
    rng = np.random.default_rng(seed + 7919 * comm.rank)
    rows = np.sort(rng.choice(n_local, size=k, replace=False)) if k < n_local else np.arange(n_local)
    if sp.issparse(X_local):
        part = sp.csr_matrix(X_local)[rows]
    else:
        part = np.asarray(X_local[rows], dtype=np.float32)
    parts = comm.gather(part, root=0) if comm.size > 1 else [part]
    if comm.rank != 0:
        return None
    S = sp.vstack(parts) if sp.issparse(part) else np.vstack(parts)
    return RowSample(S)
