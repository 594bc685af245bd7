"""Converter behaviour a user can trip over: silent wrong results (task inference,
duplicate entries) and bad input that must end in one readable line, not a traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from petuum_mpi.data import DataError, read_matrix, read_ratings, write_matrix
from petuum_mpi.data import convert as C
from petuum_mpi.data.cli import add_subcommands  # noqa: F401  (the CLI below must import)
from petuum_mpi.cli import main

CLI = [sys.executable, "-m", "petuum_mpi", "data", "convert"]


def cli(*args):
    """Run ``petuum-mpi data convert ARGS`` in a fresh process; (returncode, stdout, stderr)."""
    p = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("petuum-mpi: error: "), err
    return lines[0]


def write_svm(path, labels, n_feat=3, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for lab in labels:
            f.write(f"{lab} " + " ".join(f"{j + 1}:{rng.standard_normal()!r}" for j in range(n_feat)) + "\n")


# ----------------------------------------------------------------------------- task inference

@pytest.mark.parametrize("labels,task,why", [
    ([10, 20, 40], "regression", "not class ids"),
    ([0, 1, 2], "classification", "3 distinct integer labels 0..2"),
    ([1, 2, 3, 4], "classification", "4 distinct integer labels 1..4"),
    ([-1, 1], "classification", "2 distinct integer labels"),
    ([2, 4], "classification", "2 distinct integer labels"),
    ([0.5, 1.0, 2.0], "regression", "not all integers"),
    (list(range(25)), "regression", "25 distinct integer labels"),
])
def test_auto_task_rule_and_reason(tmp_path, labels, task, why):
    src = tmp_path / "a.svm"
    write_svm(src, labels * 4)
    ds = C.convert_libsvm(str(src), str(tmp_path / "d"))
    assert ds.task == task
    assert ds.meta["task_inferred"] is True and why in ds.meta["task_reason"]


def test_integer_regression_targets_stay_values(tmp_path):
    """y in {10, 20, 40}: --task auto keeps the values, and Lasso fits them (coef ~ 10, not class indices)."""
    from petuum_mpi.apps.lasso import Lasso

    rng = np.random.default_rng(1)
    x = rng.choice([1.0, 2.0, 4.0], 60)
    src = tmp_path / "r.svm"
    src.write_text("".join(f"{int(10 * v)} 1:{v}\n" for v in x.tolist()))
    ds = C.convert_libsvm(str(src), str(tmp_path / "d"))
    assert ds.task == "regression" and np.array_equal(read_matrix(ds).y, 10 * x)
    m = Lasso(alpha=1e-6, tol=1e-10, max_iter=10000).fit(ds.path)
    assert abs(m.coef_[0] - 10.0) < 1e-3


def test_cli_prints_inferred_task(tmp_path):
    src = tmp_path / "a.svm"
    write_svm(src, [10, 20, 40] * 3)
    rc, out, err = cli("libsvm", src, tmp_path / "d")
    assert rc == 0, err
    assert "task: regression (inferred by --task auto: integer labels 10, 20, 40 are not class ids" in out
    write_svm(src, [0, 1, 2] * 3)
    rc, out, err = cli("libsvm", src, tmp_path / "d", "--overwrite")
    assert rc == 0 and "task: classification (inferred by --task auto: 3 distinct integer labels 0..2" in out


# ----------------------------------------------------------------------------- apps check the task

def test_regression_app_refuses_classification_dataset(tmp_path):
    from petuum_mpi.apps.lasso import ElasticNet, Lasso
    from petuum_mpi.apps.logistic_l1 import L1LogisticRegression

    X = sp.random(20, 4, density=0.5, format="csr", random_state=0)
    write_matrix(tmp_path / "c", X, np.arange(20) % 3, task="classification")
    write_matrix(tmp_path / "r", X, np.arange(20) % 2 * 1.0)
    for est in (Lasso(alpha=0.1), ElasticNet(alpha=0.1)):
        with pytest.raises(DataError, match=r"c: is a classification dataset \(3 classes\); "
                                            r".* convert the data with --task regression"):
            est.fit(str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"r: is a regression dataset; .* --task classification"):
        L1LogisticRegression().fit(str(tmp_path / "r"))


def test_run_lasso_job_on_classification_dataset_is_one_line(tmp_path):
    X = sp.random(20, 4, density=0.5, format="csr", random_state=0)
    write_matrix(tmp_path / "c", X, np.arange(20) % 3, task="classification")
    job = tmp_path / "j.toml"
    job.write_text(f'app = "lasso"\n[data]\ntrain = "{tmp_path / "c"}"\n[run]\noutput_dir = "{tmp_path / "runs"}"\n')
    p = subprocess.run([sys.executable, "-m", "petuum_mpi", "run", str(job)], capture_output=True, text=True)
    assert p.returncode != 0
    lines = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert "Traceback" not in p.stderr and len(lines) == 1, p.stderr
    assert "is a classification dataset" in lines[0] and "--task regression" in lines[0]


# ----------------------------------------------------------------------------- duplicates

RATINGS_DUP = "userId,movieId,rating\n1,10,3.0\n2,10,4.0\n1,10,5.0\n1,20,1.0\n1,20,2.0\n1,20,4.5\n"


@pytest.mark.parametrize("mode,want", [("last", [5.0, 4.5, 4.0]), ("mean", [4.0, 2.5, 4.0])])
def test_ratings_duplicates_last_or_mean(tmp_path, mode, want):
    p = tmp_path / "r.csv"
    p.write_text(RATINGS_DUP)
    with pytest.warns(C.DataWarning, match=r"r\.csv: 3 duplicate \(user, item\) ratings, .*line 4 repeats line 2"):
        ds = C.convert_ratings(str(p), str(tmp_path / "d"), duplicates=mode)
    lr = read_ratings(ds)
    assert ds.nnz == 3 and lr.values.tolist() == want
    assert ds.meta["duplicate_ratings"] == 3 and ds.meta["duplicates"] == mode


def test_ratings_duplicates_error_and_cli(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text(RATINGS_DUP)
    with pytest.raises(DataError, match=r"r\.csv, line 4: user 1, item 10 already rated on line 2"):
        C.convert_ratings(str(p), str(tmp_path / "d"), duplicates="error")
    rc, out, err = cli("ratings", p, tmp_path / "d2", "--duplicates", "error")
    assert rc == 2 and "line 4: user 1, item 10 already rated on line 2" in one_error_line(err)
    rc, out, err = cli("ratings", p, tmp_path / "d3")
    assert rc == 0 and err.startswith("petuum-mpi: warning: ") and err.count("\n") == 1, err
    assert "3 duplicate (user, item) ratings" in err and "nnz 3" in out


@pytest.mark.parametrize("text,line,fid", [("1 1:1 2:1\n2 3:1 3:2\n", 2, 3), ("# c\n1 4:1 2:1 4:3\n", 2, 4)])
def test_libsvm_duplicate_feature_id_rejected(tmp_path, text, line, fid):
    p = tmp_path / "d.svm"
    p.write_text(text)
    with pytest.raises(DataError, match=rf"d\.svm, line {line}: feature id {fid} appears more than once"):
        C.convert_libsvm(str(p), str(tmp_path / "o"))


# ----------------------------------------------------------------------------- one line instead of a traceback

def test_npz_object_array_is_one_line(tmp_path):
    np.savez(tmp_path / "o.npz", X=np.array([[1, 2], [3, 4]], dtype=object), y=np.array([1.0, 2.0]))
    rc, out, err = cli("npy", tmp_path / "o.npz", tmp_path / "d")
    assert rc == 2 and "o.npz: array 'X' holds Python objects" in one_error_line(err)
    np.savez(tmp_path / "p.npz", X=np.ones((2, 2)), y=np.array(["a", "b"], dtype=object))
    with pytest.raises(DataError, match=r"p\.npz: array 'y' holds Python objects"):
        C.convert_npy([str(tmp_path / "p.npz")], str(tmp_path / "d"))


@pytest.mark.parametrize("text,msg", [
    ("1\n3\n2\n1 1 1\n2 3 1\n", "line 5: doc id 2 exceeds D=1 from the header"),
    ("2\n3\n2\n1 1 1\n1 4 1\n", "line 5: word id 4 exceeds W=3 from the header"),
    ("2\n3\n2\n1 1 1\n1 2 0\n", "line 5: count 0 is below 1"),
    ("2\n3\n1\n0 1 1\n", "line 4: doc id 0 is below 1"),
    ("-1\n3\n1\n1 1 1\n", "line 1: header D=-1 must be >= 1"),
    ("2\n3\n0\n", "no entries"),
])
def test_uci_header_and_range_messages(tmp_path, text, msg):
    p = tmp_path / "docword.x.txt"
    p.write_text(text)
    assert main(["data", "convert", "uci-bow", str(p), str(tmp_path / "d")]) == 2
    with pytest.raises(DataError, match=rf"docword\.x\.txt, {msg}" if "line" in msg else msg):
        C.convert_uci_bow(str(p), str(tmp_path / "d"))


def test_uci_header_cli_one_line(tmp_path):
    p = tmp_path / "docword.x.txt"
    p.write_text("1\n3\n2\n1 1 1\n2 3 1\n")
    rc, out, err = cli("uci-bow", p, tmp_path / "d")
    assert rc == 2 and one_error_line(err).endswith("line 5: doc id 2 exceeds D=1 from the header: '2 3 1'")


@pytest.mark.parametrize("fmt,text,args,msg", [
    ("libsvm", "1 1:2\nnan 2:1\n", [], r"x, line 2: label nan is not finite"),
    ("libsvm", "1 1:2\n\n2 2:inf\n", [], r"x, line 3: value inf of feature 2 is not finite"),
    ("libsvm", "1 1:2\n2 0:1\n", ["--one-based"], r"x, line 2: feature id 0 but the file was declared 1-based"),
    ("libsvm", "1 1:2\n# c\n2.5 2:1\n", ["--task", "classification"], r"x, line 3: class label 2.5 is not an integer"),
    ("libsvm", "1 1:2\n1 2:1e300\n", ["--float32"], r"x, line 2: value 1e\+300 of feature 2 overflows float32"),
    ("libsvm", "1 1:2\n1 5:1\n", ["--n-features", "3"], r"x, line 2: feature id 5 exceeds --n-features 3"),
    ("libsvm", "# only\n# comments\n", [], r"x: no data lines"),
    ("ratings", "userId,movieId,rating\n1,2,3\n1,3,inf\n", [], r"x, line 3: rating inf is not finite"),
    ("ratings", "user item rating\n1 2 3\n2.5 3 1\n", [], r"x, line 3: user id 2.5 is not an integer"),
])
def test_hostile_text_inputs_one_line(tmp_path, capsys, fmt, text, args, msg):
    p = tmp_path / "x"
    p.write_text(text)
    assert main(["data", "convert", fmt, str(p), str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert __import__("re").search(msg, err), err
    assert not os.path.exists(tmp_path / "d" / "manifest.json")


def test_hostile_npy_inputs_name_the_file(tmp_path):
    np.save(tmp_path / "Xn.npy", np.array([[1.0, np.nan], [1.0, 2.0]]))
    np.save(tmp_path / "y.npy", np.array([1.0, 2.0]))
    np.save(tmp_path / "X0.npy", np.zeros((0, 3)))
    np.save(tmp_path / "y0.npy", np.zeros(0))
    with pytest.raises(DataError, match=r"Xn\.npy: value nan \(not finite\) at row 0, column 1"):
        C.convert_npy([str(tmp_path / "Xn.npy"), str(tmp_path / "y.npy")], str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"X0\.npy: no rows"):
        C.convert_npy([str(tmp_path / "X0.npy"), str(tmp_path / "y0.npy")], str(tmp_path / "d"))
