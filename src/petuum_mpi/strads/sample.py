"""The SAP filter's view of a row-partitioned X on rank 0: every row (sparse) or a row sample (dense)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..runtime import get_comm
from .schedulers import RowSample


#: sparse X up to this many non-zeros: rank 0 keeps all rows (exact dependencies)
EXACT_NNZ = 1 << 26


def gather_row_sample(X_local, n_total: int, max_rows: int = 1000, seed: int = 0, comm=None,
                      exact_nnz: int = EXACT_NNZ):
    """Collective: rank 0 gets a :class:`RowSample` of about ``max_rows`` rows.

    Each rank picks ``round(max_rows * n_local / n_total)`` of its rows at random
    and sends them once; other ranks get ``None``. Sparse X with at most
    ``exact_nnz`` non-zeros in all is sent whole: a row sample of sparse columns
    sees almost none of their overlaps (a column with 40 non-zeros in 20,000 rows
    has ~2 in a 1,000-row sample), so its correlations would read as 0; with every
    row the filter's |x_j . x_k| / (|x_j| |x_k|) are exact (float32), at ~8 bytes
    per non-zero on rank 0.
    """
    comm = get_comm(comm)
    n_local = X_local.shape[0]
    if sp.issparse(X_local):
        nnz = comm.allreduce(int(X_local.nnz)) if comm.size > 1 else int(X_local.nnz)
        if nnz <= exact_nnz:
            max_rows = n_total
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
