#!/usr/bin/env python3
"""Run the whole test suite: serial tests, then the MPI tests at 1, 2 and 4 ranks.

This is what ``make test`` (and so CI) runs. Each stage is one pytest process
(under ``mpiexec -n N`` for the MPI stages) with a hard wall-clock limit; the
counts of all stages are added up and printed as the last line::

    tests: N passed, N failed, N skipped

The exit code is non-zero if any test failed, any stage crashed or timed out,
or no test ran at all.

Options: ``--ranks 1,2,4`` (MPI stages), ``-k EXPR`` / extra args passed to
pytest, ``--stage-timeout SECONDS``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)")


def mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def oversubscribed(env, n):
    """MPICH busy-polls inside MPI calls; with more ranks than cores the waiting
    ranks would starve the working ones. Make them yield the core while polling."""
    if n > (os.cpu_count() or 1):
        env = dict(env)
        env.setdefault("MPIR_CVAR_POLLS_BEFORE_YIELD", "1")
    return env


def run_stage(name, cmd, env, timeout):
    print(f"\n===== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    last = ""
    timed_out = False
    try:
        deadline = t0 + timeout
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if re.search(r"\b(passed|failed|error|no tests ran)\b.* in [\d.]+s", line):
                last = line
            if time.perf_counter() > deadline:
                timed_out = True
                break
        proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        timed_out = True
    if timed_out:
        os.killpg(proc.pid, 9)
        proc.wait()
        print(f"===== {name}: TIMED OUT after {timeout:.0f}s", flush=True)
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    for n, what in COUNT.findall(last):
        key = "errors" if what.startswith("error") else what
        if key in counts:
            counts[key] += int(n)
    rc = proc.returncode
    print(f"===== {name}: exit {rc}, {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['errors']} errors, {time.perf_counter() - t0:.1f}s", flush=True)
    ok = (rc in (0, 5)) and not timed_out
    return counts, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--stage-timeout", type=float, default=1200)
    ap.add_argument("--no-serial", action="store_true")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k lasso")
    a = ap.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    py = sys.executable
    paths = [x for x in a.pytest_args if os.path.exists(os.path.join(ROOT, x.split("::")[0]))]
    base = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *([] if paths else ["tests"]), *a.pytest_args]
    stages = []
    if not a.no_serial:
        stages.append(("serial", base, env))
    for n in [int(x) for x in a.ranks.split(",") if x.strip()]:
        stages.append((f"mpi n={n}", [mpiexec(), "-n", str(n), *base, "--with-mpi", "-m", "mpi"], oversubscribed(env, n)))
    # The parameter server must also work when ranks do not share memory:
    # MPICH with NOLOCAL imitates separate nodes on this machine.
    nolocal = dict(env, MPIR_CVAR_NOLOCAL="1")
    stages.append(("mpi n=2 NOLOCAL", [mpiexec(), "-n", "2", *base, "--with-mpi", "-m", "mpi and nolocal"], nolocal))
    total = {k: 0 for k in ("passed", "failed", "errors", "skipped")}
    bad = []
    for name, cmd, e in stages:
        counts, ok = run_stage(name, cmd, e, a.stage_timeout)
        for k in total:
            total[k] += counts[k]
        if not ok or counts["failed"] or counts["errors"]:
            bad.append(name)
    print()
    if bad:
        print("failed stages: " + ", ".join(bad))
    if total["passed"] == 0:
        print("no test ran")
    print(f"tests: {total['passed']} passed, {total['failed'] + total['errors']} failed, {total['skipped']} skipped")
    return 1 if (bad or total["passed"] == 0) else 0


if __name__ == "__main__":
    sys.exit(main())
