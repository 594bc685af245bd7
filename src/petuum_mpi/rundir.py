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

A run directory that already exists is never silently reused: ``[run] exists``
= "error" (default: stop, naming the folder), "new" (write to ``name-2``,
``name-3``...) or "overwrite" (delete the previous run first). A resumed run
(``[engine] resume``) continues its own directory. Files are written to a
temporary name and renamed, so a failed write (disk full) leaves the previous
file intact, no ``*.tmp`` behind, and raises one :class:`OutputError` line.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Any, Mapping

import numpy as np

from .errors import ConfigError, OutputError, PetuumError, collective  # noqa: F401 (OutputError re-exported)


def _problem(e: OSError) -> str:
    from .bosen.snapshot import os_problem

    return os_problem(e)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced ``.tmp`` file and a rename.

    On failure the tmp file is removed, ``path`` keeps its previous content and
    one OutputError line names the file and the reason.
    """
    from .bosen.snapshot import write_file_atomic

    try:
        write_file_atomic(path, data)
    except OSError as e:
        keep = " (the previous file is unchanged)" if os.path.exists(path) else ""
        raise OutputError(f"{path}: cannot write: {_problem(e)}{keep}") from None


def choose_run_dir(job: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(path, note)`` of the run directory for ``job`` (rank 0; see the module doc).

    ``note`` says what was done about an existing directory (None if nothing).
    Raises ConfigError if the directory exists and ``[run] exists = "error"``.
    """
    from .config import DEFAULT_OUTPUT_DIR

    run = job["run"]
    resume = bool((job.get("engine") or {}).get("resume", False))
    auto = not run.get("name")
    name = run.get("name") or f"{job['app']}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = os.path.join(os.path.abspath(run.get("output_dir") or DEFAULT_OUTPUT_DIR), name)
    mode = run.get("exists", "error")
    if resume or not os.path.lexists(path) or (os.path.isdir(path) and not os.listdir(path)):
        return path, None
    if auto or mode == "new":
        k = 2
        while os.path.lexists(f"{path}-{k}"):
            k += 1
        why = "" if auto else ' ([run] exists = "new")'
        return f"{path}-{k}", f"{path} already exists: this run goes to {path}-{k}{why}"
    if mode == "overwrite":
        if not os.path.isfile(os.path.join(path, "config.toml")):
            raise ConfigError(f'[run] exists = "overwrite": {path} is not a run directory (no config.toml): '
                              "not deleting it; choose another [run] name")
        try:
            shutil.rmtree(path)
        except OSError as e:
            raise ConfigError(f"[run] output_dir: cannot replace the previous run {path}: {_problem(e)}") from None
        return path, f'replaced the previous run in {path} ([run] exists = "overwrite")'
    raise ConfigError(
        f"[run] name: {path} already exists (a previous run); choose another name (--set run.name=NAME), "
        'or --set run.exists=new (write to a new folder name-2...) or --set run.exists=overwrite (replace it)'
    )


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
        self.note = None  # what create() did about an existing directory
        self._metrics = None
        self._log = None
        if self.active:
            os.makedirs(path, exist_ok=True)
            # a resumed run continues its metrics (create() never reuses another run's directory)
            self._metrics = open(os.path.join(path, "metrics.jsonl"), "a" if append else "w", buffering=1)
            self._log = open(os.path.join(path, "log.txt"), "a", buffering=1)

    @classmethod
    def create(cls, job: Mapping[str, Any], comm=None) -> "RunDir":
        """Make ``run.output_dir/run.name`` on rank 0 and tell every rank if that failed."""
        from .runtime import get_comm

        comm = get_comm(comm)
        err, path, note = None, None, None
        if comm.rank == 0:
            try:
                path, note = choose_run_dir(job)
                os.makedirs(path, exist_ok=True)
                probe = os.path.join(path, ".write-test")
                with open(probe, "w") as fh:
                    fh.write("ok")
                os.remove(probe)
            except ConfigError as e:
                err = str(e)
            except OSError as e:
                err = f"[run] output_dir: cannot write the run directory {path}: {e.strerror or e}"
        path, note, err = comm.bcast((path, note, err), root=0)
        if err:
            raise collective(ConfigError(err))
        rd = cls(path, comm, append=bool((job.get("engine") or {}).get("resume", False)))
        rd.note = note
        return rd

    # -- writing -------------------------------------------------------
    def write_config(self, job: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from .config import PATH_RULE, to_toml

        text = f"# the resolved job: every default filled in, every path absolute\n# ({PATH_RULE})\n" + to_toml(job)
        write_atomic(os.path.join(self.path, "config.toml"), text.encode("utf-8"))

    def log_metrics(self, row: Mapping[str, Any]) -> None:
        """Append one metrics row; adds ``wall`` (seconds since the run started) if absent."""
        if not self.active:
            return
        row = dict(row)
        row.setdefault("wall", time.perf_counter() - self.t0)
        self._append(self._metrics, json.dumps(_jsonable(row)) + "\n")

    def log(self, msg: str) -> None:
        if not self.active:
            return
        self._append(self._log, f"{time.strftime('%H:%M:%S')} {msg}\n")

    @staticmethod
    def _append(fh, line: str) -> None:
        try:
            fh.write(line)
        except OSError as e:
            raise OutputError(f"{fh.name}: cannot write: {_problem(e)}") from None

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        if not self.active:
            return
        text = json.dumps(_jsonable(summary), indent=2) + "\n"
        write_atomic(os.path.join(self.path, "summary.json"), text.encode("utf-8"))

    def save_model(self, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any] | None = None) -> None:
        """Write ``model.h5`` (datasets = arrays, file attributes = attrs) atomically."""
        if not self.active:
            return
        from .bosen.snapshot import h5_bytes

        def fill(f) -> None:
            for k, v in arrays.items():
                f.create_dataset(k, data=np.asarray(v))
            for k, v in (attrs or {}).items():
                if v is None:
                    continue
                f.attrs[k] = v if not isinstance(v, Mapping) else json.dumps(_jsonable(v))

        write_atomic(os.path.join(self.path, "model.h5"), h5_bytes(fill))

    def close(self) -> None:
        err = None
        for fh in (self._metrics, self._log):
            if fh is not None:
                try:
                    fh.close()
                except OSError as e:
                    err = err or OutputError(f"{fh.name}: cannot write: {_problem(e)}")
        self._metrics = self._log = None
        if err is not None:
            raise err


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
