"""Run directories and snapshots under failure: existing run names, disk full, corrupt snapshots, pruning.

The ``mpi`` tests run at 1, 2 and 4 ranks (pytest-mpi). The disk-full tests mount a tiny tmpfs
in a user + mount namespace (``unshare -rm``) and run the job there under mpiexec; they are
skipped where user namespaces are not allowed (the monkeypatched test still covers the logic).
"""

import errno
import glob
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from petuum_mpi.bosen import ParameterServer, TableSpec, latest_snapshot
from petuum_mpi.bosen.snapshot import MANIFEST
from petuum_mpi.errors import ConfigError, DataError
from petuum_mpi.rundir import OutputError, RunDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")


def _job(out, name="r", exists="error", resume=False):
    return {"app": "lasso", "run": {"output_dir": str(out), "name": name, "exists": exists},
            "engine": {"resume": resume}}


def _previous_run(out, name="r", app_file="topics.txt"):
    d = out / name
    d.mkdir(parents=True)
    (d / "config.toml").write_text('app = "lda"\n')
    (d / app_file).write_text("old\n")
    return d


# ------------------------------------------------------------ run names
def test_existing_run_name_is_refused_and_names_the_way_out(tmp_path):
    _previous_run(tmp_path)
    with pytest.raises(ConfigError) as e:
        RunDir.create(_job(tmp_path))
    msg = str(e.value)
    assert str(tmp_path / "r") in msg and "already exists" in msg
    assert "--set run.name=" in msg and "run.exists=new" in msg and "run.exists=overwrite" in msg
    assert (tmp_path / "r" / "topics.txt").read_text() == "old\n"


def test_exists_new_makes_the_next_free_name(tmp_path):
    _previous_run(tmp_path)
    (tmp_path / "r-2").mkdir()
    (tmp_path / "r-2" / "x").write_text("")
    rd = RunDir.create(_job(tmp_path, exists="new"))
    rd.close()
    assert rd.path == str(tmp_path / "r-3")
    assert "r-3" in rd.note and "already exists" in rd.note
    assert (tmp_path / "r" / "topics.txt").exists()


def test_exists_overwrite_replaces_the_whole_previous_run(tmp_path):
    _previous_run(tmp_path)
    rd = RunDir.create(_job(tmp_path, exists="overwrite"))
    rd.write_config({"app": "lasso"})
    rd.close()
    assert rd.path == str(tmp_path / "r") and "replaced" in rd.note
    assert not (tmp_path / "r" / "topics.txt").exists()  # no other app's files left beside the new ones
    assert sorted(os.listdir(rd.path)) == ["config.toml", "log.txt", "metrics.jsonl"]


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match="not a run directory"):
        RunDir.create(_job(tmp_path, exists="overwrite"))
    assert (tmp_path / "r" / "thesis.tex").read_text() == "precious"


def test_resume_continues_its_own_directory(tmp_path):
    d = _previous_run(tmp_path)
    (d / "metrics.jsonl").write_text('{"iter": 1}\n')
    rd = RunDir.create(_job(tmp_path, resume=True))
    rd.log_metrics({"iter": 2})
    rd.close()
    assert rd.path == str(d) and rd.note is None
    assert len((d / "metrics.jsonl").read_text().splitlines()) == 2


def test_unnamed_runs_never_clash(tmp_path):
    job = _job(tmp_path, name=None)
    a = RunDir.create(job)
    a.write_config({"app": "lasso"})
    a.close()
    b = RunDir.create(job)  # same second: a suffix, not an error
    b.close()
    assert a.path != b.path


# ------------------------------------------------------------ disk full (monkeypatched)
def test_model_write_failure_is_one_line_and_keeps_the_previous_model(tmp_path, monkeypatch):
    rd = RunDir(str(tmp_path / "r"))
    rd.save_model({"coef": np.arange(3.0)})
    real = os.fsync

    def full_disk(fd):  # where a full disk (or an NFS quota) shows up at the latest
        real(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError) as e:
        rd.save_model({"coef": np.zeros(1000)})
    monkeypatch.undo()
    rd.close()
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "r" / "model.h5")) and "no space left on device" in msg
    assert "\n" not in msg
    assert glob.glob(str(tmp_path / "r" / "*.tmp")) == []
    with h5py.File(tmp_path / "r" / "model.h5") as f:
        assert f["coef"][:].tolist() == [0.0, 1.0, 2.0]


# ------------------------------------------------------------ snapshots (MPI)
def _ps(comm, d, keep=3):
    ps = ParameterServer([TableSpec("w", 4, 6), TableSpec("n", 1, 2, "int64")], comm, consistency="bsp",
                         snapshot_every=1, snapshot_dir=d)
    ps.keep_snapshots = keep
    return ps


def _clocks(ps, n):
    for _ in range(n):
        ps.inc("w", ps.me % 4, np.ones(6))
        ps.inc("n", 0, np.array([1, ps.clock_value], dtype=np.int64))
        ps.clock(state={"c": np.array([ps.clock_value + 1])})


def _ckpts(d):
    return sorted(n for n in os.listdir(d) if n.startswith("ckpt-"))


@pytest.mark.mpi
@pytest.mark.parametrize("keep", [2, 0])
def test_keep_snapshots_prunes_old_ones(comm, shared_tmp, keep):
    d = os.path.join(shared_tmp, f"k{keep}")
    with _ps(comm, d, keep) as ps:
        _clocks(ps, 5)
    comm.Barrier()
    want = ["ckpt-00000004", "ckpt-00000005"] if keep == 2 else [f"ckpt-{c:08d}" for c in range(1, 6)]
    assert _ckpts(d) == want
    man = json.load(open(os.path.join(d, "ckpt-00000005", MANIFEST)))
    assert sorted(man["sha256"]) == [f"shard-{r:05d}.h5" for r in range(comm.size)]
    assert all(len(h) == 64 for h in man["sha256"].values())


def _flip(path):
    with open(path, "r+b") as fh:
        fh.seek(os.path.getsize(path) // 2)
        b = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([b[0] ^ 0xFF]))


@pytest.mark.mpi
def test_resume_skips_a_corrupt_newest_snapshot(comm, shared_tmp, capfd):
    d = os.path.join(shared_tmp, "c")
    with _ps(comm, d) as ps:
        _clocks(ps, 3)
    comm.Barrier()
    if comm.rank == 0:
        _flip(os.path.join(d, "ckpt-00000003", f"shard-{comm.size - 1:05d}.h5"))
    comm.Barrier()
    capfd.readouterr()
    with _ps(comm, d) as ps:
        clk, state = ps.resume()
        assert clk == 2 and int(state["c"][0]) == 2
    err = capfd.readouterr().err
    if comm.rank == 0:
        lines = [x for x in err.splitlines() if "warning" in x]
        assert len(lines) == 1, err
        assert "ckpt-00000003" in lines[0] and "checksum mismatch" in lines[0] and "ckpt-00000002" in lines[0]
    comm.Barrier()
    assert latest_snapshot(d).endswith("ckpt-00000002")


@pytest.mark.mpi
def test_no_intact_snapshot_is_one_error_on_every_rank(comm, shared_tmp):
    d = os.path.join(shared_tmp, "bad")
    with _ps(comm, d) as ps:
        _clocks(ps, 2)
    comm.Barrier()
    if comm.rank == 0:
        for c in _ckpts(d):
            _flip(os.path.join(d, c, "shard-00000.h5"))
    comm.Barrier()
    with _ps(comm, d) as ps:
        with pytest.raises(DataError) as e:
            ps.resume()
    msg = str(e.value)
    assert msg.startswith(f"no intact snapshot in {d}") and "ckpt-00000001" in msg and "ckpt-00000002" in msg
    assert e.value.collective


@pytest.mark.mpi
def test_resume_without_snapshot_says_so(comm, shared_tmp, capfd):
    d = os.path.join(shared_tmp, "none")
    capfd.readouterr()
    with _ps(comm, d) as ps:
        assert ps.resume() is None
    err = capfd.readouterr().err
    assert (comm.rank == 0) == (f"no snapshot in {d} yet: starting from scratch" in err), err


# ------------------------------------------------------------ disk full on a real tmpfs
def _can_unshare():
    if not shutil.which("unshare"):
        return False
    p = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || "
                        "mount -t tmpfs -o size=64k tmpfs /tmp"], capture_output=True)
    return p.returncode == 0


needs_tmpfs = pytest.mark.skipif(not _can_unshare(), reason="cannot mount a tmpfs in a user namespace here")


def _in_tmpfs(mnt, size, script, n, filler=0, timeout=120):
    """Run ``mpiexec -n N python -c script`` with a ``size`` tmpfs at ``mnt`` (``filler`` bytes taken)."""
    env = dict(os.environ, MPIR_CVAR_POLLS_BEFORE_YIELD="1", PYTHONPATH=os.pathsep.join(sys.path))
    fill = f"head -c {filler} /dev/zero > {mnt}/filler && " if filler else ""
    sh = (f"mount -t tmpfs -o size={size} tmpfs {mnt} && {fill}"
          f'"{MPIEXEC}" -n {n} "{sys.executable}" {script}; rc=$?; ls -aR {mnt}; exit $rc')
    return subprocess.run(["unshare", "-rm", "sh", "-c", sh], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


SNAP_SCRIPT = """
import os, sys, numpy as np
from petuum_mpi.bosen import ParameterServer, TableSpec, latest_snapshot
from petuum_mpi.bosen.snapshot import read_snapshot
from petuum_mpi.errors import PetuumError
from mpi4py import MPI
d = sys.argv[1]
comm = MPI.COMM_WORLD
ps = ParameterServer([TableSpec("w", 64, 512)], comm, consistency="bsp", snapshot_dir=d)
ps.snapshot()                                    # ~270 KB: fits
ps.clock()
try:
    ps.snapshot()                                # a second one does not
    print("NO-ERROR")
except PetuumError as e:
    if comm.rank == 0:
        print("ERROR:", e)
comm.Barrier()
if comm.rank == 0:
    print("LATEST:", latest_snapshot(d))
ps.shutdown()
"""


@needs_tmpfs
@pytest.mark.parametrize("n", [2, 4])
def test_snapshot_on_a_full_disk(tmp_path, n):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = tmp_path / "snap.py"
    script.write_text(SNAP_SCRIPT)
    p = _in_tmpfs(mnt, "400k", f"{script} {mnt}/ckpt", n)
    assert p.returncode == 0, p.stderr
    assert "NO-ERROR" not in p.stdout
    err = [x for x in p.stdout.splitlines() if x.startswith("ERROR:")]
    assert len(err) == 1, p.stdout
    assert "no space left on device" in err[0] and "shard-0000" in err[0] and "ckpt-00000001" in err[0]
    assert "previous snapshots are intact" in err[0]
    assert f"LATEST: {mnt}/ckpt/ckpt-00000000" in p.stdout  # the previous one still verifies
    assert ".tmp" not in p.stdout.split("LATEST:")[1]  # the ls -aR listing of the tmpfs
    assert "ckpt-00000001" not in p.stdout.split("LATEST:")[1]  # the failed one is removed


@needs_tmpfs
@pytest.mark.parametrize("n", [2, 4])
def test_model_on_a_full_disk_through_the_cli(tmp_path, n):
    from petuum_mpi.data import write_matrix

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3000))
    write_matrix(str(tmp_path / "data"), X, X[:, 0] + 0.1 * rng.standard_normal(60), n_shards=2)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = (f"-m petuum_mpi run {ROOT}/jobs/lasso.toml --set data.train='{tmp_path}/data' --set run.output_dir='{mnt}' "
            "--set run.name=t --set run.progress=off --set run.log_every=100000 --set model.alpha=0.001 "
            "--set model.max_iter=3")
    # 16 pages, 11 taken: room for config.toml, log.txt, metrics.jsonl, not for a 24 KB coef
    p = _in_tmpfs(mnt, "64k", args, n, filler=11 * 4096)
    assert p.returncode != 0
    errors = [x for x in p.stderr.splitlines() if x.startswith("petuum-mpi: error")]
    assert len(errors) == 1, p.stderr
    assert f"{mnt}/t/model.h5: cannot write: no space left on device" in errors[0], p.stderr
    assert "Traceback" not in p.stderr
    assert ".tmp" not in p.stdout  # ls -aR of the tmpfs


@pytest.mark.mpi
def test_snapshot_of_other_tables_names_what_it_holds(comm, shared_tmp):
    # a snapshot of another model (or an older version's tables: MF's c and g became one cg table)
    # is one line naming the missing table and what the snapshot holds, on every rank
    d = os.path.join(shared_tmp, "other")
    with _ps(comm, d) as ps:
        _clocks(ps, 1)
    comm.Barrier()
    ps = ParameterServer([TableSpec("w", 4, 6), TableSpec("cg", 1, 2)], comm, consistency="bsp",
                         snapshot_every=1, snapshot_dir=d)
    with ps:
        with pytest.raises(DataError) as e:
            ps.resume()
    msg = str(e.value)
    assert "no table 'cg' in the snapshot (it holds n, w)" in msg and "\n" not in msg, msg
    assert e.value.collective
