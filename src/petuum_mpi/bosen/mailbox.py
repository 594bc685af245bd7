"""The mailbox protocol: how updates get from an origin into an owner's shard,
and the delta log through which readers fetch only what changed.

Every owner's window has one ring of ``cap`` bytes per origin. At ``clock()`` an
origin packs its dirty units per owner into chunks, ``Put``s them into its ring
at the owner, flushes, then ``Put``s its new ring head into the owner's header
(``written[origin]``). A chunk is a 64-byte header of int64s
``(kind, seq, tag, tid, nunits, nbytes, nnz, origin)`` and a payload:

* ``DATA`` (dense): the unit ids (int64), then the units' values (``nunits x bw``);
* ``SPARSE``: the unit ids (int64), the number of nonzero deltas per unit (int32),
  their column indices within the unit (uint16, or int32 for units of 65,536
  columns or more; ``nnz`` in all), their values (``nnz`` of the table's dtype);
  each part padded to 8 bytes.

A unit travels sparse when that takes at most ``SPARSE_RATIO`` = 1/4 of its dense bytes,
``12 + nnz (2 + itemsize) <= (8 + unit_bytes) / 4`` (``4 +`` for int32 columns) (chosen per unit; a table's units of
one clock are cut into sparse and dense chunks): packing and applying scattered pairs
costs about 3-4x the time per byte of a contiguous add, so a smaller gain in bytes is
lost in time on shared memory. Units whose deltas are all zero do not travel.
``sparse=False``: everything dense, as before.
A chunk that would wrap is preceded by a SKIP marker and starts at 0. The last chunk
of a clock carries ``tag`` (the new clock; others -1).

The owner applies waiting chunks whenever it enters the library
(:meth:`Mailboxes.drain`, inside the seqlock) and publishes ``consumed[p]``,
``consumed_seq[p]`` and ``applied[p] = max(applied[p], tag)``. Only ``Put`` and
``Get`` are used: they complete without the target's help where a
floating-point ``Accumulate`` stalls until the target calls MPI.

**Delta log.** Every chunk an owner applies to a table's shard (its own deltas too)
is also copied, verbatim, into that table's ring of ``t.logcap`` bytes in its window
(same SKIP rule); ``log_head[t]`` counts bytes ever appended, ``log_tail[t]`` is the
oldest position still held, both updated inside the seqlock. A reader that fetched a unit when the
log head was ``L`` (``Cache.base``) can bring its copy to the owner's current state
``H`` by Getting the log bytes ``[L, H)`` and adding the entries of other origins
(its own are already in its copy: they were folded in when sent), when that is
fewer bytes than the units themselves (reads.py).

If a ring is full, the rest is *held* (oplog.py) and the tag remembered; later
calls retry (:meth:`Mailboxes.retry`). Nothing waits and nothing is lost. Until
the owner has consumed a chunk, the origin keeps it (``inflight``) and adds it
to rows it fetches from that owner (read-my-writes).
"""

from __future__ import annotations

import collections
import time

import numpy as np

from . import kernels as K
from .layout import by_owner
from .window import CHUNK_HDR, align

_DATA, _SKIP, _SPARSE = 1, 2, 3
SPARSE_RATIO = 0.25  # a unit travels sparse if that takes at most this share of its dense bytes
MANAGED_INTERVAL = 0.005  # managed communication: at most one send round per table per this many seconds


def chunk_bytes(nu: int, nnz: int | None, t) -> int:
    """Bytes of a chunk of ``nu`` units of ``t``: dense if ``nnz`` is None, else sparse."""
    if nnz is None:
        return align(CHUNK_HDR + 8 * nu + nu * t.lay.unit_bytes, 8)
    return align(CHUNK_HDR + 8 * nu + align(4 * nu, 8) + align(t.col_dtype.itemsize * nnz, 8) + nnz * t.dtype.itemsize,
                 8)


def decode(buf: np.ndarray, off: int, t):
    """The chunk of table ``t`` at byte ``off`` of ``buf``: ``(units, payload)`` with
    payload = ``vals`` (nunits x bw, dense) or ``(counts, cols, vals)`` (sparse)."""
    hh = buf[off : off + CHUNK_HDR].view(np.int64)
    kind, nu, nnz = int(hh[0]), int(hh[4]), int(hh[6])
    o = off + CHUNK_HDR
    units = buf[o : o + 8 * nu].view(np.int64)
    o += 8 * nu
    if kind == _DATA:
        return units, buf[o : o + nu * t.lay.unit_bytes].view(t.dtype).reshape(nu, t.lay.bw)
    counts = buf[o : o + 4 * nu].view(np.int32)
    o += align(4 * nu, 8)
    ci = t.col_dtype.itemsize
    cols = buf[o : o + ci * nnz].view(t.col_dtype)
    o += align(ci * nnz, 8)
    return units, (counts, cols, buf[o : o + nnz * t.dtype.itemsize].view(t.dtype))


def apply_chunk(shard: np.ndarray, slots: np.ndarray, payload) -> None:
    """shard[slots] += a decoded chunk's payload."""
    if isinstance(payload, tuple):
        K.add_sparse(shard, slots, *payload)
    else:
        K.add_rows(shard, slots, payload)


class Mailboxes:
    """Both sides of the protocol on this rank, for all ``tables`` (indexed by tid)."""

    def __init__(self, win, tables, g: dict, sparse: bool = True):
        self.win, self.tables, self.g, self.sparse = win, tables, g, sparse
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

    def managed(self, clock: int) -> None:
        """Managed communication (called from ``inc`` and ``get``): every table with a budget
        (``managed_bytes`` per second, accrued up to one second's worth) sends, between clocks,
        pending incs of units with the largest relative change ``|delta|_1 / |value|_1`` first,
        as long as the estimated chunk bytes fit the accrued budget. Data tag ``clock + 1``
        (this clock's data), never final: ``applied`` and so the guarantee are unchanged and
        the rest goes at ``clock()``. Owners whose mailbox holds deferred deltas are skipped,
        and a full mailbox leaves the units in the oplog (nothing waits)."""
        if self.P == 1:
            return
        now = time.perf_counter()
        for t in self.tables:
            rate = t.spec.managed_bytes
            if rate is None or now - t.mg_last < MANAGED_INTERVAL:
                continue
            t.mg_credit = min(t.mg_credit + rate * (now - t.mg_last), float(rate))
            t.mg_last = now
            du = np.flatnonzero(t.log.dirty).astype(np.int64)
            if not du.size:
                continue
            d = t.log.u[t.log.slot[du]]
            nnz = np.count_nonzero(d, axis=1)
            ad = np.abs(d).sum(axis=1, dtype=np.float64)
            cs = t.cache.slot_of[du]  # relative to my cached copy; uncached units count as all new
            val = np.where(cs >= 0, np.abs(t.cache.u[np.maximum(cs, 0)]).sum(axis=1, dtype=np.float64), 0.0)
            rel = ad / (val + 1e-300)
            cost = np.full(du.size, 8 + t.lay.unit_bytes, dtype=np.float64)
            if self.sparse:
                cost = np.minimum(cost, 12 + nnz * (t.col_dtype.itemsize + t.dtype.itemsize))
            order = np.argsort(-rel, kind="stable")
            order = order[ad[order] > 0]
            take = order[np.cumsum(cost[order]) + CHUNK_HDR * min(self.P, order.size) <= t.mg_credit]
            if not take.size:
                continue
            sent0 = self.g["inc_bytes_sent"]
            t.stats.managed_units += self.send_early(t, np.sort(du[take]), clock)
            spent = self.g["inc_bytes_sent"] - sent0
            t.stats.managed_bytes += spent
            t.mg_credit -= spent

    def send_early(self, t, units: np.ndarray, clock: int) -> int:
        """Send ``units`` (sorted) of ``t``'s oplog now, mid-clock: data tag ``clock + 1``,
        never final (``applied`` and so the guarantee are unchanged). Mine go into my
        shard; owners with deferred sends are skipped and a full mailbox leaves units in
        the oplog (nothing waits). Returns the number of units offered to owners."""
        n = 0
        for o, us in by_owner(units, self.P):
            if o == self.me:
                self._apply_own(clock + 1, [(t, us)], final=False)
            elif not self.pending_tag[o]:
                self.send(o, clock + 1, [(t, us)], final=False)
            else:
                continue
            n += us.size
        return n

    def spill(self, t, clock: int) -> None:
        """A bounded oplog is full (oplog.py): send all of ``t``'s pending deltas early."""
        du = np.flatnonzero(t.log.dirty).astype(np.int64)
        if du.size:
            t.stats.spilled_units += self.send_early(t, du, clock)

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

    def _apply_own(self, tag: int, work, final: bool = True) -> None:
        """My own units' deltas straight into my shard (data tag ``tag``); ``final``: they
        complete my clock ``tag - 1`` (``applied[me] = tag``; managed sends are not final)."""
        win, P = self.win, self.P
        win.begin_write()
        try:
            for t, du in work:
                if not t.logcap:
                    K.apply_own(t.shard, t.cache.u, t.cache.slot_of, t.log.u, t.log.slot, du, P)
                    K.note_fresh(t.fresh, du // P, tag, self.me)
                    t.log.release(du, False)
                    continue
                # through chunks, so that the delta log records my own changes too
                for t_, us, cnt, need in self._plan(t, du, False, t.logcap // 2):
                    buf, units, payload = self._encode(t, us, cnt, False, 0, -1 - tag, need)
                    t.log.release(us, False)
                    apply_chunk(t.shard, units // P, payload)
                    K.note_fresh(t.fresh, units // P, tag, self.me)
                    self._log_append(t, buf, need)
            if final:
                a = win.hdr.applied
                a[self.me] = max(int(a[self.me]), tag)
        finally:
            win.end_write()

    def _plan(self, t, du: np.ndarray, held: bool, limit: int) -> list:
        """Cut units ``du`` of ``t`` into chunks of about ``limit`` payload bytes:
        ``[(t, units, counts or None (dense), chunk bytes), ...]``. Sparse units
        and all-zero units (dropped) only if ``self.sparse``."""
        log = t.log
        src, ss = (log.hu, log.hslot) if held else (log.u, log.slot)
        ub, isz, ci = t.lay.unit_bytes, t.dtype.itemsize, t.col_dtype.itemsize
        out = []
        dense = du
        if self.sparse and du.size:
            cnt = np.empty(du.size, dtype=np.int32)
            K.count_nnz(src, ss, du, cnt)
            zero = cnt == 0
            if zero.any():
                log.release(du[zero], held)
            sp = ~zero & (12 + cnt.astype(np.int64) * (ci + isz) <= SPARSE_RATIO * (8 + ub))
            dense = du[~zero & ~sp]
            if sp.any():
                su, sc = du[sp], cnt[sp]
                cum = np.cumsum(12 + sc.astype(np.int64) * (ci + isz))
                a = 0
                while a < su.size:
                    b = max(int(np.searchsorted(cum, (cum[a - 1] if a else 0) + limit, "right")), a + 1)
                    out.append((t, su[a:b], sc[a:b], chunk_bytes(b - a, int(sc[a:b].sum()), t)))
                    a = b
        per = max(1, (limit - CHUNK_HDR) // (8 + ub))
        for i in range(0, dense.size, per):
            us = dense[i : i + per]
            out.append((t, us, None, chunk_bytes(us.size, None, t)))
        return out

    def _encode(self, t, du: np.ndarray, cnt, held: bool, seq: int, tag: int, need: int):
        """Pack units ``du``'s deltas from the oplog (held ones if ``held``) into a new chunk
        (folding them into the cache, clearing them from the oplog): ``(buf, units, payload)``."""
        log = t.log
        src, ss = (log.hu, log.hslot) if held else (log.u, log.slot)
        buf = np.zeros(need, dtype=np.uint8)
        nu = du.size
        nnz = -1 if cnt is None else int(cnt.sum())
        hh = buf[:CHUNK_HDR].view(np.int64)
        hh[:] = (_DATA if cnt is None else _SPARSE, seq, tag, t.tid, nu, need, max(nnz, 0), self.me)
        units, payload = decode(buf, 0, t)
        units[:] = du
        if cnt is None:
            K.pack_units(src, ss, t.cache.u, t.cache.slot_of, du, payload)
        else:
            K.pack_sparse(src, ss, t.cache.u, t.cache.slot_of, du, *payload)
            t.stats.sent_sparse_units += nu
        return buf, units, payload

    def _log_append(self, t, chunk: np.ndarray, n: int) -> None:
        """Owner, inside the seqlock: copy an applied chunk (``n`` bytes) into ``t``'s delta log."""
        win, i = self.win, t.tid
        cap, h, base = t.logcap, win.hdr, t.log0
        head = int(h.log_head[i])
        if n > cap:  # too big to keep: every copy older than this must be fetched whole
            h.log_head[i] = h.log_tail[i] = head + n
            return
        pos = head % cap
        if pos + n > cap:
            if cap - pos >= CHUNK_HDR:
                win.mem[base + pos : base + pos + 8].view(np.int64)[0] = _SKIP
            head += cap - pos
            pos = 0
        win.mem[base + pos : base + pos + n] = chunk[:n]
        head += n
        h.log_head[i] = head
        h.log_tail[i] = max(int(h.log_tail[i]), head - cap)

    def send(self, o: int, tag: int, work, held: bool = False, final: bool = True) -> bool:
        """Put ``work`` (list of (table, units)) and a final tag into o's mailbox.

        ``work`` comes from the oplog, or from the held buffers if ``held``.
        What does not fit is held (moved out of the oplog, so that incs made
        after this ``clock()`` are not sent with it: the bsp gate and the
        bounds depend on that); the tag is remembered and delivered by a later
        call (never waits). Not ``final`` (managed communication, mid-clock): no tag
        is delivered, and what does not fit stays in the oplog for a later send."""
        win, cap = self.win, self.cap
        chunks: list = []
        for t, du in work:
            chunks += self._plan(t, du, held, cap // 2)
        if not chunks:
            if not final:
                return True
            chunks.append((None, None, None, CHUNK_HDR))
        base = win.ring0 + self.me * cap
        sent_any = False
        ok = True
        i = 0
        try:
            for i, (t, du, cnt, need) in enumerate(chunks):
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
                self.seq[o] += 1
                seq = int(self.seq[o])
                ftag = tag if final and i == len(chunks) - 1 else -1 - tag
                if t is None:
                    buf = np.zeros(need, dtype=np.uint8)
                    buf[:CHUNK_HDR].view(np.int64)[:] = (_DATA, seq, ftag, -1, 0, need, 0, self.me)
                    self.inflight[o].append((seq, None, None, None, buf))
                else:
                    log = t.log
                    buf, units, payload = self._encode(t, du, cnt, held, seq, ftag, need)
                    log.release(du, held)
                    t.stats.sent_units += du.size
                    t.stats.sent_bytes += need - CHUNK_HDR
                    self.inflight[o].append((seq, t.tid, units, payload, buf))
                win.put(buf, o, base + pos)
                self.head[o] = head + need
                self.g["msgs"] += 1
                self.g["bytes_sent"] += need
                self.g["inc_bytes_sent"] += need
                sent_any = True
        finally:
            if sent_any:
                win.flush(o)
                self._one[0] = self.head[o]
                win.put(self._one, o, win.hdr.disp("written", self.me))
                win.flush(o)
        if not final:
            return ok
        if ok:
            self.pending_tag[o] = 0
        else:
            if not held:
                for t, du, _, _ in chunks[i:]:
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
        for seq, tid, cu, payload, _ in q:
            if tid != t.tid:
                continue
            if isinstance(payload, tuple):
                K.add_sparse_to(recv, us, cu, *payload)
            else:
                K.add_rows_to(recv, us, cu, payload)

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
                        units, payload = decode(mem, base + pos, t)
                        apply_chunk(t.shard, units // P, payload)
                        K.note_fresh(t.fresh, units // P, K.data_tag(tag), p)
                        if t.logcap:
                            self._log_append(t, mem[base + pos : base + pos + nbytes], nbytes)
                    cons += nbytes
                    self.g["inc_bytes_recv"] += nbytes
                    h.consumed_seq[p] = seq
                    if tag >= 0:
                        h.applied[p] = max(int(h.applied[p]), tag)
                    n += 1
                h.consumed[p] = cons
        finally:
            win.end_write()
        self.g["chunks_applied"] += n
        return n
