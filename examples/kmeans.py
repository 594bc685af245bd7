"""K-means (Lloyd) on the Bösen parameter server: one clock = one Lloyd iteration.

The model is one sufficient-statistics table ``S`` (k x (d + 1)): per cluster the sum
of its points and their count. Each rank assigns its rows to the centroids it reads
and *replaces* its previous contribution to ``S``. Under ``bsp`` this is exactly
Lloyd's algorithm (the same centroids as scikit-learn's KMeans from the same start);
under ``ssp`` it is Lloyd on stale statistics and stops only at a confirmed fixed point.

    mpiexec -n 2 python -m petuum_mpi run examples/kmeans.toml
"""

import numba
import numpy as np
from sklearn.base import ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from petuum_mpi.bosen import TableSpec
from petuum_mpi.drivers import Contribution, DataParallelEstimator, seed_from_root
from petuum_mpi.estimator import InputError, Param


@numba.njit(cache=True)
def assign(X, C, labels, stats):
    """Nearest centroid of every row (labels updated); stats <- per-cluster [sum, count]."""
    k, d = C.shape
    stats[:] = 0.0
    inertia, changed = 0.0, 0
    for i in range(X.shape[0]):
        best, bj = np.inf, 0
        for j in range(k):
            s = 0.0
            for t in range(d):
                s += (X[i, t] - C[j, t]) ** 2
            if s < best:
                best, bj = s, j
        changed += labels[i] != bj
        labels[i] = bj
        stats[bj, :d] += X[i]
        stats[bj, d] += 1.0
        inertia += best
    return inertia, changed


def warmup():
    assign(np.zeros((2, 2)), np.ones((1, 2)), np.zeros(2, np.int64), np.zeros((1, 3)))


class KMeans(ClusterMixin, TransformerMixin, DataParallelEstimator):
    """K-means clustering (Lloyd's algorithm) on the parameter server."""

    app_name = "kmeans"
    params = {
        "n_clusters": Param(8, int, lo=1, doc="number of clusters k"),
        "init": Param("k-means++", str, choices=("k-means++", "first"), doc="start: k-means++ on rank 0's rows, "
                      "or the first k rows of the data"),
        "max_iter": Param(300, int, lo=1, doc="most Lloyd iterations"),
        "tol": Param(None, float, lo=0, doc="unused: k-means stops at a fixed point (no assignment changes)"),
    }
    layout = "dense"
    warmup = warmup

    def tables(self, r):
        r.k, r.d = self.n_clusters, r.X.shape[1]
        return [TableSpec("S", r.k, r.d + 1)]

    def start(self, r):
        from sklearn.cluster import kmeans_plusplus

        r.labels, r.stats, r.C = np.full(r.X.shape[0], -1), np.zeros((r.k, r.d + 1)), None
        r.S = Contribution(r.ps, "S")
        if r.rank == 0 and r.X.shape[0] < r.k:
            raise InputError(f"KMeans: n_clusters={r.k} but rank 0 has only {r.X.shape[0]} rows to start from")
        first = (lambda: r.X[:r.k]) if self.init == "first" else (
            lambda: kmeans_plusplus(r.X, r.k, random_state=r.seed)[0])
        r.S.adopt(seed_from_root(r, "S", lambda: np.hstack([first(), np.ones((r.k, 1))])))

    def centers(self, r):
        S = r.ps.get("S")
        C = S[:, :-1] / np.maximum(S[:, -1:], 1.0)
        if r.C is not None:  # an empty cluster keeps its centroid
            C[S[:, -1] == 0] = r.C[S[:, -1] == 0]
        r.C = C
        return C

    def step(self, r):
        assign(r.X, self.centers(r), r.labels, r.stats)
        r.S.replace(r.stats)

    def metrics(self, r):
        inertia, changed = assign(r.X, self.centers(r), r.labels.copy(), np.zeros_like(r.stats))
        return {"objective": inertia, "changed": changed}

    def converged(self, r, prev, row):
        return row["changed"] == 0

    def state(self, r):
        return {"labels": r.labels, "old": r.S.old if r.S.old is not None else np.zeros_like(r.stats)}

    def restore(self, r, st):
        r.labels, r.stats, r.C, r.S = st["labels"], np.zeros((r.k, r.d + 1)), None, Contribution(r.ps, "S")
        r.S.adopt(st["old"])

    def finish(self, r):
        self.cluster_centers_ = self.centers(r).copy()
        self.inertia_ = self.history_[-1]["objective"]
        labels = r.labels.copy()
        assign(r.X, self.cluster_centers_, labels, np.zeros_like(r.stats))
        self.labels_ = r.gather_rows(labels, r.row_start, r.n_rows).astype(np.int64)

    def transform(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return np.sqrt(((X[:, None, :] - self.cluster_centers_[None]) ** 2).sum(-1))

    def predict(self, X):
        return self.transform(X).argmin(axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags
