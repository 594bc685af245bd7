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


@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("resume", [False, True])
def test_non_utf8_job_file_is_one_line(tmp_path, n, resume):
    job = tmp_path / "x.toml"
    job.write_bytes(b'app = "lasso"\n\xff\n')
    p, dt = run_cli(n, "run", str(job), *(["--resume"] if resume else []), timeout=60)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("petuum-mpi: error")]
    assert errors == [f"petuum-mpi: error: {job}: not UTF-8 text (byte 0xff at offset 14, line 2); "
                      "save the job file as UTF-8"], p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("n", [2])
def test_same_run_name_twice(regression, tmp_path, n):
    data, X, y = regression
    args = _job_args(data, tmp_path, "--set", "model.max_iter=5")
    p, _ = run_cli(n, *args)
    assert p.returncode == 0, p.stderr
    (tmp_path / "t" / "topics.txt").write_text("another app's file\n")
    before = (tmp_path / "t" / "summary.json").read_text()
    p, dt = run_cli(n, *args, timeout=60)  # refused: names the folder and the ways out
    assert p.returncode != 0 and dt < 30
    errors = [line for line in p.stderr.splitlines() if line.startswith("petuum-mpi: error")]
    assert len(errors) == 1 and f"{tmp_path / 't'} already exists" in errors[0], p.stderr
    assert "run.exists=new" in errors[0] and (tmp_path / "t" / "summary.json").read_text() == before
    p, _ = run_cli(n, *args, "--set", "run.exists=new")
    assert p.returncode == 0, p.stderr
    assert f"this run goes to {tmp_path / 't-2'}" in p.stdout and (tmp_path / "t-2" / "model.h5").exists()
    p, _ = run_cli(n, *args, "--set", "run.exists=overwrite")
    assert p.returncode == 0, p.stderr
    assert f"replaced the previous run in {tmp_path / 't'}" in p.stdout
    assert not (tmp_path / "t" / "topics.txt").exists() and (tmp_path / "t" / "model.h5").exists()


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    from petuum_mpi.data import write_ratings

    rng = np.random.default_rng(1)
    n = 3000
    u, i = rng.integers(0, 200, n), rng.integers(0, 150, n)
    v = (rng.standard_normal(200)[u] * rng.standard_normal(150)[i] + 3).astype(np.float32)
    path = str(tmp_path_factory.mktemp("data") / "ratings")
    write_ratings(path, u, i, v, 200, 150, n_shards=2)
    return path


@pytest.mark.parametrize("n", [2, 4])
def test_resume_skips_a_corrupt_snapshot_and_prunes(ratings, tmp_path, n):
    job = tmp_path / "mf.toml"
    job.write_text(f'app = "mf"\n[data]\ntrain = "{ratings}"\n[model]\nn_components = 3\nmax_iter = 6\n'
                   'clocks_per_epoch = 1\nvalidation_fraction = 0\n'
                   '[engine]\nconsistency = "bsp"\nstaleness = 0\nsnapshot_every = 1\nsnapshot_dir = "ckpt"\n'
                   'keep_snapshots = 2\n[run]\noutput_dir = "runs"\nname = "m"\nprogress = "off"\n')
    ck = tmp_path / "ckpt"  # relative to the job file
    p, _ = run_cli(n, "run", str(job), "--resume")  # nothing to resume from yet: says so, starts fresh
    assert p.returncode == 0, p.stderr
    assert f"petuum-mpi: warning: resume: no snapshot in {ck} yet: starting from scratch" in p.stderr
    assert sorted(os.listdir(ck)) == ["ckpt-00000005", "ckpt-00000006"]  # keep_snapshots = 2
    shard = ck / "ckpt-00000006" / f"shard-{n - 1:05d}.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    p, _ = run_cli(n, "run", str(job), "--resume", "--set", "model.max_iter=8")
    assert p.returncode == 0, p.stderr
    warn = [line for line in p.stderr.splitlines() if "warning" in line]
    assert len(warn) == 1 and f"resuming from {ck / 'ckpt-00000005'}, not from the newer {ck / 'ckpt-00000006'}" \
        in warn[0] and "checksum mismatch" in warn[0], p.stderr
    assert json.loads((tmp_path / "runs" / "m" / "summary.json").read_text())["n_iter"] == 8
    # every snapshot corrupt: one error line
    for d in os.listdir(ck):
        s = ck / d / "shard-00000.h5"
        s.write_bytes(s.read_bytes()[:-10])
    p, dt = run_cli(n, "run", str(job), "--resume", timeout=60)
    assert p.returncode != 0 and dt < 30
    errors = [line for line in p.stderr.splitlines() if line.startswith("petuum-mpi: error")]
    assert len(errors) == 1 and f"no intact snapshot in {ck}" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
