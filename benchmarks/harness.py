"""The one harness every benchmark uses.

A benchmark measures something a few times, then reports one row per result::

    what | data | ranks | metric | value | baseline | ratio

where ``baseline`` is a named reference measured *in the same run* (scikit-learn,
a plain kernel, memory-copy bandwidth...) and ``ratio = value / baseline``.
Rows can be appended to a JSON-lines file (``--jsonl``, or the ``BENCH_JSONL``
environment variable) so results from different days can be compared.

Usage::

    from harness import Bench
    bench = Bench("lasso")                       # parses --repeat / --jsonl
    t = bench.time(lambda: fit(), repeat=3)      # best-of-N seconds (MPI-aware)
    bench.row("lasso fit", data="tall 50kx100k", metric="time_s", value=t,
              baseline=t_sklearn, baseline_name="sklearn Lasso")
    bench.finish()

Only rank 0 prints and writes. ``time`` barriers before and after each repeat
so a multi-rank measurement is the slowest rank's wall time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import socket
import sys
import time
from typing import Any, Callable


def _comm():
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover
        return None
    return MPI.COMM_WORLD


class Bench:
    """Collects and prints benchmark rows; see the module docstring."""

    COLUMNS = ("what", "data", "ranks", "metric", "value", "baseline", "ratio")

    def __init__(self, name: str, argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None):
        parser = parser or argparse.ArgumentParser(description=f"benchmark: {name}")
        parser.add_argument("--repeat", type=int, default=3, help="repetitions per measurement (best is kept)")
        parser.add_argument(
            "--jsonl", default=os.environ.get("BENCH_JSONL"), help="append result rows to this JSON-lines file"
        )
        self.args = parser.parse_args(argv)
        self.name = name
        self.comm = _comm()
        self.rank = self.comm.rank if self.comm is not None else 0
        self.size = self.comm.size if self.comm is not None else 1
        self.rows: list[dict[str, Any]] = []
        self._header_printed = False

    # -- measuring ---------------------------------------------------------
    def barrier(self) -> None:
        if self.comm is not None and self.size > 1:
            self.comm.Barrier()

    def time(self, fn: Callable[[], Any], repeat: int | None = None, setup: Callable[[], Any] | None = None) -> float:
        """Best wall time of ``fn()`` over ``repeat`` runs (slowest rank of each run)."""
        best = float("inf")
        for _ in range(repeat or self.args.repeat):
            if setup is not None:
                setup()
            self.barrier()
            t0 = time.perf_counter()
            fn()
            self.barrier()
            dt = time.perf_counter() - t0
            if self.comm is not None and self.size > 1:
                dt = self.comm.allreduce(dt, op=_max_op())
            best = min(best, dt)
        return best

    # -- reporting ---------------------------------------------------------
    def row(
        self,
        what: str,
        *,
        data: str,
        metric: str,
        value: float,
        baseline: float | None = None,
        baseline_name: str = "",
        ranks: int | None = None,
        target: str = "",
        **extra: Any,
    ) -> dict[str, Any]:
        ratio = (value / baseline) if baseline not in (None, 0) else None
        r = {
            "bench": self.name,
            "what": what,
            "data": data,
            "ranks": self.size if ranks is None else ranks,
            "metric": metric,
            "value": value,
            "baseline": baseline,
            "baseline_name": baseline_name,
            "ratio": ratio,
            "target": target,
            **extra,
        }
        self.rows.append(r)
        if self.rank == 0:
            if not self._header_printed:
                print(" | ".join(self.COLUMNS) + " | baseline is | target", flush=True)
                self._header_printed = True
            print(
                " | ".join(
                    [
                        what,
                        data,
                        str(r["ranks"]),
                        metric,
                        _fmt(value),
                        _fmt(baseline),
                        _fmt(ratio),
                        baseline_name or "-",
                        target or "-",
                    ]
                ),
                flush=True,
            )
        return r

    def finish(self) -> None:
        if self.rank != 0 or not self.args.jsonl:
            return
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        env = {"host": socket.gethostname(), "python": platform.python_version(), "date": stamp}
        os.makedirs(os.path.dirname(os.path.abspath(self.args.jsonl)), exist_ok=True)
        with open(self.args.jsonl, "a") as fh:
            for r in self.rows:
                fh.write(json.dumps({**env, **r}) + "\n")
        print(f"appended {len(self.rows)} rows to {self.args.jsonl}", file=sys.stderr, flush=True)


def _max_op():
    from mpi4py import MPI

    return MPI.MAX


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)
