"""Jobs end to end through the command line, under mpiexec, including bad input.

Each bad input must give one readable message and a non-zero exit within
seconds, with no rank left hanging.
"""

import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from petuum_mpi.data import write_matrix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
LASSO_JOB = os.path.join(ROOT, "jobs", "lasso.toml")


def run_cli(n, *args, timeout=120):
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1")
    t0 = time.perf_counter()
    p = subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, "-m", "petuum_mpi", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env,
    )
    return p, time.perf_counter() - t0


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    rng = np.random.default_rng(0)
    n, d = 120, 40
    X = rng.standard_normal((n, d))
    coef = np.zeros(d)
    coef[:5] = [3, -2, 1.5, 1, -1]
    y = X @ coef + 0.1 * rng.standard_normal(n)
    path = str(tmp_path_factory.mktemp("data") / "reg")
    write_matrix(path, X, y, shard_sizes=[17, 50, 3, 50])
    return path, X, y


def _job_args(data, out, *more):
    return ["run", LASSO_JOB, "--set", f"data.train={data!r}".replace("'", '"'), "--set",
            f'run.output_dir="{out}"', "--set", 'run.name="t"', "--set", 'run.progress="lines"', *more]


@pytest.mark.parametrize("n", [1, 2])
def test_lasso_job_end_to_end_matches_sklearn(regression, tmp_path, n):
    from sklearn.linear_model import Lasso

    data, X, y = regression
    p, dt = run_cli(n, *_job_args(data, tmp_path, "--set", "model.alpha=0.05", "--set", "model.tol=1e-8"))
    assert p.returncode == 0, p.stderr
    run = tmp_path / "t"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ranks"] == n
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) >= 1 and all("objective" in r for r in rows)
    with h5py.File(run / "model.h5") as f:
        coef = f["coef"][:]
    ref = Lasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(X, y)
    assert np.allclose(coef, ref.coef_, atol=1e-5)
    assert (run / "config.toml").read_text().count("alpha = 0.05") == 1
    assert "results in" in p.stdout


def _corrupt(path):
    shard = os.path.join(path, "shard-00001.h5")
    with open(shard, "r+b") as fh:
        fh.seek(os.path.getsize(shard) // 2)
        fh.write(b"\x00garbage\x00")


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


@pytest.mark.parametrize(
    "case, needle, n",
    [
        ("checksum", "checksum", 2),
        ("checksum", "checksum", 4),
        ("missing_shard", "shard-00002.h5", 2),
        ("nan", "not finite", 2),
        ("nan", "not finite", 4),
        ("unknown_key", "[model] alfa: unknown key", 2),
        ("bad_value", "[model] alpha: must be > 0", 2),
        ("missing_data", "[data] train: not found", 2),
        ("too_many_ranks", "cannot split 3 rows over 4 ranks", 4),
    ],
)
def test_bad_input_fails_fast_with_one_message(regression, tmp_path, case, needle, n):
    data, X, y = regression
    extra = []
    if case == "checksum":
        data = _copy(data, tmp_path / "d")
        _corrupt(data)
    elif case == "missing_shard":
        data = _copy(data, tmp_path / "d")
        os.remove(os.path.join(data, "shard-00002.h5"))
    elif case == "nan":
        Xn = X.copy()
        Xn[70, 3] = np.nan
        data = str(tmp_path / "nan")
        write_matrix(data, Xn, y, n_shards=2, validate=False)
    elif case == "unknown_key":
        extra = ["--set", "model.alfa=1"]
    elif case == "bad_value":
        extra = ["--set", "model.alpha=-1"]
    elif case == "missing_data":
        data = str(tmp_path / "nope")
    elif case == "too_many_ranks":
        data = str(tmp_path / "tiny")
        write_matrix(data, X[:3], y[:3], n_shards=1)
        n = 4
    p, dt = run_cli(n, *_job_args(data, tmp_path / "out", *extra), timeout=60)
    assert p.returncode != 0
    assert dt < 30, f"took {dt:.1f}s"
    assert needle in p.stderr, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("petuum-mpi: error")]
    assert len(errors) == 1, p.stderr
    assert "Traceback" not in p.stderr
