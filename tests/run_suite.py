#!/usr/bin/env python3
"""Run the whole test suite: serial tests, then the MPI tests at 1, 2 and 4 ranks
and between nodes, under every MPI library given.

This is what ``make test`` (and so CI) runs. Each stage is one pytest process
(under ``mpiexec -n N`` for the MPI stages) with a hard wall-clock limit; the
counts of all stages are added up and printed as the last line::

    tests: N passed, N failed, N skipped

The MPI stages run under this interpreter's MPI library and then under the MPI
of each ``--mpi-python PY`` (another venv with the same package, e.g. Open MPI's
``.venv-ompi/bin/python``). Per library: ``n=1``, ``n=2``, ``n=4`` (more ranks
than cores: the library's oversubscribe / yield settings) and ``n=2 between
nodes`` (the ``nolocal`` tests without shared memory: MPICH ``MPIR_CVAR_NOLOCAL=1``,
Open MPI UCX over TCP (pml and osc ucx, UCX_TLS=tcp,self), Intel MPI ofi/tcp; see
``petuum_mpi.mpilib``).

The exit code is non-zero if any test failed, any stage crashed or timed out,
or no test ran at all. A failing stage names each failing test and its error,
even when an abort ended the stage before pytest's summary (the ranks log their
outcomes to files, see tests/conftest.py).

Options: ``--ranks 1,2,4`` (MPI stages), ``--mpi-python PY`` (repeatable),
``--no-between-nodes LIB`` (repeatable, e.g. "Open MPI"), ``-k EXPR`` / extra
args passed to pytest, ``--stage-timeout SECONDS``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))
from petuum_mpi import mpilib  # noqa: E402  (pure module: no MPI started here)

COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")
KEYS = ("passed", "failed", "errors", "skipped")


def mpiexec(python) -> str:
    here = os.path.join(os.path.dirname(python), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def library(python) -> str:
    """Name of the MPI library that mpi4py loads under ``python``."""
    out = subprocess.run([python, "-c", mpilib.VERSION_SNIPPET], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"run_suite: {python} cannot load mpi4py: {out.stderr.strip().splitlines()[-1:]}")
    return mpilib.identify(out.stdout)[0]


def read_logs(folder):
    recs = []
    for path in sorted(glob.glob(os.path.join(folder, "rank*.jsonl"))):
        with open(path) as f:
            for line in f:
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    pass
    return recs


def first_error(text):
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    if lines:
        return lines[0]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


def run_stage(name, cmd, env, timeout):
    print(f"\n===== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    logdir = tempfile.mkdtemp(prefix="petuum-tests-")
    env = dict(env, PETUUM_TEST_LOG_DIR=logdir)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    last = ""
    newline = True
    timed_out = False
    try:
        deadline = t0 + timeout
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            newline = line.endswith("\n")
            if re.search(r"\b(passed|failed|error|no tests ran)\b.* in [\d.]+s", line):
                last = line
            if time.perf_counter() > deadline:
                timed_out = True
                break
        proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        timed_out = True
    if not newline:
        print()
    if timed_out:
        os.killpg(proc.pid, 9)
        proc.wait()
        print(f"===== {name}: TIMED OUT after {timeout:.0f}s", flush=True)
    counts = {k: 0 for k in KEYS}
    for n, what in COUNT.findall(last):
        key = "errors" if what.startswith("error") else what
        if key in counts:
            counts[key] += int(n)
    recs = read_logs(logdir)
    for f in glob.glob(os.path.join(logdir, "*")):
        os.remove(f)
    os.rmdir(logdir)
    failures = {}
    for r in recs:
        if r["outcome"] == "failed":
            failures.setdefault(r["nodeid"], r)
    rc = proc.returncode
    ok = (rc in (0, 5)) and not timed_out
    if not last:
        # no pytest summary (an abort or a kill ended the stage): count from the ranks' logs
        rank0 = [r for r in recs if r["rank"] == 0 and r["when"] != "start"]
        counts["passed"] = len({r["nodeid"] for r in rank0 if r["outcome"] == "passed"} - set(failures))
        counts["skipped"] = len({r["nodeid"] for r in rank0 if r["outcome"] == "skipped"})
        counts["failed"] = len(failures)
    for nodeid, r in failures.items():
        print(f"===== {name}: FAILED {nodeid} (rank {r['rank']}, {r['when']}): {first_error(r['text'])}", flush=True)
    if not ok and not failures:
        # crashed or timed out inside a test (no report written): name the test that was running
        started = {r["rank"]: r["nodeid"] for r in recs if r["when"] == "start"}
        running = sorted(set(started.values()))
        why = "timed out" if timed_out else f"exit {rc}"
        print(f"===== {name}: ERROR {why}; last test started: {', '.join(running) or '(none)'}", flush=True)
        counts["errors"] += 1
    print(f"===== {name}: exit {rc}, {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['errors']} errors, {counts['skipped']} skipped, {time.perf_counter() - t0:.1f}s", flush=True)
    return counts, ok


def mpi_stages(python, lib, base, env, ranks, between_nodes=True):
    run = [python, "-m", "pytest", *base[3:]] if python != base[0] else base
    extra = mpilib.root_env(lib)
    stages = []
    for n in ranks:
        e = dict(env, **extra, **mpilib.oversubscribe_env(lib, n))
        stages.append((f"{lib} n={n}", [mpiexec(python), "-n", str(n), *run, "--with-mpi", "-m", "mpi"], e))
    if between_nodes:
        # the parameter server must also work when ranks do not share memory
        nodes = mpilib.between_nodes_env(lib)
        e = dict(env, **extra, **nodes)
        label = " ".join(f"{k}={v}" for k, v in nodes.items())
        stages.append((f"{lib} n=2 between nodes ({label})",
                       [mpiexec(python), "-n", "2", *run, "--with-mpi", "-m", "mpi and nolocal"], e))
    return stages


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--stage-timeout", type=float, default=1200)
    ap.add_argument("--no-serial", action="store_true")
    ap.add_argument("--mpi-python", action="append", default=[], metavar="PY",
                    help="also run the MPI stages under this interpreter's MPI (repeatable)")
    ap.add_argument("--no-between-nodes", action="append", default=[], metavar="LIB",
                    help="skip the between-nodes stage of this library, e.g. 'Open MPI' (repeatable)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k lasso")
    a = ap.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    py = sys.executable
    paths = [x for x in a.pytest_args if os.path.exists(os.path.join(ROOT, x.split("::")[0]))]
    base = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *([] if paths else ["tests"]), *a.pytest_args]
    ranks = [int(x) for x in a.ranks.split(",") if x.strip()]
    stages = []
    if not a.no_serial:
        stages.append(("serial", base, env))
    for python in [py, *a.mpi_python]:
        python = os.path.abspath(python) if os.sep in python else python
        lib = library(python)
        stages += mpi_stages(python, lib, base, env, ranks, between_nodes=lib not in a.no_between_nodes)
    total = {k: 0 for k in KEYS}
    bad = []
    times = []
    for name, cmd, e in stages:
        t0 = time.perf_counter()
        counts, ok = run_stage(name, cmd, e, a.stage_timeout)
        times.append((name, counts, time.perf_counter() - t0))
        for k in total:
            total[k] += counts[k]
        if not ok or counts["failed"] or counts["errors"]:
            bad.append(name)
    print()
    for name, c, t in times:
        print(f"{name:<70} {c['passed']:4d} passed {c['failed'] + c['errors']:3d} failed "
              f"{c['skipped']:3d} skipped {t:6.1f}s")
    if bad:
        print("failed stages: " + "; ".join(bad))
    if total["passed"] == 0:
        print("no test ran")
    print(f"tests: {total['passed']} passed, {total['failed'] + total['errors']} failed, {total['skipped']} skipped")
    return 1 if (bad or total["passed"] == 0) else 0


if __name__ == "__main__":
    sys.exit(main())
