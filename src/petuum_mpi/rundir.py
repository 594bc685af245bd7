"""The run directory: everything a finished run leaves behind.

::

    runs/lasso-20261124-081500/
        config.toml     the resolved job (every default filled in)
        metrics.jsonl   one JSON object per recorded iteration (time, objective, ...)
        summary.json    final figures (returned by the app's run_job)
        model.h5        the final model (arrays + attributes)
        log.txt         what rank 0 printed, with timestamps
        plots/*.png     written by ``petuum-mpi plot``

Only rank 0 writes; on the other ranks every method is a no-op, so apps can
call them unconditionally.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np

from .errors import ConfigError, collective


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else str(f)
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


class RunDir:
    """Writer of one run directory (rank 0 only)."""

    def __init__(self, path: str | None, comm=None, append: bool = False):
        from .runtime import get_comm

        self.comm = get_comm(comm)
        self.active = self.comm.rank == 0 and path is not None
        self.path = path
        self.t0 = time.perf_counter()
        self._metrics = None
        self._log = None
        if self.active:
            os.makedirs(path, exist_ok=True)
            # a resumed run continues its metrics; a new run with the same name replaces them
            self._metrics = open(os.path.join(path, "metrics.jsonl"), "a" if append else "w", buffering=1)
            self._log = open(os.path.join(path, "log.txt"), "a", buffering=1)

    @classmethod
    def create(cls, job: Mapping[str, Any], comm=None) -> "RunDir":
        """Make ``run.output_dir/run.name`` on rank 0 and tell every rank if that failed."""
        from .runtime import get_comm

        comm = get_comm(comm)
        err, path = None, None
        if comm.rank == 0:
            run = job["run"]
            name = run.get("name") or f"{job['app']}-{time.strftime('%Y%m%d-%H%M%S')}"
            out = run["output_dir"]
            if not os.path.isabs(out):
                out = os.path.abspath(out)
            path = os.path.join(out, name)
            try:
                os.makedirs(path, exist_ok=True)
                probe = os.path.join(path, ".write-test")
                with open(probe, "w") as fh:
                    fh.write("ok")
                os.remove(probe)
            except OSError as e:
                err = f"[run] output_dir: cannot write the run directory {path}: {e.strerror or e}"
        path, err = comm.bcast((path, err), root=0)
        if err:
            raise collective(ConfigError(err))
        return cls(path, comm, append=bool(job.get("engine", {}).get("resume", False)))

    # -- writing -------------------------------------------------------
    def write_config(self, job: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from .config import to_toml

        with open(os.path.join(self.path, "config.toml"), "w") as fh:
            fh.write(to_toml(job))

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row; adds ``wall`` (seconds since the run started) if absent."""
        if not self.active:
            return
        row = dict(row)
        row.setdefault("wall", time.perf_counter() - self.t0)
        self._metrics.write(json.dumps(_jsonable(row)) + "\n")

    def log(self, msg: str) -> None:
        if not self.active:
            return
        self._log.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if not self.active:
            return
        with open(os.path.join(self.path, "summary.json"), "w") as fh:
            json.dump(_jsonable(summary), fh, indent=2)
            fh.write("\n")

    def save_model(self, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None) -> None:
        """Write ``model.h5`` (datasets = arrays, file attributes = attrs) atomically."""
        if not self.active:
            return
        import h5py

        final = os.path.join(self.path, "model.h5")
        tmp = final + ".tmp"
        with h5py.File(tmp, "w") as f:
            for k, v in arrays.items():
                f.create_dataset(k, data=np.asarray(v))
            for k, v in (attrs or {}).items():
                if v is None:
                    continue
                f.attrs[k] = v if not isinstance(v, Mapping) else json.dumps(_jsonable(v))
        os.replace(tmp, final)

    def close(self) -> None:
        for fh in (self._metrics, self._log):
            if fh is not None:
                fh.close()
        self._metrics = self._log = None


def read_metrics(path: str) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` in a run directory."""
    fn = os.path.join(path, "metrics.jsonl")
    rows = []
    with open(fn) as fh:
        for line in fh:
            line = line.strip()
            if line:
                rows.append(json.loads(line))
    return rows
