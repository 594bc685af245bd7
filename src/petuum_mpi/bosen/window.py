"""The one MPI window of a parameter server and the transport rules around it.

Every rank's window holds, at the same offsets on every rank: the header
(:mod:`.header`), one mailbox ring of ``cap`` bytes per origin, a delta log per
table (``t.logcap`` bytes, see :mod:`.mailbox`) and the shard of every table (room for the largest shard, rank 0's). It is allocated with
``Win.Allocate`` and stays in one ``Lock_all`` epoch for its lifetime.

Transports without shared memory or hardware RMA (Open MPI osc/ucx over TCP)
complete an origin's ``Put``/``Get`` + ``Flush`` only while the *target* is
inside MPI's progress engine. :meth:`Window.poke` tests a receive that never
matches, which enters it (``Win.Sync``, ``Iprobe`` and flushes do not); waits
call it between polls. At shutdown an unused window outlives the main one
(osc/ucx stops progressing once a rank has no window left, and a peer still in
``Win.Free`` then hung).
"""

from __future__ import annotations

import numpy as np

from .header import Header, header_dtype
from .sync import test_barrier

CHUNK_HDR = 64  # bytes in front of every mailbox chunk (see mailbox.py)


def align(n: int, a: int = 64) -> int:
    return -(-n // a) * a


def ring_bytes(tables, P: int, mailbox_mb: float | None) -> int:
    """Size of one mailbox ring: ~1.1 x total table bytes / P, within [256 KiB, 32 MiB],
    always room for two chunks of the widest unit."""
    if mailbox_mb is not None:
        cap = int(mailbox_mb * 2**20)
    else:
        total = sum(t.lay.n_units * t.lay.unit_bytes for t in tables)
        cap = int(1.1 * total / P) + 2**16
    max_unit = max(t.lay.unit_bytes for t in tables) + 8
    cap = max(cap, 2 * (CHUNK_HDR + max_unit) + 64, 256 * 1024)
    cap = min(cap, max(32 * 2**20, 2 * (CHUNK_HDR + max_unit) + 64))
    return align(cap, 64) if P > 1 else 0


def log_bytes(t, P: int, delta_log_mb: float | None) -> int:
    """Size of table ``t``'s delta log (mailbox.py): by default its largest shard (rank 0's)
    within [64 KiB, 64 MiB] (a log longer than the shard is never worth reading); 0 = no log."""
    if P == 1 or delta_log_mb == 0:
        return 0
    if delta_log_mb is not None:
        return align(max(int(delta_log_mb * 2**20), 4 * CHUNK_HDR), 64)
    return align(min(max(t.lay.n_slots(0) * t.lay.unit_bytes, 64 * 1024), 64 * 2**20), 64)


class Window:
    """Collective: allocate the window, place header, rings, delta log and shards; ``g`` = counters."""

    def __init__(self, comm, tables, mailbox_mb: float | None, g: dict, delta_log_mb: float | None = None):
        from mpi4py import MPI

        self.MPI, self.comm, self.g = MPI, comm, g
        self.P, self.me = P, me = comm.size, comm.rank
        self.cap = ring_bytes(tables, P, mailbox_mb)
        T = len(tables)
        self.ring0 = align(header_dtype(P, T).itemsize)  # ring p starts at ring0 + p * cap
        off = self.ring0 + self.cap * P
        for t in tables:  # the delta logs: t.logcap bytes at t.log0
            t.log0, t.logcap = off, log_bytes(t, P, delta_log_mb)
            off += t.logcap
        for t in tables:
            off = align(off)
            t.offset = off  # same on every rank
            off += t.lay.n_slots(0) * t.lay.unit_bytes
        for t in tables:  # freshness of every slot: (newest tag, its origin, newest tag of any other origin)
            off = align(off, 8)
            t.foff = off
            off += t.lay.n_slots(0) * 24
        size = align(max(off, 64))
        self.nbytes = size
        self.win = MPI.Win.Allocate(size, 1, comm=comm)
        self.mem = np.frombuffer(self.win.tomemory(), dtype=np.uint8, count=size)
        self.mem[:] = 0
        self.hdr = Header(self.mem, P, T)
        self.remote_hdr = Header(np.zeros(self.hdr.nbytes, dtype=np.uint8), P, T)  # a fetched copy
        for t in tables:
            t.shard = self.mem[t.offset : t.offset + t.nslots * t.lay.unit_bytes].view(t.dtype).reshape(
                t.nslots, t.lay.bw
            )
            t.init_shard(me, P)
            t.fresh = self.mem[t.foff : t.foff + t.nslots * 24].view(np.int64).reshape(t.nslots, 3)
            t.fresh[:, 1] = -1  # initial values: tag 0 of no origin
        # A receive that never matches: testing it drives MPI's progress engine.
        self._pcomm = comm.Dup() if P > 1 else None
        self._pbuf = np.zeros(1, dtype=np.int64)
        self._preq = self._pcomm.Irecv([self._pbuf, MPI.BYTE], MPI.ANY_SOURCE, 0) if P > 1 else None
        # An unused window that outlives the main one (freed after a barrier that follows it).
        self._keepalive = MPI.Win.Allocate(8, 1, comm=comm) if P > 1 else None
        self.win.Lock_all()

    # -------------------------------------------------------------- transport
    def poke(self) -> None:
        """Enter MPI's progress engine (serves others' Put/Get on progress-less transports)."""
        self._preq.Test()

    def get(self, buf: np.ndarray, o: int, disp: int) -> None:
        """Start a ``Get`` of ``buf.nbytes`` bytes at ``disp`` of ``o``'s window."""
        self.win.Get([buf, self.MPI.BYTE], o, target=(disp, buf.nbytes, self.MPI.BYTE))

    def put(self, buf: np.ndarray, o: int, disp: int) -> None:
        """Start a ``Put`` of ``buf``'s bytes to ``disp`` of ``o``'s window."""
        self.win.Put([buf, self.MPI.BYTE], o, target=(disp, buf.nbytes, self.MPI.BYTE))

    def flush(self, o: int) -> None:
        self.win.Flush(o)

    def read_header(self, o: int) -> Header:
        """``o``'s header (a copy, valid until the next call)."""
        self.get(self.remote_hdr.raw, o, 0)
        self.win.Flush(o)
        self.g["gets"] += 1
        return self.remote_hdr

    # -------------------------------------------------------------- seqlock (writer side)
    def begin_write(self) -> None:
        self.hdr.version[0] += 1
        self.win.Sync()

    def end_write(self) -> None:
        self.win.Sync()
        self.hdr.version[0] += 1
        self.win.Sync()

    # -------------------------------------------------------------- shutdown
    def free(self) -> None:
        """Collective: free the window, serving the others until all are out of ``Win.Free``."""
        if self._preq is not None:
            self._preq.Cancel()
            self._preq.Wait()
            self._pcomm.Free()
        self.win.Unlock_all()
        self.win.Free()
        self.mem = None
        if self.P > 1:
            test_barrier(self.comm)
            self._keepalive.Free()
