"""The data-parallel driver (Bösen apps): the app writes the model, the driver runs it.

An app derives from :class:`DataParallelEstimator` and supplies

``tables(r)``      the parameter-server tables (list of ``TableSpec``)
``start(r)``       local state and seeding (not called when resuming); the driver
                   then waits at a barrier, so the first read sees the seed
``step(r)``        one clock of local work through ``r.ps.get`` / ``r.ps.inc``
``metrics(r)``     this rank's figures as *sums* (dict); the driver adds them up
``finish(r)``      the fitted attributes (after a final barrier: reads are exact)

and optionally ``flush(r)`` (last incs before the final barrier, e.g. lazy updates),
``read(r, X, y)`` / ``read_test(r, test)`` (default: a block of
rows), ``report(r, sums)`` (sums -> metrics row), ``converged(r, prev, row)``
(default: relative ``objective`` decrease below ``tol``), ``state(r)`` /
``restore(r, state)`` (snapshots) and a module-level ``warmup`` for Numba kernels.

The driver owns the parameter server's lifetime, clocks and epochs, resume and
snapshots, the evaluation cadence, the stale-safe stopping test (a stop that a
stale read suggested is confirmed after a barrier, with exact reads), history,
callbacks, the final barrier and telemetry. ``r`` (:class:`Run`) carries the
validated parameters ``r.p``, ``r.ps``, ``r.clock``, ``r.epoch``, ``r.rank``,
``r.size``, ``r.fresh`` (True when reads are exact) and whatever the app stores.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from ..estimator import Estimator, Param, local_rows
from ..runtime import allreduce_sum, get_comm, one_blas_thread, warm_once

__all__ = ["DataParallelEstimator", "Run", "Contribution", "seed_from_root"]


class Run(SimpleNamespace):
    """State of one fit: the driver's fields plus whatever the app stores."""

    def allreduce(self, x):
        """Sum over ranks (serves the parameter server while waiting)."""
        return self.ps.allreduce(x) if getattr(self, "ps", None) is not None else allreduce_sum(x, self.comm)

    def gather_rows(self, local, start, n_rows):
        """The full ``(n_rows, ...)`` array from each rank's block ``local`` of rows starting at ``start``."""
        local = np.asarray(local, dtype=np.float64)
        full = np.zeros((n_rows,) + local.shape[1:])
        full[start:start + local.shape[0]] = local
        return self.allreduce(full.ravel()).reshape(full.shape) if self.size > 1 else full


# ----------------------------------------------------------------------------- library patterns
def seed_from_root(r: Run, table: str, make, rows=None):
    """Rank 0 adds ``make()`` (computed from its own data) to ``table`` (rows ``rows``,
    default all) and returns it; other ranks return None. Call it from ``start``:
    the driver's barrier after ``start`` makes the seed visible to every first read."""
    if r.rank != 0:
        return None
    value = np.asarray(make())
    r.ps.inc(table, rows, value)
    return value


class Contribution:
    """A sufficient-statistics table where each rank *replaces* its previous
    contribution (k-means, EM, NMF): ``replace(new)`` incs ``new - old``.

    ``adopt(value)`` makes ``value`` (e.g. a seed rank 0 added) part of this rank's
    contribution, so the next ``replace`` removes it."""

    def __init__(self, ps, table: str, rows=None):
        self.ps, self.table, self.rows = ps, table, rows
        self.old = None

    def adopt(self, value) -> None:
        self.old = None if value is None else np.array(value, dtype=np.float64)

    def replace(self, new) -> None:
        new = np.asarray(new, dtype=np.float64)
        self.ps.inc(self.table, self.rows, new if self.old is None else new - self.old)
        self.old = new.copy()


# ----------------------------------------------------------------------------- estimator
ENGINE = "engine"


class DataParallelEstimator(Estimator):
    """Base of Bösen apps (see the module docstring for the hooks)."""

    params = {
        "max_iter": Param(100, int, lo=1, doc="epochs (passes over the data)"),
        "clocks_per_epoch": Param(1, int, lo=1, doc="parameter-server clocks per epoch"),
        "eval_every": Param(1, int, lo=1, doc="evaluate (and test for convergence) every N clocks"),
        "tol": Param(1e-4, float, lo=0, none_ok=True, doc="stop when the objective improves by less than tol "
                     "(relative) between evaluations; None = run max_iter epochs"),
        "random_state": Param(0, int, lo=0, doc="random seed", job=False),
        "consistency": Param("ssp", str, choices=("bsp", "ssp", "essp", "asp"), doc="consistency model",
                             section=ENGINE),
        "staleness": Param(1, int, lo=0, doc="staleness bound s (ssp/essp)", section=ENGINE),
        "snapshot_every": Param(0, int, lo=0, doc="snapshot every N clocks (0 = never)", section=ENGINE),
        "snapshot_dir": Param(None, str, doc="folder of snapshots", section=ENGINE, path="out"),
        "resume": Param(False, bool, doc="continue from the last snapshot in snapshot_dir", section=ENGINE),
        "engine_options": Param(None, None, doc="other [engine] keys (straggler, mailbox_mb)", job=False),
    }
    #: layout of the local rows given to the app by the default ``read``
    layout = "csr"
    #: table whose staleness figures go into metrics rows (default: the first)
    figures_table: str | None = None
    warmup = None

    @staticmethod
    def base_schema():
        from ..bosen import ENGINE_SCHEMA

        return {"engine": ENGINE_SCHEMA}

    def progress_total(self) -> int:
        return int(self.max_iter) * int(self.clocks_per_epoch)

    # -- default hooks --------------------------------------------------------------
    def read(self, r, X, y):
        r.X, r.y, r.row_start, r.n_rows = local_rows(X, y, r.comm, self.layout, est=self)

    def read_test(self, r, test):
        X, y = (test, None) if isinstance(test, str) else test
        r.X_test, r.y_test, _, r.n_test = local_rows(X, y, r.comm, self.layout, est=self, reset=False)

    def start(self, r):
        pass

    def report(self, r, sums: dict) -> dict:
        return sums

    def converged(self, r, prev, row) -> bool:
        tol = r.p.tol
        return tol is not None and prev is not None and prev["objective"] - row["objective"] <= tol * abs(
            row["objective"])

    def flush(self, r) -> None:
        pass

    def state(self, r) -> dict:
        return {}

    def restore(self, r, state) -> None:
        pass

    # -- the driver ---------------------------------------------------------------------
    @one_blas_thread()  # a rank is a core
    def fit(self, X, y=None, *, test=None, callback=None):
        """Fit (collective, any rank count): ``X`` a dataset folder or full arrays on every rank."""
        from ..bosen import ParameterServer
        from ..bosen.snapshot import DEFAULT_KEEP

        p = self._check_params()
        comm = get_comm(p.comm)
        r = Run(p=p, comm=comm, rank=comm.rank, size=comm.size, ps=None, clock=0, epoch=0, fresh=True,
                seed=p.random_state)
        self.read(r, X, y)
        if test is not None:
            self.read_test(r, test)
        r.has_test = test is not None
        if type(self).warmup is not None:
            warm_once(type(self).warmup, comm)
        engine = dict(p.engine_options or {})
        engine.update(consistency=p.consistency, staleness=p.staleness, snapshot_every=p.snapshot_every,
                      snapshot_dir=p.snapshot_dir)
        tables = self.tables(r)
        ps = r.ps = ParameterServer.from_config(engine, tables, comm)
        if engine.get("keep_snapshots") is not None:  # [engine] keep_snapshots (from_config does not take it)
            ps.keep_snapshots = int(engine["keep_snapshots"])
        ftab = self.figures_table or ps.tables[0]
        self.history_ = []
        with ps:
            clk0 = 0
            res = ps.resume() if p.resume and p.snapshot_dir else None
            if res is not None:
                clk0, st = res
                self.restore(r, st)
            else:
                self.start(r)
                ps.barrier()
            total = p.max_iter * p.clocks_per_epoch
            t0 = time.perf_counter()
            prev, clk = None, clk0

            def evaluate(fresh):
                r.fresh = fresh
                names_sums = self.metrics(r)
                keys = sorted(names_sums)
                red = ps.allreduce(np.array([float(names_sums[k]) for k in keys])) if keys else []
                row = {"iter": r.clock, "epoch": r.clock / p.clocks_per_epoch,
                       **self.report(r, dict(zip(keys, (float(v) for v in red))))}
                row["time"] = time.perf_counter() - t0
                row.update(ps.figures(ftab))
                r.fresh = False
                return row

            def record(row):
                self.history_.append(row)
                if callback is not None:
                    callback(row)

            stopped = False
            for clk in range(clk0, total):
                r.clock, r.epoch = clk, clk // p.clocks_per_epoch
                self.step(r)
                ps.clock(state=lambda: self.state(r))
                r.clock = clk + 1
                if (clk + 1) % p.eval_every == 0 and clk + 1 < total:
                    row = evaluate(fresh=p.consistency == "bsp")
                    if self.converged(r, prev, row):
                        ps.barrier()  # a stop seen through stale reads is confirmed with exact ones
                        row = evaluate(fresh=True)
                        stopped = self.converged(r, prev, row)
                    record(row)
                    prev = row
                    if stopped:
                        break
            self.flush(r)
            ps.barrier()  # every update of every worker applied
            r.clock = min(clk + 1, total) if total > clk0 else clk0
            self.n_iter_ = int(r.clock)
            if not stopped:
                record(evaluate(fresh=True))
            r.fresh = True
            self.finish(r)
            st = ps.stats_all()
            self.telemetry_ = _telemetry(comm.bcast(st, root=0), time.perf_counter() - t0, stopped)
        return self


def _telemetry(st, elapsed, stopped) -> dict:
    return {"engine": "bosen", "ranks": st["ranks"], "clocks": st["clock_min"], "time": elapsed,
            "converged": bool(stopped), "wait_s_max": st["wait_s_max"], "msgs": st["msgs"],
            "bytes_sent": st["bytes_sent"],
            "tables": {n: {k: t.get(k) for k in ("reads", "staleness_mean", "staleness_max")}
                       for n, t in st["tables"].items()}}
