"""Ridge regression over ranks with no kernel code of its own: the squared loss of
:mod:`petuum_mpi.linear.losses` through the same full-batch kernels as logistic regression
(:class:`petuum_mpi.linear.objective.LinearObjective`), minimised by trust-region
Newton-CG over ranks (:func:`petuum_mpi.fullbatch.minimize`, one Allreduce per product).

Objective (scikit-learn's ``Ridge(alpha)``, intercept unpenalised)::

    ||y - X w - b||^2 + alpha ||w||^2   =   2n [ 1/n sum_i (x_i w + b - y_i)^2 / 2 + (alpha/n)/2 ||w||^2 ]

    mpiexec -n 2 python examples/ridge.py
"""

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from petuum_mpi.data import partition_rows
from petuum_mpi.fullbatch import minimize
from petuum_mpi.linear.losses import Squared
from petuum_mpi.linear.objective import LinearObjective, warmup
from petuum_mpi.runtime import get_comm, warm_once


class Ridge(RegressorMixin, BaseEstimator):
    """L2-penalised least squares; ``fit`` takes the full arrays on every rank, each rank uses its block."""

    def __init__(self, alpha=1.0, fit_intercept=True, tol=1e-10, max_iter=100, comm=None):
        self.alpha, self.fit_intercept, self.tol, self.max_iter, self.comm = alpha, fit_intercept, tol, max_iter, comm

    def fit(self, X, y):
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, y_numeric=True)
        comm = get_comm(self.comm)
        warm_once(lambda: warmup((Squared,)), comm)
        lo, hi = partition_rows(X.shape[0], comm.size)[comm.rank]
        L = LinearObjective(X[lo:hi], y[lo:hi], Squared(), self.alpha / X.shape[0], self.fit_intercept,
                            n_total=X.shape[0], with_penalty=comm.rank == 0)
        res = minimize(L.fun_grad, L.x0(), hessp=L.hessp, comm=comm, tol=self.tol / X.shape[0],
                       max_iter=self.max_iter)
        W, b = L.unpack(res.x)
        self.coef_, self.intercept_ = W[:, 0].copy(), float(b[0])
        self.n_iter_ = res.n_iter
        return self

    def predict(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        return X @ self.coef_ + self.intercept_


if __name__ == "__main__":
    from sklearn.datasets import make_regression
    from sklearn.linear_model import Ridge as SkRidge

    X, y = make_regression(2000, 50, noise=1.0, random_state=0)
    m = Ridge(alpha=10.0).fit(X, y)
    ref = SkRidge(alpha=10.0).fit(X, y)
    if get_comm(None).rank == 0:
        print(f"max |coef - sklearn| = {np.abs(m.coef_ - ref.coef_).max():.2e} after {m.n_iter_} Newton steps")
