"""However a job is started, an exception or a Ctrl-C on one rank ends every rank within
seconds, with one message naming the rank (never a hang, never one traceback per rank).

The scripts below are what a user writes and starts with ``mpiexec -n N python
script.py``: they import petuum_mpi and nothing else installs a hook. Each runs
under a timeout: before the hooks, most of them hung until it expired.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
TIMEOUT = 240  # a hang fails here; a good run takes seconds (minutes if the Numba cache is cold)
TB = "Traceback (most recent call last)"

# Small data shared by the scripts: X (40 x 6), a regression target, binary labels,
# ratings and a count matrix, the same on every rank.
PRELUDE = """
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
last = comm.size - 1
rng = np.random.default_rng(0)
X = rng.standard_normal((40, 6))
y = X @ np.arange(6.0) + 0.1 * rng.standard_normal(40)
yc = (y > 0).astype(float)
ratings = (rng.integers(0, 20, 300), rng.integers(0, 15, 300), rng.random(300))
counts = rng.integers(0, 3, (10, 30))

def boom(row):
    if comm.rank == last:
        raise RuntimeError("boom in a callback")
"""


def _env(n, extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    if n > (os.cpu_count() or 1):
        env.setdefault("MPIR_CVAR_POLLS_BEFORE_YIELD", "1")
    env.update(extra or {})
    return env


def _script(tmp_path, body, prelude=True):
    path = tmp_path / "script.py"
    path.write_text((PRELUDE if prelude else "") + textwrap.dedent(body))
    return str(path)


def run_script(n, tmp_path, body, prelude=True, env=None):
    cmd = [MPIEXEC, "-n", str(n), sys.executable, _script(tmp_path, body, prelude)]
    # own session, so a hung job is killed with all its ranks (no orphans spinning after the test)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(n, env),
                         cwd=tmp_path, start_new_session=True)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"{n} ranks: the job hung (no exit within {TIMEOUT} s)")
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def assert_one_traceback(p, n, text):
    assert p.returncode != 0, p.stderr
    assert p.stderr.count(TB) == 1, p.stderr
    assert p.stderr.count(text) == 1, p.stderr
    assert f"rank {n - 1} of {n}" in p.stderr, p.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_exception_before_fit_ends_the_job(n, tmp_path):
    p = run_script(n, tmp_path, """
        from petuum_mpi.apps.lasso import Lasso
        if comm.rank == last:
            raise ValueError("bad preprocessing on the last rank")
        Lasso(alpha=0.01).fit(X, y)   # the others wait for it in a collective
    """)
    assert_one_traceback(p, n, "ValueError: bad preprocessing on the last rank")


FITS = {
    "lasso": "from petuum_mpi.apps.lasso import Lasso\nLasso(alpha=0.01, tol=1e-12).fit(X, y, callback=boom)",
    "l1_logistic": "from petuum_mpi.apps.logistic_l1 import L1LogisticRegression\n"
                   "L1LogisticRegression(C=1.0, tol=1e-12).fit(X, yc, callback=boom)",
    "logreg": "from petuum_mpi.apps.logreg import LogisticRegression\n"
              "LogisticRegression(solver='sgd', max_iter=50).fit(X, yc, callback=boom)",
    "mf": "from petuum_mpi.apps.mf import MatrixFactorization\n"
          "MatrixFactorization(n_components=2, max_iter=50, n_users=20, n_items=15).fit(ratings, callback=boom)",
    "lda": "from petuum_mpi.apps.lda import LDA\nLDA(n_components=3, max_iter=50).fit(counts, callback=boom)",
}


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("app", sorted(FITS))
def test_exception_in_a_fit_callback_ends_the_job(app, n, tmp_path):
    p = run_script(n, tmp_path, FITS[app])
    assert_one_traceback(p, n, "RuntimeError: boom in a callback")


@pytest.mark.parametrize("n", [2, 4])
def test_exception_between_parameter_server_clocks_ends_the_job(n, tmp_path):
    p = run_script(n, tmp_path, """
        from petuum_mpi.bosen import ParameterServer, TableSpec
        with ParameterServer([TableSpec("w", 2, 3)], comm, consistency="bsp") as ps:
            for c in range(1000):
                if c == 3 and comm.rank == last:
                    raise KeyError("missing feature on the last rank")
                ps.inc("w", 0, np.ones(3))
                ps.clock()
    """)
    assert_one_traceback(p, n, "KeyError: 'missing feature on the last rank'")


@pytest.mark.parametrize("n", [2, 4])
def test_exception_in_a_thread_ends_the_job(n, tmp_path):
    p = run_script(n, tmp_path, """
        import threading
        import petuum_mpi
        def work():
            raise OSError("disk full in a writer thread")
        if comm.rank == last:
            t = threading.Thread(target=work, name="writer")
            t.start()
            t.join()
        comm.Barrier()
        comm.Barrier()   # the last rank's main thread waits too: only the hook ends the job
        if comm.rank == last:
            comm.recv(source=0)
    """)
    assert_one_traceback(p, n, "OSError: disk full in a writer thread")
    assert "in thread writer" in p.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_exception_before_any_mpi_call_ends_the_job(n, tmp_path):
    p = run_script(n, tmp_path, """
        import os
        import petuum_mpi
        if os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK")) == str(int(os.environ.get(
                "PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) - 1):
            raise ImportError("no module named mylib (last rank)")
        from mpi4py import MPI
        MPI.COMM_WORLD.Barrier()
    """, prelude=False)
    assert_one_traceback(p, n, "ImportError: no module named mylib (last rank)")


@pytest.mark.parametrize("n", [2, 4])
def test_same_exception_on_every_rank_is_printed_once(n, tmp_path):
    p = run_script(n, tmp_path, """
        import petuum_mpi
        comm.Barrier()
        raise ZeroDivisionError("the same bug everywhere")
    """)
    assert p.returncode != 0
    assert p.stderr.count(TB) == 1, p.stderr
    assert p.stderr.count("ZeroDivisionError: the same bug everywhere") == 1, p.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_collective_user_error_is_one_line(n, tmp_path):
    p = run_script(n, tmp_path, """
        from petuum_mpi.apps.lasso import Lasso
        Lasso(alpha=0.01).fit("no-such-dataset")
    """)
    assert p.returncode != 0
    assert TB not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "no-such-dataset" in ln]
    assert len(lines) == 1 and lines[0].startswith("petuum-mpi: error"), p.stderr


@pytest.mark.parametrize("n", [2, 4])
def test_user_error_on_one_rank_is_one_line_naming_the_rank(n, tmp_path):
    p = run_script(n, tmp_path, """
        from petuum_mpi.errors import DataError
        import petuum_mpi
        if comm.rank == last:
            raise DataError("rows.csv: row 7: not a number")
        comm.Barrier()
    """)
    assert p.returncode != 0
    assert TB not in p.stderr, p.stderr
    assert f"petuum-mpi: error (rank {n - 1} of {n}): rows.csv: row 7: not a number" in p.stderr


def test_caught_exceptions_are_left_to_the_user(tmp_path):
    p = run_script(2, tmp_path, """
        from petuum_mpi.apps.lasso import Lasso
        def stop(row):
            raise StopIteration("enough")
        try:
            Lasso(alpha=0.01).fit(X, y, callback=stop)   # every rank stops at its first epoch
        except StopIteration:
            print("caught on rank", comm.rank, flush=True)
        comm.Barrier()
    """)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("caught on rank") == 2


def test_user_excepthook_is_kept(tmp_path):
    p = run_script(2, tmp_path, """
        import sys
        def mine(t, v, tb):
            sys.stderr.write(f"MY HOOK: {v}\\n")
        sys.excepthook = mine
        import petuum_mpi
        if comm.rank == last:
            raise RuntimeError("seen by my hook")
        comm.Barrier()
    """)
    assert p.returncode != 0
    assert p.stderr.count("MY HOOK: seen by my hook") == 1, p.stderr
    assert "(rank 1 of 2)" in p.stderr


def test_one_process_keeps_the_python_traceback(tmp_path):
    script = _script(tmp_path, "import petuum_mpi\nraise RuntimeError('plain python')\n", prelude=False)
    p = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=TIMEOUT, env=_env(1))
    assert p.returncode == 1
    assert TB in p.stderr and "RuntimeError: plain python" in p.stderr
    assert "petuum-mpi" not in p.stderr


# ------------------------------------------------------------------ Ctrl-C
def _interrupt(cmd, n, cwd, started):
    """Start ``cmd`` in its own session, wait for ``started`` on its stdout, then
    send SIGINT to the whole process group (as Ctrl-C in a terminal does)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(n), cwd=cwd,
                         start_new_session=True)
    try:
        for line in p.stdout:  # rank 0 prints `started` once every rank is running
            if started in line:
                break
        else:
            pytest.fail("the job ended before it started: " + p.stderr.read())
        time.sleep(1.0)
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"{n} ranks: Ctrl-C did not end the job")
    return p.returncode, err


def _assert_interrupted(rc, err):
    assert rc == 130, (rc, err)
    assert TB not in err, err
    assert err.count("petuum-mpi: interrupted (Ctrl-C)") == 1, err


@pytest.mark.parametrize("n", [2, 4])
def test_ctrl_c_in_a_script(n, tmp_path):
    script = _script(tmp_path, """
        import time
        import petuum_mpi
        comm.Barrier()
        if comm.rank == 0:
            print("started", flush=True)
        while True:                    # rank 0 sleeps in Python, the others wait in a collective
            comm.allreduce(1)
            if comm.rank == 0:
                time.sleep(0.01)
    """)
    rc, err = _interrupt([MPIEXEC, "-n", str(n), sys.executable, script], n, tmp_path, "started")
    _assert_interrupted(rc, err)


@pytest.mark.parametrize("n", [2, 4])
def test_ctrl_c_in_petuum_mpi_run(n, tmp_path):
    subprocess.run([sys.executable, "-m", "petuum_mpi", "data", "synth", "lda", str(tmp_path / "corpus"),
                    "--docs", "200", "--words", "300", "--topics", "5"], check=True, env=_env(1), timeout=TIMEOUT,
                   capture_output=True)
    (tmp_path / "job.toml").write_text(textwrap.dedent("""
        app = "lda"
        [data]
        train = "corpus"
        [model]
        n_components = 5
        max_iter = 1000000
        evaluate_every = 1000000
        [run]
        output_dir = "runs"
        name = "interrupted"
        progress = "lines"
    """))
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "petuum_mpi", "run", "job.toml"]
    rc, err = _interrupt(cmd, n, tmp_path, "petuum-mpi: lda on")
    _assert_interrupted(rc, err)


# ------------------------------------------------- bad input before the kernels
LOADERS = {  # app module, its kernel warm-up function, a fit on a dataset folder
    "lasso": ("petuum_mpi.apps.lasso.estimator", "warm_once", lambda m, d: m.Lasso(alpha=0.1).fit(d)),
    "l1_logistic": ("petuum_mpi.apps.logistic_l1.estimator", "warm_once", lambda m, d: m.L1LogisticRegression().fit(d)),
    "logreg": ("petuum_mpi.apps.logreg.estimator", "warm_once", lambda m, d: m.LogisticRegression().fit(d)),
    "mf": ("petuum_mpi.drivers.dataparallel", "warm_once", lambda m, d: __import__("petuum_mpi.apps.mf", fromlist=["x"]).MatrixFactorization().fit(d)),
    "lda": ("petuum_mpi.drivers.dataparallel", "warm_once", lambda m, d: __import__("petuum_mpi.apps.lda", fromlist=["x"]).LDA().fit(d)),
}


@pytest.mark.mpi
@pytest.mark.parametrize("app", sorted(LOADERS))
def test_bad_input_fails_before_the_kernels_load(app, comm, shared_tmp, monkeypatch):
    import importlib

    from petuum_mpi.errors import DataError

    name, warm, fit = LOADERS[app]
    mod = importlib.import_module(name)

    def too_early(*a, **k):
        raise AssertionError("kernels loaded before the input was read")

    monkeypatch.setattr(mod, warm, too_early)
    with pytest.raises(DataError, match="no-such-dataset"):
        fit(mod, os.path.join(shared_tmp, "no-such-dataset"))
