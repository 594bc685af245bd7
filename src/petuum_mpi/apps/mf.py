"""Matrix factorization by data-parallel SGD on the Bösen parameter server.

Model ``r_ui ~ mu + b_u + c_i + U_u . V_i``. Ratings are split across ranks by
user (``read_ratings`` gives each rank a contiguous block of users with all their
ratings), so the user factors ``U`` and biases ``b_u`` are local; the item factors
``V`` and item biases ``c`` are parameter-server tables. In each clock a worker
reads ``V`` and ``c``, runs the SGD kernel of :mod:`petuum_mpi.apps.mf_kernels`
over one chunk of its ratings (grouped by user, so the user row stays in cache),
and ``inc``'s the accumulated item deltas. ``nonneg=True`` gives NMF by
projection. See docs/apps.md.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import ConfigError, DataError, UsageError
from ..runtime import get_comm, warm_once
from . import mf_kernels as K
from .logreg import _check, _is_path, holdout_mask

__all__ = ["MatrixFactorization", "SCHEMA", "run_job"]


def _warmup():
    for dt in (np.float32, np.float64):
        u = np.array([0, 1], dtype=np.int32)
        i = np.array([1, 0], dtype=np.int32)
        r = np.array([1.0, 2.0])
        U = np.ones((2, 2), dt)
        V = np.ones((2, 2), dt)
        dV = np.zeros_like(V)
        b = np.zeros(2, dt)
        for nn in (False, True):
            K.sgd_epoch(u, i, r, U, V, dV, b, b.copy(), b.copy(), 0.0, 0.01, 0.01, 0.01, True, nn)
            K.sgd_pass(u, i, r, U, V, b, b.copy(), 0.0, 0.01, 0.01, 0.01, True, nn)
        K.sse(u, i, r, U, V, b, b, 0.0, True)
        K.predict(u, i, U, V, b, b, 0.0, True)
        K.top_k_items(U[0], V, b, 0.0, 0.0, True, 1, np.zeros(0, dtype=np.int64))




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


def _triples(R, n_users, n_items, where="ratings"):
    """Validate full (users, items, values) arrays."""
    if not (isinstance(R, (tuple, list)) and len(R) == 3):
        raise UsageError(f"{where}: expected a dataset path or a tuple (users, items, values)")
    u, i, v = (np.asarray(a) for a in R)
    if not (u.shape == i.shape == v.shape) or u.ndim != 1:
        raise DataError(f"{where}: users, items, values must be 1-D of equal length, got {u.shape}, {i.shape}, "
                        f"{v.shape}")
    for name, a in (("users", u), ("items", i)):
        if a.size and a.dtype.kind not in "iu":
            raise DataError(f"{where}: {name} must be integer ids, got dtype {a.dtype}")
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise DataError(f"{where}: rating {v[~np.isfinite(v)][0]} at triple {int(np.flatnonzero(~np.isfinite(v))[0])}")
    nu = int(u.max()) + 1 if n_users is None and u.size else int(n_users or 0)
    ni = int(i.max()) + 1 if n_items is None and i.size else int(n_items or 0)
    for name, a, n in (("user", u, nu), ("item", i, ni)):
        bad = (a < 0) | (a >= n)
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where}: unknown {name} id {int(a[p])} (ids must be in [0, {n})) at triple {p}")
    return u.astype(np.int64), i.astype(np.int32), v, nu, ni


class MatrixFactorization:
    """Matrix factorization ``r_ui ~ mu + b_u + c_i + U_u . V_i`` by SGD on the parameter server.

    Collective: every rank calls :meth:`fit` with the same arguments; each rank
    trains on a block of users. Works at any rank count.

    Parameters
    ----------
    n_components : int, default 10
        Rank K (0 = biases only).
    lam : float, default 0.02
        L2 penalty of the factors (per rating, Funk style).
    lam_bias : float, default 0.0
        L2 penalty of the biases.
    use_bias : bool, default True
        Fit ``mu``, ``b_u``, ``c_i`` (``mu`` is the global mean, fixed).
    nonneg : bool, default False
        Project ``U`` and ``V`` onto >= 0 after every update (NMF; factors start >= 0).
    eta0 : float, default 0.02
    decay, power : float, default 0.05, 1.0
        Step size of epoch e: ``eta0 / (1 + decay e)**power``.
    max_iter : int, default 30
        Epochs.
    clocks_per_epoch : int, default 1
    delta_scaling : {"auto", "sequential", "none"}, default "auto"
        How the item deltas of several workers are combined. Each worker runs SGD on
        its own copy of ``V``/``c`` for a clock (and under ssp for up to ``s + 1``
        clocks between re-reads), so plain summing ("none") moves an item up to
        ``m`` times as far as one sequential pass would (``m`` = workers rating the
        item): at large steps the model oscillates or diverges. With ``X = eta h N_i /
        clocks_per_epoch`` (the log-contraction of one sequential pass over the item's
        ``N_i`` ratings of a clock; ``h`` = curvature: ``1 + lam_bias`` for ``c``, the
        rating-weighted mean ``|U_u|^2 + lam`` for ``V``), the plain sum covers
        ``M = m (1 - exp(-X / m))`` of the distance to the item's optimum. "auto" scales
        worker deltas by ``min(1, 1 / M)``: never past the optimum, untouched when the
        sum does not overshoot. "sequential" scales by ``(1 - exp(-X)) / M``, the move of
        one sequential pass (more damping, slower). Both are exactly 1 at one rank.
    eval_every : int, default 1
        Compute train/test RMSE every N clocks (and after the last).
    init_scale : float, default 0.1
        Factors start as ``init_scale * N(0, 1)`` (absolute value for NMF).
    dtype : {"float32", "float64"}, default "float32"
    holdout : float in [0, 1), default 0.0
        Fraction of ratings held out for test RMSE (hash of the rating's position and seed).
    consistency, staleness, engine : parameter-server settings (see LogisticRegression).
    random_state : int, default 0
    comm : MPI communicator, optional

    Attributes
    ----------
    user_factors_ (n_users, K), item_factors_ (n_items, K), user_bias_, item_bias_, mean_,
    n_iter_, train_rmse_, test_rmse_, history_, stats_, updates_per_s_
    """

    def __init__(self, n_components=10, lam=0.02, lam_bias=0.0, use_bias=True, nonneg=False, eta0=0.02, decay=0.05,
                 power=1.0, max_iter=30, clocks_per_epoch=1, delta_scaling="auto", eval_every=1, init_scale=0.1, dtype="float32",
                 holdout=0.0, consistency="ssp", staleness=1, engine=None, random_state=0, comm=None):
        self.n_components, self.lam, self.lam_bias, self.use_bias, self.nonneg = (n_components, lam, lam_bias,
                                                                                  use_bias, nonneg)
        self.eta0, self.decay, self.power, self.max_iter = eta0, decay, power, max_iter
        self.delta_scaling = delta_scaling
        self.clocks_per_epoch, self.eval_every, self.init_scale, self.dtype = (clocks_per_epoch, eval_every,
                                                                               init_scale, dtype)
        self.holdout, self.consistency, self.staleness, self.engine = holdout, consistency, staleness, engine
        self.random_state, self.comm = random_state, comm

    def _validate(self):
        _check("n_components", self.n_components, int, lo=0)
        _check("lam", self.lam, float, lo=0)
        _check("lam_bias", self.lam_bias, float, lo=0)
        _check("use_bias", self.use_bias, bool)
        _check("nonneg", self.nonneg, bool)
        _check("eta0", self.eta0, float, lo=0, lo_open=True)
        _check("decay", self.decay, float, lo=0)
        _check("power", self.power, float, lo=0)
        _check("max_iter", self.max_iter, int, lo=1)
        _check("clocks_per_epoch", self.clocks_per_epoch, int, lo=1)
        _check("delta_scaling", self.delta_scaling, str, choices=("auto", "sequential", "none"))
        _check("eval_every", self.eval_every, int, lo=1)
        _check("init_scale", self.init_scale, float, lo=0)
        _check("dtype", self.dtype, str, choices=("float32", "float64"))
        _check("holdout", self.holdout, float, lo=0, hi=1, hi_open=True)
        _check("consistency", self.consistency, str, choices=("bsp", "ssp", "essp", "asp"))
        _check("staleness", self.staleness, int, lo=0)
        _check("random_state", self.random_state, int, lo=0)
        if self.engine is not None and not isinstance(self.engine, dict):
            raise ConfigError(f"engine: expected a dict (an [engine] section), got {type(self.engine).__name__}")

    # ------------------------------------------------------------------ data
    def _load(self, R, n_users, n_items, comm):
        """-> local (users global int64, items int32, values), user_start, user_stop, n_users, n_items."""
        if _is_path(R):
            from ..data import read_ratings

            part = read_ratings(str(R), comm)
            return (part.users.astype(np.int64), part.items, part.values, part.user_start, part.user_stop,
                    part.n_users, part.n_items)
        u, i, v, nu, ni = _triples(R, n_users, n_items)
        P, me = comm.size, comm.rank
        lo, hi = me * nu // P, (me + 1) * nu // P
        m = (u >= lo) & (u < hi)
        u, i, v = u[m], i[m], v[m]
        order = np.argsort(u, kind="stable")
        return u[order], i[order], v[order], lo, hi, nu, ni

    def _load_test(self, T, lo, hi, nu, ni):
        """Test ratings of my users (the whole test set is read, then filtered)."""
        if _is_path(T):
            from mpi4py import MPI

            from ..data import read_ratings

            part = read_ratings(str(T), MPI.COMM_SELF)
            if part.n_items != ni or part.n_users != nu:
                raise DataError(f"{T}: test set is {part.n_users} users x {part.n_items} items, training set "
                                f"{nu} x {ni}")
            u, i, v = part.users.astype(np.int64), part.items, part.values
        else:
            u, i, v, _, _ = _triples(T, nu, ni, "test")
        m = (u >= lo) & (u < hi)
        return u[m], i[m].astype(np.int32), v[m]

    # ------------------------------------------------------------------ fit
    def fit(self, ratings, n_users=None, n_items=None, test=None, on_clock=None):
        """Train (collective).

        Parameters
        ----------
        ratings : dataset path, or a tuple ``(users, items, values)`` (all ratings, on every rank)
        n_users, n_items : ints for array input (default max id + 1)
        test : optional test ratings (path or tuple); else ``holdout`` is used if > 0
        on_clock : callable(dict), optional, called on every rank with each metrics row
        """
        from ..bosen import ENGINE_SCHEMA, ParameterServer, TableSpec
        from ..bosen.snapshot import DEFAULT_KEEP
        from ..config import _validate_section

        self._validate()
        comm = get_comm(self.comm)
        seed = int(self.random_state)
        u, i, v, lo, hi, nu, ni = self._load(ratings, n_users, n_items, comm)
        dt = np.dtype(self.dtype)
        te = None
        if test is not None:
            te = self._load_test(test, lo, hi, nu, ni)
        elif self.holdout > 0:
            # position of each rating in the (user, item)-sorted global order is not known locally;
            # hash the (user, item) cell instead - independent of the rank count
            m = holdout_mask(u * np.int64(ni) + i.astype(np.int64), self.holdout, seed)
            te = (u[m], i[m], v[m])
            u, i, v = u[~m], i[~m], v[~m]
        self.n_users_, self.n_items_ = nu, ni
        engine = dict(self.engine) if self.engine is not None else _validate_section(
            "engine", ENGINE_SCHEMA, {"consistency": self.consistency, "staleness": int(self.staleness)}, ".")
        Kc = int(self.n_components)
        rng0 = np.random.default_rng([seed, 11])
        V0 = self.init_scale * rng0.standard_normal((ni, Kc))
        if self.nonneg:
            V0 = np.abs(V0)
        warm_once(_warmup, comm)
        tables = [TableSpec("V", ni, max(Kc, 1), dt.name, init=V0 if Kc else 0), TableSpec("c", 1, ni, dt.name)]
        ps = ParameterServer.from_config(engine, tables, comm)
        ps.keep_snapshots = engine.get("keep_snapshots", DEFAULT_KEEP)  # [engine] keep_snapshots
        try:
            self._train(ps, u, i, v, te, lo, hi, nu, ni, Kc, dt, seed, engine, on_clock)
        except BaseException:
            import sys

            ps.__exit__(*sys.exc_info())
            raise
        ps.shutdown()
        return self

    def _train(self, ps, u, i, v, te, lo, hi, nu, ni, Kc, dt, seed, engine, on_clock):
        P, me = ps.P, ps.me
        nl = hi - lo
        # regroup my ratings: users in a random order, each user's ratings shuffled
        rng = np.random.default_rng([seed, me, 3])
        uperm = rng.permutation(nl)
        rank_of_user = np.empty(nl, dtype=np.int64)
        rank_of_user[uperm] = np.arange(nl)
        key = rank_of_user[u - lo] * (u.size + 1) + rng.permutation(u.size)
        order = np.argsort(key, kind="stable")
        ul = (u[order] - lo).astype(np.int32)
        il = i[order].astype(np.int32)
        vl = v[order]
        n_loc = ul.size
        cnt_i = np.bincount(il, minlength=ni).astype(np.float64)
        s = ps.allreduce(np.concatenate(([vl.sum(), n_loc, 0 if te is None else te[0].size], cnt_i, cnt_i > 0)))
        n_tr, n_te = int(s[1]), int(s[2])
        # item i: ratings over all workers, and how many workers rate it (for delta_scaling)
        item_n, item_m = s[3:3 + ni], s[3 + ni:]
        scale = self.delta_scaling != "none" and bool((item_m > 1).any())
        mode = "sequential" if self.delta_scaling == "sequential" else "clip"
        user_n = np.bincount(ul, minlength=nl).astype(np.float64)  # my ratings per local user
        if n_tr == 0:
            raise DataError("no training ratings")
        mu = float(s[0] / n_tr) if self.use_bias else 0.0
        urng = np.random.default_rng([seed, me, 5])
        U = self.init_scale * urng.standard_normal((nl, Kc))
        U = np.ascontiguousarray(np.abs(U) if self.nonneg else U, dtype=dt)
        bu = np.zeros(nl, dt)
        Vl = np.zeros((ni, Kc), dt)
        dV = np.zeros_like(Vl)
        bi = np.zeros(ni, dt)
        dbi = np.zeros(ni, dt)
        if te is not None:
            te = ((te[0] - lo).astype(np.int32), te[1].astype(np.int32), te[2])
        cpe = int(self.clocks_per_epoch)
        # chunk boundaries at user boundaries (ratings are grouped by user)
        ub = np.flatnonzero(np.diff(ul)) + 1 if n_loc else np.zeros(0, np.int64)
        starts = np.concatenate(([0], ub, [n_loc])).astype(np.int64)
        cuts = [0]
        for k in range(1, cpe):
            tgt = k * n_loc // cpe
            cuts.append(int(starts[np.searchsorted(starts, tgt)]) if n_loc else 0)
        cuts.append(n_loc)
        total = int(self.max_iter) * cpe
        clk0 = 0
        if engine.get("resume"):
            res = ps.resume()
            if res is not None:
                clk0, st = res
                self._restore_users(ps, clk0, st, lo, hi, U, bu)

        def snap_state():
            return {"U": U, "bu": bu, "user_start": np.int64(lo)}

        self.history_ = []
        t_train = 0.0
        n_upd = 0
        t_start = time.perf_counter()
        Vw = Vl if Kc else np.zeros((ni, 0), dt)
        clk = clk0 - 1
        self.n_iter_ = clk0 // cpe
        for clk in range(clk0, total):
            epoch, _ = divmod(clk, cpe)
            k = int(np.random.default_rng([seed, me, epoch, 9]).permutation(cpe)[clk % cpe])
            t0 = time.perf_counter()
            if Kc:
                Vl[...] = ps.get("V")
                if self.nonneg:  # summed deltas of several workers can cross 0: project on read
                    np.maximum(Vl, 0, out=Vl)
                dV[...] = Vl  # the values read: the delta shipped is V - dV
            if self.use_bias:
                bi[...] = ps.get("c", 0)
                dbi[...] = bi
            a, b = cuts[k], cuts[k + 1]
            eta = K.step_size(self.eta0, epoch, self.decay, self.power)
            K.sgd_pass(ul[a:b], il[a:b], vl[a:b], U, Vw, bu, bi, mu, eta, self.lam, self.lam_bias, self.use_bias,
                       self.nonneg)
            n_upd += b - a
            if Kc:
                np.subtract(Vl, dV, out=dV)
                if scale:
                    h = float(user_n @ np.einsum("uk,uk->u", U, U)) / max(n_loc, 1) + self.lam
                    dV *= _delta_scale(eta * h, item_n / cpe, item_m, mode).astype(dt)[:, None]
                ps.inc("V", None, dV)
            if self.use_bias:
                np.subtract(bi, dbi, out=dbi)
                if scale:
                    dbi *= _delta_scale(eta * (1.0 + self.lam_bias), item_n / cpe, item_m, mode).astype(dt)
                ps.inc("c", 0, dbi)
            ps.clock(state=snap_state)
            t_train += time.perf_counter() - t0
            self.n_iter_ = epoch + 1
            if (clk + 1) % self.eval_every == 0 and clk != total - 1:
                row = self._evaluate(ps, ul, il, vl, te, U, Vw, bu, bi, mu, n_tr, n_te, Kc, fresh=False)
                row.update({"iter": clk + 1, "epoch": (clk + 1) / cpe, "step_size": eta, "train_time": t_train,
                            "updates_per_s": n_upd / max(t_train, 1e-12), "time": time.perf_counter() - t_start})
                row.update(ps.figures("V"))
                self.history_.append(row)
                if on_clock is not None:
                    on_clock(row)
        ps.barrier()
        row = self._evaluate(ps, ul, il, vl, te, U, Vw, bu, bi, mu, n_tr, n_te, Kc, fresh=True)
        row.update({"iter": clk + 1, "epoch": self.n_iter_, "train_time": t_train,
                    "updates_per_s": n_upd / max(t_train, 1e-12), "time": time.perf_counter() - t_start})
        row.update(ps.figures("V"))
        self.history_.append(row)
        if on_clock is not None:
            on_clock(row)
        self.train_rmse_ = row["train_rmse"]
        self.test_rmse_ = row.get("test_rmse")
        self.updates_per_s_ = row["updates_per_s"]
        self.train_time_ = t_train
        # gather the model on every rank (users are spread over ranks)
        Uf = np.zeros((nu, Kc))
        Uf[lo:hi] = U
        buf = np.zeros(nu)
        buf[lo:hi] = bu
        self.user_factors_ = ps.allreduce(Uf.ravel()).reshape(nu, Kc) if P > 1 else Uf
        self.user_bias_ = ps.allreduce(buf) if P > 1 else buf
        self.item_factors_ = np.array(Vw, dtype=np.float64)
        self.item_bias_ = np.array(bi, dtype=np.float64)
        self.mean_ = mu
        self.stats_ = ps.stats()
        self.stats_all_ = ps.stats_all()

    @staticmethod
    def _restore_users(ps, clk, st, lo, hi, U, bu):
        """Collective: load my users' factors and biases from snapshot ``clk``. Same rank
        count: my own shard's state; otherwise my user block is collected from every shard."""
        err = None
        if st is not None and st["U"].shape == U.shape and int(st.get("user_start", lo)) == lo:
            U[...] = st["U"]
            bu[...] = st["bu"]
        else:
            try:
                _read_user_block(ps.snapshot_dir, clk, lo, hi, U, bu)
            except (DataError, OSError, KeyError) as e:
                err = str(e)
        if ps.allreduce(float(err is not None)) > 0:
            raise DataError(err or "resume: another rank could not restore its user factors")

    def _evaluate(self, ps, ul, il, vl, te, U, V, bu, bi, mu, n_tr, n_te, Kc, fresh):
        """Collective: train/test RMSE (item tables re-read; fresh=True after a barrier)."""
        if Kc:
            V[...] = ps.get("V")
            if self.nonneg:
                np.maximum(V, 0, out=V)
        if self.use_bias:
            bi[...] = ps.get("c", 0)
        s_tr = K.sse(ul, il, vl, U, V, bu, bi, mu, self.use_bias)
        s_te = K.sse(te[0], te[1], te[2], U, V, bu, bi, mu, self.use_bias) if te is not None else 0.0
        s = ps.allreduce(np.array([s_tr, s_te]))
        row = {"train_rmse": float(np.sqrt(s[0] / n_tr))}
        if te is not None and n_te > 0:
            row["test_rmse"] = float(np.sqrt(s[1] / n_te))
        return row

    # ------------------------------------------------------------------ predict
    def _require(self):
        if not hasattr(self, "item_factors_"):
            raise UsageError("MatrixFactorization: call fit() (or load()) before predicting")

    def predict(self, users, items):
        """Predicted ratings of the pairs ``(users[t], items[t])`` (not collective)."""
        self._require()
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
        _check("k", k, int, lo=0)
        ex = np.zeros(0, dtype=np.int64) if exclude is None else np.asarray(exclude, dtype=np.int64).ravel()
        if ex.size and (ex.min() < 0 or ex.max() >= self.item_factors_.shape[0]):
            raise DataError("exclude: item id out of range")
        return K.top_k_items(np.ascontiguousarray(self.user_factors_[user]), self.item_factors_, self.item_bias_,
                             float(self.user_bias_[user]), float(self.mean_), bool(self.use_bias), int(k), ex)

    def rmse(self, users, items, values):
        """Root mean squared error of the model on the given ratings (not collective)."""
        p = self.predict(np.asarray(users), np.asarray(items))
        return float(np.sqrt(np.mean((np.asarray(values, dtype=np.float64) - p) ** 2)))

    # ------------------------------------------------------------------ persistence
    def model_arrays(self):
        self._require()
        return ({"user_factors": self.user_factors_, "item_factors": self.item_factors_,
                 "user_bias": self.user_bias_, "item_bias": self.item_bias_},
                {"model": "mf", "mean": float(self.mean_), "use_bias": bool(self.use_bias),
                 "n_components": int(self.n_components), "nonneg": bool(self.nonneg)})

    def save(self, path):
        """Write the model to an HDF5 file (call on one rank)."""
        from ..data.writer import save_arrays_h5

        save_arrays_h5(path, *self.model_arrays())

    @classmethod
    def load(cls, path):
        """A fitted model from :meth:`save` or an ``mf`` job's model.h5."""
        import h5py

        try:
            with h5py.File(path, "r") as f:
                arr = {k: f[k][...] for k in ("user_factors", "item_factors", "user_bias", "item_bias")}
                attrs = dict(f.attrs)
        except (OSError, KeyError) as e:
            raise DataError(f"{path}: not an mf model file ({e})") from None
        m = cls(n_components=int(attrs.get("n_components", arr["item_factors"].shape[1])),
                use_bias=bool(attrs.get("use_bias", True)), nonneg=bool(attrs.get("nonneg", False)))
        m.user_factors_, m.item_factors_ = arr["user_factors"], arr["item_factors"]
        m.user_bias_, m.item_bias_ = arr["user_bias"], arr["item_bias"]
        m.mean_ = float(attrs.get("mean", 0.0))
        return m


def _read_user_block(snapshot_dir, clk, lo, hi, U, bu):
    """Rows ``lo:hi`` of the user factors/biases from every shard of snapshot ``clk``."""
    import json
    import os

    import h5py

    d = os.path.join(snapshot_dir, f"ckpt-{clk:08d}")
    with open(os.path.join(d, "manifest.json")) as fh:
        files = json.load(fh)["files"]
    got = np.zeros(hi - lo, dtype=bool)
    for fn in files:
        with h5py.File(os.path.join(d, fn), "r") as f:
            if "app/user_start" not in f or "app/U" not in f:
                raise DataError(f"{d}/{fn}: no mf user factors in the snapshot (not an mf snapshot?)")
            s0 = int(f["app/user_start"][()])
            n = f["app/U"].shape[0]
            if f["app/U"].shape[1:] != U.shape[1:]:
                raise DataError(f"{d}/{fn}: saved user factors have rank {f['app/U'].shape[1]}, this model "
                                f"{U.shape[1]}")
            a, b = max(lo, s0), min(hi, s0 + n)
            if a < b:
                U[a - lo:b - lo] = f["app/U"][a - s0:b - s0]
                bu[a - lo:b - lo] = f["app/bu"][a - s0:b - s0]
                got[a - lo:b - lo] = True
    if not got.all():
        raise DataError(f"{d}: no saved factors for user {lo + int(np.flatnonzero(~got)[0])}")


# ----------------------------------------------------------------------------- job
def _schema():
    from ..bosen import ENGINE_SCHEMA
    from ..config import Field, Section

    model = Section(
        {
            "n_components": Field(int, default=10, min=0, help="rank K of the factorization"),
            "lam": Field(float, default=0.02, min=0.0, help="L2 penalty of the factors"),
            "lam_bias": Field(float, default=0.0, min=0.0, help="L2 penalty of the biases"),
            "use_bias": Field(bool, default=True, help="global mean + user and item biases"),
            "nonneg": Field(bool, default=False, help="non-negative factors (NMF by projection)"),
            "eta0": Field(float, default=0.02, min=0.0, min_exclusive=True, help="initial step size"),
            "decay": Field(float, default=0.05, min=0.0, help="step eta0 / (1 + decay epoch)^power"),
            "power": Field(float, default=1.0, min=0.0, help="exponent of the step-size decay"),
            "max_iter": Field(int, default=30, min=1, help="epochs"),
            "clocks_per_epoch": Field(int, default=1, min=1, help="parameter-server clocks per epoch"),
            "delta_scaling": Field(str, default="auto", choices=("auto", "sequential", "none"),
                                   help="combine workers' item deltas: auto = sum clipped so it never "
                                        "overshoots; sequential = as one sequential pass; none = plain sum"),
            "eval_every": Field(int, default=1, min=1, help="compute RMSE every N clocks"),
            "init_scale": Field(float, default=0.1, min=0.0, help="std of the initial factors"),
            "dtype": Field(str, default="float32", choices=("float32", "float64"), help="factor precision"),
            "holdout": Field(float, default=0.0, min=0.0, max=0.9,
                             help="fraction of ratings held out (when data.test is not given)"),
        },
        help="matrix factorization (SGD on Bösen)",
    )
    return {"model": model, "engine": ENGINE_SCHEMA}


SCHEMA = _schema()


def run_job(job: dict, ctx) -> dict:
    """Run an ``mf`` job (collective); see docs/apps.md."""
    m = job["model"]
    every = int(job["run"].get("log_every", 1))
    est = MatrixFactorization(**{k: m[k] for k in ("n_components", "lam", "lam_bias", "use_bias", "nonneg", "eta0",
                                                   "decay", "power", "max_iter", "clocks_per_epoch", "delta_scaling", "init_scale",
                                                   "dtype", "holdout")},
                              eval_every=m["eval_every"] * every, engine=dict(job["engine"]),
                              random_state=int(job["run"]["seed"]), comm=ctx.comm)
    bar = ctx.progress(m["max_iter"] * m["clocks_per_epoch"], "mf")
    seen = {"iter": 0}

    def on_clock(row):
        ctx.rundir.log_metrics(row)
        figs = {"train_rmse": row["train_rmse"]}
        if "test_rmse" in row:
            figs["test_rmse"] = row["test_rmse"]
        bar.update(n=row["iter"] - seen["iter"], **figs)
        seen["iter"] = row["iter"]

    try:
        est.fit(job["data"]["train"], test=job["data"].get("test"), on_clock=on_clock)
    finally:
        bar.close()
    ctx.rundir.save_model(*est.model_arrays())
    last = est.history_[-1]
    summary = {k: v for k, v in last.items() if k != "iter"}
    summary.update({"n_iter": est.n_iter_, "clocks": last["iter"]})
    if est.stats_all_ is not None:
        tv = est.stats_all_["tables"]["V"]
        summary["ps"] = {"staleness_mean": tv.get("staleness_mean"), "staleness_var": tv.get("staleness_var"),
                         "staleness_max": tv.get("staleness_max"), "wait_s_max": est.stats_all_["wait_s_max"],
                         "bytes_sent": est.stats_all_["bytes_sent"], "msgs": est.stats_all_["msgs"]}
    return summary
