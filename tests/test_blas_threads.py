"""A rank is a core: inside every app's fit, BLAS runs one thread (whatever the process limit
outside), and the limit outside comes back after the fit. The drivers own it (``@one_blas_thread()``
on their ``fit``), so an app gets it without a line of its own."""

import numpy as np
import pytest
import scipy.sparse as sp

threadpoolctl = pytest.importorskip("threadpoolctl")

from petuum_mpi.apps.lda import LDA  # noqa: E402
from petuum_mpi.apps.logistic_l1 import L1LogisticRegression  # noqa: E402
from petuum_mpi.apps.logreg import LogisticRegression  # noqa: E402
from petuum_mpi.apps.mf import MatrixFactorization  # noqa: E402
from petuum_mpi.data.synth import make_classification, make_lda_corpus, make_ratings  # noqa: E402


def blas_threads():
    return [d["num_threads"] for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]


def _classification():
    X, y = make_classification(400, 30, seed=0)[:2]
    return (X.toarray() if sp.issparse(X) else X), y


def _fit(app, comm, callback):
    if app in ("logreg-newton-cg", "logreg-sgd"):
        X, y = _classification()
        LogisticRegression(solver=app.split("-", 1)[1], max_iter=3, comm=comm).fit(X, y, callback=callback)
    elif app == "l1_logistic":
        X, y = _classification()
        L1LogisticRegression(C=1.0, max_iter=3, comm=comm).fit(X, y, callback=callback)
    elif app == "mf":
        u, i, v, _, _ = make_ratings(300, 100, rank=3, noise=0.5, density=0.1, seed=0)
        MatrixFactorization(n_components=3, max_iter=2, validation_fraction=0, n_users=300, n_items=100,
                            comm=comm).fit((u, i, v), callback=callback)
    else:
        ptr, words, counts, _, _ = make_lda_corpus(60, 200, 4, doc_length=30, seed=0)
        X = sp.csr_matrix((counts, words, ptr), shape=(60, 200))
        LDA(n_components=4, max_iter=2, evaluate_every=1, comm=comm).fit(X, callback=callback)


@pytest.mark.mpi
@pytest.mark.parametrize("app", ["logreg-newton-cg", "logreg-sgd", "l1_logistic", "mf", "lda"])
def test_one_blas_thread_inside_every_fit(comm, app):
    _fit(app, comm, None)  # the first fit may set the process-wide share of the cores (compile_once)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        seen = []
        _fit(app, comm, lambda row: seen.extend(blas_threads()))
        assert seen and set(seen) == {1}, seen
        assert blas_threads() == before
    assert np.all(np.asarray(before) >= 1)
