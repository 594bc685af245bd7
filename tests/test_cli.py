"""The command line: info, plot, run directory, launch-time validation."""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from petuum_mpi.cli import main
from petuum_mpi.rundir import RunDir, read_metrics

CLI = [sys.executable, "-m", "petuum_mpi"]


def test_info_names_the_mpi_library_and_ranks():
    out = subprocess.run(CLI + ["info"], capture_output=True, text=True, check=True).stdout
    from mpi4py import MPI

    assert MPI.Get_library_version().splitlines()[0].strip() in out
    assert "ranks        1" in out
    for name in ("mpi4py", "numba", "h5py", "numpy"):
        assert name in out


def test_info_under_mpiexec_counts_ranks():
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    out = subprocess.run([mpiexec, "-n", "3", *CLI, "info"], capture_output=True, text=True, check=True).stdout
    assert "ranks        3" in out
    assert out.count("petuum_mpi   ") == 1  # printed by rank 0 only


def test_rundir_writes_metrics_model_and_plot(tmp_path):
    rd = RunDir(str(tmp_path / "run"))
    for i in range(1, 30):
        rd.log_metrics({"iter": i, "objective": 1.0 + 1.0 / i, "dual_gap": 10.0 ** (-i / 3), "nnz": i % 7})
    rd.save_model({"coef": np.arange(5.0)}, {"alpha": 0.1, "app": "lasso"})
    rd.write_summary({"objective": np.float64(1.5), "n_iter": np.int64(29)})
    rd.close()
    rows = read_metrics(str(tmp_path / "run"))
    assert len(rows) == 29 and rows[3]["iter"] == 4 and "wall" in rows[0]
    with h5py.File(tmp_path / "run" / "model.h5") as f:
        assert np.array_equal(f["coef"][:], np.arange(5.0)) and f.attrs["alpha"] == 0.1
    assert json.load(open(tmp_path / "run" / "summary.json")) == {"objective": 1.5, "n_iter": 29}
    assert main(["plot", str(tmp_path / "run")]) == 0
    png = tmp_path / "run" / "plots" / "convergence.png"
    assert png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_launch_validates_before_starting_ranks(tmp_path, capsys):
    job = tmp_path / "j.toml"
    job.write_text('app = "lasso"\n[data]\ntrain = "missing-dataset"\n')
    assert main(["launch", "-n", "2", str(job)]) == 2
    err = capsys.readouterr().err
    assert "[data] train: not found" in err and "mpiexec" not in err


def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    from petuum_mpi.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    job = {"app": "lasso", "run": {"output_dir": str(blocker), "name": "r"}}
    with pytest.raises(ConfigError, match=r"\[run\] output_dir: cannot write the run directory"):
        RunDir.create(job)


def test_info_names_the_implementation_and_its_pitfalls():
    from mpi4py import MPI

    from petuum_mpi import mpilib

    name, version = mpilib.identify(MPI.Get_library_version())
    out = subprocess.run(CLI + ["info"], capture_output=True, text=True, check=True).stdout
    assert f"MPI library  {name} {version} " in out
    if name == mpilib.MPICH:
        assert "MPIR_CVAR_POLLS_BEFORE_YIELD=1" in out
    if name == mpilib.OPENMPI:
        assert "oversubscribe" in out


# first lines of MPI_Get_library_version() as printed by the libraries
LIBRARY_VERSIONS = {
    "MPICH Version:      5.0.2\nMPICH Release date: ...": ("MPICH", "5.0.2"),
    "Open MPI v5.0.11, package: Open MPI user@localhost Distribution, ident: 5.0.11": ("Open MPI", "5.0.11"),
    "Intel(R) MPI Library 2021.18 for Linux* OS\n": ("Intel MPI", "2021.18"),
}


@pytest.mark.parametrize("text", list(LIBRARY_VERSIONS))
def test_mpi_library_settings(text):
    from petuum_mpi import mpilib

    name, version = mpilib.identify(text)
    assert (name, version) == LIBRARY_VERSIONS[text]
    assert mpilib.oversubscribe_env(name, ranks=2, cores=2) == {}
    over = mpilib.oversubscribe_env(name, ranks=4, cores=2)
    nodes = mpilib.between_nodes_env(name)
    if name == "Open MPI":  # 5.x ignores OMPI_MCA_rmaps_base_oversubscribe
        assert over["PRTE_MCA_rmaps_default_mapping_policy"] == ":oversubscribe"
        assert nodes["OMPI_MCA_pml"] == "ucx" and nodes["OMPI_MCA_osc"] == "ucx" and nodes["UCX_TLS"] == "tcp,self"
    if name == "MPICH":
        assert over == {"MPIR_CVAR_POLLS_BEFORE_YIELD": "1"} and nodes == {"MPIR_CVAR_NOLOCAL": "1"}
    if name == "Intel MPI":
        assert nodes == {"I_MPI_FABRICS": "ofi", "FI_PROVIDER": "tcp"}


@pytest.mark.parametrize("n", ["0", "-2"])
def test_launch_rejects_fewer_than_one_rank(tmp_path, capsys, n):
    job = tmp_path / "j.toml"
    job.write_text('app = "lasso"\n[data]\ntrain = "missing-dataset"\n')
    assert main(["launch", "-n", n, str(job)]) == 2
    err = capsys.readouterr().err
    assert f"-n {n}" in err and "at least 1" in err and len(err.strip().splitlines()) == 1
