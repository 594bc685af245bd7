"""Numba kernels of the parameter server's hot paths (no MPI inside).

Tables are stored as *units*: rows of ``bw`` values (a row, or a column block of
a wide row). Unit ``u`` lives on rank ``u % P`` in slot ``u // P`` of its
shard. A reader's cached copy of unit ``u`` is row ``cs[u]`` of ``cache_u``
(``cs[u] < 0``: not cached; an unbounded cache has ``cs[u] = u``). Each kernel makes one pass over the units it is given, instead of the
three or four passes (and temporaries) that NumPy fancy indexing would need.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def apply_own(shard, cache_u, cs, oplog_u, os, units, P):
    """Move my own coalesced deltas into my shard: shard[u // P] += oplog[u],
    cache[u] += oplog[u] if cached (read-my-writes), oplog[u] = 0 (the oplog's
    row of unit ``u`` is ``os[u]``)."""
    bw = oplog_u.shape[1]
    for k in range(units.size):
        u = units[k]
        s = u // P
        c = cs[u]
        r = os[u]
        for j in range(bw):
            v = oplog_u[r, j]
            shard[s, j] += v
            if c >= 0:
                cache_u[c, j] += v
            oplog_u[r, j] = 0


@njit(cache=True, nogil=True)
def pack_units(oplog_u, os, cache_u, cs, units, out):
    """Copy deltas of ``units`` (rows ``os[u]`` of ``oplog_u``) into the send buffer
    ``out``, fold them into the cached copies and clear them from the oplog."""
    bw = oplog_u.shape[1]
    for k in range(units.size):
        u = units[k]
        c = cs[u]
        r = os[u]
        for j in range(bw):
            v = oplog_u[r, j]
            out[k, j] = v
            if c >= 0:
                cache_u[c, j] += v
            oplog_u[r, j] = 0


@njit(cache=True, nogil=True)
def hold_units(oplog_u, held_u, units):
    """Move deltas of a closed clock that could not be sent yet out of the
    oplog: held[u] += oplog[u], oplog[u] = 0 (later incs stay apart)."""
    bw = oplog_u.shape[1]
    for k in range(units.size):
        u = units[k]
        for j in range(bw):
            held_u[u, j] += oplog_u[u, j]
            oplog_u[u, j] = 0


@njit(cache=True, nogil=True)
def add_pool(out, units, ks, pool, ps, nb, cols):
    """Read-my-writes from a bounded oplog: for k in ``ks``, unit ``u = units[k]`` (row
    ``ps[u]`` of ``pool``) is block ``u % nb`` of row ``k // nb`` of ``out`` (``cols`` wide)."""
    bw = pool.shape[1]
    for q in range(ks.size):
        k = ks[q]
        u = units[k]
        r = ps[u]
        i = k // nb
        c0 = (u % nb) * bw
        for j in range(min(bw, cols - c0)):
            out[i, c0 + j] += pool[r, j]


@njit(cache=True, nogil=True)
def add_rows(shard, slots, vals):
    """shard[slots[k]] += vals[k] (a received mailbox chunk)."""
    bw = vals.shape[1]
    for k in range(slots.size):
        s = slots[k]
        for j in range(bw):
            shard[s, j] += vals[k, j]


@njit(cache=True, nogil=True)
def gather_own(cache_u, cs, shard, units, P):
    """cache[u] = shard[u // P] for units I own (a local fetch; all cached)."""
    bw = cache_u.shape[1]
    for k in range(units.size):
        u = units[k]
        s = u // P
        c = cs[u]
        for j in range(bw):
            cache_u[c, j] = shard[s, j]


@njit(cache=True, nogil=True)
def count_nnz(src_u, ss, units, out):
    """out[k] = number of nonzero deltas in unit units[k] (row ``ss[u]`` of ``src_u``)."""
    bw = src_u.shape[1]
    for k in range(units.size):
        r = ss[units[k]]
        n = 0
        for j in range(bw):
            if src_u[r, j] != 0:
                n += 1
        out[k] = n


@njit(cache=True, nogil=True)
def pack_sparse(src_u, ss, cache_u, cs, units, counts, cols, vals):
    """Sparse twin of pack_units: write the nonzero deltas of ``units`` as
    (column, value) pairs, ``counts[k]`` per unit, fold them into the cache and
    clear them from ``src_u``."""
    bw = src_u.shape[1]
    p = 0
    for k in range(units.size):
        u = units[k]
        c = cs[u]
        r = ss[u]
        n = 0
        for j in range(bw):
            v = src_u[r, j]
            if v != 0:
                cols[p] = j
                vals[p] = v
                if c >= 0:
                    cache_u[c, j] += v
                src_u[r, j] = 0
                p += 1
                n += 1
        counts[k] = n


@njit(cache=True, nogil=True)
def add_sparse(shard, slots, counts, cols, vals):
    """shard[slots[k], cols[..]] += vals[..] (a received sparse chunk)."""
    p = 0
    for k in range(slots.size):
        s = slots[k]
        for _ in range(counts[k]):
            shard[s, cols[p]] += vals[p]
            p += 1


@njit(cache=True, nogil=True)
def add_rows_to(recv, us, cu, vals):
    """recv[i] += vals[j] where us[i] == cu[j] (``us`` sorted)."""
    bw = vals.shape[1]
    for j in range(cu.size):
        i = np.searchsorted(us, cu[j])
        if i < us.size and us[i] == cu[j]:
            for c in range(bw):
                recv[i, c] += vals[j, c]


@njit(cache=True, nogil=True)
def add_sparse_to(recv, us, cu, counts, cols, vals):
    """Sparse twin of add_rows_to."""
    p = 0
    for j in range(cu.size):
        n = counts[j]
        i = np.searchsorted(us, cu[j])
        if i < us.size and us[i] == cu[j]:
            for q in range(p, p + n):
                recv[i, cols[q]] += vals[q]
        p += n


@njit(cache=True, nogil=True)
def log_rows(cache_u, cs, units, vals, want, base, pos):
    """A dense delta-log entry at position ``pos``: cache[u] += vals for the units the
    fetch wants whose cached copy predates the entry (base[u] <= pos)."""
    bw = vals.shape[1]
    for k in range(units.size):
        u = units[k]
        if want[u] and base[u] <= pos:
            cu = cs[u]
            for c in range(bw):
                cache_u[cu, c] += vals[k, c]


@njit(cache=True, nogil=True)
def log_sparse(cache_u, cs, units, counts, cols, vals, want, base, pos):
    """Sparse twin of log_rows."""
    p = 0
    for k in range(units.size):
        u = units[k]
        n = counts[k]
        if want[u] and base[u] <= pos:
            cu = cs[u]
            for q in range(p, p + n):
                cache_u[cu, cols[q]] += vals[q]
        p += n


@njit(cache=True, nogil=True)
def note_fresh(fresh, slots, tag, origin):
    """Owner: data of ``origin`` tagged ``tag`` reached ``slots``. ``fresh[s]`` =
    (newest tag, its origin, newest tag of every other origin), so that the newest
    tag of origins other than any one reader is known (``fresh_for``)."""
    for k in range(slots.size):
        s = slots[k]
        if fresh[s, 1] == origin:
            if tag > fresh[s, 0]:
                fresh[s, 0] = tag
        elif tag > fresh[s, 0]:
            fresh[s, 2] = fresh[s, 0]
            fresh[s, 0] = tag
            fresh[s, 1] = origin
        elif tag > fresh[s, 2]:
            fresh[s, 2] = tag


@njit(cache=True, nogil=True)
def log_fresh(ofresh, units, want, base, pos, tag):
    """A delta-log entry of another origin tagged ``tag`` at ``pos``: the copies it
    updates (see log_rows) now hold data that fresh."""
    for k in range(units.size):
        u = units[k]
        if want[u] and base[u] <= pos and tag > ofresh[u]:
            ofresh[u] = tag


def fresh_for(fresh: np.ndarray, me: int) -> np.ndarray:
    """Newest data tag per slot of ``fresh`` rows (n, 3) from origins other than ``me``."""
    return np.where(fresh[:, 1] == me, fresh[:, 2], fresh[:, 0])


def data_tag(tag: int) -> int:
    """The clock tag of a chunk's data from its header's tag field (non-final chunks
    carry ``-1 - tag``, the final chunk of a send ``tag``; see mailbox.py)."""
    return tag if tag >= 0 else -1 - tag


def warmup(dtypes) -> None:
    """Compile the kernels for the given table dtypes (see runtime.compile_once)."""
    units = np.zeros(1, dtype=np.int64)
    for dt in dtypes:
        a, b, c = (np.zeros((1, 2), dtype=dt) for _ in range(3))
        apply_own(a, b, units, c, units, units, 1)
        pack_units(a, units, b, units, units, c)
        add_pool(a, units, units, b, units, 1, 2)
        hold_units(a, b, units)
        add_rows(a, units, b)
        add_rows(a[:, :1], units, b[:, :1])  # column range of a table (strided view)
        gather_own(a, units, b, units, 1)
        cnt, v1 = np.zeros(1, dtype=np.int32), np.zeros(1, dtype=dt)
        count_nnz(a, units, units, cnt)
        add_rows_to(a, units, units, b)
        want = np.zeros(1, dtype=np.bool_)
        log_rows(a, units, units, b, want, units, 0)
        note_fresh(np.zeros((1, 3), dtype=np.int64), units, 1, 0)
        log_fresh(np.zeros(1, dtype=np.int64), units, want, units, 0, 1)
        for cdt in (np.uint16, np.int32):  # column indices (TableState.col_dtype)
            cols = np.zeros(1, dtype=cdt)
            pack_sparse(a, units, b, units, units, cnt, cols, v1)
            add_sparse(a, units, cnt, cols, v1)
            add_sparse_to(a, units, units, cnt, cols, v1)
            log_sparse(a, units, units, cnt, cols, v1, want, units, 0)
