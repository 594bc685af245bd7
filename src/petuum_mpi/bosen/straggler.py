"""Straggler injection for experiments: a hook the server calls around ``clock()``.

``{"ranks": [..], "factor": 2.0, "random_delay_ms": 0.0, "seed": 0}``: listed
ranks sleep ``(factor - 1) x`` their compute time of each clock (time since the
last clock ended, minus time spent waiting in the server), and
``random_delay_ms > 0`` adds a uniform random sleep per clock (on the listed
ranks, or on all ranks when the list is empty).
"""

from __future__ import annotations

import random
import time
from typing import Any, Mapping


class Straggler:
    """Sleeps at the start of each ``clock()``; ``g`` = the server's counters
    (reads ``wait_s``, adds ``straggler_sleep_s``)."""

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, rank: int, g: dict) -> "Straggler | None":
        """None when ``cfg`` never makes this rank sleep."""
        st = dict(cfg or {})
        ranks = list(st.get("ranks") or [])
        factor = float(st.get("factor", 1.0) or 1.0) if rank in ranks else 1.0
        delay = float(st.get("random_delay_ms", 0.0) or 0.0)
        if not (rank in ranks or not ranks):
            delay = 0.0
        if factor <= 1.0 and delay <= 0:
            return None
        return cls(factor, delay, int(st.get("seed", 0)), rank, g)

    def __init__(self, factor: float, random_delay_ms: float, seed: int, rank: int, g: dict):
        self.factor, self.delay_ms, self.g = factor, random_delay_ms, g
        self._rng = random.Random(seed * 7919 + rank)
        self.clock_done()

    def clock_done(self) -> None:
        """Mark the end of a clock (and the start of the next one's compute)."""
        self._end, self._wait_at_end = time.perf_counter(), self.g["wait_s"]

    def before_clock(self) -> None:
        sl = 0.0
        if self.factor > 1.0:
            waited = self.g["wait_s"] - self._wait_at_end
            sl += (self.factor - 1.0) * max(0.0, time.perf_counter() - self._end - waited)
        if self.delay_ms > 0:
            sl += self._rng.uniform(0.0, self.delay_ms) / 1000.0
        if sl > 0:
            time.sleep(sl)
            self.g["straggler_sleep_s"] += sl
