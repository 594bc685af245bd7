"""MPI runtime helpers: the communicator, abort-on-error, rank-0 output, Numba cache.

Rules every part of petuum_mpi follows:

* An exception or a Ctrl-C on any rank must bring the whole job down within
  seconds. ``import petuum_mpi`` installs hooks (:func:`_install_hooks`) that
  print the error once (with its rank) and call ``MPI.COMM_WORLD.Abort``, however
  the job was started. Library code only raises; it never calls ``Abort`` itself.
* Numba kernels are compiled on one rank per node before the other ranks load
  them from the cache (:func:`compile_once`), so cache files are never written
  concurrently.
* One rank per core: when several ranks share a node, each rank's BLAS (NumPy /
  SciPy's OpenBLAS or MKL) is limited to its share of the cores
  (:func:`limit_blas_threads`, called by :func:`compile_once`), unless the user set
  ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
import traceback

import numpy as np

from .errors import PetuumError


def _source_stamp() -> str:
    """A short hash of the package's ``.py`` files (relative path, mtime, size)."""
    import hashlib

    root = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha1()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                st = os.stat(path)
                h.update(f"{os.path.relpath(path, root)} {st.st_mtime_ns} {st.st_size}\n".encode())
    return h.hexdigest()[:16]


def _setup_numba_cache_dir() -> None:
    """Give Numba a node-local cache directory, keyed on the package's sources.

    Must run before numba is imported. The default (``__pycache__`` next to the
    sources) may be on a shared file system where ranks of many nodes would
    write the same files; a per-user, per-node directory avoids that (a
    ``NUMBA_CACHE_DIR`` the user set is the base instead). Numba keys a cached
    kernel on its own source file only, so a kernel that inlines primitives of
    another module (``linear/rows.py``, ``linear/losses.py``) would keep stale
    machine code after that module changed: the directory therefore ends in a
    hash of all the package's sources (``src-<hash>``).
    """
    base = os.environ.get("NUMBA_CACHE_DIR")
    if not base:
        tmp = os.environ.get("TMPDIR") or "/tmp"
        user = os.environ.get("USER") or str(os.getuid())
        base = os.path.join(tmp, f"petuum_mpi-numba-{user}-{socket.gethostname()}")
    sub = f"src-{_source_stamp()}"
    path = base if os.path.basename(base) == sub else os.path.join(base, sub)  # a child process inherits it
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba was imported first
        config.CACHE_DIR = path


_setup_numba_cache_dir()


def get_comm(comm=None):
    """Return ``comm`` or ``MPI.COMM_WORLD``."""
    if comm is not None:
        return comm
    from mpi4py import MPI

    return MPI.COMM_WORLD


def allreduce_sum(x, comm=None, *, out=None):
    """Sum over the ranks of ``comm``: a float for a scalar ``x``, else a float64 array
    (a new array, or ``out`` when given, which may be ``x`` itself for an in-place sum).
    One buffer ``Allreduce``; at one rank no MPI call is made. Inside a parameter-server
    clock loop use ``ParameterServer.allreduce`` (it keeps serving the rank's shard)."""
    comm = get_comm(comm)
    if np.isscalar(x) or np.ndim(x) == 0:
        v = float(x)
        if comm.size == 1:
            return v
        a = np.array([v])
        comm.Allreduce(_in_place(), a)
        return float(a[0])
    a = np.ascontiguousarray(x, dtype=np.float64)
    if out is None:
        out = a.copy()
    elif out is not a:
        np.copyto(out, a)
    if comm.size > 1:
        comm.Allreduce(_in_place(), out)
    return out


def allreduce_max(x: float, comm=None) -> float:
    """The largest of every rank's float ``x`` (no MPI call at one rank)."""
    comm = get_comm(comm)
    if comm.size == 1:
        return float(x)
    from mpi4py import MPI

    return float(comm.allreduce(float(x), op=MPI.MAX))


def allgather_obj(x, comm=None) -> list:
    """Every rank's (small, picklable) ``x``, in rank order."""
    comm = get_comm(comm)
    return [x] if comm.size == 1 else comm.allgather(x)


def allgatherv(x, counts, comm=None) -> np.ndarray:
    """The concatenation, in rank order, of every rank's 1-d array ``x`` (rank k's holds
    ``counts[k]`` entries, the same ``counts`` on every rank). Collective."""
    comm = get_comm(comm)
    x = np.ascontiguousarray(x)
    if comm.size == 1:
        return x.copy()
    from mpi4py import MPI

    out = np.empty(int(sum(counts)), dtype=x.dtype)
    displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    comm.Allgatherv(x, [out, list(counts), list(displs), MPI._typedict[x.dtype.char]])
    return out


def _in_place():
    from mpi4py import MPI

    return MPI.IN_PLACE


def is_root(comm=None) -> bool:
    return get_comm(comm).rank == 0


def rprint(*args, comm=None, file=None, **kw) -> None:
    """Print on rank 0 only (flushes, so lines are not lost under mpiexec)."""
    if get_comm(comm).rank == 0:
        print(*args, file=file or sys.stdout, flush=True, **kw)


def format_error(exc: BaseException, rank: int, size: int, where: str = "") -> str:
    """One readable message for a user error; a full traceback otherwise."""
    where = (f" (rank {rank} of {size})" if size > 1 else "") + where
    if isinstance(exc, PetuumError):
        return f"petuum-mpi: error{where}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"petuum-mpi: unexpected error{where}:\n{tb}"


def _say(msg: str) -> None:
    try:
        sys.stdout.flush()
    except Exception:  # a closed or broken stdout must not stop the abort
        pass
    sys.stderr.write(msg if msg.endswith("\n") else msg + "\n")
    sys.stderr.flush()


def _abort(world, code: int) -> None:
    """``world.Abort(code)`` once this rank's message had time to reach mpiexec."""
    time.sleep(0.3)  # let mpiexec forward the message before the abort tears the job down
    try:  # MPICH prints its own "Abort(1) on node ..." line: the message above says it all
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    except OSError:
        pass
    world.Abort(code)


def abort_on_error(exc: BaseException, comm=None, code: int = 1) -> None:
    """Print ``exc`` once with its rank and abort every rank of the job."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    _say(format_error(exc, world.rank, world.size))
    if world.size > 1:
        _abort(world, code)
    raise SystemExit(code)


# ------------------------------------------------------------ abort hooks
#
# Importing petuum_mpi installs three hooks, so that however the job was started
# (``petuum-mpi run``, ``mpiexec -n N python script.py``, srun) an exception or a
# Ctrl-C on one rank ends every rank within seconds instead of leaving the others
# waiting forever in a collective:
#
# * ``sys.excepthook``: an uncaught exception prints one message naming its rank
#   (a traceback; one line for a PetuumError) and calls ``MPI.COMM_WORLD.Abort``.
# * ``threading.excepthook``: the same for an exception that ends a thread.
# * a SIGINT handler: Ctrl-C prints "petuum-mpi: interrupted (Ctrl-C)" once and
#   aborts with code 130 (no KeyboardInterrupt, no finally blocks: another rank
#   may be blocked in a collective that will never complete).
#
# They act only when MPI is running with more than one rank; in a one-process run
# the previous hooks (Python's, or the user's) are called unchanged. Exceptions that
# the user catches never reach them.

GRACE_S, STEP_S = 1.5, 0.5  # when ranks other than 0 report (see _report_delay)
_HOOKS: dict = {}
_ENDING = False
_CLI = False


def _launched_size() -> int:
    """Number of ranks the launcher started, from its environment (1 if unknown)."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        try:
            return int(os.environ[var])
        except (KeyError, ValueError):
            continue
    return 1


def _running_world(start: bool = False):
    """COMM_WORLD if MPI runs with more than one rank, else None.

    Does not start MPI unless ``start`` and the launcher started several ranks
    (an exception raised before the script used MPI: the other ranks are waiting
    for this one inside MPI, and only an abort releases them).
    """
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None:
        if not start or _launched_size() <= 1:
            return None
        try:
            from mpi4py import MPI
        except Exception:
            return None
    try:
        if not MPI.Is_initialized() or MPI.Is_finalized():
            return None
        world = MPI.COMM_WORLD
        return world if world.size > 1 else None
    except Exception:
        return None


def _report_delay(rank: int) -> float:
    """Seconds rank ``rank`` waits before it reports an error and aborts the job.

    The same error often happens on several ranks at once (a bug before ``fit``, a
    Ctrl-C reaches every rank): rank 0 reports at once and its abort ends the others
    before they print the same message again; rank 1 reports after ``GRACE_S``
    (only it failed, or rank 0 is stuck in MPI or a kernel), rank 2 ``STEP_S`` later,
    and so on up to rank 6 (at most 4 s).
    """
    return 0.0 if rank == 0 else GRACE_S + STEP_S * (min(rank, 6) - 1)


def _end_job(exc: BaseException, world, where: str = "", show=None) -> None:
    """Report ``exc`` once for the whole job and abort it (returns only for a
    collective PetuumError, which every rank raised: those ranks end cleanly)."""
    global _ENDING
    if isinstance(exc, PetuumError) and exc.collective:
        if world.rank == 0:
            _say(format_error(exc, 0, 1))
        return
    if _ENDING:  # a second Ctrl-C (mpiexec forwards it too) or thread error while reporting the first
        return
    _ENDING = True
    time.sleep(_report_delay(world.rank))
    if isinstance(exc, KeyboardInterrupt):
        _say("petuum-mpi: interrupted (Ctrl-C)")
        _abort(world, 130)
    if show is not None and not isinstance(exc, PetuumError):
        _say(f"petuum-mpi: unexpected error (rank {world.rank} of {world.size}){where}:")
        show()
    else:
        _say(format_error(exc, world.rank, world.size, where))
    _abort(world, 2 if isinstance(exc, PetuumError) else 1)


def _excepthook(etype, value, tb):
    previous = _HOOKS["sys"]
    world = _running_world(start=True)
    if world is None:
        if issubclass(etype, KeyboardInterrupt) and _CLI:
            _say("petuum-mpi: interrupted (Ctrl-C)")  # Python still exits with the SIGINT status
            return
        previous(etype, value, tb)
        return
    if value is None:
        value = etype()
    if value.__traceback__ is None:
        value = value.with_traceback(tb)
    show = None if previous is sys.__excepthook__ else (lambda: previous(etype, value, tb))
    _end_job(value, world, show=show)


def _thread_excepthook(args):
    previous = _HOOKS["threading"]
    world = _running_world(start=True)
    if world is None or issubclass(args.exc_type, SystemExit):
        previous(args)
        return
    import threading

    value = args.exc_value if args.exc_value is not None else args.exc_type()
    name = args.thread.name if args.thread is not None else threading.get_ident()
    show = None if previous is threading.__excepthook__ else (lambda: previous(args))
    _end_job(value, world, where=f" in thread {name}", show=show)


def _sigint(signum, frame):
    world = _running_world()
    if world is None:
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt
    _end_job(KeyboardInterrupt(), world)


def _install_hooks() -> None:
    """Install the abort hooks (see above) once per process; keep the previous ones."""
    if _HOOKS:
        return
    import threading

    _HOOKS["sys"] = sys.excepthook
    sys.excepthook = _excepthook
    _HOOKS["threading"] = threading.excepthook
    threading.excepthook = _thread_excepthook
    try:  # only Python's own handler is replaced, and only from the main thread
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _sigint)
    except ValueError:
        pass


def install_abort_handler() -> None:
    """The hooks of ``import petuum_mpi``; the command line also reports a Ctrl-C
    of a one-rank run as one line."""
    global _CLI
    _install_hooks()
    _CLI = True


_install_hooks()


def node_comm(comm=None):
    """The ranks of ``comm`` that share this node's memory."""
    from mpi4py import MPI

    return get_comm(comm).Split_type(MPI.COMM_TYPE_SHARED)


_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(ranks_on_node: int) -> int | None:
    """Limit this rank's BLAS threads to ``cores // ranks_on_node`` (at least 1).

    Several ranks on one node each running a BLAS with one thread per core
    oversubscribe the cores (measured: 2 ranks x 2 OpenBLAS threads on 2 cores).
    Does nothing when one rank runs on the node, when the user set one of
    ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``, or when
    threadpoolctl is not installed. Returns the limit applied, or None.
    """
    if ranks_on_node <= 1 or any(v in os.environ for v in _BLAS_ENV):
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, cores // ranks_on_node)
    threadpool_limits(limits=n, user_api="blas")
    return n


_CONTROLLER = []  # the process's threadpoolctl controller (found once: ~1.5 ms; a limit then costs ~20 us)


@contextlib.contextmanager
def one_blas_thread():
    """Inside: BLAS (OpenBLAS / MKL / BLIS) runs one thread; the previous limits come back after.

    A rank is a core: a fit's BLAS calls are short vector dots and small products, and
    a second BLAS thread only waits for a core that is busy (measured: a 20,000-long
    ``ddot`` took 16-20 ms with 2 OpenBLAS threads on a loaded 2-core machine, 0.02 ms
    with one). Does nothing when threadpoolctl is not installed.
    """
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _CONTROLLER.append(None)
        else:
            _CONTROLLER.append(ThreadpoolController())
    ctl = _CONTROLLER[0]
    if ctl is None:
        yield
        return
    with ctl.limit(limits=1, user_api="blas"):
        yield


_WARMED: set = set()


def warm_once(warmup, comm=None) -> None:
    """:func:`compile_once` the first time a (module-level) ``warmup`` meets ``comm``
    (one compile per communicator and process; later calls return at once)."""
    comm = get_comm(comm)
    key = (warmup, id(comm), comm.size)
    if key not in _WARMED:
        compile_once(warmup, comm)
        _WARMED.add(key)


def _start_jit() -> None:
    """The first Numba kernel call of a process costs about a second whatever the kernel
    (Numba starts its compiler); a tiny cached kernel pays it without touching the apps' cache."""
    from numba import njit

    @njit(cache=True)
    def _one(x):
        return x + 1

    _one(1)


def _warm_stamp(warmup, key):
    """The file that says ``warmup``'s kernels are in this node's Numba cache for these
    sources (the cache directory ends in a hash of them), or None (no key: a local function)."""
    name = key or f"{getattr(warmup, '__module__', '')}.{getattr(warmup, '__qualname__', '<locals>')}"
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if "<locals>" in name or "<lambda>" in name or not cache:
        return None
    return os.path.join(cache, "warm-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in name))


def compile_once(warmup, comm=None, key: str | None = None) -> None:
    """Run ``warmup()`` (which calls cached Numba kernels on tiny inputs) on the
    first rank of each node, then on the others, so the cache is written once.
    Once that has happened for these sources (a stamp file named by ``key``, or by the
    warmup's module and name, in the Numba cache directory), all ranks load the cached
    kernels at once instead of one after another.
    """
    comm = get_comm(comm)
    if comm.size == 1:
        warmup()
        return
    local = node_comm(comm)
    limit_blas_threads(local.size)
    try:
        _start_jit()  # every rank at once: ~1 s that would otherwise pass one rank after another
        stamp = _warm_stamp(warmup, key)
        warm = local.bcast(stamp is not None and os.path.exists(stamp), root=0)  # one decision per node
        if warm:
            warmup()
            return
        if local.rank == 0:
            warmup()
            if stamp is not None:
                try:
                    open(stamp, "a").close()
                except OSError:
                    pass
        local.Barrier()
        if local.rank != 0:
            warmup()
    finally:
        local.Free()
