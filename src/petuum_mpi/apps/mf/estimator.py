"""Matrix factorization by data-parallel SGD on the Bösen parameter server.

Model ``r_ui ~ mu + b_u + c_i + U_u . V_i``. Ratings are split across ranks by user
(each rank reads a contiguous block of users with all their ratings), so the user
factors ``U`` and biases ``b_u`` are local; the item factors ``V`` and biases ``c``
are parameter-server tables. A clock: read ``V`` and ``c``, run the SGD kernel
(:func:`.kernels.sgd_pass`) over one chunk of my ratings (grouped by user, so the
user row stays in cache) and ``inc`` the item deltas, scaled by ``delta_scaling``.
``nonneg=True`` gives NMF by projection. See docs/apps.md.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.exceptions import NotFittedError

from ...bosen import TableSpec
from ...drivers import DataParallelEstimator
from ...errors import DataError, UsageError
from ...estimator import InputError, Param, _is_path
from ...params import check_param
from . import kernels as K

__all__ = ["MatrixFactorization"]


_CLOCKS = 16  # default clocks per epoch of rotate at > 1 rank (at most; a multiple of the blocks)
_PER_CLOCK = 20000  # ratings per rank and clock at least, for more than one chunk (~1 ms of SGD: the clock's own cost)


def _plan(P, consistency, staleness, schedule, cpe, warn=False, n_ratings=None):
    """-> (schedule, blocks, clocks_per_epoch) for ``P`` ranks (``warn``: a UserWarning when
    schedule="auto" falls back to "shared" at more than one rank, saying why). Rotate: rank ``r`` works on item
    block ``(c + (s + 1) r) mod B`` at clock ``c`` with ``B = (s + 1) P`` (1 at one rank), so the
    last other rank to update a block did it ``>= s + 1`` clocks ago: its update is visible.
    Default clocks per epoch ``B x`` chunks, ``1 <= chunks <= 16 // B`` and at least
    ``_PER_CLOCK`` of the ``n_ratings`` per rank and clock (None: the most, as progress_total
    assumes): each rank's users are cut into chunks whose users visit all ``B`` blocks in ``B``
    consecutive clocks (a finer interleave needs fewer epochs:
    planted 20k x 8k at 2 ranks, ssp(1), AdaGrad, to one RMSE: 10 epochs at 4 clocks, 8 at 16, 7 at
    32 and at one rank; docs/apps.md)."""
    s = 0 if consistency == "bsp" else int(staleness)
    nb = (s + 1) * P if P > 1 else 1
    if schedule == "rotate" and consistency == "asp":
        raise UsageError("schedule='rotate' needs a staleness bound: consistency bsp, ssp or essp, not asp")
    if schedule == "rotate" and cpe is not None and cpe % nb:
        raise UsageError(f"schedule='rotate': clocks_per_epoch={cpe} must be a multiple of the {nb} item blocks "
                         f"((staleness {s} + 1) x {P} ranks)")
    if schedule == "shared" or consistency == "asp" or (cpe is not None and cpe % nb):
        if warn and schedule == "auto" and P > 1:
            why = ("consistency='asp' has no staleness bound" if consistency == "asp" else
                   f"clocks_per_epoch={cpe} is not a multiple of the {nb} item blocks ((staleness {s} + 1) x {P} "
                   "ranks)")
            warnings.warn(f"MatrixFactorization: schedule='auto' uses 'shared' (item deltas combined by "
                          f"delta_scaling, not exact) because {why}", UserWarning, stacklevel=2)
        return "shared", 1, cpe or 8
    if cpe is None and nb > 1:
        chunks = _CLOCKS // nb if n_ratings is None else n_ratings // (P * nb * _PER_CLOCK)
        cpe = nb * max(1, min(_CLOCKS // nb, chunks))
    return "rotate", nb, cpe or 1


def _item_blocks(item_n, nb, P):
    """Block of each item: ``nb`` ranges of ``item // P`` with about equal rating counts. (Row
    ``i`` of a narrow table lives on rank ``i % P`` at slot ``i // P`` (bosen.layout), so a block
    is one run of slots per owner: one RMA Get each, not one per row.)"""
    if nb == 1:
        return np.zeros(item_n.size, dtype=np.int64)
    slot = np.arange(item_n.size) // P
    cum = np.cumsum(np.bincount(slot, item_n))
    cut = np.searchsorted(cum, cum[-1] * np.arange(1, nb) / nb)  # first slot of blocks 1..nb-1, minus 1
    return np.searchsorted(cut, slot, side="left").astype(np.int64)


def warmup():
    for dt in (np.float32, np.float64):
        u, i, r = np.array([0, 1], np.int32), np.array([1, 0], np.int32), np.array([1.0, 2.0])
        U, V, b = np.ones((2, 2), dt), np.ones((2, 2), dt), np.zeros(2, dt)
        reg = np.full((2, 2), 0.01)
        for nn in (False, True):
            K.sgd_pass_rows(u, i, r, U, V, b, b.copy(), 0.0, 0.01, reg, reg, True, nn)
            K.sgd_pass_ada(u, i, r, U, V, b, b.copy(), 0.0, 0.01, reg, reg, np.ones(2), np.ones(2), True, nn)
        K.sse(u, i, r, U, V, b, b, 0.0, True)


def _delta_scale(eta_h, n, m, mode="sequential"):
    """Factor for each worker's delta of an item rated ``n`` times per clock by ``m``
    workers (``eta_h`` = step x curvature). On a quadratic, each worker's pass covers
    ``1 - exp(-X / m)`` of the distance to the item's optimum (``X = eta_h n``), so the
    plain sum covers ``M = m (1 - exp(-X / m))``.

    ``mode="sequential"``: ``(1 - exp(-X)) / M``, the move of one sequential pass over all
    ``n`` ratings (tends to ``1 / m`` for large ``X``). ``mode="clip"``: ``min(1, 1 / M)``,
    the sum never moves past the optimum (no overshoot) and is left alone otherwise.
    Both are 1 for ``m <= 1`` or ``X = 0``."""
    X = eta_h * n
    mm = np.maximum(m, 1.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        M = -mm * np.expm1(-X / mm)
        a = -np.expm1(-X) / M if mode == "sequential" else np.minimum(1.0, 1.0 / M)
    return np.where((m > 1) & (X > 0), a, 1.0)


_VAL_SALT = 0x5BD1E995  # seed offset of the validation hash (early stopping) vs the test holdout's


def _init_rows(seed, lo, hi, k, block=4096):
    """Standard normal rows ``lo:hi`` of an (n, k) matrix drawn in blocks of ``block`` rows,
    each from its own seed: the same user gets the same start at any rank count."""
    out = np.empty((hi - lo, k))
    for b in range(lo // block, -(-hi // block)):
        z = np.random.default_rng([seed, 5, b]).standard_normal((block, k))
        a, e = max(lo, b * block), min(hi, (b + 1) * block)
        out[a - lo:e - lo] = z[a - b * block:e - b * block]
    return out


def _scale_item_deltas(dV, U, user_n, eta, reg, n, m, mode):
    """Item-factor deltas of one clock scaled direction by direction (:func:`_delta_scale`).

    The SGD steps on ``V_i`` over its raters contract along the eigenvectors ``q_k`` of the
    raters' second moment ``G = sum_u n_u U_u U_u^T / sum_u n_u`` (my users' estimate of it)
    with curvature ``lambda_k + reg_i`` per rating, so the move of ``m`` workers' summed
    deltas is judged per direction: ``dV_i <- sum_k a(eta (lambda_k + reg_i), n_i, m_i)
    (dV_i . q_k) q_k`` (in place; rows whose factors would all be > 0.99 are left alone).
    (One curvature ``|U|^2`` for all directions overestimates all but
    the top one about K-fold and averaged deltas that add up without overshooting.)"""
    w = user_n / max(user_n.sum(), 1.0)
    G = (U * w[:, None]).T.astype(np.float64) @ U
    lam, Q = np.linalg.eigh(G)
    lam = np.maximum(lam, 0.0)
    # only rows whose stiffest direction moves far in one clock need it (factor < 0.99)
    rows = np.flatnonzero((m > 1) & (eta * (lam[-1] + reg) * n > 0.02))
    if rows.size:  # and only the directions that are stiff for some of them: dV += sum (a_k - 1) ...
        cols = np.flatnonzero(eta * (lam + reg[rows].max()) * n[rows].max() > 0.02)
        Qc = Q[:, cols].astype(dV.dtype)
        A = _delta_scale(eta * (lam[None, cols] + reg[rows, None]), n[rows, None], m[rows, None], mode)
        dV[rows] += ((dV[rows] @ Qc) * (A - 1.0).astype(dV.dtype)) @ Qc.T
    return dV


def _holdout_mask(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for the cells held out: a hash of the cell id and ``seed`` (independent of the rank count)."""
    if fraction <= 0:
        return np.zeros(ids.shape[0], dtype=bool)
    with np.errstate(over="ignore"):  # wrap-around multiplication is the hash
        h = (ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53) < fraction


def _triples(R, y, n_users, n_items, where="ratings"):
    """Validate full ratings: a tuple ``(users, items, values)``, or ``(n, 2)`` id pairs and ``y``."""
    if y is not None:
        X = np.asarray(R)
        if X.ndim != 2 or X.shape[1] != 2:
            raise InputError(f"{where}: with y, X must be (n, 2) pairs of (user, item) ids, got shape {X.shape}")
        R = (X[:, 0], X[:, 1], y)
    if not (isinstance(R, (tuple, list)) and len(R) == 3):
        raise UsageError(f"{where}: expected a dataset path, a tuple (users, items, values), or (user, item) "
                         "pairs with y")
    u, i, v = (np.asarray(a) for a in R)
    if not (u.shape == i.shape == v.shape) or u.ndim != 1:
        raise InputError(f"{where}: users, items, values must be 1-D of equal length, got {u.shape}, {i.shape}, "
                        f"{v.shape}")
    for name, a in (("users", u), ("items", i)):
        if a.size and a.dtype.kind not in "iu":
            raise InputError(f"{where}: {name} must be integer ids, got dtype {a.dtype}")
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise InputError(f"{where}: rating {v[~np.isfinite(v)][0]} at triple {int(np.flatnonzero(~np.isfinite(v))[0])}")
    nu = int(u.max()) + 1 if n_users is None and u.size else int(n_users or 0)
    ni = int(i.max()) + 1 if n_items is None and i.size else int(n_items or 0)
    for name, a, n in (("user", u, nu), ("item", i, ni)):
        bad = (a < 0) | (a >= n)
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where}: unknown {name} id {int(a[p])} (ids must be in [0, {n})) at triple {p}")
    return u.astype(np.int64), i.astype(np.int32), v, nu, ni


class MatrixFactorization(RegressorMixin, DataParallelEstimator):
    """Matrix factorization ``r_ui ~ mu + b_u + c_i + U_u . V_i`` by SGD on the parameter server.

    ``fit(X, y=None, *, test=None, callback=None)`` (collective): ``X`` is a ratings dataset
    folder, a tuple ``(users, items, values)`` of all ratings on every rank, or ``(n, 2)``
    (user, item) id pairs with the ratings ``y``; ``test`` likewise (else ``holdout``).
    Each rank trains on a block of users. ``predict(users, items)`` or ``predict(pairs)``,
    ``recommend(user, k)``, ``rmse(users, items, values)``.

    Attributes: ``user_factors_`` (n_users, K), ``item_factors_`` (n_items, K), ``user_bias_``,
    ``item_bias_``, ``mean_``, ``n_iter_`` (epochs), ``train_rmse_``, ``test_rmse_``,
    ``updates_per_s_``, ``train_time_``, ``history_``, ``telemetry_``.
    """

    app_name = "mf"
    params = {
        "n_components": Param(10, int, lo=0, doc="rank K of the factorization (0 = biases only)"),
        "lam": Param(0.02, float, lo=0, doc="L2 penalty of the factors per rating (Funk/LIBMF style)"),
        "lam_bias": Param(0.0, float, lo=0, doc="L2 penalty of the biases per rating"),
        "lam_row": Param(None, float, lo=0, none_ok=True,
                         doc="L2 penalty per user and item row (factors and biases; a prior: weighs on users "
                             "and items with few ratings). None = 5, or 0 with nonneg (a zero-mean prior "
                             "pulls non-negative factors off the truth)"),
        "use_bias": Param(True, bool, doc="global mean (fixed) + user and item biases"),
        "nonneg": Param(False, bool, doc="non-negative factors (NMF by projection; factors start >= 0)"),
        "adagrad": Param(True, bool, doc="per-row AdaGrad steps (LIBMF's): row step eta / sqrt(1 + summed mean "
                         "squared gradients of the row's factors)"),
        "eta0": Param(None, float, lo=0, lo_open=True, doc="initial step size (None: 0.15 with adagrad - 0.3 "
                      "with adagrad and nonneg - and 0.03 without)"),
        "decay": Param(None, float, lo=0, doc="step of epoch e: eta0 / (1 + decay e)^power (None: 0 with "
                       "adagrad, which decays by itself; 0.05 without)"),
        "power": Param(1.0, float, lo=0, doc="exponent of the step-size decay"),
        "max_iter": Param(100, int, lo=1, doc="epochs (at most: early stopping ends sooner)"),
        "schedule": Param("auto", str, choices=("auto", "rotate", "shared"),
                          doc="who updates which items in a clock: rotate = items cut into (s + 1) x ranks "
                              "blocks, each rank works on its own block per clock, so no two ranks update an "
                              "item within the staleness bound s (exact, serial-equivalent SGD; bsp/ssp/essp); "
                              "shared = every rank updates all its items each clock and the deltas are combined "
                              "by delta_scaling; auto = rotate unless asp or clocks_per_epoch does not fit"),
        "clocks_per_epoch": Param(None, int, lo=1, doc="parameter-server clocks per epoch (None: with rotate "
                                  "1 at one rank, else the blocks B times 1 to 16 // B user chunks, at least "
                                  "20000 ratings per rank and clock; 8 with shared; rotate needs a multiple of "
                                  "the blocks)"),
        "eval_every": Param(None, int, lo=1, doc="evaluate (and test for early stopping) every N clocks "
                            "(None: once per epoch)"),
        "tol": Param(1e-4, float, lo=0, none_ok=True, doc="early stopping: an epoch improves when the "
                     "validation RMSE falls by more than tol (relative)"),
        "validation_fraction": Param(0.05, float, lo=0, hi=1, hi_open=True,
                                     doc="fraction of the training ratings held out for early stopping "
                                         "(0 = off: run max_iter epochs)"),
        "n_iter_no_change": Param(5, int, lo=1, doc="early stopping: stop after this many epochs without "
                                  "improvement and return the best epoch's model"),
        "delta_scaling": Param("auto", str, choices=("auto", "sequential", "clip", "none"),
                               doc="combine workers' item deltas, per direction of the raters' factors: "
                                   "auto = sequential = as one sequential pass; clip = sum clipped so it "
                                   "never overshoots; none = plain sum (docs/apps.md)"),
        "init_scale": Param(0.1, float, lo=0, doc="std of the initial factors (absolute value for NMF)"),
        "dtype": Param("float32", str, choices=("float32", "float64"), doc="factor precision"),
        "holdout": Param(0.0, float, lo=0, hi=1, hi_open=True,
                         doc="fraction of ratings held out for test RMSE (when no test set is given)"),
        "n_users": Param(None, int, lo=0, job=False, doc="users of array input (default: largest id + 1)"),
        "n_items": Param(None, int, lo=0, job=False, doc="items of array input (default: largest id + 1)"),
    }
    figures_table = "V"
    warmup = warmup

    # -- data ---------------------------------------------------------------------------
    def progress_total(self) -> int:
        from ...runtime import get_comm

        P = get_comm(self.comm).size
        return int(self.max_iter) * _plan(P, self.consistency, self.staleness, self.schedule,
                                          self.clocks_per_epoch)[2]

    def read(self, r, X, y):
        p = r.p
        if _is_path(X):
            from ...data import read_ratings

            part = read_ratings(str(X), r.comm)
            u, i, v = part.users.astype(np.int64), part.items, part.values
            lo, hi, nu, ni = part.user_start, part.user_stop, part.n_users, part.n_items
        else:
            u, i, v, nu, ni = _triples(X, y, p.n_users, p.n_items)
            lo, hi = r.rank * nu // r.size, (r.rank + 1) * nu // r.size
            m = (u >= lo) & (u < hi)
            order = np.argsort(u[m], kind="stable")
            u, i, v = u[m][order], i[m][order], v[m][order]
        r.lo, r.hi, self.n_users_, self.n_items_ = lo, hi, nu, ni
        r.u, r.i, r.v, r.te = u, i, v, None
        n_all = int(r.allreduce(float(u.size))) if r.size > 1 else u.size
        r.schedule, r.nb, p.clocks_per_epoch = _plan(r.size, p.consistency, p.staleness, p.schedule,
                                                     p.clocks_per_epoch, warn=True, n_ratings=n_all)
        r.eta0 = p.eta0 if p.eta0 is not None else ((0.3 if p.nonneg else 0.15) if p.adagrad else 0.03)
        r.decay = p.decay if p.decay is not None else (0.0 if p.adagrad else 0.05)
        r.soff = (0 if p.consistency == "bsp" else p.staleness) + 1  # block offset between ranks
        p.eval_every = p.eval_every or p.clocks_per_epoch
        self.schedule_, self.clocks_per_epoch_ = r.schedule, p.clocks_per_epoch

    def read_test(self, r, test):
        """Test ratings of my users (every rank reads the whole test set, then filters)."""
        nu, ni = self.n_users_, self.n_items_
        if _is_path(test):
            from ...data import open_dataset
            from ...data.reader import read_rows

            ds = open_dataset(str(test))
            if ds.kind != "ratings":
                raise DataError(f"{test}: is a {ds.kind!r} dataset, not ratings")
            if ds.n_cols != ni or ds.n_rows != nu:
                raise DataError(f"{test}: test set is {ds.n_rows} users x {ds.n_cols} items, training set "
                                f"{nu} x {ni}")
            blk = read_rows(ds, 0, ds.n_rows)
            u = np.repeat(np.arange(ds.n_rows, dtype=np.int64), np.diff(blk["ptr"]))
            i, v = blk["idx"], blk["val"].astype(np.float64)
        else:
            X, y = test if isinstance(test, (tuple, list)) and len(test) == 2 else (test, None)
            u, i, v, _, _ = _triples(X, y, nu, ni, "test")
        m = (u >= r.lo) & (u < r.hi)
        r.te = (u[m], i[m].astype(np.int32), v[m])

    def tables(self, r):
        p = r.p
        dt, Kc, ni = np.dtype(p.dtype), p.n_components, self.n_items_
        V0 = p.init_scale * np.random.default_rng([r.seed, 11]).standard_normal((ni, Kc))
        if p.nonneg:
            V0 = np.abs(V0)
        # per item: bias and AdaGrad sum in one row (a clock reads and incs its block's rows of V and cg)
        cg = np.column_stack((np.zeros(ni), np.ones(ni)))
        return [TableSpec("V", ni, max(Kc, 1), dt.name, init=V0 if Kc else 0), TableSpec("cg", ni, 2, "float64",
                                                                                       init=cg)]

    # -- local state --------------------------------------------------------------------
    def _setup(self, r):
        """Regroup my ratings (users in a random order, each user's ratings shuffled), cut the
        clocks' chunks at user boundaries; item counts over all workers (for delta_scaling)."""
        p, ni, nl = r.p, self.n_items_, r.hi - r.lo
        u, i, v, te = r.u, r.i, r.v, r.te
        if not r.has_test and p.holdout > 0:  # hash of the (user, item) cell: independent of the rank count
            m = _holdout_mask(u * np.int64(ni) + i.astype(np.int64), p.holdout, r.seed)
            te, u, i, v = (u[m], i[m], v[m]), u[~m], i[~m], v[~m]
        va = None
        if p.validation_fraction > 0:  # early stopping's held-out ratings (another hash of the cell)
            m = _holdout_mask(u * np.int64(ni) + i.astype(np.int64), p.validation_fraction, r.seed + _VAL_SALT)
            va, u, i, v = ((u[m] - r.lo).astype(np.int32), i[m].astype(np.int32), v[m]), u[~m], i[~m], v[~m]
        n_loc = u.size
        cnt_i = np.bincount(i, minlength=ni).astype(np.float64)
        s = r.allreduce(np.concatenate(([v.sum() + (0.0 if va is None else va[2].sum()), n_loc,
                                         0 if te is None else te[0].size, 0 if va is None else va[0].size],
                                        cnt_i, cnt_i > 0)))
        r.n_tr, r.n_te, r.n_va = int(s[1]), int(s[2]), int(s[3])
        if r.n_tr == 0:
            raise DataError("no training ratings")
        r.va = va if r.n_va > 0 else None
        r.item_n, r.item_m = s[4:4 + ni], s[4 + ni:]
        r.scale = r.schedule == "shared" and p.delta_scaling != "none" and bool((r.item_m > 1).any())
        r.mode = "clip" if p.delta_scaling == "clip" else "sequential"
        r.blk = _item_blocks(r.item_n, r.nb, r.size)
        rng = np.random.default_rng([r.seed, r.rank, 3])
        uperm = rng.permutation(nl)
        rank_of_user = np.empty(nl, dtype=np.int64)
        rank_of_user[uperm] = np.arange(nl)
        key = (r.blk[i].astype(np.int64) * nl + rank_of_user[u - r.lo]) * (u.size + 1) + rng.permutation(u.size)
        order = np.argsort(key, kind="stable")
        r.ul, r.il, r.vl = (u[order] - r.lo).astype(np.int32), i[order].astype(np.int32), v[order]
        r.user_n = np.bincount(r.ul, minlength=nl).astype(np.float64)  # my ratings per local user
        # penalty per visit: lam (per rating) + lam_row / n (per row, spread over the row's n ratings)
        lam_row = p.lam_row if p.lam_row is not None else (0.0 if p.nonneg else 5.0)
        r.regu = np.column_stack((p.lam + lam_row / np.maximum(r.user_n, 1.0),
                                  p.lam_bias + lam_row / np.maximum(r.user_n, 1.0)))
        r.regi = np.column_stack((p.lam + lam_row / np.maximum(r.item_n, 1.0),
                                  p.lam_bias + lam_row / np.maximum(r.item_n, 1.0)))
        r.mu = float(s[0] / (r.n_tr + r.n_va)) if p.use_bias else 0.0  # all training ratings
        if te is not None:
            r.te = ((te[0] - r.lo).astype(np.int32), te[1].astype(np.int32), te[2])
        # chunks: each block's ratings (users grouped) cut into clocks_per_epoch / blocks pieces at user bounds
        sub, bstart = p.clocks_per_epoch // r.nb, np.searchsorted(r.blk[r.il], np.arange(r.nb + 1))
        starts = np.concatenate(([0], np.flatnonzero(np.diff(r.ul) | np.diff(r.blk[r.il])) + 1, [n_loc]))
        r.cuts = [[int(starts[np.searchsorted(starts, a + k * (b - a) // sub)]) for k in range(sub)] + [int(b)]
                  for a, b in zip(bstart[:-1], bstart[1:])]
        r.bitems = [np.flatnonzero(r.blk == b) for b in range(r.nb)] if r.nb > 1 else [None]
        dt = np.dtype(p.dtype)
        r.U = p.init_scale * _init_rows(r.seed, r.lo, r.hi, p.n_components)
        r.U = np.ascontiguousarray(np.abs(r.U) if p.nonneg else r.U, dtype=dt)
        r.bu = np.zeros(nl, dt)
        r.V, r.bi = np.zeros((ni, p.n_components), dt), np.zeros(ni, dt)
        r.dV, r.dbi = np.zeros_like(r.V), np.zeros_like(r.bi)
        r.Gu, r.Gi, r.dGi = np.ones(nl), np.ones(ni), np.ones(ni)
        r.t_train, r.t_open, r.n_upd, r.eta = 0.0, None, 0, None
        r.best, r.ref, r.ref_clock, r.best_model = np.inf, np.inf, r.ps.clock_value if r.ps else 0, None

    def start(self, r):
        self._setup(r)

    def state(self, r):
        return {"U": r.U, "bu": r.bu, "Gu": r.Gu, "user_start": np.int64(r.lo)}

    def restore(self, r, st):
        """Collective. Same rank count: my shard's user block; otherwise my block is re-cut
        from every shard of the snapshot."""
        self._setup(r)
        err = None
        if st is not None and st["U"].shape == r.U.shape and int(st.get("user_start", r.lo)) == r.lo:
            r.U[...], r.bu[...], r.Gu[...] = st["U"], st["bu"], st.get("Gu", 1.0)
        else:
            try:
                _read_user_block(r.p.snapshot_dir, r.ps.clock_value, r.lo, r.hi, r.U, r.bu, r.Gu)
            except (DataError, OSError, KeyError) as e:
                err = str(e)
        if r.allreduce(float(err is not None)) > 0:
            raise DataError(err or "resume: another rank could not restore its user factors")

    # -- training -----------------------------------------------------------------------
    def _read_items(self, r, keep=False, rows=None):
        """V, c (and with ``keep`` the AdaGrad sums) from the tables into the local copies
        (``rows``: only these items; ``keep``: also remember the values read in dV, dbi, dGi)."""
        p = r.p
        if p.n_components:
            if rows is None:
                r.V[...] = r.ps.get("V")
                if p.nonneg:  # summed deltas of several workers can cross 0: project on read
                    np.maximum(r.V, 0, out=r.V)
                if keep:
                    r.dV[...] = r.V  # the values read: the delta shipped is V - dV
            else:
                Vb = r.ps.get("V", rows)  # a copy
                if p.nonneg:
                    np.maximum(Vb, 0, out=Vb)
                r.V[rows] = Vb
                r.Vb = Vb
        if p.use_bias or (p.adagrad and keep):
            cg = r.ps.get("cg") if rows is None else r.ps.get("cg", rows)
            sel = slice(None) if rows is None else rows
            if p.use_bias:
                r.bi[sel] = cg[:, 0]
                if keep:
                    r.dbi[sel] = r.bi[sel]
            if p.adagrad and keep:
                r.Gi[sel] = r.dGi[sel] = cg[:, 1]

    def _stop_timer(self, r):
        if r.t_open is not None:  # a clock's time ends where the driver hands control back
            r.t_train += time.perf_counter() - r.t_open
            r.t_open = None

    def step(self, r):
        self._stop_timer(r)
        r.t_open = time.perf_counter()
        p, dt, nb = r.p, np.dtype(r.p.dtype), r.nb
        t = r.clock % p.clocks_per_epoch
        b = (r.clock + r.soff * r.rank) % nb  # rotate: my item block this clock (shared: nb = 1)
        k = int(np.random.default_rng([r.seed, r.rank, r.epoch, 9]).permutation(p.clocks_per_epoch // nb)[t // nb])
        rows = r.bitems[b]
        r.eta = eta = K.step_size(r.eta0, r.epoch, r.decay, p.power)
        self._read_items(r, keep=True, rows=rows)
        lo, hi = r.cuts[b][k], r.cuts[b][k + 1]
        if p.adagrad:
            K.sgd_pass_ada(r.ul[lo:hi], r.il[lo:hi], r.vl[lo:hi], r.U, r.V, r.bu, r.bi, r.mu, eta, r.regu, r.regi,
                           r.Gu, r.Gi, p.use_bias, p.nonneg)
            np.subtract(r.Gi, r.dGi, out=r.dGi)
        else:
            K.sgd_pass_rows(r.ul[lo:hi], r.il[lo:hi], r.vl[lo:hi], r.U, r.V, r.bu, r.bi, r.mu, eta, r.regu,
                            r.regi, p.use_bias, p.nonneg)
        r.n_upd += hi - lo
        if p.n_components and rows is not None:
            r.ps.inc("V", rows, r.V[rows] - r.Vb)
        elif p.n_components:
            np.subtract(r.V, r.dV, out=r.dV)
            if r.scale:
                scale_n = r.item_n / p.clocks_per_epoch
                _scale_item_deltas(r.dV, r.U, r.user_n, eta, r.regi[:, 0], scale_n, r.item_m, r.mode)
            r.ps.inc("V", None, r.dV)
        if p.use_bias:
            np.subtract(r.bi, r.dbi, out=r.dbi)
            if r.scale:
                r.dbi *= _delta_scale(eta * (1.0 + r.regi[:, 1]), r.item_n / p.clocks_per_epoch, r.item_m,
                                      r.mode).astype(dt)
        if p.use_bias or p.adagrad:
            sel = slice(None) if rows is None else rows
            d = np.zeros((r.dbi[sel].size, 2))
            if p.use_bias:
                d[:, 0] = r.dbi[sel]
            if p.adagrad:
                d[:, 1] = r.dGi[sel]
            r.ps.inc("cg", rows, d)

    def flush(self, r):
        self._stop_timer(r)

    def metrics(self, r):
        """Figures on the items every rank has reached (a stale read would make them, and early
        stopping's choice of the best epoch, depend on timing): a barrier first unless exact."""
        self._stop_timer(r)
        if not r.fresh and r.size > 1:
            r.ps.barrier()
        self._read_items(r)
        p, te = r.p, r.te
        sums = {"sse_train": K.sse(r.ul, r.il, r.vl, r.U, r.V, r.bu, r.bi, r.mu, p.use_bias)}
        if te is not None:
            sums["sse_test"] = K.sse(te[0], te[1], te[2], r.U, r.V, r.bu, r.bi, r.mu, p.use_bias)
        if r.va is not None:
            sums["sse_val"] = K.sse(*r.va, r.U, r.V, r.bu, r.bi, r.mu, p.use_bias)
        return sums

    def report(self, r, sums):
        row = {"train_rmse": float(np.sqrt(sums["sse_train"] / r.n_tr))}
        if r.te is not None and r.n_te > 0:
            row["test_rmse"] = float(np.sqrt(sums["sse_test"] / r.n_te))
        if r.va is not None:
            row["val_rmse"] = float(np.sqrt(sums["sse_val"] / r.n_va))
        if r.eta is not None:
            row["step_size"] = r.eta
        row.update(train_time=r.t_train, updates_per_s=r.n_upd / max(r.t_train, 1e-12))
        return row

    def converged(self, r, prev, row):
        """Early stopping on the validation RMSE (summed figures: the same on every rank).
        Keeps a copy of the best model seen (my users' rows and my read of the items)."""
        if r.va is None:
            return False
        val = row["val_rmse"]
        if val < r.best:
            r.best, r.best_row = val, dict(row)
            r.best_model = tuple(a.copy() for a in (r.U, r.bu, r.V, r.bi))
        if val < r.ref * (1.0 - (r.p.tol or 0.0)):
            r.ref, r.ref_clock = val, r.clock
        return r.clock - r.ref_clock >= r.p.n_iter_no_change * r.p.clocks_per_epoch

    def finish(self, r):
        self._read_items(r)
        last = self.history_[-1]
        if r.best_model is not None and last["val_rmse"] > r.best:
            last = self._restore_best(r)
        self.train_rmse_, self.test_rmse_ = last["train_rmse"], last.get("test_rmse")
        self.updates_per_s_, self.train_time_ = last["updates_per_s"], last["train_time"]
        self.n_iter_ = -(-r.clock // r.p.clocks_per_epoch)  # epochs (started)
        self.user_factors_ = r.gather_rows(r.U, r.lo, self.n_users_)
        self.user_bias_ = r.gather_rows(r.bu, r.lo, self.n_users_)
        self.item_factors_ = np.array(r.V, dtype=np.float64)
        self.item_bias_ = np.array(r.bi, dtype=np.float64)
        self.mean_ = r.mu

    def _restore_best(self, r):
        """Collective: the best evaluation's model (my user rows; rank 0's read of the items,
        which under ssp may differ slightly from the others'), its figures recomputed
        exactly and appended to ``history_`` (``best_iter``: the clock it was taken at)."""
        U, bu, V, bi = r.best_model
        r.U[...], r.bu[...] = U, bu
        z = np.concatenate((V.ravel(), bi)).astype(np.float64) if r.rank == 0 else np.zeros(V.size + bi.size)
        z = r.allreduce(z) if r.size > 1 else z
        r.V[...], r.bi[...] = z[:V.size].reshape(V.shape), z[V.size:]
        row = {k: v for k, v in r.best_row.items()}
        row.update(self.report(r, {k: float(v) for k, v in zip(
            ("sse_test", "sse_train", "sse_val"),
            r.allreduce(np.array([float(x) for x in self._sse3(r)])))}))
        row.update(iter=r.clock, epoch=r.clock / r.p.clocks_per_epoch, best_iter=r.best_row["iter"])
        self.history_.append(row)
        return row

    def _sse3(self, r):
        p, te = r.p, r.te
        f = lambda t: K.sse(t[0], t[1], t[2], r.U, r.V, r.bu, r.bi, r.mu, p.use_bias) if t is not None else 0.0
        return f(te), f((r.ul, r.il, r.vl)), f(r.va)

    # -- use ----------------------------------------------------------------------------
    def _require(self):
        if not hasattr(self, "item_factors_"):
            raise _NotFitted("MatrixFactorization: call fit() (or load()) before predicting")

    def predict(self, users, items=None):
        """Predicted ratings of the pairs ``(users[t], items[t])``, or of the rows of an
        ``(n, 2)`` array of (user, item) ids (not collective)."""
        self._require()
        if items is None:
            X = np.asarray(users)
            if X.ndim != 2 or X.shape[1] != 2:
                raise DataError(f"predict: expected (n, 2) pairs of (user, item) ids, got shape {X.shape}")
            users, items = X[:, 0], X[:, 1]
        u = np.atleast_1d(np.asarray(users)).astype(np.int64)
        i = np.atleast_1d(np.asarray(items)).astype(np.int64)
        if u.shape != i.shape:
            raise DataError(f"users and items must have the same shape, got {u.shape} and {i.shape}")
        nu, ni = self.user_factors_.shape[0], self.item_factors_.shape[0]
        for name, a, n in (("user", u, nu), ("item", i, ni)):
            bad = (a < 0) | (a >= n)
            if bad.any():
                raise DataError(f"unknown {name} id {int(a[bad][0])} (ids must be in [0, {n}))")
        out = K.predict(u, i, self.user_factors_, self.item_factors_, self.user_bias_, self.item_bias_,
                        float(self.mean_), bool(self.use_bias))
        return out if np.ndim(users) else float(out[0])

    def recommend(self, user, k=10, exclude=None):
        """Top-``k`` items of ``user`` by predicted rating: ``(item_ids, scores)``, best first.
        ``exclude``: item ids to skip (e.g. the ones already rated)."""
        self._require()
        nu = self.user_factors_.shape[0]
        if not (isinstance(user, (int, np.integer)) and 0 <= user < nu):
            raise DataError(f"unknown user id {user!r} (ids must be in [0, {nu}))")
        k = check_param("k", k, int, lo=0)
        ex = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64).ravel()
        if ex.size and (ex.min() < 0 or ex.max() >= self.item_factors_.shape[0]):
            raise DataError("exclude: item id out of range")
        return K.top_k_items(np.ascontiguousarray(self.user_factors_[user]), self.item_factors_, self.item_bias_,
                             float(self.user_bias_[user]), float(self.mean_), bool(self.use_bias), int(k), ex)

    def rmse(self, users, items, values):
        """Root mean squared error of the model on the given ratings (not collective)."""
        p = self.predict(np.asarray(users), np.asarray(items))
        return float(np.sqrt(np.mean((np.asarray(values, dtype=np.float64) - p) ** 2)))


class _NotFitted(UsageError, NotFittedError):
    """predict before fit (scikit-learn's NotFittedError too)."""


def _read_user_block(snapshot_dir, clk, lo, hi, U, bu, Gu):
    """Rows ``lo:hi`` of the user factors/biases/AdaGrad sums from every shard of snapshot ``clk``."""
    from ...bosen.snapshot import app_states

    got = np.zeros(hi - lo, dtype=bool)
    for path, app in app_states(snapshot_dir, clk):
        if "user_start" not in app or "U" not in app:
            raise DataError(f"{path}: no mf user factors in the snapshot (not an mf snapshot?)")
        s0, n = int(app["user_start"][()]), app["U"].shape[0]
        if app["U"].shape[1:] != U.shape[1:]:
            raise DataError(f"{path}: saved user factors have rank {app['U'].shape[1]}, this model {U.shape[1]}")
        a, b = max(lo, s0), min(hi, s0 + n)
        if a < b:
            U[a - lo:b - lo] = app["U"][a - s0:b - s0]
            bu[a - lo:b - lo] = app["bu"][a - s0:b - s0]
            Gu[a - lo:b - lo] = app["Gu"][a - s0:b - s0] if "Gu" in app else 1.0
            got[a - lo:b - lo] = True
    if not got.all():
        raise DataError(f"{snapshot_dir}: no saved factors for user {lo + int(np.flatnonzero(~got)[0])} at clock {clk}")
