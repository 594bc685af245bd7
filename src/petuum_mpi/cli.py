"""The ``petuum-mpi`` command (also ``python -m petuum_mpi``).

Subcommands::

    info                         versions, MPI library, ranks, mpich-wheel shadowing
    run JOB.toml [--set k=v]     run a job (start it with mpiexec -n N / srun, any N)
    launch -n N JOB.toml         start mpiexec from this environment for you
    data synth|convert|inspect|reshard ...
    plot RUN_DIR                 convergence plots (PNG) of a finished run
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import PetuumError


# --------------------------------------------------------------------- run
@dataclass
class JobContext:
    """What an app's ``run_job(job, ctx)`` gets from the runner."""

    comm: Any
    job: dict
    rundir: Any

    def progress(self, total: int | None, desc: str):
        from .progress import Progress

        return Progress(total, desc, mode=self.job["run"]["progress"], comm=self.comm)


def run_job_file(path: str, overrides=(), comm=None) -> dict:
    """Validate the job on rank 0, create the run directory and run the app (collective)."""
    from .apps import app_module
    from .config import load_job
    from .rundir import RunDir
    from .runtime import get_comm, rprint

    comm = get_comm(comm)
    job = load_job(path, overrides, comm=comm)
    rundir = RunDir.create(job, comm=comm)  # a clash with a previous run fails here, before any work
    if rundir.note:
        rprint(f"petuum-mpi: {rundir.note}", comm=comm)
    app = app_module(job["app"], base_dir=os.path.dirname(job["job_file"]))
    rundir.write_config(job)
    rundir.log(f"job {job['job_file']} app={job['app']} ranks={comm.size}")
    rprint(f"petuum-mpi: {job['app']} on {comm.size} rank(s); run directory {rundir.path}", comm=comm)
    t0 = time.perf_counter()
    try:
        summary = app.run_job(job, JobContext(comm=comm, job=job, rundir=rundir)) or {}
        summary = {"app": job["app"], "ranks": comm.size, "wall_s": time.perf_counter() - t0, **summary}
        rundir.write_summary(summary)
        rundir.log("finished: " + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, dict)))
    finally:
        rundir.close()
    if comm.rank == 0:
        shown = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and k not in ("app", "ranks")}
        rprint("petuum-mpi: done. " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()), comm=comm)
        rprint(f"petuum-mpi: results in {rundir.path} (plot: petuum-mpi plot {rundir.path})", comm=comm)
    summary["run_dir"] = rundir.path
    return summary


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def cmd_run(args) -> int:
    from .runtime import install_abort_handler

    install_abort_handler()
    overrides = list(args.set or ())
    if args.resume:
        from .apps import app_schema
        from .config import read_toml
        from .errors import collective

        try:  # every rank reads the same file: an error here is the same on every rank
            app = read_toml(args.job).get("app")
            engine = app_schema(app, base_dir=os.path.dirname(os.path.abspath(args.job))).get("engine") if isinstance(app, str) else None
        except PetuumError as e:
            raise collective(e) from None
        if engine is None or "resume" not in engine.fields:
            raise collective(PetuumError(f"--resume: app {app!r} keeps no snapshots to resume from"))
        overrides.append("engine.resume=true")
    run_job_file(args.job, overrides)
    return 0


# ------------------------------------------------------------------- info
def _system_mpiexec() -> str | None:
    """An ``mpiexec`` on PATH that is not the one of this environment."""
    here = os.path.realpath(os.path.dirname(sys.executable))
    for d in os.environ.get("PATH", "").split(os.pathsep):
        cand = os.path.join(d, "mpiexec")
        if os.path.isfile(cand) and os.access(cand, os.X_OK) and os.path.realpath(d) != here:
            return cand
    return None


def info_lines(comm=None) -> list[str]:
    import platform
    from importlib import metadata

    import mpi4py
    import numpy

    from .runtime import get_comm

    comm = get_comm(comm)
    from mpi4py import MPI

    lines = [f"petuum_mpi   {__version__}", f"python       {platform.python_version()} ({sys.executable})"]
    lines.append(f"mpi4py       {mpi4py.__version__}")
    from . import mpilib

    full = MPI.Get_library_version().replace("\x00", "")
    name, version = mpilib.identify(full)
    lines.append(f"MPI library  {name} {version} (MPI standard {'.'.join(map(str, MPI.Get_version()))})")
    lines.append(f"MPI build    {full.strip().splitlines()[0].strip() if full.strip() else '?'}")
    hint = " (start under mpiexec -n N to check N ranks)" if comm.size == 1 else ""
    lines.append(f"ranks        {comm.size}{hint}")
    lines.append(f"processor    {MPI.Get_processor_name()}")
    lines.append(f"numpy        {numpy.__version__}")
    for mod in ("numba", "scipy", "h5py"):
        try:
            m = __import__(mod)
            extra = f" (HDF5 {m.version.hdf5_version})" if mod == "h5py" else ""
            lines.append(f"{mod:<12} {m.__version__}{extra}")
        except ImportError:
            lines.append(f"{mod:<12} NOT INSTALLED")
    lines.append(f"numba cache  {os.environ.get('NUMBA_CACHE_DIR', '(default)')}")
    try:
        wheel = metadata.version("mpich")
    except metadata.PackageNotFoundError:
        wheel = None
    system = _system_mpiexec()
    if wheel:
        lines.append(f"mpich wheel  {wheel} installed (self-contained MPI for laptops/CI)")
        if system:
            lines.append(
                f"WARNING      the mpich wheel shadows the system MPI ({system}); on a cluster run "
                "`pip uninstall mpich` and build mpi4py against the site's MPI (see README)"
            )
    else:
        lines.append("mpich wheel  not installed (using the MPI that mpi4py was built against)")
    for note in mpilib.pitfalls(name, ranks=comm.size):
        lines.append(f"{'WARNING' if 'NOW' in note else 'note':<12} {note}")
    return lines


def cmd_info(args) -> int:
    from .runtime import get_comm

    comm = get_comm()
    lines = info_lines(comm)
    if comm.rank == 0:
        print("\n".join(lines), flush=True)
    return 0


# ----------------------------------------------------------------- launch
def find_mpiexec() -> str:
    """``mpiexec`` of this environment (e.g. the mpich wheel's), else the one on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(here) and os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec") or shutil.which("mpirun")
    if not found:
        raise PetuumError("no mpiexec found: install the mpich extra (pip install 'petuum_mpi[mpich]') or load your MPI")
    return found


def _library_name() -> str:
    """The MPI library mpi4py loads here (without starting MPI in this process)."""
    import mpi4py

    from . import mpilib

    mpi4py.rc.initialize = False
    from mpi4py import MPI

    return mpilib.identify(MPI.Get_library_version())[0]


def cmd_launch(args) -> int:
    from .config import resolve_job

    from . import mpilib

    if args.n < 1:
        raise PetuumError(f"launch: -n {args.n}: the number of ranks must be at least 1")
    resolve_job(args.job, args.set or ())  # fail here, before starting any rank
    cmd = [find_mpiexec(), "-n", str(args.n), *args.mpiexec_arg, sys.executable, "-m", "petuum_mpi", "run", args.job]
    for s in args.set or ():
        cmd += ["--set", s]
    env = dict(os.environ)
    over = mpilib.oversubscribe_env(_library_name(), args.n)
    if over:
        # more ranks than cores: Open MPI 5 refuses to start unless told to
        # oversubscribe; every library busy-polls, so waiting ranks must yield the
        # core (MPICH, measured: 4 ranks on 2 cores, 5-15x more allreduce rounds per second).
        for k, v in over.items():
            env.setdefault(k, v)
        print(f"petuum-mpi: {args.n} ranks on {os.cpu_count()} cores: oversubscribed, waiting ranks yield the CPU ("
              + " ".join(f"{k}={env[k]}" for k in over) + ")", file=sys.stderr)
    print("petuum-mpi: " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd, env=env)


# ------------------------------------------------------------------- plot
def cmd_plot(args) -> int:
    from .plot import plot_run

    for path in plot_run(args.run_dir, out_dir=args.out):
        print(path)
    return 0


# ------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="petuum-mpi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"petuum_mpi {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("info", help="versions, MPI library, ranks, mpich-wheel shadowing")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("run", help="run a job file (start under mpiexec -n N or srun)")
    s.add_argument("job", help="job file (TOML)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a job key (repeatable)")
    s.add_argument("--resume", action="store_true", help="continue from the last good snapshot (parameter-server apps)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("launch", help="start mpiexec -n N ... run JOB from this environment")
    s.add_argument("-n", type=int, default=2, help="number of ranks (default 2)")
    s.add_argument("job", help="job file (TOML)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a job key (repeatable)")
    s.add_argument("--mpiexec-arg", action="append", default=[], help="extra argument for mpiexec (repeatable)")
    s.set_defaults(func=cmd_launch)

    s = sub.add_parser("plot", help="convergence plots (PNG) of a finished run")
    s.add_argument("run_dir")
    s.add_argument("--out", default=None, help="output folder (default RUN_DIR/plots)")
    s.set_defaults(func=cmd_plot)

    s = sub.add_parser("data", help="datasets: synth, convert, inspect, reshard")
    try:
        from .data.cli import add_subcommands
    except ImportError:  # pragma: no cover - during development only
        s.set_defaults(func=lambda a: (print("data commands unavailable", file=sys.stderr), 2)[1])
    else:
        add_subcommands(s.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True))
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except PetuumError as e:
        if args.command == "run":
            _abort_run(e)
        print(f"petuum-mpi: error: {e}", file=sys.stderr, flush=True)
        return 2


def _abort_run(exc: PetuumError) -> None:
    """A user error during ``run``: print it once and bring every rank down.

    An error raised by every rank at once (``exc.collective``: a bad job file, a
    bad dataset found by a collective reader) ends the job cleanly: rank 0
    prints it and every rank exits with code 2 (no abort, so no output is lost).
    Any other error aborts the job from the rank that raised it.
    """
    from mpi4py import MPI

    from .runtime import abort_on_error, format_error

    world = MPI.COMM_WORLD
    if getattr(exc, "collective", False):
        if world.rank == 0:
            sys.stderr.write(format_error(exc, 0, 1) + "\n")
            sys.stderr.flush()
        raise SystemExit(2)
    # Other ranks may have hit the same error (a missing file seen by all): they
    # wait so that rank 0's abort reaches them before they print it again.
    if world.rank != 0:
        time.sleep(1.0)
    abort_on_error(exc, code=2)
