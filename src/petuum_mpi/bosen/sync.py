"""Synchronisation: progress, waiting, the end of a clock, the bsp gate, barriers.

No rank ever blocks inside MPI while others may need it: every wait polls with
exponential back-off (20 us doubling to 1 ms) and *serves* between polls
(:meth:`Sync.progress`: enter MPI's progress engine, apply my mailboxes, retry
deferred sends), so 4 ranks on 2 cores run well and nobody deadlocks.
"""

from __future__ import annotations

import time

_SLEEP0, _SLEEP_MAX = 20e-6, 1e-3


class Backoff:
    """Exponential sleep between polls: 20 us doubling to 1 ms."""

    def __init__(self) -> None:
        self.d = _SLEEP0

    def __call__(self) -> None:
        time.sleep(self.d)
        self.d = min(self.d * 2, _SLEEP_MAX)


def test_barrier(comm, serve=None) -> None:
    """A barrier that waits by testing (which drives MPI progress), with back-off."""
    req = comm.Ibarrier()
    back = Backoff()
    while not req.Test():
        if serve is not None:
            serve()
        back()


class Sync:
    """Progress and waits of one server (``win``: :class:`.window.Window`,
    ``mail``: :class:`.mailbox.Mailboxes`, ``g``: global counters)."""

    def __init__(self, win, mail, g: dict, bsp: bool):
        self.win, self.mail, self.g = win, mail, g
        self.P, self.me, self.comm = win.P, win.me, win.comm
        self.bsp = bsp and win.P > 1

    def progress(self) -> None:
        """Drive MPI progress, apply my mailboxes, retry deferred sends."""
        if self.P == 1:
            return
        self.win.poke()
        self.mail.drain()
        self.mail.retry()

    def wait(self, t, backoff: Backoff) -> None:
        """One poll of a wait: serve, then sleep; the time counts as waiting (of table ``t``)."""
        t0 = time.perf_counter()
        self.progress()
        backoff()
        dt = time.perf_counter() - t0
        self.g["wait_s"] += dt
        if t is not None:
            t.stats.wait_s += dt

    def serve_until(self, req) -> None:
        """Serve until the MPI request ``req`` completes."""
        back = Backoff()
        while not req.Test():
            self.progress()
            back()

    def end_clock(self, tag: int) -> None:
        """Close clock ``tag - 1``: (bsp gate,) send its updates, publish clock ``tag``."""
        if self.bsp:
            self._gate(tag)
        self.mail.send_clock(tag)
        self.win.hdr.clock[0] = tag
        self.progress()

    def _gate(self, tag: int) -> None:
        """BSP: send clock ``tag - 1``'s updates only after every worker has
        finished its reads of that clock, so a read at clock c reflects exactly
        the updates of clocks < c (deterministic runs)."""
        self.win.hdr.gate[0] = tag
        self.win.win.Sync()
        for k in range(1, self.P):
            o = (self.me + k) % self.P
            back = Backoff()
            while int(self.win.read_header(o).gate[0]) < tag:
                self.wait(None, back)

    def flush_everything(self, clock: int) -> None:
        """Collective: send everything (tagged ``clock``); on return every rank has applied all of it."""
        self.mail.send_clock(clock)
        back = Backoff()
        while self.mail.deferred():
            self.wait(None, back)
        if self.P > 1:
            test_barrier(self.comm, self.mail.drain)
            self.mail.drain()
            self.comm.Barrier()
            self.mail.forget_inflight()

    def restart_at(self, clock: int) -> None:
        """After a resume: my header says everything of clocks < ``clock`` is applied."""
        h = self.win.hdr
        h.clock[0] = h.gate[0] = clock
        h.applied[:] = clock
