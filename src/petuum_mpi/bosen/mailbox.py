"""The mailbox protocol: how updates get from an origin into an owner's shard.

Every owner's window has one ring of ``cap`` bytes per origin. At ``clock()`` an
origin packs its dirty units per owner into chunks, ``Put``s them into its ring
at the owner, flushes, then ``Put``s its new ring head into the owner's header
(``written[origin]``). A chunk is a 64-byte header of int64s
``(kind, seq, tag, tid, nunits, nbytes, 0, 0)``, the unit ids, then the unit
values; a chunk that would wrap is preceded by a SKIP marker and starts at 0.
The last chunk of a clock carries ``tag`` (the new clock; others -1).

The owner applies waiting chunks whenever it enters the library
(:meth:`Mailboxes.drain`, inside the seqlock) and publishes ``consumed[p]``,
``consumed_seq[p]`` and ``applied[p] = max(applied[p], tag)``. Only ``Put`` and
``Get`` are used: they complete without the target's help where a
floating-point ``Accumulate`` stalls until the target calls MPI.

If a ring is full, the rest is *held* (oplog.py) and the tag remembered; later
calls retry (:meth:`Mailboxes.retry`). Nothing waits and nothing is lost. Until
the owner has consumed a chunk, the origin keeps it (``inflight``) and adds it
to rows it fetches from that owner (read-my-writes).
"""

from __future__ import annotations

import collections

import numpy as np

from . import kernels as K
from .layout import by_owner
from .window import CHUNK_HDR, align

_DATA, _SKIP = 1, 2


class Mailboxes:
    """Both sides of the protocol on this rank, for all ``tables`` (indexed by tid)."""

    def __init__(self, win, tables, g: dict):
        self.win, self.tables, self.g = win, tables, g
        self.P = P = win.P
        self.me, self.cap = win.me, win.cap
        # origin side, per owner o
        self.head = np.zeros(P, dtype=np.int64)  # bytes written into my ring at o
        self.known_consumed = np.zeros(P, dtype=np.int64)
        self.seq = np.zeros(P, dtype=np.int64)
        self.pending_tag = np.zeros(P, dtype=np.int64)  # tag still to deliver to o (0 = none)
        self.inflight: list[collections.deque] = [collections.deque() for _ in range(P)]
        self._one = np.zeros(1, dtype=np.int64)

    # ------------------------------------------------------------ origin side
    def deferred(self) -> bool:
        """Some owner's mailbox was full: held deltas or a tag wait to be sent."""
        return bool(self.pending_tag.any())

    def send_clock(self, tag: int) -> None:
        """Send every table's dirty units with ``tag``; my own go straight into my shard."""
        P = self.P
        per = [[] for _ in range(P)]
        for t in self.tables:
            du = np.flatnonzero(t.log.dirty).astype(np.int64)
            if du.size:
                for o, us in by_owner(du, P):
                    per[o].append((t, us))
        self._apply_own(tag, per[self.me])
        for k in range(1, P):
            o = (self.me + k) % P
            if self.pending_tag[o]:  # o's mailbox is still full: queue behind the held deltas
                for t, du in per[o]:
                    t.log.hold(du)
                self.send(o, tag, self._held_for(o), held=True)
            else:
                self.send(o, tag, per[o])

    def retry(self) -> None:
        """Send held deltas (and pending tags) to owners whose mailbox was full."""
        if self.pending_tag.any():
            for o in np.flatnonzero(self.pending_tag):
                self.send(int(o), int(self.pending_tag[o]), self._held_for(int(o)), held=True)

    def _held_for(self, o: int) -> list:
        out = []
        for t in self.tables:
            du = t.log.held_units(o, self.P)
            if du.size:
                out.append((t, du))
        return out

    def _apply_own(self, tag: int, work) -> None:
        win = self.win
        win.begin_write()
        try:
            for t, du in work:
                K.apply_own(t.shard, t.cache.u, t.log.u, du, self.P)
                t.log.dirty[du] = False
            a = win.hdr.applied
            a[self.me] = max(int(a[self.me]), tag)
        finally:
            win.end_write()

    def send(self, o: int, tag: int, work, held: bool = False) -> bool:
        """Put ``work`` (list of (table, units)) and a final tag into o's mailbox.

        ``work`` comes from the oplog, or from the held buffers if ``held``.
        What does not fit is held (moved out of the oplog, so that incs made
        after this ``clock()`` are not sent with it: the bsp gate and the
        bounds depend on that); the tag is remembered and delivered by a later
        call (never waits)."""
        win, cap = self.win, self.cap
        chunks: list = []
        for t, du in work:
            per = max(1, (cap // 2 - CHUNK_HDR) // (8 + t.lay.unit_bytes))
            for i in range(0, du.size, per):
                chunks.append((t, du[i : i + per]))
        if not chunks:
            chunks.append((None, None))
        base = win.ring0 + self.me * cap
        sent_any = False
        ok = True
        i = 0
        try:
            for i, (t, du) in enumerate(chunks):
                nu = 0 if du is None else du.size
                ub = 0 if t is None else t.lay.unit_bytes
                need = align(CHUNK_HDR + 8 * nu + nu * ub, 8)
                head = int(self.head[o])
                pos = head % cap
                skip = cap - pos if pos + need > cap else 0
                if head + skip + need - int(self.known_consumed[o]) > cap:
                    self._refresh_consumed(o)
                    if head + skip + need - int(self.known_consumed[o]) > cap:
                        ok = False
                        break
                if skip:
                    if skip >= CHUNK_HDR:
                        sk = np.zeros(8, dtype=np.int64)
                        sk[0] = _SKIP
                        win.put(sk, o, base + pos)
                        self.inflight[o].append((-1, None, None, None, sk))
                    head += skip
                    pos = 0
                buf = np.zeros(need, dtype=np.uint8)
                hh = buf[:CHUNK_HDR].view(np.int64)
                self.seq[o] += 1
                seq = int(self.seq[o])
                final = i == len(chunks) - 1
                hh[:6] = (_DATA, seq, tag if final else -1, -1 if t is None else t.tid, nu, need)
                if nu:
                    units = buf[CHUNK_HDR : CHUNK_HDR + 8 * nu].view(np.int64)
                    units[:] = du
                    vals = buf[CHUNK_HDR + 8 * nu : CHUNK_HDR + 8 * nu + nu * ub].view(t.dtype).reshape(nu, t.lay.bw)
                    log = t.log
                    K.pack_units(log.held_u if held else log.u, t.cache.u, du, vals)
                    (log.hdirty if held else log.dirty)[du] = False
                    t.stats.sent_units += nu
                    t.stats.sent_bytes += nu * ub
                    self.inflight[o].append((seq, t.tid, units, vals, buf))
                else:
                    self.inflight[o].append((seq, None, None, None, buf))
                win.put(buf, o, base + pos)
                self.head[o] = head + need
                self.g["msgs"] += 1
                self.g["bytes_sent"] += need
                sent_any = True
        finally:
            if sent_any:
                win.flush(o)
                self._one[0] = self.head[o]
                win.put(self._one, o, win.hdr.disp("written", self.me))
                win.flush(o)
        if ok:
            self.pending_tag[o] = 0
        else:
            if not held:
                for t, du in chunks[i:]:
                    if t is not None:
                        t.log.hold(du)
            self.pending_tag[o] = max(int(self.pending_tag[o]), tag)
            self.g["deferred_sends"] += 1
        return ok

    def _refresh_consumed(self, o: int) -> None:
        self.win.get(self._one, o, self.win.hdr.disp("consumed", self.me))
        self.win.flush(o)
        self.known_consumed[o] = self._one[0]

    def add_unapplied(self, o: int, t, us: np.ndarray, recv: np.ndarray, consumed_seq: int) -> None:
        """Read-my-writes: add my chunks of ``t`` that ``o`` had not applied
        (seq > ``consumed_seq``) to ``recv`` = fetched units ``us`` (sorted)."""
        q = self.inflight[o]
        while q and q[0][0] <= consumed_seq:
            q.popleft()
        for seq, tid, cu, cv, _ in q:
            if tid != t.tid:
                continue
            idx = np.searchsorted(cu, us)
            idx[idx >= cu.size] = 0
            m = cu[idx] == us
            if m.any():
                recv[m] += cv[idx[m]]

    def forget_inflight(self) -> None:
        """After a barrier every chunk is applied."""
        for q in self.inflight:
            q.clear()

    # ------------------------------------------------------------ owner side
    def waiting(self) -> bool:
        """Chunks wait in one of my rings (as far as my last view of the header goes)."""
        h = self.win.hdr
        return bool((h.written != h.consumed).any())

    def drain(self) -> int:
        """Apply every chunk waiting in my mailboxes. Returns chunks applied."""
        if self.P == 1:
            return 0
        win = self.win
        win.win.Sync()
        if not self.waiting():
            return 0
        P, cap, h, mem = self.P, self.cap, win.hdr, win.mem
        n = 0
        win.begin_write()
        try:
            for p in range(P):
                written = int(h.written[p])
                cons = int(h.consumed[p])
                base = win.ring0 + p * cap
                while cons < written:
                    pos = cons % cap
                    if cap - pos < CHUNK_HDR:
                        cons += cap - pos
                        continue
                    ch = mem[base + pos : base + pos + CHUNK_HDR].view(np.int64)
                    kind, seq, tag, tid, nu, nbytes = (int(x) for x in ch[:6])
                    if kind == _SKIP:
                        cons += cap - pos
                        continue
                    if nu:
                        t = self.tables[tid]
                        o = base + pos + CHUNK_HDR
                        units = mem[o : o + 8 * nu].view(np.int64)
                        o += 8 * nu
                        vals = mem[o : o + nu * t.lay.unit_bytes].view(t.dtype).reshape(nu, t.lay.bw)
                        K.add_rows(t.shard, units // P, vals)
                    cons += nbytes
                    h.consumed_seq[p] = seq
                    if tag >= 0:
                        h.applied[p] = max(int(h.applied[p]), tag)
                    n += 1
                h.consumed[p] = cons
        finally:
            win.end_write()
        self.g["chunks_applied"] += n
        return n
