"""Numba kernels of the parameter server's hot paths (no MPI inside).

Tables are stored as *units*: rows of ``bw`` values (a row, or a column block of
a wide row). Unit ``u`` lives on rank ``u % P`` in slot ``u // P`` of its
shard. Each kernel makes one pass over the units it is given, instead of the
three or four passes (and temporaries) that NumPy fancy indexing would need.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def apply_own(shard, cache_u, oplog_u, units, P):
    """Move my own coalesced deltas into my shard: shard[u // P] += oplog[u],
    cache[u] += oplog[u] (read-my-writes), oplog[u] = 0."""
    bw = oplog_u.shape[1]
    for k in range(units.size):
        u = units[k]
        s = u // P
        for j in range(bw):
            v = oplog_u[u, j]
            shard[s, j] += v
            cache_u[u, j] += v
            oplog_u[u, j] = 0


@njit(cache=True, nogil=True)
def pack_units(oplog_u, cache_u, units, out):
    """Copy deltas of ``units`` into the send buffer ``out``, fold them into the
    cache and clear them from the oplog."""
    bw = oplog_u.shape[1]
    for k in range(units.size):
        u = units[k]
        for j in range(bw):
            v = oplog_u[u, j]
            out[k, j] = v
            cache_u[u, j] += v
            oplog_u[u, j] = 0


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
def add_rows(shard, slots, vals):
    """shard[slots[k]] += vals[k] (a received mailbox chunk)."""
    bw = vals.shape[1]
    for k in range(slots.size):
        s = slots[k]
        for j in range(bw):
            shard[s, j] += vals[k, j]


@njit(cache=True, nogil=True)
def gather_own(cache_u, shard, units, P):
    """cache[u] = shard[u // P] for units I own (a local fetch)."""
    bw = cache_u.shape[1]
    for k in range(units.size):
        u = units[k]
        s = u // P
        for j in range(bw):
            cache_u[u, j] = shard[s, j]


def warmup(dtypes) -> None:
    """Compile the kernels for the given table dtypes (see runtime.compile_once)."""
    units = np.zeros(1, dtype=np.int64)
    for dt in dtypes:
        a, b, c = (np.zeros((1, 2), dtype=dt) for _ in range(3))
        apply_own(a, b, c, units, 1)
        pack_units(a, b, units, c)
        hold_units(a, b, units)
        add_rows(a, units, b)
        add_rows(a[:, :1], units, b[:, :1])  # column range of a table (strided view)
        gather_own(a, b, units, 1)
