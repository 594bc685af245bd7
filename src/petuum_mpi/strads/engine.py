"""Model-parallel engine: schedule / push / pull rounds over MPI ranks.

An ML algorithm is a set of update equations plus an order to run them in. The
engine owns the order (a :mod:`scheduler <petuum_mpi.strads.schedulers>` on rank 0),
the communication and the synchronisation; the app owns the math:

``app.push(vars) -> np.ndarray``
    runs on every rank over its own rows and returns this rank's partial sums for
    the variables ``vars`` (float64, ``app.partial_width * len(vars)`` values).
``app.pull(vars, summed) -> np.ndarray``
    runs on every rank with the same globally summed partials and returns the new
    values of ``vars`` (deterministic, so every rank computes the same values).
``app.apply(vars, values)``
    every rank applies the new values to its local state (e.g. the residual).
``app.partial_width``
    partial values per variable (1 for Lasso, 2 for gradient + Hessian diagonal).

One round = one collective: the rank-0 scheduler's decision for a later round
travels in the same ``Iallreduce`` buffer as this round's partials (rank 0 adds
the variable ids, the other ranks add zeros), so no separate ``Bcast`` is needed.
With ``pipeline_depth = d`` up to ``d + 1`` rounds are in flight: round ``t + d``
is pushed (on a residual that still misses rounds ``t..t+d-1``) before round
``t``'s sums have arrived. The scheduler never issues a variable that is still in
flight, and the ``sap`` scheduler also keeps dependent variables out of all
in-flight rounds, so the stale rounds stay a bounded-staleness parallel
coordinate method; apps guard convergence (see ``docs/strads.md``).
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from ..runtime import allreduce_sum, get_comm


class Telemetry:
    """Counters and timers of an engine (summed over all runs)."""

    def __init__(self):
        self.rounds = 0
        self.updates = 0
        self.t_schedule = 0.0
        self.t_push = 0.0
        self.t_pull = 0.0
        self.t_comm = 0.0
        self.t_run = 0.0

    def as_dict(self, scheduler=None) -> dict:
        d = {
            "rounds": int(self.rounds),
            "updates": int(self.updates),
            "rejected": int(getattr(scheduler, "rejected", 0)) if scheduler is not None else 0,
            "time_schedule": float(self.t_schedule),
            "time_push": float(self.t_push),
            "time_pull": float(self.t_pull),
            "time_comm": float(self.t_comm),
            "time_rounds": float(self.t_run),
            # rank 0 schedules on the rounds' critical path: every rank waits this share of the time on it
            "root_wait_fraction": float(self.t_schedule / self.t_run) if self.t_run > 0 else 0.0,
        }
        return d


class Engine:
    """Run scheduled rounds of an app's push/pull updates on all ranks of ``comm``.

    Parameters
    ----------
    app : object with ``push``, ``pull``, ``apply`` and ``partial_width``.
    scheduler : :class:`~petuum_mpi.strads.schedulers.Scheduler`; only rank 0's
        decisions are used (the other ranks' scheduler is never asked).
    comm : MPI communicator, default ``MPI.COMM_WORLD``.
    pipeline_depth : int >= 0, rounds issued before the oldest in-flight round's
        results are in (0 = synchronous).
    prepare : optional collective callable run once, before the first round that
        is not a fused one-rank round (e.g. gathering ``sap``'s view of X, which
        fits that never leave the Gram solver or one rank do not need).
    """

    def __init__(self, app, scheduler, comm=None, pipeline_depth: int = 0, serial_fusion: bool = True, prepare=None):
        self.comm = get_comm(comm)
        self.app = app
        self.scheduler = scheduler
        self.depth = int(pipeline_depth)
        if self.depth < 0:
            raise ValueError("pipeline_depth must be >= 0")
        self.serial_fusion = bool(serial_fusion)
        self._prepare = prepare  # collective, run once before the first parallel round (e.g. sap's row view)
        self.telemetry = Telemetry()
        self.rank = self.comm.rank
        self.size = self.comm.size
        if self.exact and hasattr(scheduler, "exact"):
            scheduler.exact = True

    @property
    def exact(self) -> bool:
        """True when rounds run as exact sequential updates (one rank, fused)."""
        return self.size == 1 and self.serial_fusion and hasattr(self.app, "solo")

    # ------------------------------------------------------------------ helpers
    def _schedule(self, budget: int) -> np.ndarray:
        """Rank 0: next round's variables (empty when the budget is used up)."""
        if budget <= 0:
            return np.empty(0, dtype=np.int64)
        t0 = time.perf_counter()
        v = self.scheduler.schedule(max_size=budget)
        self.telemetry.t_schedule += time.perf_counter() - t0
        return np.asarray(v, dtype=np.int64)

    def run(self, n_updates: int) -> int:
        """Run rounds until about ``n_updates`` variable updates were made.

        Collective: all ranks must call it with the same ``n_updates``. Returns
        the number of updates made (the same on every rank). The pipeline is
        drained before returning, so the app's state is consistent afterwards.
        """
        t_run = time.perf_counter()
        try:
            if self.size == 1 and self.serial_fusion and hasattr(self.app, "solo"):
                return self._run_fused(int(n_updates))
            if self._prepare is not None:
                prepare, self._prepare = self._prepare, None
                t0 = time.perf_counter()
                prepare()
                self.telemetry.t_schedule += time.perf_counter() - t0
            return self._run(int(n_updates))
        finally:
            self.telemetry.t_run += time.perf_counter() - t_run

    def _run(self, n_updates: int) -> int:
        comm, app, sched, tel = self.comm, self.app, self.scheduler, self.telemetry
        width = int(app.partial_width)
        umax = int(sched.round_size)
        root = self.rank == 0
        slot = umax + 1  # [count, ids...] of a scheduled round
        budget = int(n_updates)
        # rounds 0..depth are announced up front (one Bcast), later ones ride along
        ahead = deque()
        if root:
            for _ in range(self.depth + 1):
                v = self._schedule(budget)
                budget -= len(v)
                sched.in_flight(v)
                ahead.append(v)
        if self.size > 1:
            t0 = time.perf_counter()
            buf = np.zeros((self.depth + 1) * slot, dtype=np.float64)
            if root:
                for k, v in enumerate(ahead):
                    buf[k * slot] = len(v)
                    buf[k * slot + 1 : k * slot + 1 + len(v)] = v
            comm.Bcast(buf, root=0)
            tel.t_comm += time.perf_counter() - t0
            if not root:
                for k in range(self.depth + 1):
                    c = int(buf[k * slot])
                    ahead.append(buf[k * slot + 1 : k * slot + 1 + c].astype(np.int64))
        # (vars, request or None, (send, recv) buffers or local partials, m, next vars if serial).
        # A non-blocking call may read `send` and write `recv` until Wait, and mpi4py keeps no
        # reference to them: both must stay referenced here (Open MPI reads late; freeing
        # `send` early gave wrong sums there).
        inflight = deque()
        done = 0
        stopping = False
        while True:
            if not stopping and ahead:
                vars_ = ahead.popleft()
                if len(vars_) == 0:
                    stopping = True  # budget used up (same decision on every rank)
                else:
                    t0 = time.perf_counter()
                    part = app.push(vars_)
                    tel.t_push += time.perf_counter() - t0
                    m = width * len(vars_)
                    nxt = None
                    if root:  # the round depth+1 ahead
                        nxt = self._schedule(budget)
                        budget -= len(nxt)
                        sched.in_flight(nxt)
                    if self.size > 1:
                        send = np.zeros(m + slot, dtype=np.float64)
                        send[:m] = part
                        if root:
                            send[m] = len(nxt)
                            send[m + 1 : m + 1 + len(nxt)] = nxt
                        recv = np.empty_like(send)
                        t0 = time.perf_counter()
                        req = comm.Iallreduce(send, recv)
                        tel.t_comm += time.perf_counter() - t0
                        inflight.append((vars_, req, (send, recv), m, None))
                    else:
                        inflight.append((vars_, None, part, m, nxt))
            if not inflight:
                if stopping or not ahead:
                    break
                continue
            if len(inflight) > self.depth or stopping:
                vars_, req, bufs, m, nxt = inflight.popleft()
                if req is not None:
                    t0 = time.perf_counter()
                    req.Wait()
                    recv = bufs[1]
                    tel.t_comm += time.perf_counter() - t0
                    c = int(round(recv[m]))
                    nxt = recv[m + 1 : m + 1 + c].astype(np.int64)
                    summed = recv[:m]
                else:
                    summed = bufs
                t0 = time.perf_counter()
                vals = app.pull(vars_, summed)
                change = app.apply(vars_, vals)
                tel.t_pull += time.perf_counter() - t0
                if root:
                    t0 = time.perf_counter()
                    sched.feedback(vars_, change)
                    tel.t_schedule += time.perf_counter() - t0
                tel.rounds += 1
                tel.updates += len(vars_)
                done += len(vars_)
                if not stopping:
                    ahead.append(nxt)
        if root:
            sched.clear_in_flight()
        return done

    def _run_fused(self, budget: int) -> int:
        """One rank: a round of U variables runs as U sequential rounds of size 1
        (``app.solo``, one kernel call): exact coordinate descent, nothing to sum."""
        sched, tel, app = self.scheduler, self.telemetry, self.app
        done = 0
        while budget > 0:
            vars_ = self._schedule(budget)
            if len(vars_) == 0:
                break
            budget -= len(vars_)
            t0 = time.perf_counter()
            change = app.solo(vars_)
            tel.t_push += time.perf_counter() - t0
            t0 = time.perf_counter()
            sched.feedback(vars_, change)
            tel.t_schedule += time.perf_counter() - t0
            tel.rounds += 1
            tel.updates += len(vars_)
            done += len(vars_)
        return done

    def allreduce(self, x) -> np.ndarray:
        """Sum a float64 array over all ranks (timed as communication)."""
        t0 = time.perf_counter()
        out = allreduce_sum(x, self.comm)
        self.telemetry.t_comm += time.perf_counter() - t0
        return out

    def stats(self) -> dict:
        """Telemetry of all runs so far (rank 0's scheduler counters)."""
        return self.telemetry.as_dict(self.scheduler if self.rank == 0 else None)
