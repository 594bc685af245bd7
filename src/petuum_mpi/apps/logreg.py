"""Logistic regression by data-parallel mini-batch SGD on the Bösen parameter server.

Every rank holds a block of rows; the weight matrix ``W`` (n_features x C, C = 1
for binary, C = n_classes for softmax) lives in the parameter server as a table of
feature blocks (``block_features`` features per server row), the intercepts in a
second table. In each clock a worker reads the blocks its next chunk of rows
touches, runs proximal SGD mini-batch steps on that chunk with the kernels of
:mod:`petuum_mpi.apps.logreg_kernels` (lazy L2/L1 prox, constant / inverse-scaling /
AdaGrad step sizes) and ``inc``'s the changes of exactly those blocks.

Objective (scikit-learn convention, ``LogisticRegression(C=1/(n*alpha))`` when
``l1 = 0``)::

    F(W, b) = mean_i logloss_i + alpha/2 ||W||^2 + l1 ||W||_1

Optional Polyak tail averaging (``average=True``) averages the clock-end
iterates of the last ``1 - average_start`` of the epochs; the reported model is
that average. See docs/apps.md.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError, DataError, UsageError, convergence_warning
from ..params import check_param as _check
from ..runtime import get_comm, warm_once
from . import logreg_kernels as K

__all__ = ["LogisticRegression", "SCHEMA", "run_job", "ConvergenceWarning"]

def __getattr__(name):  # ``ConvergenceWarning``, without importing scikit-learn with the app
    if name == "ConvergenceWarning":
        return convergence_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _warmup():
    X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    y = np.array([0.0, 1.0])
    for C in (1, 2):
        st = K.SGDState(2, 2 if C == 1 else 3, "adagrad", 0.1, 0.5, 1e-3, 1e-4)
        order = np.arange(2, dtype=np.int64)
        K.sgd_pass_csr(X.indptr, X.indices, X.data, y, order, 1, st.W, st.b, st.dW, st.db, st.G, st.Gb, st.last, 0,
                       st.schedule, st.eta0, st.power_t, st.alpha, st.l1, True, st.gbuf, st.touched)
        Xd = X.toarray()
        K.sgd_pass_dense(Xd, y, order, 1, st.W, st.b, st.dW, st.db, st.G, st.Gb, st.last, 2, st.schedule, st.eta0,
                         st.power_t, st.alpha, st.l1, True, st.gbuf, st.touched)
        st.flush()
        for Z in (K.margins_csr(X.indptr, X.indices, X.data, st.W, st.b), K.margins_dense(Xd, st.W, st.b)):
            K.count_correct(Z, y)
            K.proba_from_margins(Z)
            K.loss_and_residuals(Z, y)
        K.penalty(st.W, 1.0, 0.0)
        K.mark_features(X.indptr, X.indices, order, 1, np.zeros(2, dtype=np.bool_))
        Cw = st.W.shape[1]
        W, b, R, gW, gb = np.zeros((2, Cw)), np.zeros(Cw), np.zeros((2, Cw)), np.zeros((2, Cw)), np.zeros(Cw)
        M = np.zeros((2, 3 * Cw + 1))
        K.snapshot_csr(X.indptr, X.indices, X.data, y, W, b, R, gW, gb)
        K.snapshot_dense(Xd, y, W, b, R, gW, gb)
        t, _ = K.svrg_pass_packed_csr(X.indptr, X.indices, X.data, y, order, 1, M, b, R, gb, 0, 0.1, 1e-3, True,
                                      np.zeros(2, dtype=np.int64), 0.1)
        K.svrg_flush_packed(M, int(t), 0.1, 1e-3)
        K.svrg_pass_packed_dense(Xd, y, order, 1, M, b, R, gb, 0, 0.1, 1e-3, True, 0.1)
        K.mean_row_sq_norm_csr(X.indptr, X.data)
        K.top_eig_csr(X.indptr, X.indices, X.data, 1, 2, 0)




# ----------------------------------------------------------------------------- validation


def holdout_mask(row_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Deterministic holdout: True for the rows held out. Depends only on the
    global row id and ``seed`` (not on the rank count)."""
    if fraction <= 0:
        return np.zeros(row_ids.shape[0], dtype=bool)
    h = (row_ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


def _is_path(X) -> bool:
    return isinstance(X, (str, bytes)) or hasattr(X, "__fspath__")


def _as_matrix(X, where="X"):
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float64)
        X.sort_indices()
        if X.nnz and not np.isfinite(X.data).all():
            raise DataError(f"{where}: contains NaN or infinity")
        return X
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{where}: must be 2-D, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise DataError(f"{where}: contains NaN or infinity")
    return X


_ADAGRAD_INIT = 0.1
_ROW_BLOCK = 8  # SVRG visits local rows in random blocks of this many consecutive rows


def _margins(X, W, b):
    if sp.issparse(X):
        return K.margins_csr(X.indptr, X.indices, X.data, W, b)
    return K.margins_dense(X, W, b)


class LogisticRegression:
    """Binary / multinomial logistic regression by mini-batch SGD on the parameter server.

    Collective: under ``mpiexec`` every rank calls :meth:`fit` with the same
    arguments; each rank trains on its block of rows. Works at any rank count.

    Parameters
    ----------
    alpha : float, default 1e-4
        L2 penalty (``alpha/2 ||W||^2``; scikit-learn ``C = 1/(n_samples*alpha)``).
    l1 : float, default 0.0
        L1 penalty ``l1 ||W||_1`` (proximal step).
    fit_intercept : bool, default True
    learning_rate : {"auto", "svrg", "adagrad", "invscaling", "constant"}, default "auto"
        ``svrg``: variance-reduced SGD (constant step, a full-gradient snapshot
        shared through the PS every iteration, lazy sparse updates; linear
        convergence, no L1). ``auto`` = ``svrg`` when ``l1 == 0``, else ``adagrad``.
    eta0 : float or None, default None
        Initial / constant step size (AdaGrad: ``eta0 / sqrt(G)``). None: 0.1, or
        for ``svrg`` ``2.4 / (mean_i ||x_i||^2 / batch_size + P * lambda)`` (halved for
        softmax) with ``lambda`` a power-iteration estimate of the top eigenvalue of
        ``X^T X / n`` (directions every worker's steps add up in) and the intercept step
        ``min(eta, 2.4 / P)``; ``step_size_`` reports it.
    power_t : float, default 0.5
        Exponent of ``invscaling`` (``eta0 / (t+1)**power_t``).
    batch_size : int or None, default None
        Rows per step (None: 64 for ``svrg``, 16 otherwise).
    max_iter : int, default 30
        Number of epochs (passes over the training rows); for ``svrg`` the number
        of iterations, each a snapshot pass over all rows (which also yields the
        objective) plus steps on ``inner_fraction`` of the rows.
    inner_fraction : float in (0, 1], default 1/3
        ``svrg`` only: fraction of the local rows stepped on between snapshots.
    clocks_per_epoch : int, default 1
        Parameter-server clocks per epoch (a clock = one chunk of local rows).
    eval_every : int, default 1
        Evaluate the objective every this many clocks (and after the last).
    average : bool, default True
        Polyak tail averaging of the clock-end iterates.
    average_start : float in [0, 1), default 0.3
        Fraction of the epochs after which averaging starts.
    tol : float or None, default None
        Stop when an evaluation lowers the objective by less than ``tol`` (relative).
    holdout : float in [0, 1), default 0.0
        Fraction of rows (chosen by a hash of the row id and ``random_state``)
        held out for test log-loss and accuracy when no test set is given.
    block_features : int or None
        Features per server row (default ``max(1, 32 // C)``).
    consistency, staleness : parameter-server model (``bsp``/``ssp``/``essp``/``asp``).
    engine : dict, optional
        A validated ``[engine]`` section (overrides consistency/staleness; snapshots).
    random_state : int, default 0
    comm : MPI communicator, optional

    Attributes
    ----------
    coef_ : (1, n_features) or (n_classes, n_features)
    intercept_ : (1,) or (n_classes,)
    classes_ : labels
    n_iter_ : int, epochs run
    objective_ : float, final training objective
    history_ : list of dict, one per evaluation
    stats_ : dict, parameter-server telemetry of this rank
    """

    def __init__(self, alpha=1e-4, l1=0.0, fit_intercept=True, learning_rate="auto", eta0=None, power_t=0.5,
                 batch_size=None, max_iter=30, clocks_per_epoch=1, eval_every=1, average=True, average_start=0.3,
                 tol=None, holdout=0.0, block_features=None, consistency="ssp", staleness=1, engine=None,
                 random_state=0, comm=None, inner_fraction=1.0 / 3):
        self.alpha, self.l1, self.fit_intercept = alpha, l1, fit_intercept
        self.learning_rate, self.eta0, self.power_t = learning_rate, eta0, power_t
        self.batch_size, self.max_iter, self.clocks_per_epoch, self.eval_every = (batch_size, max_iter,
                                                                                  clocks_per_epoch, eval_every)
        self.average, self.average_start, self.tol, self.holdout = average, average_start, tol, holdout
        self.block_features, self.consistency, self.staleness, self.engine = (block_features, consistency,
                                                                              staleness, engine)
        self.random_state, self.comm = random_state, comm
        self.inner_fraction = inner_fraction

    # ------------------------------------------------------------------ params
    def _validate(self):
        _check("alpha", self.alpha, float, lo=0)
        _check("l1", self.l1, float, lo=0)
        _check("fit_intercept", self.fit_intercept, bool)
        _check("learning_rate", self.learning_rate, str, choices=("auto", "svrg") + tuple(K.SCHEDULES))
        _check("eta0", self.eta0, float, lo=0, lo_open=True, none_ok=True)
        _check("power_t", self.power_t, float, lo=0)
        _check("batch_size", self.batch_size, int, lo=1, none_ok=True)
        _check("inner_fraction", self.inner_fraction, float, lo=0, lo_open=True, hi=1)
        if self.learning_rate == "svrg" and self.l1 > 0:
            raise ConfigError("learning_rate: 'svrg' supports only the L2 penalty (l1 = 0); use 'adagrad' with l1 > 0")
        _check("max_iter", self.max_iter, int, lo=1)
        _check("clocks_per_epoch", self.clocks_per_epoch, int, lo=1)
        _check("eval_every", self.eval_every, int, lo=1)
        _check("average", self.average, bool)
        _check("average_start", self.average_start, float, lo=0, hi=1, hi_open=True)
        _check("tol", self.tol, float, lo=0, none_ok=True)
        _check("holdout", self.holdout, float, lo=0, hi=1, hi_open=True)
        _check("block_features", self.block_features, int, lo=1, none_ok=True)
        _check("consistency", self.consistency, str, choices=("bsp", "ssp", "essp", "asp"))
        _check("staleness", self.staleness, int, lo=0)
        _check("random_state", self.random_state, int, lo=0)
        if self.engine is not None and not isinstance(self.engine, dict):
            raise ConfigError(f"engine: expected a dict (an [engine] section), got {type(self.engine).__name__}")

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in ("alpha", "l1", "fit_intercept", "learning_rate", "eta0", "power_t",
                                              "batch_size", "max_iter", "clocks_per_epoch", "eval_every", "average",
                                              "average_start", "tol", "holdout", "block_features", "consistency",
                                              "staleness", "engine", "random_state", "comm", "inner_fraction")}

    # ------------------------------------------------------------------ data
    def _load(self, X, y, comm):
        """This rank's rows -> (X_local, label index y_local, global row ids, classes, n_features)."""
        if _is_path(X):
            from ..data import read_matrix

            if y is not None:
                raise UsageError("fit(path): y must be None when X is a dataset path (labels come from the dataset)")
            part = read_matrix(str(X), comm, layout="csr")
            if part.task != "classification":
                raise DataError(f"{X}: is a {part.task!r} dataset; logistic regression needs task='classification'")
            Xl = part.X
            if part.dataset is not None and part.dataset.dense:
                Xl = np.ascontiguousarray(Xl.toarray())
            else:
                Xl.sort_indices()
            classes = np.arange(int(part.n_classes or 2))
            rows = np.arange(part.row_start, part.row_stop, dtype=np.int64)
            return Xl, np.asarray(part.y, dtype=np.float64), rows, classes, int(part.n_cols)
        if y is None:
            raise UsageError("fit(X, y): y is required when X is an array")
        X = _as_matrix(X)
        y = np.asarray(y)
        if y.ndim != 1:
            raise DataError(f"y: must be 1-D, got shape {y.shape}")
        if y.shape[0] != X.shape[0]:
            raise DataError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise DataError("y: contains NaN or infinity")
        classes, yk = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise DataError(f"y: needs at least 2 classes, got {classes.size} ({classes.tolist()})")
        n = X.shape[0]
        if n < comm.size:
            raise DataError(f"{n} rows cannot be split over {comm.size} ranks")
        lo, hi = comm.rank * n // comm.size, (comm.rank + 1) * n // comm.size
        return X[lo:hi], yk[lo:hi].astype(np.float64), np.arange(lo, hi, dtype=np.int64), classes, X.shape[1]

    def _labels_of(self, y):
        y = np.asarray(y)
        idx = np.searchsorted(self.classes_, y)
        idx[idx >= self.classes_.size] = 0
        bad = self.classes_[idx] != y
        if bad.any():
            raise DataError(f"y: label {y[np.flatnonzero(bad)[0]]!r} is not one of the training classes "
                            f"{self.classes_.tolist()}")
        return idx.astype(np.float64)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, X_test=None, y_test=None, on_clock=None):
        """Train (collective).

        Parameters
        ----------
        X : dataset path (str) or array / sparse matrix (the full data on every rank)
        y : labels (arrays only)
        X_test, y_test : optional test set (path, or arrays given on every rank)
        on_clock : callable(dict), optional
            Called on every rank with each evaluation row (iter, epoch, objective, ...).
        """
        from ..bosen import ENGINE_SCHEMA, ParameterServer, TableSpec
        from ..bosen.snapshot import DEFAULT_KEEP
        from ..config import _validate_section

        self._validate()
        comm = get_comm(self.comm)
        P, me = comm.size, comm.rank
        seed = int(self.random_state)
        Xl, yl, rows, classes, d = self._load(X, y, comm)
        self.classes_ = classes
        self.n_features_in_ = d
        nc = classes.size
        C = 1 if nc == 2 else nc
        # holdout / test
        te = None
        if X_test is not None:
            if _is_path(X_test):
                Xt, yt, _, _, dt = self._load(X_test, None, comm)
            else:
                if y_test is None:
                    raise UsageError("fit: y_test is required when X_test is an array")
                Xa = _as_matrix(X_test, "X_test")
                yt_all = self._labels_of(y_test)
                if yt_all.shape[0] != Xa.shape[0]:
                    raise DataError(f"X_test has {Xa.shape[0]} rows but y_test has {yt_all.shape[0]}")
                lo, hi = me * Xa.shape[0] // P, (me + 1) * Xa.shape[0] // P
                Xt, yt, dt = Xa[lo:hi], yt_all[lo:hi], Xa.shape[1]
            if dt != d:
                raise DataError(f"test set has {dt} features, training set {d}")
            if yt.size and (yt.min() < 0 or yt.max() >= nc):
                raise DataError(f"test labels outside [0, {nc})")
            te = (Xt, yt)
        elif self.holdout > 0:
            m = holdout_mask(rows, self.holdout, seed)
            te = (Xl[np.flatnonzero(m)], yl[m])
            keep = np.flatnonzero(~m)
            Xl, yl = Xl[keep], yl[keep]
        if sp.issparse(Xl):
            Xl = sp.csr_matrix(Xl)
            Xl.sort_indices()
        if te is not None and sp.issparse(te[0]):
            te = (sp.csr_matrix(te[0]), te[1])
        dense = not sp.issparse(Xl)

        B = int(self.block_features or max(1, 32 // C))
        nb = -(-d // B)
        D = nb * B
        engine = dict(self.engine) if self.engine is not None else _validate_section(
            "engine", ENGINE_SCHEMA, {"consistency": self.consistency, "staleness": int(self.staleness)}, ".")
        warm_once(_warmup, comm)
        tables = [TableSpec("W", nb, B * C, "float64"), TableSpec("b", 1, C, "float64")]
        lr = self.learning_rate
        if lr == "auto":
            lr = "svrg" if self.l1 == 0 else "adagrad"
        self._lr = lr
        self._bs = int(self.batch_size if self.batch_size is not None else (64 if lr == "svrg" else 16))
        if lr == "adagrad":
            # shared AdaGrad accumulators: every worker steps with the same per-coordinate
            # step sizes (worker-local ones would bias the fixed point of the summed updates)
            tables += [TableSpec("G", nb, B * C, "float64", init=_ADAGRAD_INIT),
                       TableSpec("Gb", 1, C, "float64", init=_ADAGRAD_INIT)]
        ps = ParameterServer.from_config(engine, tables, comm)
        ps.keep_snapshots = engine.get("keep_snapshots", DEFAULT_KEEP)  # [engine] keep_snapshots
        try:
            train = self._train_svrg if lr == "svrg" else self._train
            train(ps, Xl, yl, te, C, B, nb, D, dense, seed, engine, on_clock)
        except BaseException:
            ps.__exit__(*__import__("sys").exc_info())
            raise
        ps.shutdown()
        return self

    def _train(self, ps, Xl, yl, te, C, B, nb, D, dense, seed, engine, on_clock):
        P, me = ps.P, ps.me
        n_loc = Xl.shape[0]
        tot = ps.allreduce(np.array([n_loc, 0 if te is None else te[0].shape[0]], dtype=np.float64))
        n_tr, n_te = int(tot[0]), int(tot[1])
        if n_tr == 0:
            raise DataError("no training rows (all held out?)")
        st = K.SGDState(D, 2 if C == 1 else C, self._lr, 0.1 if self.eta0 is None else self.eta0, self.power_t,
                        self.alpha,
                        self.l1, self.fit_intercept, adagrad_init=_ADAGRAD_INIT)
        Wb = st.W.reshape(nb, B * C)
        dWb = st.dW.reshape(nb, B * C)
        shared_g = self._lr == "adagrad"
        Gb_ = st.G.reshape(nb, B * C)
        G0 = np.empty_like(Gb_)  # the fetched accumulators (their change is this clock's G delta)
        Gb0 = np.empty_like(st.Gb)
        cpe = int(self.clocks_per_epoch)
        # fixed chunks of local rows (one per clock of an epoch) and the blocks each touches
        perm0 = np.random.default_rng([seed, me, 7]).permutation(n_loc).astype(np.int64)
        chunks = [perm0[k * n_loc // cpe:(k + 1) * n_loc // cpe] for k in range(cpe)]
        blocks = []
        for ch in chunks:
            if dense:
                blocks.append(None)
                continue
            mask = np.zeros(nb, dtype=np.bool_)
            K.mark_features(Xl.indptr, Xl.indices, ch, B, mask)
            bl = np.flatnonzero(mask).astype(np.int64)
            blocks.append(None if bl.size > 0.9 * nb else bl)
        avg_from = int(np.floor(self.average_start * self.max_iter)) if self.average else None
        Wavg = np.zeros_like(st.W) if self.average else None
        bavg = np.zeros_like(st.b) if self.average else None
        scratch = {"dW": np.zeros_like(st.W)}
        state = {"na": 0, "epoch": 0}
        self.history_ = []
        t_train = 0.0
        t_start = time.perf_counter()
        prev_obj = None
        total_clocks = self.max_iter * cpe
        clk0 = 0
        if engine.get("resume"):
            res = ps.resume()
            if res is not None:
                clk0, s = res
                st.G[...] = s["G"]
                st.Gb[...] = s["Gb"]
                st.last[...] = s["last"]
                st.t = int(s["t"][0])
                if self.average:
                    Wavg[...] = s["Wavg"]
                    bavg[...] = s["bavg"]
                state["na"] = int(s["na"][0])
                self.history_ = []

        def snap_state():
            s = {"G": st.G, "Gb": st.Gb, "last": st.last, "t": np.array([st.t]), "na": np.array([state["na"]])}
            if self.average:
                s["Wavg"], s["bavg"] = Wavg, bavg
            return s

        def caught_up():
            """Local model with all pending lazy prox steps applied (state untouched)."""
            Wc = st.W.copy()
            dW = scratch["dW"]
            K.apply_pending(Wc, dW, st.G, st.last.copy(), st.t, st.schedule, st.eta0, st.power_t, st.alpha, st.l1)
            dW[...] = 0.0
            return Wc, st.b.copy()

        self.n_iter_ = clk0 // cpe
        stopped = False
        clk = clk0 - 1
        for clk in range(clk0, total_clocks):
            epoch, k = divmod(clk, cpe)
            t0 = time.perf_counter()
            rng = np.random.default_rng([seed, me, epoch, k])
            bl = blocks[k]
            if bl is None:
                Wb[...] = ps.get("W")
            else:
                Wb[bl] = ps.get("W", bl)
            st.b[...] = ps.get("b", 0)
            if shared_g:
                if bl is None:
                    Gb_[...] = ps.get("G")
                    G0[...] = Gb_
                else:
                    Gb_[bl] = ps.get("G", bl)
                    G0[bl] = Gb_[bl]
                st.Gb[...] = ps.get("Gb", 0)
                Gb0[...] = st.Gb
            order = chunks[k].copy()
            rng.shuffle(order)
            if dense:
                t, _ = K.sgd_pass_dense(Xl, yl, order, self._bs, st.W, st.b, st.dW, st.db, st.G, st.Gb,
                                        st.last, st.t, st.schedule, st.eta0, st.power_t, st.alpha, st.l1,
                                        st.fit_intercept, st.gbuf, st.touched)
            else:
                t, _ = K.sgd_pass_csr(Xl.indptr, Xl.indices, Xl.data, yl, order, self._bs, st.W, st.b,
                                      st.dW, st.db, st.G, st.Gb, st.last, st.t, st.schedule, st.eta0, st.power_t,
                                      st.alpha, st.l1, st.fit_intercept, st.gbuf, st.touched)
            st.t = int(t)
            if bl is None:
                ps.inc("W", None, dWb)
                dWb[...] = 0.0
            else:
                ps.inc("W", bl, dWb[bl])
                dWb[bl] = 0.0
            ps.inc("b", 0, st.db)
            st.db[...] = 0.0
            if shared_g:
                if bl is None:
                    ps.inc("G", None, Gb_ - G0)
                else:
                    ps.inc("G", bl, Gb_[bl] - G0[bl])
                ps.inc("Gb", 0, st.Gb - Gb0)
            if self.average and epoch >= avg_from:
                Wc, bc = caught_up()
                state["na"] += 1
                Wavg += (Wc - Wavg) / state["na"]
                bavg += (bc - bavg) / state["na"]
            ps.clock(state=snap_state)
            t_train += time.perf_counter() - t0
            self.n_iter_ = epoch + 1
            last = clk == total_clocks - 1
            if (clk + 1) % self.eval_every == 0 and not last:
                row = self._evaluate(ps, Xl, yl, te, n_tr, n_te, C, D, Wavg, bavg, state, caught_up)
                row.update({"iter": clk + 1, "epoch": (clk + 1) / cpe, "train_time": t_train,
                            "time": time.perf_counter() - t_start})
                row.update(ps.figures("W"))
                self.history_.append(row)
                if on_clock is not None:
                    on_clock(row)
                if self.tol is not None and prev_obj is not None and \
                        prev_obj - row["objective"] < self.tol * abs(row["objective"]):
                    stopped = True
                    break
                prev_obj = row["objective"]
        # final: catch up every feature, ship, barrier -> the same model on every rank
        st.flush()
        ps.inc("W", None, dWb)
        dWb[...] = 0.0
        ps.barrier()
        Wf = ps.get("W").reshape(D, C).copy()
        bf = ps.get("b", 0).copy()
        if self.average and state["na"] > 0:
            Wf = ps.allreduce(Wavg.ravel()).reshape(D, C) / P
            bf = ps.allreduce(bavg) / P
        row = self._evaluate(ps, Xl, yl, te, n_tr, n_te, C, D, None, None, state, None, final=(Wf, bf))
        row.update({"iter": min(clk + 1, total_clocks) if total_clocks > clk0 else clk0,
                    "epoch": self.n_iter_, "train_time": t_train, "time": time.perf_counter() - t_start})
        self._finish(ps, row, Wf, bf, t_train, on_clock, stopped, "epochs")

    def _train_svrg(self, ps, Xl, yl, te, C, B, nb, D, dense, seed, engine, on_clock):
        """SVRG: every iteration starts with a barrier and a snapshot of the PS model
        (residuals of the local rows, full gradient by ``ps.allreduce``, which also
        gives the objective of the model so far), then ``clocks_per_epoch`` clocks of
        lazy-sparse variance-reduced steps on ``inner_fraction`` of the local rows,
        each shipping ``W - W_read`` (all pending dense steps applied)."""
        P, me = ps.P, ps.me
        n_loc = Xl.shape[0]
        t0 = time.perf_counter()
        msq = (float(K.mean_row_sq_norm_csr(Xl.indptr, Xl.data)) * n_loc if not dense
               else float(np.einsum("ij,ij->", Xl, Xl)))
        # curvature of the loss mean over a batch: ~ (msq / bs + lambda_max(X^T X / n)) / 4
        if self.eta0 is None and n_loc:
            Xs = Xl if not dense else sp.csr_matrix(Xl[::max(1, n_loc // 2000)])
            stride = max(1, n_loc // 10000) if not dense else 1
            lam = float(K.top_eig_csr(Xs.indptr, K.unsigned_indices(Xs.indices), Xs.data, stride, 8, seed + me))
        else:
            lam = 0.0
        tot = ps.allreduce(np.array([n_loc, 0 if te is None else te[0].shape[0], msq, lam], dtype=np.float64))
        lam = tot[3] / P
        n_tr, n_te = int(tot[0]), int(tot[1])
        if n_tr == 0:
            raise DataError("no training rows (all held out?)")
        msq = max(tot[2] / n_tr, 1e-12)
        bs = self._bs
        if self.eta0 is not None:
            eta = float(self.eta0)
        else:
            # the P workers' summed steps add up along shared (dense) curvature directions
            eta = 2.4 / (msq / min(bs, n_tr) + P * lam) / (1.0 if C == 1 else 2.0)
        if self.alpha > 0:
            eta = min(eta, 0.5 / self.alpha)
        # intercept: curvature <= 1/4 per row (1/2 softmax), shared by all P workers' steps
        eta_b = min(eta, 2.4 / P / (1.0 if C == 1 else 2.0))
        self.step_size_ = eta
        cw = 3 * C + 1
        M = np.zeros((D, cw))
        t_setup = time.perf_counter() - t0
        Mw = M[:, :C]
        Wb = np.zeros(nb * B * C)
        W2 = Wb.reshape(D, C)
        W0 = np.empty((D, C))
        b = np.zeros(C)
        b0 = np.empty(C)
        R = np.zeros((n_loc, C))
        mub = np.zeros(C)
        touched = np.zeros(D, dtype=np.int64)
        cpe = int(self.clocks_per_epoch)
        self.history_ = []
        t_train = t_setup
        t_start = time.perf_counter() - t_setup
        total = self.max_iter * cpe
        clk0 = 0
        t = 0
        if engine.get("resume"):
            res = ps.resume()
            if res is not None:
                clk0, st = res
                t = int(st["t"][0])
        prev_obj = None
        stopped = False
        self.n_iter_ = clk0 // cpe
        order = np.zeros(0, dtype=np.int64)
        need_snap = True
        # local rows are visited in random blocks of _ROW_BLOCK consecutive rows (random single
        # rows cost ~2.5x in TLB / cache misses on large CSR data); batches still mix blocks
        L = _ROW_BLOCK if n_loc >= 64 * _ROW_BLOCK else 1
        n_blk = -(-n_loc // L)
        k_in = max(1, int(round(self.inner_fraction * n_blk))) if n_loc else 0
        ar = np.arange(L, dtype=np.int64)
        if not dense:
            ind = K.unsigned_indices(Xl.indices)
        # warm start: iteration 0 is plain SGD from W = 0 (no snapshot of the zero model),
        # step eta/2, the workers' models averaged (each incs its change / P)
        warm = clk0 == 0
        clk = clk0 - 1
        row_obj = None
        for clk in range(clk0, total):
            epoch, k = divmod(clk, cpe)
            t0 = time.perf_counter()
            if warm and epoch == 0:
                if k == 0:
                    rng = np.random.default_rng([seed, me, epoch, 13])
                    blk = rng.permutation(n_blk)[:k_in]
                    order = (blk[:, None] * L + ar).ravel()
                    order = order[order < n_loc]
                    need_snap = False
                    M[:, 3 * C] = float(t)
                Wb[...] = ps.get("W").ravel()
                b[...] = ps.get("b", 0)
            elif k == 0 or need_snap:
                # snapshot: common model after a barrier, residuals, full gradient (+ objective)
                ps.barrier()
                Wb[...] = ps.get("W").ravel()
                b[...] = ps.get("b", 0)
                gW = np.zeros((D, C))
                gb = np.zeros(C)
                loss = K.snapshot_dense(Xl, yl, W2, b, R, gW, gb) if dense else \
                    K.snapshot_csr(Xl.indptr, ind, Xl.data, yl, W2, b, R, gW, gb)
                s = ps.allreduce(np.concatenate([gW.ravel(), gb, [loss]]))
                M[:, C:2 * C] = s[:D * C].reshape(D, C) / n_tr
                mub[...] = s[D * C:D * C + C] / n_tr
                row_obj = float(s[-1] / n_tr + K.penalty(W2, self.alpha, 0.0))
                M[:, 3 * C] = float(t)
                rng = np.random.default_rng([seed, me, epoch, 13])
                blk = rng.permutation(n_blk)[:k_in]
                order = (blk[:, None] * L + ar).ravel()
                order = order[order < n_loc]
                need_snap = False
                t_train += time.perf_counter() - t0
                if clk > clk0 and (clk // cpe) % self.eval_every == 0:
                    row = {"objective": row_obj, "train_logloss": float(s[-1] / n_tr)}
                    row.update(self._evaluate(ps, Xl, yl, te, n_tr, n_te, C, D, None, None, None, None,
                                              final=(W2, b), train=False))
                    row.update({"iter": clk, "epoch": clk / cpe, "train_time": t_train,
                                "time": time.perf_counter() - t_start, "step_size": eta})
                    row.update(ps.figures("W"))
                    self.history_.append(row)
                    if on_clock is not None:
                        on_clock(row)
                    if self.tol is not None and prev_obj is not None and \
                            prev_obj - row_obj < self.tol * abs(row_obj):
                        stopped = True
                        break
                    prev_obj = row_obj
                t0 = time.perf_counter()
            else:
                Wb[...] = ps.get("W").ravel()
                b[...] = ps.get("b", 0)
            Mw[...] = W2
            W0[...] = W2
            b0[...] = b
            n_o = order.shape[0]
            ch = order[k * n_o // cpe:(k + 1) * n_o // cpe]
            wst = warm and epoch == 0
            e_, eb_ = (0.5 * eta, 0.5 * eta_b) if wst else (eta, eta_b)
            if wst:  # plain SGD: no snapshot residuals, no full gradient
                R[...] = 0.0
                M[:, C:2 * C] = 0.0
                mub[...] = 0.0
            if dense:
                t, _ = K.svrg_pass_packed_dense(Xl, yl, ch, bs, M, b, R, mub, t, e_, self.alpha,
                                                self.fit_intercept, eb_)
            else:
                t, _ = K.svrg_pass_packed_csr(Xl.indptr, ind, Xl.data, yl, ch, bs, M, b, R, mub, t, e_,
                                              self.alpha, self.fit_intercept, touched, eb_)
                K.svrg_flush_packed(M, t, e_, self.alpha)
            t = int(t)
            np.subtract(Mw, W0, out=W0)
            db = b - b0
            if P > 1:
                # the intercept is one direction every worker solves almost fully within a
                # pass: summed, the P corrections overshoot P-fold (measured: stalls at
                # 5e-5 relative at 2 ranks), so its changes are averaged. W's changes are
                # summed (its variance-reduced steps cover different rows' features), except
                # in the warm-start pass (plain SGD from 0: the models are averaged)
                db /= P
                if wst:
                    W0 /= P
            ps.inc("W", None, W0.reshape(nb, B * C))
            ps.inc("b", 0, db)
            ps.clock(state=lambda: {"t": np.array([t])})
            t_train += time.perf_counter() - t0
            self.n_iter_ = epoch + 1
        # final model: everything applied, the same on every rank
        t0 = time.perf_counter()
        ps.barrier()
        Wf = ps.get("W").reshape(D, C).copy()
        bf = ps.get("b", 0).copy()
        t_train += time.perf_counter() - t0
        row = self._evaluate(ps, Xl, yl, te, n_tr, n_te, C, D, None, None, None, None, final=(Wf, bf))
        row.update({"iter": min(clk + 1, total) if total > clk0 else clk0, "epoch": self.n_iter_,
                    "train_time": t_train, "time": time.perf_counter() - t_start, "step_size": eta})
        if stopped:
            row["iter"] = clk
        self._finish(ps, row, Wf, bf, t_train, on_clock, stopped, "iterations")

    def _finish(self, ps, row, Wf, bf, t_train, on_clock, stopped, unit):
        """Record the final metrics row and set the fitted attributes (both solvers)."""
        row.update(ps.figures("W"))
        self.history_.append(row)
        if on_clock is not None:
            on_clock(row)
        self.objective_ = row["objective"]
        self.train_time_ = t_train
        d = self.n_features_in_
        self.coef_ = np.ascontiguousarray(Wf[:d].T)
        self.intercept_ = bf.copy()
        self.stats_ = ps.stats()
        self.stats_all_ = ps.stats_all()
        if self.tol is not None and not stopped:
            warnings.warn(f"LogisticRegression: objective still decreasing by more than tol={self.tol} after "
                          f"max_iter={self.max_iter} {unit}; increase max_iter", convergence_warning(),
                          stacklevel=4)

    def _evaluate(self, ps, Xl, yl, te, n_tr, n_te, C, D, Wavg, bavg, state, caught_up, final=None, train=True):
        """Collective: objective of the (rank-averaged) model on all training rows, test figures."""
        P = ps.P
        if final is not None:
            W, b = final
        else:
            if Wavg is not None and state["na"] > 0:
                Wl, bl = Wavg, bavg
            else:
                Wl, bl = caught_up()
            if P > 1:
                W = ps.allreduce(Wl.ravel()).reshape(D, C) / P
                b = ps.allreduce(bl) / P
            else:
                W, b = Wl, bl
        ok_tr = loss_tr = 0.0
        if train:
            Z = _margins(Xl, W, b)
            ok_tr = K.count_correct(Z, yl)
            loss_tr = K.loss_and_residuals(Z, yl)
        loss_te = ok_te = 0.0
        if te is not None and te[0].shape[0]:
            Zt = _margins(te[0], W, b)
            ok_te = K.count_correct(Zt, te[1])
            loss_te = K.loss_and_residuals(Zt, te[1])
        s = ps.allreduce(np.array([loss_tr, ok_tr, loss_te, ok_te], dtype=np.float64))
        row = {}
        if train:
            row = {"objective": float(s[0] / n_tr + K.penalty(W, self.alpha, self.l1)),
                   "train_logloss": float(s[0] / n_tr), "train_accuracy": float(s[1] / n_tr)}
        if te is not None and n_te > 0:
            row["test_logloss"] = float(s[2] / n_te)
            row["test_accuracy"] = float(s[3] / n_te)
        return row

    # ------------------------------------------------------------------ predict
    def _require(self):
        if not hasattr(self, "coef_"):
            raise UsageError("LogisticRegression: call fit() (or load()) before predicting")

    def _X(self, X):
        self._require()
        if _is_path(X):
            from mpi4py import MPI

            from ..data import read_matrix

            part = read_matrix(str(X), MPI.COMM_SELF, layout="csr")
            X = part.X
        X = _as_matrix(X)
        if X.shape[1] != self.coef_.shape[1]:
            raise DataError(f"X has {X.shape[1]} features, the model {self.coef_.shape[1]}")
        return X

    def decision_function(self, X):
        """Margins ``X coef_.T + intercept_`` ((n,) for binary). ``X`` array or dataset path (all rows, local)."""
        Z = _margins(self._X(X), np.ascontiguousarray(self.coef_.T), self.intercept_)
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict_proba(self, X):
        """Class probabilities (n, n_classes). Not collective: every caller gets all rows."""
        Z = _margins(self._X(X), np.ascontiguousarray(self.coef_.T), self.intercept_)
        return K.proba_from_margins(Z)

    def predict(self, X):
        """Predicted class labels."""
        self._require()
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y):
        """Mean accuracy."""
        return float(np.mean(self.predict(X) == np.asarray(y)))

    def objective(self, X, y):
        """Training objective ``mean logloss + alpha/2 ||W||^2 + l1 ||W||_1`` on (X, y) (local, all rows)."""
        X = self._X(X)
        yk = self._labels_of(y)
        W = np.ascontiguousarray(self.coef_.T)
        Z = _margins(X, W, self.intercept_)
        return float(K.loss_and_residuals(Z, yk) / max(X.shape[0], 1) + K.penalty(W, float(self.alpha),
                                                                                    float(self.l1)))

    # ------------------------------------------------------------------ persistence
    def model_arrays(self):
        self._require()
        return ({"coef": self.coef_, "intercept": self.intercept_, "classes": self.classes_},
                {"model": "logreg", "alpha": float(self.alpha), "l1": float(self.l1),
                 "objective": float(getattr(self, "objective_", np.nan))})

    def save(self, path):
        """Write the model to an HDF5 file (call on one rank)."""
        from ..data.writer import save_arrays_h5

        arrays, attrs = self.model_arrays()
        save_arrays_h5(path, arrays, attrs)

    @classmethod
    def load(cls, path):
        """A fitted model from an HDF5 file written by :meth:`save` or a ``logreg`` job (model.h5)."""
        import h5py

        try:
            with h5py.File(path, "r") as f:
                coef = f["coef"][...]
                icpt = f["intercept"][...]
                classes = f["classes"][...]
                attrs = dict(f.attrs)
        except (OSError, KeyError) as e:
            raise DataError(f"{path}: not a logreg model file ({e})") from None
        m = cls(alpha=float(attrs.get("alpha", 1e-4)), l1=float(attrs.get("l1", 0.0)))
        m.coef_, m.intercept_, m.classes_ = coef, icpt, classes
        m.n_features_in_ = coef.shape[1]
        if "objective" in attrs:
            m.objective_ = float(attrs["objective"])
        return m




# ----------------------------------------------------------------------------- job
def _schema():
    from ..bosen import ENGINE_SCHEMA
    from ..config import Field, Section

    model = Section(
        {
            "alpha": Field(float, default=1e-4, min=0.0, help="L2 penalty alpha/2 ||W||^2 (sklearn C = 1/(n alpha))"),
            "l1": Field(float, default=0.0, min=0.0, help="L1 penalty l1 ||W||_1"),
            "fit_intercept": Field(bool, default=True, help="fit unpenalised intercepts"),
            "learning_rate": Field(str, default="auto", choices=("auto", "svrg") + tuple(K.SCHEDULES),
                                   help="solver / step-size schedule: auto = svrg without L1, adagrad with L1"),
            "eta0": Field(float, default=None, min=0.0, min_exclusive=True,
                          help="initial step size (default: svrg estimates it, 0.1 otherwise)"),
            "power_t": Field(float, default=0.5, min=0.0, help="exponent of invscaling"),
            "batch_size": Field(int, default=None, min=1, help="mini-batch rows (default 64 svrg, 16 otherwise)"),
            "inner_fraction": Field(float, default=1.0 / 3, min=0.0, max=1.0, min_exclusive=True,
                                    help="svrg: fraction of the rows stepped on between snapshots"),
            "max_iter": Field(int, default=30, min=1, help="epochs (svrg: iterations)"),
            "clocks_per_epoch": Field(int, default=1, min=1, help="parameter-server clocks per epoch"),
            "eval_every": Field(int, default=1, min=1, help="evaluate every N clocks"),
            "average": Field(bool, default=True, help="Polyak tail averaging of clock-end iterates"),
            "average_start": Field(float, default=0.3, min=0.0, max=0.99, help="fraction of epochs before averaging"),
            "tol": Field(float, default=None, min=0.0, help="stop when the relative objective decrease < tol"),
            "holdout": Field(float, default=0.0, min=0.0, max=0.9,
                             help="fraction of rows held out (when data.test is not given)"),
            "block_features": Field(int, default=None, min=1, help="features per server row"),
        },
        help="logistic regression (mini-batch SGD on Bösen)",
    )
    return {"model": model, "engine": ENGINE_SCHEMA}


SCHEMA = _schema()


def run_job(job: dict, ctx) -> dict:
    """Run a ``logreg`` job (collective); see docs/apps.md."""
    m = job["model"]
    comm = ctx.comm
    every = int(job["run"].get("log_every", 1))
    est = LogisticRegression(alpha=m["alpha"], l1=m["l1"], fit_intercept=m["fit_intercept"],
                             learning_rate=m["learning_rate"], eta0=m["eta0"], power_t=m["power_t"],
                             batch_size=m["batch_size"], max_iter=m["max_iter"],
                             clocks_per_epoch=m["clocks_per_epoch"], eval_every=m["eval_every"] * every,
                             average=m["average"], average_start=m["average_start"], tol=m["tol"],
                             holdout=m["holdout"], block_features=m["block_features"], engine=dict(job["engine"]),
                             random_state=int(job["run"]["seed"]), comm=comm, inner_fraction=m["inner_fraction"])
    total = m["max_iter"] * m["clocks_per_epoch"]
    bar = ctx.progress(total, "logreg")
    seen = {"iter": 0}

    def on_clock(row):
        ctx.rundir.log_metrics(row)
        bar.update(n=row["iter"] - seen["iter"], obj=row["objective"], **(
            {"test_acc": row["test_accuracy"]} if "test_accuracy" in row else {}))
        seen["iter"] = row["iter"]

    try:
        est.fit(job["data"]["train"], X_test=job["data"].get("test"), on_clock=on_clock)
    finally:
        bar.close()
    arrays, attrs = est.model_arrays()
    ctx.rundir.save_model(arrays, attrs)
    last = est.history_[-1]
    summary = {k: v for k, v in last.items() if k not in ("iter",)}
    summary.update({"n_iter": est.n_iter_, "clocks": last["iter"]})
    if est.stats_all_ is not None:
        tw = est.stats_all_["tables"]["W"]
        summary["ps"] = {"staleness_mean": tw.get("staleness_mean"), "staleness_var": tw.get("staleness_var"),
                         "staleness_max": tw.get("staleness_max"), "wait_s_max": est.stats_all_["wait_s_max"],
                         "bytes_sent": est.stats_all_["bytes_sent"], "msgs": est.stats_all_["msgs"]}
    return summary
