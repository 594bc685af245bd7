"""Progress on rank 0: a tqdm bar on a terminal, plain lines otherwise.

``mode`` is the job's ``[run] progress``: ``auto`` (bar if stderr is a
terminal, else lines), ``bar``, ``lines`` or ``off``. Other ranks get a no-op.
"""

from __future__ import annotations

import sys
import time
from typing import Any


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class Progress:
    def __init__(self, total: int | None, desc: str, mode: str = "auto", comm=None, every_s: float = 2.0):
        from .runtime import get_comm

        rank = get_comm(comm).rank
        if rank != 0 or mode == "off":
            mode = "off"
        elif mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.desc = mode, total, desc
        self.n = 0
        self.every_s = every_s
        self._last = 0.0
        self._t0 = time.perf_counter()
        self._figures: dict[str, Any] = {}
        self._printed_n = -1
        self._bar = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1, **figures: Any) -> None:
        if self.mode == "off":
            return
        self.n += n
        self._figures.update(figures)
        if self._bar is not None:
            self._bar.update(n)
            if figures:
                self._bar.set_postfix({k: _fmt(v) for k, v in figures.items()}, refresh=False)
            return
        now = time.perf_counter()
        if now - self._last >= self.every_s or (self.total is not None and self.n >= self.total):
            self._last = now
            self._line()

    def _line(self) -> None:
        self._printed_n = self.n
        of = f"/{self.total}" if self.total is not None else ""
        figs = " ".join(f"{k}={_fmt(v)}" for k, v in self._figures.items())
        el = time.perf_counter() - self._t0
        print(f"[{self.desc}] {self.n}{of} {el:.1f}s {figs}".rstrip(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.n and self._printed_n != self.n:
            self._line()
        self.mode = "off"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
