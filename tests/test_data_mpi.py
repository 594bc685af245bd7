"""Multi-rank tests of the partitioned readers (run at 1, 2, 4 ranks).

Every rank reads its block; the blocks gathered on all ranks must equal the
original exactly once. Bad datasets must make *all* ranks raise DataError.
"""

import os

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from petuum_mpi.data import DataError, read_bow, read_matrix, read_ratings, write_bow, write_matrix, write_ratings
from petuum_mpi.data import synth as S
from petuum_mpi.data.format import file_sha256, read_manifest, write_manifest

UNEVEN = [1, 7, 0, 13, 5, 0, 2]  # 28 rows over 7 shards, two empty


def _write_on_root(comm, fn):
    err = None
    if comm.rank == 0:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - reported on all ranks below
            err = repr(e)
    err = comm.bcast(err, root=0)
    assert err is None, err


def _raises_everywhere(comm, fn, match):
    """Call ``fn`` on all ranks; return each rank's error message (gathered)."""
    msg = None
    try:
        fn()
    except DataError as e:
        msg = str(e)
    msgs = comm.allgather(msg)
    assert all(m is not None for m in msgs), msgs
    import re

    assert all(re.search(match, m) for m in msgs), msgs
    return msgs


@pytest.mark.mpi
@pytest.mark.parametrize("balance", ["rows", "nnz"])
@pytest.mark.parametrize("layout", ["csr", "csc", "dense"])
def test_matrix_rows_read_once(comm, shared_tmp, balance, layout):
    rng = np.random.default_rng(0)
    X = sp.random(28, 9, density=0.3, format="csr", random_state=1)
    X = sp.csr_matrix(X.toarray() * (np.arange(28)[:, None] % 5 == 0) * 10 + X.toarray())  # uneven row nnz
    y = rng.standard_normal(28)
    path = os.path.join(shared_tmp, "m")
    _write_on_root(comm, lambda: write_matrix(path, X, y, shard_sizes=UNEVEN))
    m = read_matrix(path, comm=comm, layout=layout, balance=balance)
    Xl = m.X if layout == "dense" else m.X.toarray()
    assert Xl.shape == (m.row_stop - m.row_start, 9) and m.n_rows == 28 and m.nnz_total == X.nnz
    blocks = comm.allgather((m.row_start, m.row_stop, Xl, m.y))
    assert [b[0] for b in blocks] == [0] + [b[1] for b in blocks[:-1]] and blocks[-1][1] == 28
    assert np.array_equal(np.vstack([b[2] for b in blocks]), X.toarray())
    assert np.array_equal(np.concatenate([b[3] for b in blocks]), y)


@pytest.mark.mpi
def test_nnz_balance_is_better_than_rows(comm, shared_tmp):
    n = 200
    heavy = np.zeros((n, 50))
    heavy[:20] = 1.0  # first 10 % rows dense
    heavy[20:, 0] = 1.0
    path = os.path.join(shared_tmp, "h")
    _write_on_root(comm, lambda: write_matrix(path, sp.csr_matrix(heavy), np.zeros(n), n_shards=3))
    by_nnz = comm.allgather(read_matrix(path, comm=comm, balance="nnz").X.nnz)
    by_rows = comm.allgather(read_matrix(path, comm=comm, balance="rows").X.nnz)
    assert sum(by_nnz) == sum(by_rows) == int(heavy.sum())
    assert max(by_nnz) <= max(by_rows)
    if comm.size > 1:
        assert max(by_nnz) < max(by_rows)


@pytest.mark.mpi
def test_bow_and_ratings_partitioned(comm, shared_tmp):
    dp, w, c, _, _ = S.make_lda_corpus(28, 40, 3, doc_length=10, seed=2)
    u, i, v, _, _ = S.make_ratings(28, 15, rank=2, density=0.3, seed=3)
    pb, pr = os.path.join(shared_tmp, "b"), os.path.join(shared_tmp, "r")
    _write_on_root(comm, lambda: (write_bow(pb, dp, w, c, 40, vocab=S.vocab_words(40), shard_sizes=UNEVEN),
                                  write_ratings(pr, u, i, v, 28, 15, shard_sizes=UNEVEN)))
    for balance in ("tokens", "docs", "nnz"):
        cb = read_bow(pb, comm=comm, balance=balance)
        parts = comm.allgather((cb.doc_start, cb.doc_stop, cb.doc_ptr, cb.word_ids, cb.counts))
        assert parts[0][0] == 0 and parts[-1][1] == 28
        assert all(parts[k][1] == parts[k + 1][0] for k in range(len(parts) - 1))
        assert np.array_equal(np.concatenate([p[3] for p in parts]), w)
        assert np.array_equal(np.concatenate([p[4] for p in parts]), c)
        lens = np.concatenate([np.diff(p[2]) for p in parts])
        assert np.array_equal(lens, np.diff(dp)) and cb.vocab == S.vocab_words(40)
    lr = read_ratings(pr, comm=comm)
    parts = comm.allgather((lr.users, lr.items, lr.values))
    assert np.array_equal(np.concatenate([p[0] for p in parts]), u)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), i)
    assert np.array_equal(np.concatenate([p[2] for p in parts]), v)
    assert np.all((lr.users >= lr.user_start) & (lr.users < lr.user_stop))


@pytest.mark.mpi
def test_only_overlapping_shards_are_checked(comm, shared_tmp):
    """A corrupt shard is found by whichever rank reads it, and all ranks raise."""
    X = sp.random(40, 6, density=0.5, format="csr", random_state=4)
    path = os.path.join(shared_tmp, "c")

    def make():
        write_matrix(path, X, np.zeros(40), n_shards=4)
        with open(os.path.join(path, "shard-00003.h5"), "r+b") as f:
            f.seek(-4, 2)
            f.write(b"XXXX")

    _write_on_root(comm, make)
    msgs = _raises_everywhere(comm, lambda: read_matrix(path, comm=comm), "shard-00003.h5: checksum mismatch")
    if comm.size > 1:
        assert all(f"found on rank {comm.size - 1}" in m for m in msgs)


@pytest.mark.mpi
def test_bad_values_all_ranks_raise(comm, shared_tmp):
    X = sp.random(40, 6, density=0.5, format="csr", random_state=5)
    path = os.path.join(shared_tmp, "n")

    def make():
        write_matrix(path, X, np.zeros(40), n_shards=2)
        man = read_manifest(path)
        f = os.path.join(path, "shard-00000.h5")
        with h5py.File(f, "r+") as h:
            h["data"][0] = np.nan
        man["shards"][0]["sha256"] = file_sha256(f)
        write_manifest(path, man)

    _write_on_root(comm, make)
    _raises_everywhere(comm, lambda: read_matrix(path, comm=comm, balance="nnz"), r"shard-00000.h5: value nan")
    # the communicator is still usable: nobody is stuck in a collective
    assert comm.allreduce(1) == comm.size


@pytest.mark.mpi
def test_missing_shard_and_too_many_ranks(comm, shared_tmp):
    X = sp.random(3, 4, density=0.5, format="csr", random_state=6)
    p1, p2 = os.path.join(shared_tmp, "small"), os.path.join(shared_tmp, "miss")

    def make():
        write_matrix(p1, X, np.zeros(3))
        write_matrix(p2, X, np.zeros(3), n_shards=3)
        os.remove(os.path.join(p2, "shard-00002.h5"))

    _write_on_root(comm, make)
    _raises_everywhere(comm, lambda: read_matrix(p2, comm=comm), "shard-00002.h5: shard file missing")
    if comm.size > 3:
        _raises_everywhere(comm, lambda: read_matrix(p1, comm=comm), "3 rows over 4 ranks")
    else:
        assert comm.allreduce(read_matrix(p1, comm=comm).X.nnz) == X.nnz
    _raises_everywhere(comm, lambda: read_matrix(os.path.join(shared_tmp, "nothing"), comm=comm), "not found")


@pytest.mark.mpi
def test_estimators_refuse_wrong_task_on_all_ranks(comm, shared_tmp):
    """A regression app on a classification dataset (and the reverse) stops on every rank
    with the same collective error (the job then ends cleanly, no abort)."""
    from petuum_mpi.apps.lasso import ElasticNet, Lasso
    from petuum_mpi.apps.logistic_l1 import L1LogisticRegression

    X = sp.random(28, 5, density=0.5, format="csr", random_state=2)
    clf, reg = os.path.join(shared_tmp, "clf"), os.path.join(shared_tmp, "reg")
    _write_on_root(comm, lambda: (write_matrix(clf, X, np.arange(28) % 3, task="classification", n_shards=3),
                                  write_matrix(reg, X, np.arange(28) % 2 * 1.0, n_shards=3)))
    for est in (Lasso(alpha=0.1), ElasticNet(alpha=0.1)):
        caught = []
        _raises_everywhere(comm, lambda: _fit(est, clf, caught),
                           r"clf: is a classification dataset \(3 classes\); .*--task regression$")
        assert caught == [True]  # marked collective: every rank raised it at the same point
    _raises_everywhere(comm, lambda: L1LogisticRegression().fit(reg), r"reg: is a regression dataset; .*--task "
                                                                      r"classification$")


def _fit(est, path, caught):
    try:
        est.fit(path)
    except DataError as e:
        caught.append(e.collective)
        raise
