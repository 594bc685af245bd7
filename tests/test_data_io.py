"""Serial tests of the data subsystem: writers, converters (vs independent readers),
validation errors, partitioning, synthetic truth, CLI."""

import json
import os

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from petuum_mpi.data import (DataError, open_dataset, partition_rows, read_bow, read_matrix, read_ratings,
                             write_bow, write_matrix, write_ratings)
from petuum_mpi.data import convert as C
from petuum_mpi.data import synth as S
from petuum_mpi.data.format import file_sha256, read_manifest, write_manifest


def rand_csr(n, p, density=0.1, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=density, format="csr", random_state=seed)
    X.data = rng.standard_normal(X.data.size) * 10.0 ** rng.integers(-20, 20, X.data.size)
    return X


# ----------------------------------------------------------------------------- partition_rows

def test_partition_rows_covers_every_row_once():
    rng = np.random.default_rng(0)
    for n in list(range(1, 40)) + [97, 1000, 12345]:
        for size in range(1, min(n, 9) + 1):
            for w in (None, rng.integers(0, 5, n), np.zeros(n), rng.pareto(1.0, n)):
                r = partition_rows(n, size, w)
                assert len(r) == size
                assert r[0][0] == 0 and r[-1][1] == n
                assert all(a < b for a, b in r)
                assert all(r[i][1] == r[i + 1][0] for i in range(size - 1))
            sizes = [b - a for a, b in partition_rows(n, size)]
            assert max(sizes) - min(sizes) <= 1


def test_partition_rows_balances_weights():
    w = np.ones(1000)
    w[:100] = 50.0  # heavy head
    r = partition_rows(1000, 4, w)
    loads = [w[a:b].sum() for a, b in r]
    assert max(loads) - min(loads) <= 50.0
    assert r[0][1] < 100


def test_partition_rows_errors():
    with pytest.raises(DataError, match="empty dataset"):
        partition_rows(0, 1)
    with pytest.raises(DataError, match="3 rows over 4 ranks"):
        partition_rows(3, 4)


# ----------------------------------------------------------------------------- write / read round trips

@pytest.mark.parametrize("sizes", [[50], [1, 7, 0, 13, 29], [0, 50, 0]])
def test_matrix_roundtrip_sparse(tmp_path, sizes):
    X = rand_csr(50, 30)
    y = np.random.default_rng(1).standard_normal(50)
    write_matrix(tmp_path / "d", X, y, shard_sizes=sizes, meta={"seed": 3})
    for layout in ("csr", "csc", "dense"):
        m = read_matrix(str(tmp_path / "d"), layout=layout)
        Xr = m.X if layout == "dense" else m.X.toarray()
        assert np.array_equal(Xr, X.toarray())
        assert np.array_equal(m.y, y)
    ds = open_dataset(str(tmp_path / "d"))
    assert ds.nnz == X.nnz and ds.meta["seed"] == 3 and len(ds.shards) == len(sizes)


def test_matrix_roundtrip_dense_float32_classification(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    write_matrix(tmp_path / "d", X, y, rows_per_shard=9, task="classification", dtype=np.float32)
    ds = open_dataset(str(tmp_path / "d"))
    assert ds.dense and ds.task == "classification" and ds.n_classes == 3 and len(ds.shards) == 5
    m = read_matrix(ds, layout="dense", dtype=np.float32)
    assert m.X.dtype == np.float32 and np.array_equal(m.X, X.astype(np.float32))
    assert np.array_equal(m.y, y) and m.y.dtype.kind == "i"
    m = read_matrix(ds, layout="csr")
    assert np.allclose(m.X.toarray(), X, rtol=1e-6)


def test_bow_and_ratings_roundtrip(tmp_path):
    doc_ptr, w, c, _, _ = S.make_lda_corpus(30, 50, 3, doc_length=20, seed=1)
    write_bow(tmp_path / "b", doc_ptr, w, c, 50, vocab=S.vocab_words(50), shard_sizes=[1, 0, 29])
    cb = read_bow(str(tmp_path / "b"))
    assert np.array_equal(cb.doc_ptr, doc_ptr) and np.array_equal(cb.word_ids, w) and np.array_equal(cb.counts, c)
    assert cb.n_tokens_total == c.sum() and cb.vocab == S.vocab_words(50)
    u, i, v, _, _ = S.make_ratings(40, 20, rank=3, density=0.3, seed=2)
    perm = np.random.default_rng(0).permutation(u.size)
    write_ratings(tmp_path / "r", u[perm], i[perm], v[perm], 40, 20, rows_per_shard=7)
    lr = read_ratings(str(tmp_path / "r"))
    assert np.array_equal(lr.users, u) and np.array_equal(lr.items, i) and np.array_equal(lr.values, v)
    assert lr.n_ratings_total == u.size and lr.n_users == 40 and lr.n_items == 20


def test_refuse_overwrite_and_atomic_manifest(tmp_path):
    X = rand_csr(10, 5)
    write_matrix(tmp_path / "d", X, np.zeros(10))
    with pytest.raises(DataError, match="already exists.*overwrite"):
        write_matrix(tmp_path / "d", X, np.zeros(10))
    write_matrix(tmp_path / "d", X[:4], np.ones(4), overwrite=True)
    assert open_dataset(str(tmp_path / "d")).n_rows == 4
    assert not [f for f in os.listdir(tmp_path / "d") if f.endswith(".tmp")]


# ----------------------------------------------------------------------------- converters vs independent readers

@pytest.mark.parametrize("zero_based", [True, False])
def test_libsvm_vs_sklearn(tmp_path, zero_based):
    X = rand_csr(200, 40, seed=3)
    y = np.random.default_rng(3).standard_normal(200)
    src = str(tmp_path / "a.svm")
    dump_svmlight_file(X, y, src, zero_based=zero_based)
    Xs, ys = load_svmlight_file(src, zero_based="auto", n_features=40)
    for zb in ("auto", zero_based):
        C.convert_libsvm(src, str(tmp_path / f"d{zb}"), zero_based=zb, n_features=40, task="regression", n_shards=3)
        m = read_matrix(str(tmp_path / f"d{zb}"))
        assert (m.X != Xs).nnz == 0 and np.array_equal(m.y, ys)
    # our exporter, read back by scikit-learn
    C.export_libsvm(str(tmp_path / "b.svm"), X, y)
    Xb, yb = load_svmlight_file(str(tmp_path / "b.svm"), n_features=40)
    assert (Xb != X).nnz == 0 and np.array_equal(yb, y)


def test_libsvm_classification_comments_qid(tmp_path):
    src = tmp_path / "c.svm"
    src.write_text("# header comment\n-1 qid:3 1:0.5 3:2 # tail\n\n+1 2:1e-3\n-1 1:.25 4:-7E+2\n")
    ds = C.convert_libsvm(str(src), str(tmp_path / "d"))
    assert ds.task == "classification" and ds.n_classes == 2 and ds.meta["classes"] == [-1, 1]
    m = read_matrix(ds)
    Xs, ys = load_svmlight_file(str(src))
    assert np.array_equal(m.X.toarray(), Xs.toarray()) and np.array_equal(m.y, (ys > 0).astype(int))


@pytest.mark.parametrize("text,line,what", [
    ("1 1:2\n2 3:x\n", 2, "not a number"),
    ("1 1:2\n2 3 4:1\n", 2, "index:value"),
    ("1 1:2\n\n2 -3:1\n", 3, "bad feature index"),
    ("1 1:2\nfoo 1:2\n", 2, "not a number"),
])
def test_libsvm_malformed(tmp_path, text, line, what):
    p = tmp_path / "bad.svm"
    p.write_text(text)
    with pytest.raises(DataError, match=rf"bad\.svm, line {line}: .*{what}"):
        C.convert_libsvm(str(p), str(tmp_path / "d"))


def test_libsvm_zero_index_declared_one_based(tmp_path):
    p = tmp_path / "z.svm"
    p.write_text("1 0:1 2:3\n")
    with pytest.raises(DataError, match="1-based"):
        C.convert_libsvm(str(p), str(tmp_path / "d"), zero_based=False)


def test_libsvm_nan_rejected(tmp_path):
    p = tmp_path / "n.svm"
    p.write_text("1 1:2\n2 2:nan\n")
    with pytest.raises(DataError, match=r"n\.svm, line 2: value nan of feature 2 is not finite"):
        C.convert_libsvm(str(p), str(tmp_path / "d"))


def _parse_uci(path):
    lines = open(path).read().split()
    D, W, NNZ = map(int, lines[:3])
    t = np.array(lines[3:], dtype=np.int64).reshape(-1, 3)
    return D, W, NNZ, t


def test_uci_bow_vs_simple_parse(tmp_path):
    doc_ptr, w, c, _, _ = S.make_lda_corpus(25, 40, 3, doc_length=15, seed=4)
    dw, vv = str(tmp_path / "docword.t.txt"), str(tmp_path / "vocab.t.txt")
    C.export_uci_bow(dw, doc_ptr, w, c, 40, vv, S.vocab_words(40))
    D, W, NNZ, t = _parse_uci(dw)
    C.convert_uci_bow(dw, str(tmp_path / "d"), vocab=vv, n_shards=3)
    cb = read_bow(str(tmp_path / "d"))
    docs = np.repeat(np.arange(cb.n_docs), np.diff(cb.doc_ptr))
    assert np.array_equal(np.column_stack([docs + 1, cb.word_ids + 1, cb.counts]), t)
    assert cb.vocab == [x.strip() for x in open(vv)] and (cb.n_docs, cb.n_words) == (D, W)


def test_uci_unsorted_duplicates_and_empty_docs(tmp_path):
    p = tmp_path / "docword.x.txt"
    p.write_text("4\n3\n4\n3 2 1\n1 1 2\n3 2 4\n1 3 1\n")
    ds = C.convert_uci_bow(str(p), str(tmp_path / "d"))
    cb = read_bow(ds)
    assert ds.meta["dropped_empty_docs"] == 2 and cb.n_docs == 2
    assert cb.doc_ptr.tolist() == [0, 2, 3] and cb.word_ids.tolist() == [0, 2, 1] and cb.counts.tolist() == [2, 1, 5]


@pytest.mark.parametrize("text,msg", [
    ("2\n3\n2\n1 1 1\n1 4 1\n", "line 5: word id 4 exceeds W=3 from the header"),
    ("2\n3\n2\n1 1 1\n1 2 -1\n", "line 5: count -1 is below 1"),
    ("2\n3\n3\n1 1 1\n1 2 1\n", "NNZ=3 but the file has 2"),
    ("2\nx\n3\n", "line 2: header value"),
])
def test_uci_malformed(tmp_path, text, msg):
    p = tmp_path / "docword.bad.txt"
    p.write_text(text)
    with pytest.raises(DataError, match=msg):
        C.convert_uci_bow(str(p), str(tmp_path / "d"))


@pytest.mark.parametrize("style", ["csv", "dat"])
def test_ratings_vs_simple_parse(tmp_path, style):
    rng = np.random.default_rng(5)
    raw_u = rng.choice([7, 100, 3, 55, 1000], 60)
    raw_i = rng.choice([10, 20, 30, 999], 60)
    key = np.unique(raw_u * 10000 + raw_i)
    raw_u, raw_i = key // 10000, key % 10000
    vals = rng.integers(1, 11, key.size) / 2
    p = tmp_path / ("ratings.csv" if style == "csv" else "ratings.dat")
    if style == "csv":
        p.write_text("userId,movieId,rating,timestamp\n" + "".join(
            f"{u},{i},{v},123\n" for u, i, v in zip(raw_u, raw_i, vals)))
    else:
        p.write_text("".join(f"{u}::{i}::{v}::123\n" for u, i, v in zip(raw_u, raw_i, vals)))
    ds = C.convert_ratings(str(p), str(tmp_path / "d"), n_shards=2)
    lr = read_ratings(ds)
    ids = h5py.File(ds.meta_file("id_map"))
    uid, iid = ids["user_ids"][()], ids["item_ids"][()]
    got = sorted(zip(uid[lr.users].tolist(), iid[lr.items].tolist(), lr.values.tolist()))
    assert got == sorted(zip(raw_u.tolist(), raw_i.tolist(), vals.tolist()))
    assert lr.n_users == np.unique(raw_u).size and lr.n_items == np.unique(raw_i).size


def test_ratings_malformed(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("userId,movieId,rating\n1,2,3.5\n1,2.5,4\n")
    with pytest.raises(DataError, match=r"r\.csv, line 3: item id 2\.5 is not an integer"):
        C.convert_ratings(str(p), str(tmp_path / "d"))


def test_npy_npz(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 5))
    y = rng.standard_normal(30)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    Xs = rand_csr(30, 8, seed=6)
    sp.save_npz(tmp_path / "Xs.npz", Xs)
    for ins, ref in (([tmp_path / "X.npy", tmp_path / "y.npy"], X), ([tmp_path / "d.npz"], X),
                     ([tmp_path / "Xs.npz", tmp_path / "y.npy"], Xs.toarray())):
        out = str(tmp_path / f"o{len(os.listdir(tmp_path))}")
        ds = C.convert_npy([str(p) for p in ins], out, task="regression", n_shards=2)
        m = read_matrix(ds, layout="dense")
        assert np.array_equal(m.X, ref) and np.array_equal(m.y, np.load(tmp_path / "y.npy"))
    with pytest.raises(DataError, match="no targets"):
        C.convert_npy([str(tmp_path / "X.npy")], str(tmp_path / "z"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"junk\.npy"):
        C.convert_npy([str(tmp_path / "junk.npy"), str(tmp_path / "y.npy")], str(tmp_path / "z"))


def test_reshard_and_inspect(tmp_path):
    X = rand_csr(60, 12, seed=7)
    y = np.arange(60.0)
    write_matrix(tmp_path / "a", X, y, n_shards=2, truth={"coef": np.ones(12)})
    ds = C.reshard(str(tmp_path / "a"), str(tmp_path / "b"), n_shards=5)
    assert len(ds.shards) == 5 and os.path.isfile(ds.meta_file("truth"))
    m = read_matrix(ds)
    assert np.array_equal(m.X.toarray(), X.toarray()) and np.array_equal(m.y, y)
    info = C.inspect(str(tmp_path / "b"))
    assert info["ok"] and info["nnz"] == X.nnz and [r["checksum"] for r in info["shards"]] == ["OK"] * 5
    with open(os.path.join(tmp_path / "b", ds.shards[2].file), "r+b") as f:
        f.seek(-8, 2)
        f.write(b"garbage!")
    info = C.inspect(str(tmp_path / "b"))
    assert not info["ok"] and info["shards"][2]["checksum"] == "FAIL"
    assert "CHECKSUM FAILURE" in C.format_inspect(info)


# ----------------------------------------------------------------------------- bad datasets

def _mk(tmp_path, sizes=(5, 5)):
    X = rand_csr(10, 6, density=0.5, seed=8)
    y = np.arange(10.0)
    write_matrix(tmp_path / "d", X, y, shard_sizes=list(sizes))
    return str(tmp_path / "d")


def _edit_shard(path, i, name, fn, fix_checksum=True):
    man = read_manifest(path)
    f = os.path.join(path, man["shards"][i]["file"])
    with h5py.File(f, "r+") as h:
        a = h[name][()]
        a = fn(a)
        del h[name]
        h[name] = a
    if fix_checksum:
        man["shards"][i]["sha256"] = file_sha256(f)
        write_manifest(path, man)


def test_bad_manifest_cases(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_dataset(str(tmp_path / "nope"))
    d = _mk(tmp_path)
    m = os.path.join(d, "manifest.json")
    good = open(m).read()
    open(m, "w").write("{bad json")
    with pytest.raises(DataError, match="manifest.json: not valid JSON"):
        open_dataset(d)
    for edit, msg in ((lambda j: j.update(format_version=99), "format_version 99"),
                      (lambda j: j.update(kind="graph"), "unknown kind 'graph'"),
                      (lambda j: j.update(n_rows=11), "shards hold 10 rows but n_rows=11"),
                      (lambda j: j["shards"][1].update(nnz=j["shards"][1]["nnz"] + 1), "nnz"),
                      (lambda j: j.update(n_cols=7), None)):
        j = json.loads(good)
        edit(j)
        open(m, "w").write(json.dumps(j))
        if msg is None:  # a wider matrix is consistent with the shards
            assert open_dataset(d).n_cols == 7
            continue
        with pytest.raises(DataError, match=msg):
            open_dataset(d)
    open(m, "w").write(good)
    os.remove(os.path.join(d, "shard-00001.h5"))
    with pytest.raises(DataError, match="shard-00001.h5: shard file missing"):
        read_matrix(d)


def test_corrupt_and_checksum(tmp_path):
    d = _mk(tmp_path)
    f = os.path.join(d, "shard-00000.h5")
    data = open(f, "rb").read()
    open(f, "wb").write(data[:100])
    with pytest.raises(DataError, match="shard-00000.h5: cannot open shard"):
        read_matrix(d)
    open(f, "wb").write(data)
    read_matrix(d)
    _edit_shard(d, 1, "data", lambda a: a * 2, fix_checksum=False)
    with pytest.raises(DataError, match="shard-00001.h5: checksum mismatch"):
        read_matrix(d)
    assert np.all(np.isfinite(read_matrix(d, verify=False).X.data))


def test_shard_disagrees_with_manifest(tmp_path):
    d = _mk(tmp_path)
    _edit_shard(d, 0, "y", lambda a: a[:-1])
    with pytest.raises(DataError, match="shard-00000.h5: y has shape"):
        read_matrix(d)


@pytest.mark.parametrize("name,fn,msg", [
    ("data", lambda a: np.where(np.arange(a.size) == 3, np.nan, a), "value nan .*at row"),
    ("data", lambda a: np.where(np.arange(a.size) == 0, np.inf, a), "value inf .*at row 5"),
    ("indices", lambda a: np.where(np.arange(a.size) == a.size - 1, 6, a), "column index 6 out of range.*row 9"),
    ("indices", lambda a: np.where(np.arange(a.size) == 0, -1, a), "column index -1 out of range.*row 5"),
    ("indptr", lambda a: np.r_[a[:2], a[1] - 1, a[3:]], "not monotone at row 6"),
    ("y", lambda a: np.r_[a[:2], np.nan, a[3:]], "y=nan .*at row 7"),
])
def test_bad_values(tmp_path, name, fn, msg):
    d = _mk(tmp_path)
    _edit_shard(d, 1, name, fn)
    with pytest.raises(DataError, match=rf"shard-00001.h5: .*{msg}"):
        read_matrix(d)


def test_bad_labels_bow_ratings(tmp_path):
    X = rand_csr(10, 6, density=0.5, seed=9)
    write_matrix(tmp_path / "c", X, np.arange(10) % 3, task="classification", validate=True)
    _edit_shard(str(tmp_path / "c"), 0, "y", lambda a: np.r_[a[:4], 3, a[5:]])
    with pytest.raises(DataError, match=r"label 3 outside \[0, 3\) at row 4"):
        read_matrix(str(tmp_path / "c"))
    write_bow(tmp_path / "b", [0, 2, 3], [0, 5, 2], [1, 2, 3], 6)
    _edit_shard(str(tmp_path / "b"), 0, "word_ids", lambda a: np.r_[a[:2], 6])
    with pytest.raises(DataError, match=r"word id 6 out of range \[0, 6\) at document 1"):
        read_bow(str(tmp_path / "b"))
    write_bow(tmp_path / "b", [0, 2, 3], [0, 5, 2], [1, 2, 3], 6, overwrite=True)
    _edit_shard(str(tmp_path / "b"), 0, "counts", lambda a: np.r_[a[:2], -3])
    with pytest.raises(DataError, match="count -3 must be positive at document 1"):
        read_bow(str(tmp_path / "b"))
    with pytest.raises(DataError, match="document 1 is empty"):
        write_bow(tmp_path / "e", [0, 2, 2], [0, 5], [1, 2], 6)
    write_ratings(tmp_path / "r", [0, 1, 1], [0, 1, 2], [1.0, 2.0, 3.0], 2, 3)
    _edit_shard(str(tmp_path / "r"), 0, "items", lambda a: np.r_[a[:2], 3])
    with pytest.raises(DataError, match=r"item id 3 out of range \[0, 3\) at user 1"):
        read_ratings(str(tmp_path / "r"))


def test_empty_dataset(tmp_path):
    write_matrix(tmp_path / "e", sp.csr_matrix((0, 4)), np.zeros(0))
    with pytest.raises(DataError, match="empty dataset"):
        read_matrix(str(tmp_path / "e"))


# ----------------------------------------------------------------------------- synthetic truth

def test_synth_regression_truth():
    X, y, coef = S.make_regression(20000, 40, nnz=200000, group_size=4, corr=0.7, n_informative=5, noise=0.5,
                                   seed=1)
    assert abs(X.nnz - 200000) < 0.1 * 200000 and np.count_nonzero(coef) == 5
    A = X.toarray()
    cc = np.corrcoef(A[:, :8].T)
    assert abs(cc[0, 1] - 0.7) < 0.05 and abs(cc[2, 3] - 0.7) < 0.05 and abs(cc[3, 4]) < 0.05
    resid = y - A @ coef
    assert abs(resid.std() - 0.5) < 0.02
    Xd, yd, cd = S.make_regression(5000, 8, dense=True, corr=0.3, seed=2)
    assert abs(np.corrcoef(Xd[:, 0], Xd[:, 1])[0, 1] - 0.3) < 0.05 and Xd.shape == (5000, 8)
    X2, y2, c2 = S.make_regression(100, 40, nnz=400, seed=1)
    X3, y3, c3 = S.make_regression(100, 40, nnz=400, seed=1)
    assert (X2 != X3).nnz == 0 and np.array_equal(y2, y3)


def test_synth_classification_planted():
    from sklearn.linear_model import LogisticRegression

    X, y, coef = S.make_classification(4000, 20, n_classes=2, dense=True, n_informative=5, seed=3)
    assert set(np.unique(y)) == {0, 1}
    lr = LogisticRegression(C=100.0, max_iter=2000).fit(X, y)
    assert np.corrcoef(lr.coef_[0], coef)[0, 1] > 0.95
    X, y, W = S.make_classification(3000, 30, n_classes=4, seed=3)
    assert W.shape == (4, 30) and set(np.unique(y)) == {0, 1, 2, 3}


def test_synth_ratings_noise_and_lda():
    u, i, v, U, V = S.make_ratings(300, 200, rank=4, noise=0.3, density=0.2, seed=4)
    resid = v - np.einsum("ij,ij->i", U[u], V[i])
    assert abs(resid.std() - 0.3) < 0.02 and abs(u.size / (300 * 200) - 0.2) < 0.01
    dp, w, c, phi, theta = S.make_lda_corpus(400, 300, 5, doc_length=50, seed=5)
    assert w.min() >= 0 and w.max() < 300 and np.all(np.diff(dp) > 0)
    assert abs(c.sum() / 400 - 50) < 2 and np.allclose(phi.sum(1), 1) and phi.shape == (5, 300)
    # words follow the planted mixture: empirical word frequencies vs theta @ phi
    freq = np.bincount(w, weights=c, minlength=300) / c.sum()
    lens = np.diff(np.r_[0, np.cumsum(np.add.reduceat(c, dp[:-1]))])
    expect = (lens[:, None] * theta).sum(0) @ phi / lens.sum()
    assert np.abs(freq - expect).sum() < 0.1


def test_synth_dataset_and_cli(tmp_path, capsys):
    import argparse

    from petuum_mpi.data.cli import add_subcommands
    from petuum_mpi.data.writer import load_arrays_h5

    p = argparse.ArgumentParser()
    add_subcommands(p.add_subparsers(dest="cmd"))

    def run(*argv):
        a = p.parse_args([str(x) for x in argv])
        return a.func(a)

    assert run("synth", "lda", tmp_path / "lda", "--docs", 50, "--words", 30, "--topics", 3, "--shards", 2) == 0
    ds = open_dataset(str(tmp_path / "lda"))
    arrays, attrs = load_arrays_h5(ds.meta_file("truth"))
    assert arrays["phi"].shape == (3, 30) and ds.meta["seed"] == 0 and attrs["n_topics"] == 3
    assert run("synth", "regression", tmp_path / "r.svm", "--raw", "--rows", 30, "--cols", 20, "--seed", 5) == 0
    assert run("convert", "libsvm", tmp_path / "r.svm", tmp_path / "r", "--truth", tmp_path / "r.truth.h5",
               "--task", "regression", "--n-features", 20) == 0
    Xs, ys = load_svmlight_file(str(tmp_path / "r.svm"), n_features=20)
    m = read_matrix(str(tmp_path / "r"))
    assert (m.X != Xs).nnz == 0 and np.array_equal(m.y, ys)
    assert run("reshard", tmp_path / "r", tmp_path / "r3", "--shards", 3) == 0
    assert run("inspect", tmp_path / "r3") == 0
    assert "all checksums OK" in capsys.readouterr().out
    with h5py.File(tmp_path / "r3" / "shard-00001.h5", "r+") as f:
        f["y"][0] = 123.0
    assert run("inspect", tmp_path / "r3") == 1
    assert run("synth", "ratings", tmp_path / "rt.csv", "--raw", "--users", 20, "--items", 10) == 0
    assert run("convert", "ratings", tmp_path / "rt.csv", tmp_path / "rt") == 0
    with pytest.raises(DataError, match="already exists"):
        run("convert", "ratings", tmp_path / "rt.csv", tmp_path / "rt")


def test_prepare_samples(tmp_path):
    from petuum_mpi.data import prepare_samples

    out = prepare_samples(str(tmp_path))
    m = read_matrix(out["lasso"])
    assert (m.n_rows, m.n_cols) == (2000, 5000) and abs(m.nnz_total / 1e7 - 0.01) < 0.001
    coef = h5py.File(os.path.join(out["lasso"], "truth.h5"))["coef"][()]
    # 6 significant digits in the text file; noise 0.1
    assert abs((m.y - m.X @ coef).std() - 0.1) < 0.01
    assert read_matrix(out["clf"]).n_classes == 2
    assert read_bow(out["lda"]).vocab[:2] == ["word00000", "word00001"]
    assert read_ratings(out["ratings"]).n_ratings_total > 5000
