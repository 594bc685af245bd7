"""An exception on one rank brings the whole job down fast; errors are printed once."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def run_mpi(n, code, timeout=60):
    t0 = time.perf_counter()
    p = subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return p, time.perf_counter() - t0


@pytest.mark.parametrize("n", [2, 4])
def test_exception_on_one_rank_aborts_all(n):
    code = """
        from petuum_mpi.runtime import install_abort_handler
        from mpi4py import MPI
        install_abort_handler()
        c = MPI.COMM_WORLD
        if c.rank == c.size - 1:
            raise RuntimeError("boom on the last rank")
        c.Barrier()   # the others would wait here forever
    """
    p, dt = run_mpi(n, code)
    assert p.returncode != 0
    assert dt < 20
    assert p.stderr.count("boom on the last rank") == 1
    assert f"rank {n - 1} of {n}" in p.stderr


def test_user_error_is_one_line_without_traceback():
    code = """
        from petuum_mpi.runtime import install_abort_handler
        from petuum_mpi.errors import DataError
        from mpi4py import MPI
        install_abort_handler()
        if MPI.COMM_WORLD.rank == 1:
            raise DataError("shard-00001.h5: checksum mismatch")
        MPI.COMM_WORLD.Barrier()
    """
    p, dt = run_mpi(2, code)
    assert p.returncode != 0
    assert "petuum-mpi: error (rank 1 of 2): shard-00001.h5: checksum mismatch" in p.stderr
    assert "Traceback" not in p.stderr


def test_numba_cache_dir_is_node_local():
    code = "import petuum_mpi, os; print(os.environ['NUMBA_CACHE_DIR'])"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    import socket

    assert socket.gethostname() in out.strip()


def test_numba_cache_dir_changes_with_any_source(tmp_path):
    """Numba keys a cached kernel on its own file only: a kernel inlining an overload of
    another module (linear/rows.py) must not load stale code after that module changed."""
    import shutil

    import petuum_mpi

    src = tmp_path / "src"
    shutil.copytree(os.path.dirname(petuum_mpi.__file__), src / "petuum_mpi",
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = "import petuum_mpi, os; print(os.environ['NUMBA_CACHE_DIR'])"
    env = dict(os.environ, PYTHONPATH=str(src), NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def cache_dir(**extra):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(env, **extra),
                              check=True).stdout.strip()

    first = cache_dir()
    assert first.startswith(str(tmp_path / "cache")) and cache_dir() == first
    assert cache_dir(NUMBA_CACHE_DIR=first) == first  # a child process inheriting the directory keeps it
    with open(src / "petuum_mpi" / "linear" / "rows.py", "a") as f:
        f.write("# changed\n")
    assert cache_dir() != first


@pytest.mark.mpi
def test_blas_threads_limited_to_the_rank_share_of_cores(comm):
    import numpy as np  # noqa: F401  (loads OpenBLAS)
    from threadpoolctl import threadpool_info

    from petuum_mpi.runtime import compile_once, limit_blas_threads, node_comm

    compile_once(lambda: None, comm)
    local = node_comm(comm)
    n_local = local.size
    local.Free()
    blas = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    user_set = any(v in os.environ for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"))
    if n_local > 1 and not user_set and blas:
        share = max(1, len(os.sched_getaffinity(0)) // n_local)
        assert all(t <= share for t in blas), (blas, share)
    assert limit_blas_threads(1) is None  # one rank on the node: leave BLAS alone


_WARM_CALLS = []


def _record_warm():
    _WARM_CALLS.append(1)


@pytest.mark.mpi
def test_compile_once_stamps_a_warm_cache_then_warms_all_ranks_at_once(comm, monkeypatch, tmp_path):
    """After the first (serial) warm-up a stamp in the Numba cache directory lets later runs
    warm every rank at once; the decision is the node's (no rank waits at a barrier alone)."""
    from petuum_mpi import runtime

    base = comm.bcast(str(tmp_path), root=0)
    monkeypatch.setenv("NUMBA_CACHE_DIR", base)
    stamp = runtime._warm_stamp(_record_warm, None)
    assert stamp == os.path.join(base, f"warm-{__name__}._record_warm")
    assert runtime._warm_stamp(lambda: None, None) is None  # a lambda has no stable name
    assert runtime._warm_stamp(lambda: None, "bosen.kernels.<i4") == os.path.join(base, "warm-bosen.kernels._i4")
    _WARM_CALLS.clear()
    runtime.compile_once(_record_warm, comm)
    assert _WARM_CALLS == [1]
    assert comm.size == 1 or os.path.exists(stamp)
    barriers = []
    monkeypatch.setattr(runtime, "node_comm", _counting_barriers(runtime.node_comm, barriers))
    runtime.compile_once(_record_warm, comm)  # stamped: no serial pass
    assert _WARM_CALLS == [1, 1] and barriers == []
    comm.Barrier()


def _counting_barriers(node_comm, barriers):
    class C:
        def __init__(self, c):
            self.c = c

        def __getattr__(self, name):
            return getattr(self.c, name)

        def Barrier(self):
            barriers.append(1)
            self.c.Barrier()

    return lambda comm: C(node_comm(comm))
