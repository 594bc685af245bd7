"""The model-parallel driver (STRADS apps): the app writes the updates, the driver runs the sweeps.

An app derives from :class:`ModelParallelEstimator` and supplies

``setup(r) -> n_vars``            local state after ``read``; may set ``r.costs`` (per-variable work)
``push(r, vars) -> partials``     this rank's partial sums, ``partial_width * len(vars)`` floats
``pull(r, vars, summed) -> values`` new values from the global sums (deterministic: same on every rank)
``apply(r, vars, values) -> |change|``  update local state
``progress(r) -> dict``           collective figures after a sweep: ``objective``, ``gap``, ...
``finish(r)``                     fitted attributes

and optionally ``solo(r, vars)`` (one rank: the variables updated one after the
other in one kernel call; the default loops push/pull/apply per variable),
``converged(r, row)`` (default ``row["gap"] <= tol``), ``read(r, X, y)``
(default: a block of rows), ``state(r)`` / ``restore(r, state)`` (undo; default:
copies of the arrays named in ``undo_state``) and a module-level ``warmup``.

The driver owns the scheduler and engine, sweeps, the convergence test, undo and
shrink (a sweep that raised ``monitor`` -- default ``objective`` -- is undone and the
round size halved; also halved after 10 sweeps without 10 % ``gap`` progress),
round sizing, history, callbacks and telemetry. The app's contract is checked on
the first round with a message that names the hook. ``r.allreduce(x)`` sums over
ranks. :class:`Sweeper` is the same loop for apps with their own outer loop
(working sets, Newton steps).
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import UsageError
from ..estimator import Estimator, Param, local_rows
from ..runtime import get_comm, one_blas_thread, warm_once
from .dataparallel import Run

__all__ = ["ModelParallelEstimator", "Sweeper", "AppAdapter"]


class AppAdapter:
    """The engine's view of an app: binds ``r``, checks the contract once, gives ``solo`` a default."""

    def __init__(self, app, r):
        self.app, self.r = app, r
        self.partial_width = int(app.partial_width)
        self._checked = set()
        self.name = type(app).__name__

    def _check(self, hook, out, n, expect):
        if hook in self._checked:
            return out
        arr = np.asarray(out) if out is not None else None
        if arr is None or arr.dtype.kind not in "fiu" or arr.size != expect:
            got = "None" if arr is None else f"{arr.size} values of dtype {arr.dtype}"
            raise UsageError(f"{self.name}.{hook}: returned {got} for {n} variables; expected {expect} numbers"
                             + (f" (partial_width {self.partial_width} x {n})" if hook == "push" else ""))
        if not np.isfinite(arr).all():
            raise UsageError(f"{self.name}.{hook}: returned a non-finite value for variables {list(self._vars)}")
        self._checked.add(hook)
        return out

    def push(self, vars_):
        self._vars = vars_[:5]
        return self._check("push", self.app.push(self.r, vars_), len(vars_), self.partial_width * len(vars_))

    def pull(self, vars_, summed):
        return self._check("pull", self.app.pull(self.r, vars_, summed), len(vars_), len(vars_))

    def apply(self, vars_, values):
        return self._check("apply", self.app.apply(self.r, vars_, values), len(vars_), len(vars_))

    def solo(self, vars_):
        if hasattr(self.app, "solo"):
            return self._check("solo", self.app.solo(self.r, vars_), len(vars_), len(vars_))
        out = np.empty(len(vars_))
        for k, v in enumerate(vars_):
            one = vars_[k:k + 1]
            out[k] = self.apply(one, self.pull(one, np.asarray(self.push(one), dtype=np.float64)))[0]
        return out


class Sweeper:
    """Scheduler + engine + the sweep loop with undo-and-shrink (collective)."""

    def __init__(self, app, r, n_vars, costs=None, *, scheduler="cyclic", round_size=None, pipeline_depth=0,
                 seed=0, sample=None, serial_fusion=True, **sched_kw):
        from ..strads import Engine
        from ..strads.schedulers import make_scheduler

        self.app, self.r = app, r
        costs = np.ones(n_vars) if costs is None else np.asarray(costs, dtype=np.float64)
        if round_size is None:  # about 64k non-zeros of work per rank and round
            round_size = int(np.clip(65536.0 / max(1.0, float(costs.mean()) / r.size), 8, 4096))
        self.U = int(round_size)  # largest round size
        self.U_cur = self.U  # the size learned so far (shrinks on overshoot, grows back after safe sweeps)
        self.ceiling = None  # smallest round size that overshot
        self.wait_ceiling = 4 * self.grow_after  # safe sweeps before trying that size again
        # ``sample``: sap's view of X on rank 0, or a collective callable that returns it (built on
        # the first parallel round, so fits that never run one do not pay for it)
        lazy = callable(sample)
        self.sched = make_scheduler(scheduler, n_vars, self.U, pipeline_depth, seed, costs,
                                    sample=None if lazy or r.rank != 0 else sample, **sched_kw)
        prepare = (lambda: self.sched.set_sample(sample())) if lazy else None
        self.engine = Engine(AppAdapter(app, r), self.sched, r.comm, pipeline_depth, serial_fusion, prepare)
        self.depth = int(pipeline_depth)
        self.rejected = 0
        r.allreduce = self.engine.allreduce

    @property
    def exact(self) -> bool:
        return self.engine.exact

    #: sweeps in a row without an undo before the round size doubles again; growing
    #: back to a size that overshot waits twice as long after each such failure
    grow_after = 2

    def shrink(self) -> None:
        self.sched.set_round_size(max(1, self.sched.round_size // 2))
        self.U_cur = int(self.sched.round_size)

    def grow(self, cap: int, safe: int) -> bool:
        """Double the round size after ``safe`` sweeps without undo; True when it grew."""
        u = min(cap, 2 * self.sched.round_size)
        if self.ceiling is not None and u >= self.ceiling:
            if safe < self.wait_ceiling:
                return False
            self.ceiling = None  # try the size that overshot once more
        if u > self.sched.round_size:
            self.sched.set_round_size(u)
            self.U_cur = max(self.U_cur, u)
            return True
        return False

    def solve(self, active, max_sweeps, progress, converged, record, monitor="objective", start=0, row=None):
        """Sweep ``active`` until ``converged(row)`` or ``max_sweeps``; returns sweeps done.

        ``row``: the figures at the start, when the caller has them already (e.g. from
        a global check): then ``progress`` is not evaluated first and ``row`` is not recorded.
        """
        active = np.ascontiguousarray(active, dtype=np.int64)
        self.sched.set_active(active)
        cap = min(self.U, max(1, len(active) // (2 + self.depth)))
        self.sched.set_round_size(min(self.U_cur, cap))
        if row is None:
            row = progress()
            row["iter"] = start
            record(row)
        n, best, stall, safe = start, np.inf, 0, 0
        while not converged(row) and n < max_sweeps:
            saved = None if self.exact else self.app.state(self.r)
            self.engine.run(len(active))
            n += 1
            new = progress()
            worse = not np.isfinite(new[monitor]) or new[monitor] > row[monitor] + 1e-12 * abs(row[monitor])
            if saved is not None and worse and self.sched.round_size > 1:
                self.app.restore(self.r, saved)  # parallel rounds overshot: undo, smaller rounds
                if self.ceiling is not None or safe == 0:  # a size that overshot again: wait longer
                    self.wait_ceiling *= 2
                self.ceiling = int(self.sched.round_size)
                self.shrink()
                self.rejected += 1
                safe = 0
                continue
            safe += 1  # a sweep without overshoot: after a few, try larger rounds again
            if safe >= self.grow_after and not self.exact and self.grow(cap, safe):
                safe = 0
            stall += 1  # less than 10 % gap progress over 10 sweeps: smaller rounds
            if stall == 10:
                if new.get("gap", 0.0) > 0.9 * best and not self.exact:
                    # these rounds were too large to progress: smaller, and growing back waits longer
                    self.ceiling = int(self.sched.round_size)
                    self.wait_ceiling *= 2
                    self.shrink()
                    safe = 0
                best, stall = new.get("gap", 0.0), 0
            row = new
            row.update(iter=n, round_size=int(self.sched.round_size))
            record(row)
        return n, row

    def stats(self) -> dict:
        st = self.engine.stats()
        st.update(engine="strads", ranks=self.r.size, rejected_sweeps=self.rejected,
                  final_round_size=int(self.sched.round_size), exact=bool(self.exact))
        return st


class ModelParallelEstimator(Estimator):
    """Base of STRADS apps (see the module docstring for the hooks)."""

    params = {
        "tol": Param(1e-4, float, lo=0, doc="stop when the app's gap is <= tol"),
        "max_iter": Param(1000, int, lo=1, doc="most sweeps"),
        "scheduler": Param("cyclic", str, choices=("cyclic", "random", "priority"), doc="which variables a "
                           "round updates", section="engine"),
        "round_size": Param(None, int, lo=1, doc="variables per round (None = automatic)", section="engine"),
        "pipeline_depth": Param(0, int, lo=0, doc="rounds in flight", section="engine"),
        "random_state": Param(0, int, lo=0, doc="random seed", job=False),
    }
    partial_width = 1
    undo_state: tuple = ()
    monitor = "objective"
    layout = "csc"
    warmup = None

    @staticmethod
    def base_schema():
        return {}

    def progress_total(self) -> int:
        return int(self.max_iter)

    def read(self, r, X, y):
        r.X, r.y, r.row_start, r.n_rows = local_rows(X, y, r.comm, self.layout, est=self)

    def converged(self, r, row) -> bool:
        return row["gap"] <= r.p.tol

    def state(self, r) -> dict:
        return {k: np.copy(getattr(r, k)) for k in self.undo_state}

    def restore(self, r, state) -> None:
        for k, v in state.items():
            getattr(r, k)[...] = v

    @one_blas_thread()  # a rank is a core
    def fit(self, X, y=None, *, test=None, callback=None):
        """Fit (collective, any rank count): ``X`` a dataset folder or full arrays on every rank."""
        p = self._check_params()
        comm = get_comm(p.comm)
        r = Run(p=p, comm=comm, rank=comm.rank, size=comm.size, seed=p.random_state, costs=None)
        self.read(r, X, y)
        if type(self).warmup is not None:
            warm_once(type(self).warmup, comm)
        n_vars = int(self.setup(r))
        sw = Sweeper(self, r, n_vars, r.costs, scheduler=p.scheduler, round_size=p.round_size,
                     pipeline_depth=p.pipeline_depth, seed=p.random_state)
        self.history_ = []
        t0 = time.perf_counter()

        def record(row):
            row["time"] = time.perf_counter() - t0
            self.history_.append(row)
            if callback is not None:
                callback(row)

        n, row = sw.solve(np.arange(n_vars), p.max_iter, lambda: self.progress(r), lambda row: self.converged(
            r, row), record, self.monitor)
        self.n_iter_ = int(n)
        self.finish(r)
        self.telemetry_ = {**sw.stats(), "time": time.perf_counter() - t0, "converged": bool(self.converged(r, row))}
        return self
