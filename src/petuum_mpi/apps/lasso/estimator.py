"""Lasso and ElasticNet by model-parallel coordinate descent (STRADS, :mod:`petuum_mpi.drivers.modelparallel`).

Objective and conventions are scikit-learn's::

    (1 / (2 n)) ||y - X w - b||^2 + alpha * l1_ratio * ||w||_1
                                  + 0.5 * alpha * (1 - l1_ratio) * ||w||^2

``tol`` is on the duality gap exactly as in ``sklearn.linear_model._cd_fast``: the fit
stops when the gap of the unscaled problem (n times the objective above) is at most
``tol * ||y - mean(y)||^2``; ``dual_gap_`` is that gap divided by n.

Rows of X are split over the ranks; each rank keeps its rows column-major (dense
Fortran array or CSC) and its part of the residual. A fit is a sequence of
duality-gap checks (one pass over all columns plus one Allreduce); between them
the driver's :class:`~petuum_mpi.drivers.Sweeper` sweeps a *working set* (the support
plus the coefficients closest to violating the optimality condition, Celer-style),
after gap-safe screening has removed coefficients that are provably zero; small
working sets are solved on their Gram matrix instead. See docs/strads.md.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import RegressorMixin

from ...drivers import ModelParallelEstimator, Run
from ...errors import ConfigError, DataError, UsageError, convergence_warning
from ...estimator import InputError, Param, local_rows
from ...linear.rows import as_columns
from ...runtime import allgather_obj, allgatherv, allreduce_max, allreduce_sum, get_comm, one_blas_thread, warm_once
from ...strads.glm import ENGINE_PARAMS, make_sweeper, regression_targets, require_fitted
from . import kernels as K


class EnetProblem:
    """One rank's share of an ElasticNet problem: the engine's push / pull / apply.

    Holds the local rows of X (dense Fortran or CSC), the centred local y, the
    raw residual ``r = y_c - X w`` and its local sum; global column statistics
    (means, centred squared norms) come from one Allreduce at construction.
    """

    partial_width = 1

    def __init__(self, X_local, y_local, n_total: int, fit_intercept: bool, reduce, comm=None):
        self.reduce = reduce  # sum over ranks
        self.comm = comm  # for the gathered working set (None: one rank's problem)
        self.sparse = sp.issparse(X_local)
        if self.sparse:
            Xc = sp.csc_matrix(X_local, dtype=np.float64)
            Xc.sum_duplicates()
            self.indptr = Xc.indptr.astype(np.int64)
            self.indices = Xc.indices.astype(np.int32)
            self.data = Xc.data
            self.X = None
            nnz_col = np.diff(self.indptr).astype(np.float64)
            colsum = np.empty(Xc.shape[1])
            colsq = np.empty(Xc.shape[1])
            K.col_stats_sparse(self.indptr, self.data, colsum, colsq)
        else:
            self.X = np.asfortranarray(X_local, dtype=np.float64)
            colsum = self.X.sum(axis=0)
            colsq = np.einsum("ij,ij->j", self.X, self.X)
            nnz_col = np.full(self.X.shape[1], float(self.X.shape[0]))
        self.cols = as_columns(Xc if self.sparse else self.X)  # column j = row j of the transpose
        self.n_local, self.p = X_local.shape
        self.n = int(n_total)
        y_local = np.asarray(y_local, dtype=np.float64).ravel()
        if not np.all(np.isfinite(y_local)):
            raise DataError("y holds NaN or infinite values")
        if self.sparse:
            if not np.all(np.isfinite(self.data)):
                raise DataError("X holds NaN or infinite values")
        elif not np.all(np.isfinite(self.X)):
            raise DataError("X holds NaN or infinite values")
        stats = reduce(np.concatenate([colsum, colsq, nnz_col, [y_local.sum()]]))
        p = self.p
        self.colsum = colsum  # local column sums (for sum(r) bookkeeping)
        self.colsum_all = stats[:p].copy()  # global column sums (the gathered working set's bookkeeping)
        self.cost = stats[2 * p : 3 * p]
        self.fit_intercept = bool(fit_intercept)
        if self.fit_intercept:
            self.mu = stats[:p] / self.n
            self.ybar = stats[3 * p] / self.n
        else:
            self.mu = np.zeros(p)
            self.ybar = 0.0
        self.nrm2 = np.maximum(stats[p : 2 * p] - self.n * self.mu ** 2, 0.0)
        self.nrm2[self.nrm2 < 1e-13 * max(1.0, float(stats[p : 2 * p].max(initial=0.0)))] = 0.0
        self.y = y_local - self.ybar
        self.yy = float(reduce(np.array([self.y @ self.y]))[0])
        self.w = np.zeros(p)
        self.r = self.y.copy()
        self.rsum = float(self.r.sum())
        self.a = 0.0
        self.b = 0.0
        self._buf = np.empty(0)
        self._gcache = None  # (W, G) of the last Gram solve (G depends on W only)
        self._gath = None  # the gathered columns (all rows), see gathered_cd
        self.gather_stats = {"gathered_solves": 0, "gathered_cols": 0, "gathered_bytes": 0, "split_solves": 0,
                             "split_undone": 0, "time_gather": 0.0,
                             "time_gathered_cd": 0.0}

    # ---------------------------------------------------------------- state
    def set_penalty(self, alpha: float, l1_ratio: float) -> None:
        self.a = alpha * l1_ratio * self.n
        self.b = alpha * (1.0 - l1_ratio) * self.n

    def set_coef(self, w) -> None:
        """Set w and recompute the local residual."""
        self.w = np.array(w, dtype=np.float64)
        self.w[self.nrm2 == 0] = 0.0
        if self.sparse:
            Xw = sp.csc_matrix((self.data, self.indices, self.indptr), shape=(self.n_local, self.p)) @ self.w
        else:
            Xw = self.X @ self.w
        self.r = self.y - Xw
        self.rsum = float(self.r.sum())

    def _partial(self, vars_, out):
        K.partial(self.cols, vars_, self.r, self.rsum, self.mu, out)

    # ---------------------------------------------------------------- engine API
    def push(self, vars_):
        out = np.empty(len(vars_))
        self._partial(vars_, out)
        return out

    def pull(self, vars_, summed):
        out = np.empty(len(vars_))
        K.enet_values(vars_, summed, self.w, self.nrm2, self.a, self.b, out)
        return out

    def apply(self, vars_, values):
        change = np.empty(len(vars_))
        ds = K.apply(self.cols, vars_, values, self.w, self.r, self.colsum, change)
        self.rsum += ds
        return change

    def solo(self, vars_):
        change = np.empty(len(vars_))
        self.rsum = K.cd(self.cols, vars_, self.w, self.r, self.rsum, self.mu, self.nrm2, self.colsum, self.a,
                         self.b, change)
        return change

    # ---------------------------------------------------------------- duality gap
    def gap(self, vars_=None, reduce=None):
        """Duality gap (sklearn's formulation A, unscaled) over ``vars_`` (all if None).

        Returns (gap, primal, XtA over vars_, dual_norm). Collective.
        """
        if vars_ is None:
            vars_ = np.arange(self.p, dtype=np.int64)
        m = len(vars_)
        buf = np.empty(m + 3)
        self._partial(vars_, buf[:m])
        buf[m] = self.r @ self.r
        buf[m + 1] = self.rsum
        buf[m + 2] = self.r @ self.y
        tot = (reduce or self.reduce)(buf)
        xtr, rr, rs, ry = tot[:m], tot[m], tot[m + 1], tot[m + 2]
        c = float(self.mu @ self.w)
        XtA = xtr - self.b * self.w[vars_]
        dual_norm = float(np.abs(XtA).max(initial=0.0))
        w2 = float(self.w @ self.w) if self.b > 0 else 0.0
        l1 = float(np.abs(self.w).sum())
        gap, primal = K.duality_gap(rr, rs, ry, c, l1, w2, dual_norm, self.n, self.a, self.b)
        return gap, primal, XtA, dual_norm

    def gram(self, W, reduce=None):
        """Centred Gram matrix and gradients of the working set ``W`` (one Allreduce).

        Returns ``(G, q, z)``: ``G = X_Wc^T X_Wc``, ``q = X_Wc^T R_c`` (centred
        residual), ``z = X_Wc^T y_c``; the same on every rank. Collective.
        """
        m = len(W)
        buf = np.empty(m * m + m)
        if self.sparse:
            buf[: m * m] = 0.0
            K.gram_sparse(self.indptr, self.indices, self.data, W, self.n_local, buf[: m * m].reshape(m, m))
        else:
            Xw = self.X[:, W]
            buf[: m * m] = (Xw.T @ Xw).ravel()
        self._partial(W, buf[m * m :])
        tot = (reduce or self.reduce)(buf)
        G = tot[: m * m].reshape(m, m)
        q = tot[m * m :].copy()
        if self.fit_intercept:
            muW = self.mu[W]
            G -= self.n * np.outer(muW, muW)
        z = q + G @ self.w[W]
        return G, q, z

    def gram_ok(self, W, limit: int = 2048) -> bool:
        """Is a Gram matrix of ``W`` small enough (size and, dense, the column copy)?"""
        m = len(W)
        return 0 < m <= limit and (self.sparse or m * self.n_local * 8 <= (1 << 28))

    # ---------------------------------------------------------------- gathered working set (>= 2 ranks)
    def gather_bytes(self, cols) -> int:
        """Bytes of ``X[:, cols]`` with every row (the same figure on every rank)."""
        if self.sparse:
            return int(12 * float(self.cost[cols].sum()))
        return 8 * self.n * len(cols)

    def _allgatherv(self, x, counts):
        """Concatenation over the ranks (in rank order) of every rank's 1-d ``x``. Collective."""
        return allgatherv(x, counts, self.comm)

    def _gather_new(self, new):
        """``X[:, new]`` with every row (rows in rank order = global order), on every rank. Collective."""
        g = self._gath
        m = len(new)
        if self.sparse:
            loc = sp.csc_matrix((self.data, self.indices, self.indptr), shape=(self.n_local, self.p))[:, new]
            cnt = np.diff(loc.indptr).astype(np.int64)
            nnz = allgather_obj(int(loc.nnz), self.comm)
            cnts = self._allgatherv(cnt, [m] * len(nnz)).reshape(len(nnz), m)
            ind = self._allgatherv(loc.indices.astype(np.int32), nnz)
            dat = self._allgatherv(loc.data, nnz)
            pieces, off = [], 0
            for k, rows in enumerate(g["counts"]):  # rank k's rows, in rank order
                ptr = np.concatenate([[0], np.cumsum(cnts[k])])
                pieces.append(sp.csc_matrix((dat[off : off + nnz[k]], ind[off : off + nnz[k]], ptr), shape=(rows, m)))
                off += nnz[k]
            return sp.vstack(pieces, format="csc")
        loc = np.ascontiguousarray(self.X[:, new].T)  # m x n_local
        flat = self._allgatherv(loc.ravel(), [m * c for c in g["counts"]])
        blocks, off = [], 0
        for c in g["counts"]:
            blocks.append(flat[off : off + m * c].reshape(m, c))
            off += m * c
        return np.asfortranarray(np.concatenate(blocks, axis=1).T)

    def _gathered(self, W):
        """The gathered columns (every row) of ``W`` and of every non-zero coefficient (the kernels'
        objective sums over their coefficients): new columns are gathered and kept for later
        working sets; the residual is gathered on every call. Returns ``(g, wg, rg, rsum)``:
        the cache ``g``, the coefficients of its columns, the whole residual and its sum. Collective."""
        comm = self.comm
        if self._gath is None:
            counts = allgather_obj(self.n_local, comm)
            self._gath = {"counts": counts, "row0": int(sum(counts[: comm.rank])), "pos": np.full(self.p, -1, np.int64),
                          "idx": np.empty(0, np.int64), "X": None, "cols": None,
                          "y": self._allgatherv(self.y, counts)}
        g = self._gath
        nz = np.flatnonzero(self.w)
        new = np.unique(np.concatenate([W[g["pos"][W] < 0], nz[g["pos"][nz] < 0]]))
        if len(new):
            Xn = self._gather_new(new)
            if g["X"] is None:
                g["X"] = Xn
            elif self.sparse:
                g["X"] = sp.hstack([g["X"], Xn], format="csc")
            else:
                g["X"] = np.asfortranarray(np.concatenate([g["X"], Xn], axis=1))
            g["pos"][new] = np.arange(len(g["idx"]), len(g["idx"]) + len(new))
            g["idx"] = np.concatenate([g["idx"], new])
            g["cols"] = as_columns(g["X"])
            idx = g["idx"]
            g["mu"], g["nrm2"], g["colsum"] = self.mu[idx].copy(), self.nrm2[idx].copy(), self.colsum_all[idx].copy()
            self.gather_stats["gathered_cols"] += len(new)
            self.gather_stats["gathered_bytes"] += self.gather_bytes(new)
        rg = self._allgatherv(self.r, g["counts"])
        return g, self.w[g["idx"]], rg, K.vsum(rg)

    def _scatter_back(self, g, wg, rg):
        """Coefficients back from the cache's order; this rank keeps its rows of the residual."""
        self.w[g["idx"]] = wg
        lo = g["row0"]
        self.r = rg[lo : lo + self.n_local].copy()
        self.rsum = float(self.r.sum())

    def gathered_cd(self, W, target, max_sweeps, anderson):
        """Solve the working set ``W`` by :func:`kernels.ws_cd` on its gathered columns, the same
        kernel on the same bytes on every rank (identical results, no communication inside the
        solve); each rank keeps its rows of the new residual. Returns ``ws_cd``'s figures. Collective."""
        t0 = time.perf_counter()
        g, wg, rg, rsum = self._gathered(W)
        t1 = time.perf_counter()
        res = K.ws_cd(g["cols"], g["pos"][W], wg, rg, rsum, g["mu"], g["nrm2"], g["colsum"], g["y"], self.n,
                      self.a, self.b, target, max_sweeps, anderson)
        self._scatter_back(g, wg, rg)
        st = self.gather_stats
        st["gathered_solves"] += 1
        st["time_gather"] += t1 - t0
        st["time_gathered_cd"] += time.perf_counter() - t1
        return res

    def split_cd(self, W, target, max_sweeps, anderson):
        """Solve the working set ``W`` by block-Jacobi CD over the ranks: rank k sweeps its
        contiguous block of ``W`` (equal non-zeros; neighbouring, often correlated, columns stay
        together) on the gathered columns from the shared residual, then one Allreduce sums the
        blocks' residual and coefficient changes. If the summed step raised the objective, the mean
        of the blocks' steps is taken instead (each block's step lowers it, so their mean does too:
        the objective never rises). Anderson extrapolation every ``anderson`` sweeps as ``ws_cd``
        (one more Allreduce of the residual change); the gap over ``W`` every ``anderson`` sweeps (an
        Allreduce of one max). Returns ``(sweeps, gap, primal, rsum, extrapolations)``. Collective."""
        t0 = time.perf_counter()
        g, wg, rg, rsum = self._gathered(W)
        t1 = time.perf_counter()
        comm, P, n, a, b = self.comm, self.comm.size, self.n, self.a, self.b
        cols, mu, nrm2, colsum, y = g["cols"], g["mu"], g["nrm2"], g["colsum"], g["y"]
        Wl = g["pos"][W]
        m = len(W)
        cum = np.cumsum(self.cost[W])
        edges = np.concatenate([[0], np.searchsorted(cum, cum[-1] * np.arange(1, P) / P), [m]])
        lo, hi = int(edges[comm.rank]), int(edges[comm.rank + 1])
        mine = Wl[lo:hi]
        K_ = anderson
        every = K_ if K_ > 0 else 5
        hist = np.empty((max(K_, 0) + 1, m))
        buf = np.empty(n + m + 1)
        r_try = np.empty(n)
        change = np.empty(max(hi - lo, 1))
        out = np.empty(hi - lo)
        P_old = K._primal(wg, rg, rsum, mu, n, a, b)
        sweeps = accepted = undone = 0
        gap = primal = np.inf
        while sweeps < max_sweeps:
            K.block_sweep(cols, mine, lo, m, wg, rg, rsum, mu, nrm2, colsum, a, b, r_try, buf)
            tot = self.reduce(buf)
            rsum = K.block_add(tot, Wl, wg, rg, rsum, 1.0)
            sweeps += 1
            P_new = K._primal(wg, rg, rsum, mu, n, a, b)
            if P_new > P_old and P > 1:  # the blocks' steps collided: their mean instead
                rsum = K.block_add(tot, Wl, wg, rg, rsum, 1.0 / P - 1.0)
                undone += 1
                P_new = K._primal(wg, rg, rsum, mu, n, a, b)
            P_old = P_new
            if K_ > 0:
                h = (sweeps - 1) % (K_ + 1)
                hist[h] = wg[Wl]
                if h == K_:
                    w_acc = np.empty(m)
                    if K.anderson_point(hist, w_acc):
                        d = np.zeros(n)
                        tmp = wg.copy()
                        ds = K.apply(cols, mine, w_acc[lo:hi], tmp, d, colsum, change)
                        tot = self.reduce(np.concatenate([d, [ds]]))
                        r_acc = rg + tot[:n]
                        w_old = wg[Wl]
                        wg[Wl] = w_acc
                        P_acc = K._primal(wg, r_acc, rsum + tot[n], mu, n, a, b)
                        if P_acc < P_old:
                            rg, rsum, P_old = r_acc, rsum + tot[n], P_acc
                            accepted += 1
                        else:
                            wg[Wl] = w_old
            if sweeps % every == 0 or sweeps >= max_sweeps:
                K.partial(cols, mine, rg, rsum, mu, out)
                dn = allreduce_max(np.abs(out - b * wg[mine]).max(initial=0.0), comm)
                gap, primal = K.gap_from(wg, mu, rg, rsum, y, dn, n, a, b)
                if gap <= target:
                    break
        self._scatter_back(g, wg, rg)
        st = self.gather_stats
        st["split_solves"] += 1
        st["split_undone"] += undone
        st["time_gather"] += t1 - t0
        st["time_gathered_cd"] += time.perf_counter() - t1
        return sweeps, gap, primal, rsum, accepted

    def intercept(self) -> float:
        return float(self.ybar - self.mu @ self.w) if self.fit_intercept else 0.0


GRAM_LIMIT = 2048  # precompute="auto": Gram solver on working sets up to this size
GRAM_NNZ = 8.0  # one rank, "auto": Gram solver only if |W|^2 <= GRAM_NNZ * nnz(X_W)
GATHER = True  # >= 2 ranks: solve working sets outside the Gram solver on their gathered columns
GATHER_SMALL = True  # >= 2 ranks: also the Gram solver's sparse working sets (the GRAM_NNZ rule)
GATHER_BYTES = 1 << 28  # ... when X[:, W] with every row fits in this many bytes (else the engine's rounds)
SPLIT = True  # ... by block-Jacobi CD over the ranks (split_cd) when nnz(X_W) >= SPLIT_NNZ * n * ranks
SPLIT_NNZ = 4.0
ANDERSON_K = 5  # one rank: Anderson extrapolation every K sweeps of the working set (0: none, -1: engine)


def solve_enet(est, r, prob: EnetProblem, alpha, l1_ratio=1.0, record=None):
    """:func:`_solve_enet` with BLAS at one thread (a rank is a core). Collective."""
    with one_blas_thread():
        return _solve_enet(est, r, prob, alpha, l1_ratio, record)


def _solve_enet(est, r, prob: EnetProblem, alpha, l1_ratio=1.0, record=None):
    """Minimise the ElasticNet objective on ``prob`` from its current coefficients.

    Collective; the parameters are ``r.p`` (validated). Returns ``(n_iter,
    gap_unscaled, tol_unscaled, stats)``; ``n_iter`` counts sweeps over the working
    set. ``record(dict)`` gets one metrics row per check.

    ``precompute``: ``True`` solves each working-set problem by exact CD on its
    centred Gram matrix (one Allreduce of ``|W|^2`` values, then no communication);
    ``"auto"`` does so when ``|W| <= 2048``; ``False`` always runs the engine's rounds.
    """
    p = r.p
    prob.set_penalty(alpha, l1_ratio)
    tol_s = p.tol * prob.yy
    max_iter, precompute = p.max_iter, p.precompute
    sw = make_sweeper(est, r, prob.p, prob.cost, r.X, prob.n, serial_fusion=p.serial_fusion)
    reduce = r.allreduce  # the engine's (timed)
    cand = np.nonzero(prob.nrm2 > 0)[0].astype(np.int64)
    n_iter = ws_size = gram_sweeps = gram_solves = local_sweeps = extrapolated = 0
    t_start = time.perf_counter()
    gap = np.inf

    def emit(row):
        if record is None:
            return
        row = dict(row, time=time.perf_counter() - t_start, nnz=int(np.count_nonzero(prob.w)))
        st = sw.engine.stats()
        if st["rounds"] or not gram_solves:  # engine telemetry once the engine ran rounds
            row["round_size"] = int(sw.sched.round_size)
            row.update(st)
        else:
            row.update({k: st[k] for k in ("rounds", "updates", "time_comm")})
        row["gram_sweeps"] = gram_sweeps
        record(row)

    def figures(g, P, kind):  # a metrics row; "gap" stays unscaled until emitted
        return {"objective": P / prob.n, "gap": g, "check": kind}

    def scaled(row):
        return emit(dict(row, gap=row["gap"] / prob.n, dual_gap=row["gap"] / prob.n))

    while True:
        gap, primal, XtA, dual_norm = prob.gap(None, reduce)
        start = figures(gap, primal, "global")
        scaled(dict(start, iter=n_iter))
        if gap <= tol_s or n_iter >= max_iter or len(cand) == 0:
            break
        if p.screening and prob.a > 0:
            # gap-safe rule (Ndiaye et al. 2017), as in sklearn's _cd_fast
            theta = XtA[cand] / max(prob.a, dual_norm)
            d = (1.0 - np.abs(theta)) / np.sqrt(prob.nrm2[cand] + prob.b)
            out = d > np.sqrt(2.0 * gap) / prob.a
            gone = cand[out]
            nz = gone[prob.w[gone] != 0]
            if len(nz):
                prob.apply(nz, np.zeros(len(nz)))
            cand = cand[~out]
            if len(cand) == 0:
                continue
            score = d[~out]
        else:
            score = -np.abs(XtA[cand])
        if p.working_set and len(cand) > 200:
            supp = prob.w[cand] != 0
            n_supp = int(supp.sum())
            ws_size = min(len(cand), max(ws_size, 100, 2 * n_supp))
            if precompute == "auto" and n_supp + 100 <= GRAM_LIMIT:
                ws_size = min(ws_size, GRAM_LIMIT)  # stay with the Gram solver while the support allows
            key = np.where(supp, -np.inf, score)
            if ws_size < len(cand):  # the ws_size best: O(len(cand)), same on every rank
                W = np.sort(cand[np.argpartition(key, ws_size - 1)[:ws_size]])
            else:
                W = cand.copy()
            target = max(0.3 * gap, 0.5 * tol_s)
        else:
            W = cand
            target = tol_s
        # cyclic CD on the columns in one kernel (the other schedulers: the engine): one rank holds every
        # row; at more ranks the working set's columns are gathered (all rows) and solved on every rank
        local = p.serial_fusion and p.scheduler == "cyclic" and ANDERSON_K >= 0
        gathered = local and r.size > 1
        if gathered:
            gathered = GATHER and prob.gather_bytes(W) <= GATHER_BYTES
            local = gathered
        use_gram = precompute and prob.gram_ok(W, 1 << 30 if precompute is True else GRAM_LIMIT)
        if use_gram and precompute == "auto" and local and (r.size == 1 or GATHER_SMALL):
            # a Gram sweep costs |W|^2, a sweep over the columns 2 nnz(X_W): Gram only for dense-ish columns
            use_gram = len(W) ** 2 <= GRAM_NNZ * float(prob.cost[W].sum())
        if use_gram:
            cache = prob._gcache
            if cache is not None and np.array_equal(cache[0], W):
                # same W: reuse G; fresh gradients from the residual (|W| values, no drift)
                G = cache[1]
                q = np.empty(len(W))
                prob._partial(W, q)
                q = reduce(q)
                z = q + G @ prob.w[W]
            else:
                G, q, z = prob.gram(W, reduce)
                gram_solves += 1
            wW = prob.w[W].copy()
            # sweeps are cheap next to building G: solve the working set deeper
            t_gram = max(min(target, 1e-3 * gap), 0.5 * tol_s) if W is not cand else target
            nsw, g_in, P = K.gram_cd(G, q, wW, z, prob.yy, prob.a, prob.b, t_gram, max_iter - n_iter)
            n_iter += int(nsw)
            gram_sweeps += int(nsw)
            prob.apply(W, wW)  # local residual update, no communication
            prob._gcache = (W, G)
            scaled(dict(figures(g_in, P, "gram"), iter=n_iter))
            continue

        if gathered:
            split = SPLIT and float(prob.cost[W].sum()) >= SPLIT_NNZ * prob.n * r.size
            solve = prob.split_cd if split else prob.gathered_cd
            nsw, g_in, P, _, acc = solve(W, target, max_iter - n_iter, ANDERSON_K)
            n_iter += int(nsw)
            local_sweeps += int(nsw)
            extrapolated += int(acc)
            scaled(dict(figures(g_in, P, "working_set"), iter=n_iter))
            continue
        if local:  # Anderson-accelerated
            nsw, g_in, P, prob.rsum, acc = K.ws_cd(prob.cols, W, prob.w, prob.r, prob.rsum, prob.mu, prob.nrm2,
                                              prob.colsum, prob.y, prob.n, prob.a, prob.b, target, max_iter - n_iter,
                                              ANDERSON_K)
            n_iter += int(nsw)
            local_sweeps += int(nsw)
            extrapolated += int(acc)
            scaled(dict(figures(g_in, P, "working_set"), iter=n_iter))
            continue

        def progress(W=W):
            g_in, P, _, _ = prob.gap(W, reduce)
            return figures(g_in, P, "working_set")

        # the driver's sweeps: undo + smaller rounds when a parallel sweep raised the objective
        # (the learned round size carries over to the next working sets: sw.U_cur)
        n_iter, _ = sw.solve(W, max_iter, progress, lambda row, t=target: row["gap"] <= t, scaled,
                             start=n_iter, row=start)
    stats = sw.stats()
    stats.update(working_set=int(ws_size), candidates=int(len(cand)), gram_sweeps=int(gram_sweeps),
                 gram_solves=int(gram_solves), local_sweeps=int(local_sweeps),
                 extrapolations=int(extrapolated), **prob.gather_stats)
    return n_iter, gap, tol_s, stats


# ====================================================================== estimators
class _Precompute(Param):
    """``"auto"``, True or False (job files: ``"auto"``, ``"true"``, ``"false"``)."""

    def check(self, name, value):
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, str) and value in ("auto", "true", "false"):
            return {"auto": "auto", "true": True, "false": False}[value]
        raise ConfigError(f"{name}: expected 'auto', True or False, got {value!r}")

    def describe(self) -> str:
        return "`'auto'` \\| True \\| False"


class _EnetBase(RegressorMixin, ModelParallelEstimator):
    params = {
        "alpha": Param(1.0, float, lo=0.0, lo_open=True, doc="penalty strength"),
        "fit_intercept": Param(True, bool, doc="fit an unpenalised intercept"),
        "max_iter": Param(1000, int, lo=1, doc="most sweeps over the working sets"),
        "tol": Param(1e-4, float, lo=0.0, doc="duality-gap tolerance, relative to ||y - mean(y)||^2 (as "
                     "scikit-learn)"),
        "warm_start": Param(False, bool, doc="start from the previous solution"),
        **ENGINE_PARAMS,
        "screening": Param(True, bool, section="engine", doc="gap-safe screening"),
        "working_set": Param(True, bool, section="engine", doc="working-set solver"),
        "serial_fusion": Param(True, bool, section="engine", doc="exact sequential rounds in one kernel (cyclic: "
                               "local CD with Anderson extrapolation; > 1 rank: on gathered working-set columns)"),
        "precompute": _Precompute("auto", str, choices=("auto", "true", "false"), section="engine",
                                  doc="Gram-matrix solver on working sets (auto: up to 2048 coefficients; "
                                  "False: engine rounds only)"),
    }
    _l1_fixed: float | None = None

    # ---------------------------------------------------------------- the driver's hooks
    def push(self, r, v):
        return r.prob.push(v)

    def pull(self, r, v, summed):
        return r.prob.pull(v, summed)

    def apply(self, r, v, values):
        return r.prob.apply(v, values)

    def solo(self, r, v):
        return r.prob.solo(v)

    def state(self, r):
        return r.prob.w.copy()

    def restore(self, r, w):
        r.prob.set_coef(w)  # local: r = y - X w, no communication

    # ---------------------------------------------------------------- fit
    def _l1(self, p) -> float:
        return self._l1_fixed if self._l1_fixed is not None else p.l1_ratio

    def _problem(self, p, X, y):
        """(run, problem) of this rank's rows; bad input fails before the kernels load. Collective."""
        comm = get_comm(p.comm)
        r = Run(p=p, comm=comm, rank=comm.rank, size=comm.size, seed=p.random_state, costs=None)
        r.allreduce = lambda x: allreduce_sum(x, comm)  # buffer Allreduce (the engine's, once it exists)
        r.X, yl, _, n = local_rows(X, y, comm, "csc", est=self, task="regression")
        if yl is None:
            if isinstance(X, (str, bytes)) or hasattr(X, "__fspath__"):
                raise DataError(f"{X}: dataset has no targets (y)")
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        warm_once(K.warmup, comm)
        r.prob = EnetProblem(r.X, regression_targets(yl), n, p.fit_intercept, r.allreduce, comm)
        return r, r.prob

    def fit(self, X, y=None, *, test=None, callback=None):
        """Fit (collective): ``X`` a dataset folder or full arrays on every rank; ``test`` adds ``test_loss``
        (mean squared error) to the last metrics row."""
        p = self._check_params()
        r, prob = self._problem(p, X, y)
        if p.warm_start and getattr(self, "coef_", None) is not None:
            if np.shape(self.coef_) != (prob.p,):
                raise UsageError(f"warm_start: coef_ has {np.size(self.coef_)} features, X has {prob.p}")
            prob.set_coef(self.coef_)
        self.history_ = []
        n_iter, gap, tol_s, st = solve_enet(self, r, prob, p.alpha, self._l1(p), self._recorder(callback))
        if gap > tol_s:
            warnings.warn(f"Objective did not converge. You might want to increase the number of iterations. "
                          f"Duality gap: {gap:.6e}, tolerance: {tol_s:.3e}", convergence_warning(), stacklevel=2)
        self.coef_ = prob.w.copy()
        self.intercept_ = prob.intercept()
        self.n_iter_ = int(n_iter)
        self.dual_gap_ = float(gap / prob.n)
        self.telemetry_ = st
        if test is not None:
            Xt, yt, _, _ = local_rows(test, None, r.comm, "csr", est=self, reset=False, task="regression")
            res = regression_targets(yt) - self.predict(Xt)
            s = r.allreduce(np.array([res @ res, float(len(res))]))
            self.history_[-1]["test_loss"] = float(s[0] / s[1])
        return self

    def _recorder(self, callback):
        def record(row):
            self.history_.append(row)
            if callback is not None:
                callback(row)

        return record

    def predict(self, X):
        """``X @ coef_ + intercept_`` (local, no communication)."""
        from sklearn.utils.validation import validate_data

        require_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        return np.asarray(X @ self.coef_).ravel() + self.intercept_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class ElasticNet(_EnetBase):
    """ElasticNet by model-parallel coordinate descent (STRADS): scikit-learn's objective and parameters.

    ``max_iter`` counts sweeps over the working sets; the engine parameters
    (``scheduler``, ``round_size``, ...) are documented in docs/strads.md. ``fit`` is
    collective: every rank passes the same arrays, or a dataset folder.
    """

    app_name = "elastic_net"
    params = {"l1_ratio": Param(0.5, float, lo=0.0, hi=1.0, lo_open=True, doc="L1 share of the penalty")}


class Lasso(_EnetBase):
    """Lasso by model-parallel coordinate descent (STRADS): ElasticNet with ``l1_ratio = 1``."""

    app_name = "lasso"
    _l1_fixed = 1.0
