"""MPI runtime helpers: the communicator, abort-on-error, rank-0 output, Numba cache.

Rules every part of petuum_mpi follows:

* An exception on any rank must bring the whole job down within seconds. The
  command line installs :func:`install_abort_handler`, which prints the error
  once (with its rank) and calls ``MPI.COMM_WORLD.Abort``. Library code only
  raises; it never calls ``Abort`` itself.
* Numba kernels are compiled on one rank per node before the other ranks load
  them from the cache (:func:`compile_once`), so cache files are never written
  concurrently.
* One rank per core: when several ranks share a node, each rank's BLAS (NumPy /
  SciPy's OpenBLAS or MKL) is limited to its share of the cores
  (:func:`limit_blas_threads`, called by :func:`compile_once`), unless the user set
  ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback

from .errors import PetuumError

_ABORT_INSTALLED = False


def _setup_numba_cache_dir() -> None:
    """Give Numba a node-local cache directory unless the user chose one.

    Must run before numba is imported. The default (``__pycache__`` next to the
    sources) may be on a shared file system where ranks of many nodes would
    write the same files; a per-user, per-node directory avoids that.
    """
    if "NUMBA_CACHE_DIR" in os.environ:
        return
    base = os.environ.get("TMPDIR") or "/tmp"
    user = os.environ.get("USER") or str(os.getuid())
    path = os.path.join(base, f"petuum_mpi-numba-{user}-{socket.gethostname()}")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    os.environ["NUMBA_CACHE_DIR"] = path


_setup_numba_cache_dir()


def get_comm(comm=None):
    """Return ``comm`` or ``MPI.COMM_WORLD``."""
    if comm is not None:
        return comm
    from mpi4py import MPI

    return MPI.COMM_WORLD


def is_root(comm=None) -> bool:
    return get_comm(comm).rank == 0


def rprint(*args, comm=None, file=None, **kw) -> None:
    """Print on rank 0 only (flushes, so lines are not lost under mpiexec)."""
    if get_comm(comm).rank == 0:
        print(*args, file=file or sys.stdout, flush=True, **kw)


def format_error(exc: BaseException, rank: int, size: int) -> str:
    """One readable message for a user error; a full traceback otherwise."""
    where = f" (rank {rank} of {size})" if size > 1 else ""
    if isinstance(exc, PetuumError):
        return f"petuum-mpi: error{where}: {exc}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"petuum-mpi: unexpected error{where}:\n{tb}"


def abort_on_error(exc: BaseException, comm=None, code: int = 1) -> None:
    """Print ``exc`` once with its rank and abort every rank of the job."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    sys.stderr.write(format_error(exc, world.rank, world.size) + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    if world.size > 1:
        time.sleep(0.3)  # let mpiexec forward the message before the abort tears the job down
        world.Abort(code)
    raise SystemExit(code)


def install_abort_handler() -> None:
    """Make an uncaught exception on any rank abort the whole job (not hang it)."""
    global _ABORT_INSTALLED
    if _ABORT_INSTALLED:
        return
    previous = sys.excepthook

    def hook(etype, value, tb):
        if issubclass(etype, KeyboardInterrupt):
            previous(etype, value, tb)
            return
        try:
            abort_on_error(value)
        except SystemExit:
            pass

    sys.excepthook = hook
    _ABORT_INSTALLED = True


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


_WARMED: set = set()


def warm_once(warmup, comm=None) -> None:
    """:func:`compile_once` the first time a (module-level) ``warmup`` meets ``comm``
    (one compile per communicator and process; later calls return at once)."""
    comm = get_comm(comm)
    key = (warmup, id(comm), comm.size)
    if key not in _WARMED:
        compile_once(warmup, comm)
        _WARMED.add(key)


def compile_once(warmup, comm=None) -> None:
    """Run ``warmup()`` (which calls cached Numba kernels on tiny inputs) on the
    first rank of each node, then on the others, so the cache is written once.
    """
    comm = get_comm(comm)
    if comm.size == 1:
        warmup()
        return
    local = node_comm(comm)
    limit_blas_threads(local.size)
    try:
        if local.rank == 0:
            warmup()
        local.Barrier()
        if local.rank != 0:
            warmup()
    finally:
        local.Free()
