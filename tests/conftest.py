"""Test harness rules.

* Multi-rank tests carry ``@pytest.mark.mpi`` and run under
  ``mpiexec -n N python -m pytest --with-mpi -m mpi`` (pytest-mpi) at N = 1, 2, 4.
* A test that fails on one rank while the others wait in a collective would hang
  the run: the hook below prints the failure with its rank and aborts the whole
  communicator at once, so the run fails fast instead.
* Every test has a timeout (pyproject: ``timeout``); in a multi-rank run a timeout
  also aborts all ranks.
"""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _world():
    try:
        from mpi4py import MPI
    except ImportError:  # pragma: no cover
        return None
    return MPI.COMM_WORLD


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # A rank stuck inside an MPI call never returns to Python, so a signal-based
    # timeout would not fire there: under mpiexec use pytest-timeout's thread
    # method (dump stacks, exit; mpiexec then takes the other ranks down).
    if config.getoption("with_mpi", False):
        config.option.timeout_method = "thread"


def pytest_sessionstart(session):
    config = session.config
    # Under mpiexec only rank 0 reports; failures on other ranks are printed by
    # the hook below before it aborts the run.
    if config.getoption("with_mpi", False):
        world = _world()
        _RANK[0] = world.rank if world is not None else 0
        if world is not None and world.rank != 0:
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                # keep the plugin (pytest-timeout and others need it), silence its output
                from _pytest._io import TerminalWriter

                reporter._tw = TerminalWriter(open(os.devnull, "w"))


_RANK = [0]


def _log(record):
    """Test outcomes into $PETUUM_TEST_LOG_DIR/rank<R>.jsonl (set by tests/run_suite.py),
    written before an abort: mpiexec may end a stage before its ranks' output is shown."""
    folder = os.environ.get("PETUUM_TEST_LOG_DIR")
    if folder:
        with open(os.path.join(folder, f"rank{_RANK[0]}.jsonl"), "a") as f:
            f.write(json.dumps({"rank": _RANK[0], **record}) + "\n")


def pytest_runtest_logstart(nodeid, location):
    _log({"nodeid": nodeid, "when": "start", "outcome": "started"})


def _log_report(item, report):
    if report.failed or (_RANK[0] == 0 and (report.when == "call" or report.skipped)):
        _log({"nodeid": item.nodeid, "when": report.when, "outcome": report.outcome,
              "text": report.longreprtext if report.failed else ""})


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    _log_report(item, report)
    if not report.failed or not item.config.getoption("with_mpi", False):
        return
    world = _world()
    if world is None or world.size == 1:
        return
    sys.stderr.write(
        f"\n=== FAILED on rank {world.rank} of {world.size}: {item.nodeid} ({report.when}) ===\n"
        f"{report.longreprtext}\n=== aborting all ranks ===\n"
    )
    sys.stderr.flush()
    world.Abort(1)


@pytest.fixture
def comm():
    """COMM_WORLD (the communicator of the mpiexec run, size 1 in serial runs)."""
    return _world()


@pytest.fixture
def shared_tmp(comm, tmp_path):
    """A temporary folder that is the same on every rank (rank 0's tmp_path)."""
    path = comm.bcast(str(tmp_path) if comm.rank == 0 else None, root=0)
    return path
