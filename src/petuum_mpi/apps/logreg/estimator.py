"""Logistic regression, binary and multinomial (softmax).

Objective (scikit-learn's ``LogisticRegression(C=1/(n*alpha))`` when ``l1 = 0``)::

    F(W, b) = mean_i logloss_i + alpha/2 ||W||^2 + l1 ||W||_1        (b unpenalised)

``W`` is (n_features x C), C = 1 for two classes, C = n_classes otherwise. Solvers:

* ``newton-cg`` (default) and ``lbfgs``: full batch, :func:`petuum_mpi.fullbatch.minimize`
  over the rank's rows (:class:`petuum_mpi.linear.objective.LinearObjective`), no step size, scikit-learn's ``tol``
  (max |grad F| <= tol), a ConvergenceWarning when ``max_iter`` stops it. No parameter server.
* ``svrg`` and ``sgd``: data-parallel on the Bösen parameter server
  (:class:`~petuum_mpi.drivers.DataParallelEstimator`): ``W`` is a table of feature blocks
  (``block_features`` features per server row), ``b`` a second table. Each clock a worker
  reads the blocks its chunk of rows touches, runs mini-batch steps with the kernels of
  :mod:`.kernels` and incs the changes. ``sgd``: proximal steps (lazy L2/L1), schedule
  ``learning_rate`` (AdaGrad with accumulators shared in tables ``G``/``Gb``), optional
  Polyak tail averaging. ``svrg``: every iteration a full-gradient snapshot of the server's
  model (barrier + allreduce; it also yields the objective), then steps on
  ``inner_fraction`` of the rows. ``l1 > 0`` needs ``sgd`` (or the ``l1_logistic`` app).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import ClassifierMixin
from sklearn.exceptions import NotFittedError

from ...drivers import DataParallelEstimator, Run
from ...errors import ConfigError, DataError, UsageError, convergence_warning
from ...estimator import InputError, Param
from ...runtime import get_comm, one_blas_thread, warm_once
from ...linear import kernels as LK
from ...linear import losses
from ...linear.objective import LinearObjective
from ...linear.objective import warmup as fullbatch_warmup
from ...linear.rows import as_rows
from . import kernels as K

__all__ = ["LogisticRegression", "holdout_mask", "SOLVERS"]

FULL_BATCH = ("newton-cg", "lbfgs")
SOLVERS = FULL_BATCH + ("svrg", "sgd")
_ADAGRAD_INIT = 0.1
_ROW_BLOCK = 8  # SVRG visits local rows in random blocks of this many consecutive rows


def warmup():
    """Compile the stochastic solvers' kernels on tiny inputs (see runtime.warm_once)."""
    Xc = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    y = np.array([0.0, 1.0])
    order = np.arange(2, dtype=np.int64)
    for C in (1, 2):
        loss = losses.by_name("log_loss", 2 if C == 1 else 3)
        for X in (as_rows(Xc), Xc.toarray()):
            st = LK.SGDState(loss, 2, C, "adagrad", 0.1, 0.5, 1e-3, 1e-4)
            st.run(X, y, order, 1)
            st.flush()
            Z = LK.margins(X, st.W, st.b)
            K.count_correct(Z, y)
            K.proba_from_margins(Z)
            LK.loss_sum(loss, Z, y)
            LK.penalty(st.W, 1.0, 0.0)
            LK.mark_features(X, order, 1, np.zeros(2, dtype=np.bool_))
            W, b, R, gW, gb = np.zeros((2, C)), np.zeros(C), np.zeros((2, C)), np.zeros((2, C)), np.zeros(C)
            LK.fg(loss, X, y, W, b, LK.no_state(), R, gW, gb)
            M = np.zeros((2, 3 * C + 1))
            t, _ = LK.svrg_pass(loss, X, y, order, 1, M, b, R, gb, 0, 0.1, 1e-3, True, 0.1)
            LK.svrg_flush(M, int(t), 0.1, 1e-3)
            LK.sq_norm_sum(X)
            LK.top_eig(X, 1, 2, 0)


def holdout_mask(row_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Deterministic holdout: True for the rows held out. Depends only on the
    global row id and ``seed`` (not on the rank count)."""
    if fraction <= 0:
        return np.zeros(row_ids.shape[0], dtype=bool)
    with np.errstate(over="ignore"):  # the hash wraps around on purpose
        s = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    h = (row_ids.astype(np.uint64) + s) * np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


def _is_path(X) -> bool:
    return isinstance(X, (str, bytes)) or hasattr(X, "__fspath__")


def _margins(X, W, b):
    return LK.margins(as_rows(X), W, b)


def _check_array(X, y=None):
    """scikit-learn's validation (float64, CSR or C-contiguous dense); its messages as InputError."""
    from sklearn.utils.validation import check_array, check_X_y

    kw = dict(accept_sparse="csr", dtype=np.float64, order="C")
    try:
        if y is None:
            return check_array(X, **kw), None
        return check_X_y(X, y, **kw)
    except ValueError as e:
        raise InputError(str(e)) from None


class _NotFitted(UsageError, NotFittedError):
    """predict before fit (scikit-learn's NotFittedError too)."""


class LogisticRegression(ClassifierMixin, DataParallelEstimator):
    """Logistic regression (binary and softmax): full-batch Newton-CG / L-BFGS or SVRG / SGD on Bösen."""

    app_name = "logreg"
    params = {
        "alpha": Param(1e-4, float, lo=0, doc="L2 penalty alpha/2 ‖W‖² (scikit-learn C = 1/(n alpha)); "
                       "newton-cg / lbfgs need alpha > 0"),
        "l1": Param(0.0, float, lo=0, doc="L1 penalty l1 ‖W‖₁: sgd only (proximal steps; or the l1_logistic app)"),
        "fit_intercept": Param(True, bool, doc="fit unpenalised intercepts"),
        "solver": Param("newton-cg", str, choices=SOLVERS, doc="newton-cg / lbfgs: full batch, no step size; "
                        "svrg / sgd: data-parallel on the parameter server (huge n, few passes)"),
        "max_iter": Param(100, int, lo=1, doc="newton-cg / lbfgs: iterations; svrg: iterations (a snapshot pass "
                          "+ inner_fraction of an epoch of steps); sgd: epochs"),
        "tol": Param(1e-4, float, lo=0, none_ok=True, doc="newton-cg / lbfgs: stop when max abs(grad F) <= tol "
                     "(scikit-learn's tol); svrg / sgd: stop when an evaluation lowers F by less than tol "
                     "(relative); None (or 0 for svrg / sgd): run max_iter"),
        "memory": Param(10, int, lo=1, doc="lbfgs: correction pairs kept"),
        "learning_rate": Param("adagrad", str, choices=tuple(LK.SCHEDULES), doc="sgd: step-size schedule"),
        "eta0": Param(None, float, lo=0, lo_open=True, doc="svrg / sgd: step size (None: svrg estimates it from "
                      "the data, see step_size_; sgd 0.1)"),
        "power_t": Param(0.5, float, lo=0, doc="sgd invscaling: eta0 / (t+1)**power_t"),
        "batch_size": Param(None, int, lo=1, doc="svrg / sgd: rows per step (None: 64 svrg, 16 sgd)"),
        "inner_fraction": Param(1.0 / 3, float, lo=0, lo_open=True, hi=1, doc="svrg: fraction of the rows stepped "
                                "on between snapshots"),
        "average": Param(True, bool, doc="sgd: Polyak tail averaging of the clock-end iterates"),
        "average_start": Param(0.3, float, lo=0, hi=1, hi_open=True, doc="sgd: fraction of the epochs before "
                               "averaging starts"),
        "block_features": Param(None, int, lo=1, doc="svrg / sgd: features per server row (None: max(1, 32 // C))"),
        "holdout": Param(0.0, float, lo=0, hi=1, hi_open=True, doc="fraction of rows (a hash of the row id and "
                         "the seed) held out for test figures when no test set is given"),
        "clocks_per_epoch": Param(1, int, lo=1, doc="svrg / sgd: parameter-server clocks per epoch (iteration)"),
        "eval_every": Param(1, int, lo=1, doc="svrg / sgd: evaluate (and test tol) every N clocks; newton-cg / "
                            "lbfgs report every iteration"),
    }
    figures_table = "W"
    warmup = warmup

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ data
    def read(self, r, X, y):
        """This rank's rows, labels as class indices, the holdout split, the row counts."""
        if _is_path(X):
            from ...data import read_matrix
            from ...data.reader import require_task

            if y is not None:
                raise UsageError("fit(path): y must be None when X is a dataset path (labels come from the dataset)")
            part = read_matrix(str(X), r.comm, layout="csr")
            require_task(part, "classification", "logreg")
            Xl = part.X
            if part.dataset is not None and part.dataset.dense:
                Xl = np.ascontiguousarray(Xl.toarray())
            self.classes_ = np.arange(int(part.n_classes or 2))
            self.n_features_in_ = int(part.n_cols)
            rows = np.arange(part.row_start, part.row_stop, dtype=np.int64)
            yl = np.asarray(part.y, dtype=np.float64)
        else:
            from sklearn.utils.multiclass import check_classification_targets

            from ...data import partition_rows

            if y is None:
                raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            Xa, ya = _check_array(X, y)
            try:
                check_classification_targets(ya)
            except ValueError as e:
                raise InputError(str(e)) from None
            self.classes_, yk = np.unique(ya, return_inverse=True)
            if self.classes_.size < 2:
                raise InputError(f"{type(self).__name__} needs samples of at least 2 classes in the data, but the "
                                 f"data contain only one class: {self.classes_[0]!r}")
            self.n_features_in_ = Xa.shape[1]
            n = Xa.shape[0]
            if n < r.size:
                raise DataError(f"{n} rows cannot be split over {r.size} ranks")
            lo, hi = partition_rows(n, r.size)[r.rank]
            Xl, yl, rows = Xa[lo:hi], yk[lo:hi].astype(np.float64), np.arange(lo, hi, dtype=np.int64)
        if sp.issparse(Xl):
            Xl = sp.csr_matrix(Xl)
            Xl.sort_indices()
        r.nc = self.classes_.size
        r.C = 1 if r.nc == 2 else r.nc
        r.X, r.y, r.rows, r.te = Xl, yl, rows, None
        r.loss = losses.by_name("log_loss", r.nc)

    def read_test(self, r, test):
        """The test set: a dataset folder or ``(X, y)`` arrays (every rank), this rank's block of rows."""
        if _is_path(test):
            from ...data import read_matrix
            from ...data.reader import require_task

            part = read_matrix(str(test), r.comm, layout="csr")
            require_task(part, "classification", "logreg")
            Xt, yt, dt = part.X, np.asarray(part.y, dtype=np.float64), int(part.n_cols)
            if part.dataset is not None and part.dataset.dense:
                Xt = np.ascontiguousarray(Xt.toarray())
            if yt.size and (yt.min() < 0 or yt.max() >= r.nc):
                raise DataError(f"{test}: labels outside [0, {r.nc})")
        else:
            from ...data import partition_rows

            if not (isinstance(test, tuple) and len(test) == 2):
                raise UsageError("fit(test=...): a dataset folder or a tuple (X_test, y_test)")
            Xa, _ = _check_array(test[0])
            ya = self._labels_of(test[1])
            if ya.shape[0] != Xa.shape[0]:
                raise DataError(f"test: X has {Xa.shape[0]} rows but y has {ya.shape[0]}")
            lo, hi = partition_rows(Xa.shape[0], r.size)[r.rank]
            Xt, yt, dt = Xa[lo:hi], ya[lo:hi], Xa.shape[1]
        if dt != self.n_features_in_:
            raise DataError(f"test set has {dt} features, training set {self.n_features_in_}")
        r.te = (sp.csr_matrix(Xt) if sp.issparse(Xt) else Xt, yt)

    def _counts(self, r):
        """The holdout split (when there is no test set) and the global row counts."""
        if not r.has_test and r.p.holdout > 0:
            m = holdout_mask(r.rows, r.p.holdout, r.seed)
            r.te = (r.X[np.flatnonzero(m)], r.y[m])
            keep = np.flatnonzero(~m)
            r.X, r.y = r.X[keep], r.y[keep]
        tot = r.allreduce(np.array([r.X.shape[0], 0 if r.te is None else r.te[0].shape[0]], dtype=np.float64))
        r.n_tr, r.n_te = int(tot[0]), int(tot[1])
        if r.n_tr == 0:
            raise DataError("no training rows (all held out?)")

    def _labels_of(self, y):
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx[idx >= self.classes_.size] = 0
        bad = self.classes_[idx] != y
        if bad.any():
            raise DataError(f"y: label {y[np.flatnonzero(bad)[0]]!r} is not one of the training classes "
                            f"{self.classes_.tolist()}")
        return idx.astype(np.float64)

    def _sums(self, r, W, b, train=True) -> dict:
        """Local loss / correct-count sums of (W, b) on the training and test rows."""
        out = {}
        if train:
            Z = _margins(r.X, W, b)
            out = {"correct": K.count_correct(Z, r.y)}  # before the loss: it turns Z into residuals
            out["loss"] = LK.loss_sum(r.loss, Z, r.y)
        if r.te is not None and r.n_te:
            Z = _margins(r.te[0], W, b)
            out["test_correct"] = K.count_correct(Z, r.te[1])
            out["test_loss"] = LK.loss_sum(r.loss, Z, r.te[1])
        return out

    def report(self, r, sums):
        row = {}
        if "loss" in sums:
            row = {"objective": sums["loss"] / r.n_tr + LK.penalty(r.W_eval, r.p.alpha, r.p.l1),
                   "train_loss": sums["loss"] / r.n_tr}
        if "correct" in sums:
            row["train_score"] = sums["correct"] / r.n_tr
        if "test_loss" in sums:
            row.update(test_loss=sums["test_loss"] / r.n_te, test_score=sums["test_correct"] / r.n_te)
        if r.p.solver == "svrg":
            row["step_size"] = r.eta
        return row

    def converged(self, r, prev, row):
        """svrg / sgd: an evaluation lowered F by less than tol (relative); tol 0 or None: never."""
        tol = r.p.tol
        return bool(tol) and prev is not None and prev["objective"] - row["objective"] < tol * abs(row["objective"])

    # ------------------------------------------------------------------ fit
    @one_blas_thread()  # a rank is a core (full-batch dots on long vectors)
    def fit(self, X, y=None, *, test=None, callback=None):
        """Fit (collective, any rank count): ``X`` a dataset folder or the full arrays on every rank;
        ``test`` a dataset folder or ``(X_test, y_test)``; ``callback(row)`` on every rank per metrics row."""
        p = self._check_params()
        if p.l1 > 0 and p.solver != "sgd":
            raise ConfigError(f"l1: solver {p.solver!r} needs l1 = 0 (a smooth objective); use solver='sgd' "
                              "(proximal steps) or the l1_logistic app (coordinate descent on STRADS)")
        if p.solver in FULL_BATCH:
            if p.alpha == 0:
                raise ConfigError(f"alpha: solver {p.solver!r} needs alpha > 0 (without a penalty the optimum may "
                                  "not exist)")
            if p.snapshot_every or p.resume:
                raise ConfigError(f"snapshot_every: snapshots and resume need a parameter-server solver (svrg, "
                                  f"sgd); solver {p.solver!r} has none")
            return self._fit_fullbatch(p, X, y, test, callback)
        super().fit(X, y, test=test, callback=callback)
        if p.tol and not self.telemetry_["converged"]:
            warnings.warn(f"LogisticRegression: objective still decreasing by more than tol={p.tol} after "
                          f"max_iter={p.max_iter}; increase max_iter", convergence_warning(), stacklevel=2)
        return self

    def _fit_fullbatch(self, p, X, y, test, callback):
        from ...fullbatch import minimize

        comm = get_comm(p.comm)
        r = Run(p=p, comm=comm, rank=comm.rank, size=comm.size, ps=None, seed=p.random_state, has_test=test is not None)
        self.read(r, X, y)
        if test is not None:
            self.read_test(r, test)
        self._counts(r)
        warm_once(fullbatch_warmup, comm)
        L = LinearObjective(r.X, r.y, r.loss, p.alpha, p.fit_intercept, r.nc, r.n_tr, with_penalty=r.rank == 0)
        passes = [0]

        def fun_grad(x):
            passes[0] += 1
            return L.fun_grad(x)

        def hessp(x, v):
            passes[0] += 1
            return L.hessp(x, v)

        self.history_ = []
        t0 = time.perf_counter()

        def record(row):
            self.history_.append(row)
            if callback is not None:
                callback(row)

        def each(k, x, f, gmax):
            record({"iter": k, "epoch": passes[0], "time": time.perf_counter() - t0, "objective": f,
                    "grad_max": gmax})

        def hess_diag(x):
            passes[0] += 1
            return L.hess_diag(x)

        # newton-cg preconditions CG with 0.9 + 0.1 diag H (fullbatch): Hessian products to 1e-4 of the optimum,
        # plain / preconditioned, ill-conditioned sparse 50k x 2000 513 / 383, dense 5000 x 50 65 / 51, 200k x 50k
        # sparse 9 / 9 (plus one diagonal pass per Newton step, 3 there)
        res = minimize(fun_grad, L.x0(), hessp=hessp, hess_diag=hess_diag if p.solver == "newton-cg" else None,
                       comm=comm, method=p.solver,
                       tol=p.tol or 0.0, max_iter=p.max_iter, memory=p.memory, callback=each)
        W, b = L.unpack(res.x)
        r.W_eval = W
        s = self._sums(r, W, b)
        keys = sorted(s)
        red = dict(zip(keys, (float(v) for v in r.allreduce(np.array([float(s[k]) for k in keys])))))
        row = {"iter": res.n_iter, "epoch": passes[0], **self.report(r, red)}
        row.update(objective=res.fun, time=time.perf_counter() - t0, grad_max=res.grad_max)
        record(row)
        self.coef_ = np.ascontiguousarray(W.T)
        self.intercept_ = b.copy()
        self.objective_ = res.fun
        self.n_iter_ = res.n_iter
        self.telemetry_ = {"engine": "fullbatch", "solver": p.solver, "ranks": r.size, "time": row["time"],
                           "converged": res.converged, "message": res.message, "n_fev": res.n_fev,
                           "n_hessp": res.n_hessp, "grad_max": res.grad_max}
        if p.tol is not None and not res.converged:
            warnings.warn(f"LogisticRegression: solver {p.solver!r} stopped before max |grad| <= tol={p.tol}: "
                          f"{res.message}; increase max_iter", convergence_warning(), stacklevel=3)
        return self

    # ------------------------------------------------------------------ parameter-server solvers: hooks
    def tables(self, r):
        from ...bosen import TableSpec

        p = r.p
        self._counts(r)
        r.B = int(p.block_features or max(1, 32 // r.C))
        r.nb = -(-self.n_features_in_ // r.B)
        r.D = r.nb * r.B
        r.bs = int(p.batch_size if p.batch_size is not None else (64 if p.solver == "svrg" else 16))
        r.flushed, r.final = False, None
        tabs = [TableSpec("W", r.nb, r.B * r.C, "float64"), TableSpec("b", 1, r.C, "float64")]
        r.shared_g = p.solver == "sgd" and p.learning_rate == "adagrad"
        if r.shared_g:
            # shared AdaGrad accumulators: every worker steps with the same per-coordinate
            # step sizes (worker-local ones would bias the fixed point of the summed updates)
            tabs += [TableSpec("G", r.nb, r.B * r.C, "float64", init=_ADAGRAD_INIT),
                     TableSpec("Gb", 1, r.C, "float64", init=_ADAGRAD_INIT)]
        (self._setup_svrg if p.solver == "svrg" else self._setup_sgd)(r)
        return tabs

    def start(self, r):
        r.warm = True  # svrg: iteration 0 is plain SGD from 0 (no snapshot of the zero model)

    def step(self, r):
        (self._step_svrg if r.p.solver == "svrg" else self._step_sgd)(r)

    def metrics(self, r):
        if r.flushed:  # the final evaluation: the returned model
            W, b = self._final_model(r)
            r.W_eval, r.final_evaluated = W, True
            return self._sums(r, W, b)
        if r.p.solver == "svrg":
            if r.clock % r.p.clocks_per_epoch == 0:  # an iteration boundary: the snapshot gives the objective
                if r.snap_at != r.clock:
                    self._snapshot(r)
                return {"loss": r.snap_loss, **self._sums(r, r.W2, r.b, train=False)}
            W, b = r.ps.get("W").reshape(r.D, r.C).copy(), r.ps.get("b", 0).copy()
        elif r.p.average and r.na > 0:
            W, b = r.Wavg, r.bavg
        else:
            W, b = self._caught_up(r)
        if r.size > 1:  # the rank-averaged model
            W = r.allreduce(W.ravel()).reshape(r.D, r.C) / r.size
            b = r.allreduce(b) / r.size
        r.W_eval = W
        return self._sums(r, W, b)

    def flush(self, r):
        if r.p.solver == "sgd":  # catch up every feature's lazy steps and ship them
            r.st.flush()
            r.ps.inc("W", None, r.dWb)
            r.dWb[...] = 0.0
        r.flushed = True

    def _final_model(self, r):
        if r.final is None:
            W, b = r.ps.get("W").reshape(r.D, r.C).copy(), r.ps.get("b", 0).copy()
            if r.p.solver == "sgd" and r.p.average and r.na > 0:
                W = r.allreduce(r.Wavg.ravel()).reshape(r.D, r.C) / r.size
                b = r.allreduce(r.bavg) / r.size
            r.final = (W, b)
        return r.final

    def finish(self, r):
        W, b = self._final_model(r)
        d = self.n_features_in_
        self.coef_ = np.ascontiguousarray(W[:d].T)
        self.intercept_ = b.copy()
        if getattr(r, "final_evaluated", False):
            self.objective_ = self.history_[-1]["objective"]
        else:  # stopped on tol: the last row is of the model before the final catch-up / averaging
            s = self._sums(r, W, b)
            self.objective_ = float(r.allreduce(np.array([s["loss"]]))[0] / r.n_tr + LK.penalty(W, r.p.alpha, r.p.l1))
        self.n_iter_ = -(-r.clock // r.p.clocks_per_epoch)  # epochs (svrg: iterations) begun
        if r.p.solver == "svrg":
            self.step_size_ = r.eta

    def state(self, r):
        if r.p.solver == "svrg":
            return {"t": np.array([r.t])}
        st = r.st
        s = {"G": st.G, "Gb": st.Gb, "last": st.last, "t": np.array([st.t]), "na": np.array([r.na])}
        if r.p.average:
            s["Wavg"], s["bavg"] = r.Wavg, r.bavg
        return s

    def restore(self, r, s):
        r.warm = False
        if r.p.solver == "svrg":
            r.t = int(s["t"][0])
            return
        st = r.st
        st.G[...], st.Gb[...], st.last[...], st.t = s["G"], s["Gb"], s["last"], int(s["t"][0])
        if r.p.average:
            r.Wavg[...], r.bavg[...] = s["Wavg"], s["bavg"]
        r.na = int(s["na"][0])

    # ------------------------------------------------------------------ sgd
    def _setup_sgd(self, r):
        p = r.p
        X, C, nb, B = r.X, r.C, r.nb, r.B
        r.Xr = as_rows(X)
        r.st = st = LK.SGDState(r.loss, r.D, C, p.learning_rate, 0.1 if p.eta0 is None else p.eta0,
                               p.power_t, p.alpha, p.l1, p.fit_intercept, adagrad_init=_ADAGRAD_INIT)
        r.Wb, r.dWb, r.Gw = st.W.reshape(nb, B * C), st.dW.reshape(nb, B * C), st.G.reshape(nb, B * C)
        r.G0, r.Gb0 = np.empty_like(r.Gw), np.empty_like(st.Gb)  # fetched accumulators (their change = the inc)
        # fixed chunks of local rows (one per clock of an epoch) and the blocks each touches
        cpe, n_loc = p.clocks_per_epoch, X.shape[0]
        perm0 = np.random.default_rng([r.seed, r.rank, 7]).permutation(n_loc).astype(np.int64)
        r.chunks = [perm0[k * n_loc // cpe:(k + 1) * n_loc // cpe] for k in range(cpe)]
        r.blocks = []
        for ch in r.chunks:
            bl = None
            if sp.issparse(X):
                mask = np.zeros(nb, dtype=np.bool_)
                LK.mark_features(r.Xr, ch, B, mask)
                bl = np.flatnonzero(mask).astype(np.int64)
                bl = None if bl.size > 0.9 * nb else bl
            r.blocks.append(bl)
        r.avg_from = int(np.floor(p.average_start * p.max_iter))
        r.Wavg, r.bavg, r.na = np.zeros_like(st.W), np.zeros_like(st.b), 0
        r.scratch = np.zeros_like(st.W)

    def _caught_up(self, r):
        """The local model with all pending lazy prox steps applied (state untouched)."""
        st = r.st
        Wc = st.W.copy()
        LK.apply_pending(Wc, r.scratch, st.G, st.last.copy(), st.t, st.schedule, st.eta0, st.power_t, st.alpha, st.l1)
        r.scratch[...] = 0.0
        return Wc, st.b.copy()

    def _step_sgd(self, r):
        p, st, ps, X = r.p, r.st, r.ps, r.X
        epoch, k = divmod(r.clock, p.clocks_per_epoch)
        rng = np.random.default_rng([r.seed, r.rank, epoch, k])
        bl = r.blocks[k]
        sel = slice(None) if bl is None else bl
        r.Wb[sel] = ps.get("W", None if bl is None else bl)
        st.b[...] = ps.get("b", 0)
        if r.shared_g:
            r.Gw[sel] = ps.get("G", None if bl is None else bl)
            r.G0[sel] = r.Gw[sel]
            st.Gb[...] = ps.get("Gb", 0)
            r.Gb0[...] = st.Gb
        order = r.chunks[k].copy()
        rng.shuffle(order)
        st.run(r.Xr, r.y, order, r.bs)
        ps.inc("W", bl, r.dWb[sel])
        r.dWb[sel] = 0.0
        ps.inc("b", 0, st.db)
        st.db[...] = 0.0
        if r.shared_g:
            ps.inc("G", bl, r.Gw[sel] - r.G0[sel])
            ps.inc("Gb", 0, st.Gb - r.Gb0)
        if p.average and epoch >= r.avg_from:
            Wc, bc = self._caught_up(r)
            r.na += 1
            r.Wavg += (Wc - r.Wavg) / r.na
            r.bavg += (bc - r.bavg) / r.na

    # ------------------------------------------------------------------ svrg
    def _setup_svrg(self, r):
        """Step sizes from the data; the packed model / snapshot buffers."""
        p, X, C, D, P = r.p, r.X, r.C, r.D, r.size
        n_loc, dense = X.shape[0], not sp.issparse(X)
        t0 = time.perf_counter()
        r.Xr = as_rows(X)
        msq = float(LK.sq_norm_sum(r.Xr))
        # curvature of the loss mean over a batch: ~ (msq / bs + lambda_max(X^T X / n)) / 4
        lam = 0.0
        if p.eta0 is None and n_loc:
            Xs = sp.csr_matrix(X[::max(1, n_loc // 2000)]) if dense else X
            stride = 1 if dense else max(1, n_loc // 10000)
            lam = float(LK.top_eig(as_rows(Xs), stride, 8, r.seed + r.rank))
        tot = r.allreduce(np.array([msq, lam]))
        msq, lam = max(tot[0] / r.n_tr, 1e-12), tot[1] / P
        if p.eta0 is not None:
            eta = float(p.eta0)
        else:  # the P workers' summed steps add up along shared (dense) curvature directions
            eta = 2.4 / (msq / min(r.bs, r.n_tr) + P * lam) / (1.0 if C == 1 else 2.0)
        if p.alpha > 0:
            eta = min(eta, 0.5 / p.alpha)
        # intercept: curvature <= 1/4 per row (1/2 softmax), shared by all P workers' steps
        r.eta, r.eta_b = eta, min(eta, 2.4 / P / (1.0 if C == 1 else 2.0))
        r.M = np.zeros((D, 3 * C + 1))
        r.Wb = np.zeros(r.nb * r.B * C)
        r.W2, r.W0 = r.Wb.reshape(D, C), np.empty((D, C))
        r.b, r.b0, r.mub = np.zeros(C), np.empty(C), np.zeros(C)
        r.R = np.zeros((n_loc, C))
        r.t, r.need_snap, r.snap_at, r.order = 0, True, -1, np.zeros(0, dtype=np.int64)
        # local rows are visited in random blocks of _ROW_BLOCK consecutive rows (random single
        # rows cost ~2.5x in TLB / cache misses on large CSR data); batches still mix blocks
        r.L = _ROW_BLOCK if n_loc >= 64 * _ROW_BLOCK else 1
        r.n_blk = -(-n_loc // r.L)
        r.k_in = max(1, int(round(p.inner_fraction * r.n_blk))) if n_loc else 0
        self.setup_time_ = time.perf_counter() - t0

    def _svrg_order(self, r, epoch):
        blk = np.random.default_rng([r.seed, r.rank, epoch, 13]).permutation(r.n_blk)[:r.k_in]
        order = (blk[:, None] * r.L + np.arange(r.L, dtype=np.int64)).ravel()
        r.order = order[order < r.X.shape[0]]
        r.need_snap = False
        r.M[:, 3 * r.C] = float(r.t)

    def _pull(self, r):
        r.Wb[...] = r.ps.get("W").ravel()
        r.b[...] = r.ps.get("b", 0)

    def _snapshot(self, r):
        """The common model after a barrier, the residuals of the local rows, the full gradient."""
        r.ps.barrier()
        self._pull(r)
        C, D, X = r.C, r.D, r.X
        gW, gb = np.zeros((D, C)), np.zeros(C)
        r.snap_loss = LK.fg(r.loss, r.Xr, r.y, r.W2, r.b, LK.no_state(), r.R, gW, gb)
        s = r.allreduce(np.concatenate([gW.ravel(), gb]))
        r.M[:, C:2 * C] = s[:D * C].reshape(D, C) / r.n_tr
        r.mub[...] = s[D * C:] / r.n_tr
        r.W_eval, r.snap_at = r.W2, r.clock

    def _step_svrg(self, r):
        p, C, X = r.p, r.C, r.X
        epoch, k = divmod(r.clock, p.clocks_per_epoch)
        if r.warm and epoch == 0:
            if k == 0:
                self._svrg_order(r, epoch)
            self._pull(r)
        elif k == 0 or r.need_snap:
            if r.snap_at != r.clock:
                self._snapshot(r)
            self._svrg_order(r, epoch)
        else:
            self._pull(r)
        M, W2, b = r.M, r.W2, r.b
        M[:, :C] = W2
        r.W0[...] = W2
        r.b0[...] = b
        n_o = r.order.shape[0]
        ch = r.order[k * n_o // p.clocks_per_epoch:(k + 1) * n_o // p.clocks_per_epoch]
        wst = r.warm and epoch == 0
        e_, eb_ = (0.5 * r.eta, 0.5 * r.eta_b) if wst else (r.eta, r.eta_b)
        if wst:  # plain SGD: no snapshot residuals, no full gradient
            r.R[...] = 0.0
            M[:, C:2 * C] = 0.0
            r.mub[...] = 0.0
        t, _ = LK.svrg_pass(r.loss, r.Xr, r.y, ch, r.bs, M, b, r.R, r.mub, r.t, e_, p.alpha, p.fit_intercept, eb_)
        LK.svrg_flush(M, t, e_, p.alpha)
        r.t = int(t)
        dW = np.subtract(M[:, :C], r.W0, out=r.W0)
        db = b - r.b0
        if r.size > 1:
            # the intercept is one direction every worker solves almost fully within a
            # pass: summed, the P corrections overshoot P-fold (measured: stalls at
            # 5e-5 relative at 2 ranks), so its changes are averaged. W's changes are
            # summed (its variance-reduced steps cover different rows' features), except
            # in the warm-start pass (plain SGD from 0: the models are averaged)
            db /= r.size
            if wst:
                dW /= r.size
        r.ps.inc("W", None, dW.reshape(r.nb, r.B * C))
        r.ps.inc("b", 0, db)

    # ------------------------------------------------------------------ predict
    def _X(self, X):
        if not hasattr(self, "coef_"):
            raise _NotFitted(f"This {type(self).__name__} instance is not fitted yet: call fit() (or load()) "
                             "before predicting")
        Xa, _ = _check_array(X)
        if Xa.shape[1] != self.n_features_in_:
            raise InputError(f"X has {Xa.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return Xa

    def _Z(self, X):
        return _margins(self._X(X), np.ascontiguousarray(self.coef_.T), np.asarray(self.intercept_, np.float64))

    def decision_function(self, X):
        """Margins ``X coef_.T + intercept_`` ((n,) for binary). Local: every caller gets all rows."""
        Z = self._Z(X)
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict_proba(self, X):
        """Class probabilities (n, n_classes). Local: every caller gets all rows."""
        return K.proba_from_margins(self._Z(X))

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted class labels."""
        Z = self._Z(X)
        return self.classes_[(Z[:, 0] > 0).astype(np.intp) if Z.shape[1] == 1 else np.argmax(Z, axis=1)]

    def objective(self, X, y):
        """Training objective ``mean logloss + alpha/2 ||W||^2 + l1 ||W||_1`` on (X, y) (local, all rows)."""
        Xa = self._X(X)
        W = np.ascontiguousarray(self.coef_.T)
        return float(LK.objective(losses.by_name("log_loss", self.classes_.size), as_rows(Xa), self._labels_of(y), W,
                                  np.asarray(self.intercept_, np.float64), float(self.alpha), float(self.l1)))

    @classmethod
    def load(cls, path):
        est = super().load(path)
        if est.classes_.dtype.kind in "OS":  # strings come back from HDF5 as bytes
            est.classes_ = np.array([c.decode() if isinstance(c, bytes) else c for c in est.classes_])
        return est
