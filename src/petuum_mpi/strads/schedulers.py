"""Schedulers of the model-parallel engine: which variables the next round updates.

All schedulers run on rank 0 only and are vectorised (NumPy, plus one small Numba
kernel for the dependency filter): no Python loop per candidate.

``cyclic``
    sweeps the active variables in a fixed order; the order deals variables sorted
    by cost (nnz) round-robin into rounds, so every round carries about the same
    number of non-zeros (nnz-balanced blocks).
``random``
    Shotgun: each round draws ``round_size`` variables uniformly (with replacement,
    duplicates dropped).
``priority``
    after ``warmup_sweeps`` uniform sweeps, draws variable ``j`` with probability
    ``p_j ~ (delta beta_j)^2 + eta`` where ``delta beta_j`` is its last change and
    ``eta = eta_rel * mean((delta beta)^2)`` (default 1 % of the mean weight); one
    uniform sweep after every four priority sweeps refreshes stale weights, so a
    coefficient whose last change was tiny cannot starve (needed to close the
    duality gap to tight tolerances).
``sap``
    structure-aware priority (STRADS): ``priority`` candidates (twice the round
    size) pass a dependency filter that keeps two variables with
    ``|corr(x_j, x_k)| >= rho`` out of the same round, checked across the whole
    round and against the rounds still in flight when pipelining. Correlations
    come from a row sample of X held by the scheduler (see :class:`RowSample`).
"""

from __future__ import annotations

from collections import deque

import numba
import numpy as np

from ..errors import ConfigError

SCHEDULERS = ("cyclic", "random", "priority", "sap")


class Scheduler:
    """Base class: candidate set, round size, variables blocked by in-flight rounds.

    Parameters
    ----------
    n_vars : number of variables.
    round_size : most variables per round.
    depth : pipeline depth of the engine (rounds in flight that a new round must
        not overlap).
    seed : random seed.
    costs : optional per-variable cost (nnz of its column) for balanced rounds.
    """

    name = "base"

    def __init__(self, n_vars, round_size=64, depth=0, seed=0, costs=None):
        self.n_vars = int(n_vars)
        self.round_size = max(1, int(round_size))
        self.depth = int(depth)
        self.rng = np.random.default_rng(seed)
        self.costs = None if costs is None else np.asarray(costs, dtype=np.float64)
        self.blocked = np.zeros(self.n_vars, dtype=np.int32)
        self._recent = deque()
        self.rejected = 0
        self.issued = 0
        self.set_active(np.arange(self.n_vars))

    # -- candidate set -------------------------------------------------------
    def set_active(self, active) -> None:
        """Restrict the candidates to ``active`` (sorted variable ids)."""
        self.active = np.ascontiguousarray(active, dtype=np.int64)
        self._on_active()

    def _on_active(self) -> None:
        pass

    def set_round_size(self, u: int) -> None:
        """Change the round size (never above the size the engine was built with)."""
        self.round_size = max(1, int(u))

    # -- in-flight bookkeeping (pipelining) ------------------------------------
    def in_flight(self, v) -> None:
        """Round ``v`` was issued; the next ``depth`` rounds must not overlap it."""
        self.issued += len(v)
        if self.depth == 0:
            return
        self._recent.append(v)
        self.blocked[v] += 1
        if len(self._recent) > self.depth:
            old = self._recent.popleft()
            self.blocked[old] -= 1

    def clear_in_flight(self) -> None:
        while self._recent:
            self.blocked[self._recent.popleft()] -= 1

    def _free(self, v):
        if self.depth == 0 or len(v) == 0:
            return v
        return v[self.blocked[v] == 0]

    def _nonempty(self, c, u):
        """``c`` (free candidates), or when every candidate was in flight, up to ``u``
        free active variables drawn uniformly: an empty round would end the sweep."""
        if len(c) or self.depth == 0:
            return c
        free = self.active[self.blocked[self.active] == 0]
        if len(free) == 0:
            return c
        return np.sort(self.rng.choice(free, size=min(u, len(free)), replace=False))

    def feedback(self, vars_, change) -> None:
        """Results of a round: ``change[k]`` = |new - old| of ``vars_[k]`` (or None)."""

    def schedule(self, max_size=None) -> np.ndarray:
        raise NotImplementedError


class CyclicScheduler(Scheduler):
    name = "cyclic"

    def _on_active(self):
        self.order = None  # built on the first schedule(): set_active is called on every rank, often unused

    def _build_order(self):
        a = self.active
        u = self.round_size
        if self.costs is not None and len(a) > u:
            # nnz-balanced rounds: deal the variables by decreasing cost in batches of
            # one per round, the heaviest of a batch to the currently lightest round
            order = a[np.argsort(-self.costs[a], kind="stable")]
            n_rounds = -(-len(a) // u)
            grid = np.full((u, n_rounds), -1, dtype=np.int64)
            load = np.zeros(n_rounds)
            for k in range(u):  # u vectorised steps, not one per variable
                batch = order[k * n_rounds : (k + 1) * n_rounds]
                if len(batch) == 0:
                    break
                dest = np.argsort(load, kind="stable")[: len(batch)]
                grid[k, dest] = batch
                load[dest] += self.costs[batch]
            rounds = grid.T  # one row per round
            sizes = (rounds >= 0).sum(axis=1)
            flat = rounds.ravel()
            self.order = flat[flat >= 0]
            self.bounds = np.concatenate([[0], np.cumsum(sizes)])
        else:
            self.order = a
            self.bounds = np.append(np.arange(0, len(a), u), len(a))
        self.pos = 0

    def set_round_size(self, u):
        super().set_round_size(u)
        self._on_active()

    def schedule(self, max_size=None):
        """The next round of the sweep; a round never spans two sweeps."""
        u = self.round_size if max_size is None else min(self.round_size, int(max_size))
        if self.order is None:
            self._build_order()
        n = len(self.order)
        if n == 0 or u <= 0:
            return np.empty(0, dtype=np.int64)
        end_round = self.bounds[np.searchsorted(self.bounds, self.pos, side="right")]
        end = min(int(end_round), self.pos + u)
        v = self.order[self.pos : end]
        self.pos = end % n
        return self._free(v)


class RandomScheduler(Scheduler):
    name = "random"

    def schedule(self, max_size=None):
        u = self.round_size if max_size is None else min(self.round_size, int(max_size))
        a = self.active
        if len(a) == 0 or u <= 0:
            return np.empty(0, dtype=np.int64)
        v = np.unique(a[self.rng.integers(0, len(a), size=min(u, len(a)))])
        return self._nonempty(self._free(v), u)


class PriorityScheduler(Scheduler):
    """Draws variables with probability ~ (last change)^2 + eta after a warm-up."""

    name = "priority"

    refresh_sweeps = 4  # a uniform sweep after every this many priority sweeps

    def __init__(self, n_vars, round_size=64, depth=0, seed=0, costs=None, eta=1e-2, warmup_sweeps=1):
        self.weight = np.zeros(int(n_vars), dtype=np.float64)
        self._since = 0
        self.eta = float(eta)
        self.warmup_sweeps = float(warmup_sweeps)
        self._buf = np.empty(0, dtype=np.int64)
        self._warm_left = 0
        super().__init__(n_vars, round_size, depth, seed, costs)

    def _on_active(self):
        self._buf = np.empty(0, dtype=np.int64)
        self._bpos = 0
        self._warm_left = int(self.warmup_sweeps * len(self.active))
        self._perm = self.rng.permutation(self.active) if len(self.active) else self.active
        self._ppos = 0

    def feedback(self, vars_, change):
        if change is not None:
            self.weight[vars_] = np.square(change)

    def _refill(self):
        a = self.active
        w = self.weight[a]
        mean = float(w.mean()) if len(w) else 0.0
        if mean <= 0.0:
            p = np.ones(len(a))
        else:
            p = w + self.eta * mean
        cs = np.cumsum(p)
        # refresh about four times per sweep of the active set
        n = max(2 * self.round_size, len(a) // 4)
        draws = np.searchsorted(cs, self.rng.random(n) * cs[-1], side="right")
        self._buf = a[np.minimum(draws, len(a) - 1)]
        self._bpos = 0

    def _candidates(self, u):
        a = self.active
        if self._warm_left <= 0 and self._since >= self.refresh_sweeps * len(a):
            # periodic uniform sweep: refreshes stale weights so no variable starves
            self._warm_left = len(a)
            self._since = 0
        if self._warm_left > 0:  # uniform sweeps without replacement
            n = len(self._perm)
            idx = (self._ppos + np.arange(min(u, n))) % n
            self._ppos = (self._ppos + len(idx)) % n
            self._warm_left -= len(idx)
            return self._perm[idx]
        if self._bpos + u > len(self._buf):
            self._refill()
        c = self._buf[self._bpos : self._bpos + u]
        self._bpos += u
        self._since += u
        # keep first occurrences in draw order
        _, first = np.unique(c, return_index=True)
        return c[np.sort(first)]

    def schedule(self, max_size=None):
        u = self.round_size if max_size is None else min(self.round_size, int(max_size))
        if len(self.active) == 0 or u <= 0:
            return np.empty(0, dtype=np.int64)
        u = min(u, len(self.active))
        # draw extra candidates when rounds are in flight: blocked ones are dropped
        extra = self.depth if self._warm_left <= 0 else 0
        c = self._free(self._candidates(min(u * (1 + extra), len(self.active))))[:u]
        return self._nonempty(c, u)


class RowSample:
    """A column-normalised sample of rows of X, held by the scheduler on rank 0.

    Built once by gathering up to ``max_rows`` rows (each rank contributes a random
    share proportional to its row count). The SAP threshold is raised to at least
    ``3 / sqrt(rows)`` so sampling noise is not taken for dependence. Columns are centred (dense) and scaled
    to unit norm, so ``S[:, C].T @ S[:, D]`` estimates the correlations of the
    columns C and D. Sparse data stays sparse (CSC, not centred: cosine
    similarity of the sparse columns). Float32 halves its memory:
    ``4 * rows * n_features`` bytes when dense.
    """

    def __init__(self, S):
        import scipy.sparse as sp

        self.sparse = sp.issparse(S)
        self.n_rows = S.shape[0]
        if self.sparse:
            S = sp.csc_matrix(S, dtype=np.float32)
            norms = np.sqrt(np.asarray(S.multiply(S).sum(axis=0)).ravel())
            norms[norms == 0] = 1.0
            S = S @ sp.diags(1.0 / norms).astype(np.float32)
            self.S = sp.csc_matrix(S)
            self.S.sort_indices()
            self._csc = (self.S.indptr.astype(np.int64), self.S.indices.astype(np.int32), self.S.data)
            self._csr = None  # rows of S, built on the first conflict list
            self._nb_rho = None
            self.list_work = 0  # entries walked to build conflict lists (each column's once)
        else:
            S = np.asarray(S, dtype=np.float32)
            S = S - S.mean(axis=0)
            norms = np.sqrt(np.einsum("ij,ij->j", S, S))
            norms[norms == 0] = 1.0
            self.S = np.asfortranarray(S / norms)

    def independent(self, cand, blocked, rho, limit) -> np.ndarray:
        """Greedy filter: mask of the candidates accepted in order, each with
        |corr| < ``rho`` to every accepted one and to every ``blocked`` id, at most
        ``limit`` of them, in one Numba call. Dense: only the correlations the
        decisions need are computed (a candidate stops at its first conflict).
        Sparse: each column's conflict list (the columns with |corr| >= ``rho``) is
        computed exactly the first time the column is a candidate and kept, so a
        round then costs the candidates' list lengths, not their dot products."""
        cand = np.ascontiguousarray(cand, dtype=np.int64)
        blocked = np.ascontiguousarray(blocked, dtype=np.int64)
        if self.sparse:
            self._build_lists(cand, float(rho))
            return _greedy_lists(self._nb_start, self._nb_len, self._pool, self._mark, cand, blocked, int(limit))
        return _greedy_dense(self.S, cand, blocked, float(rho), int(limit))

    def _build_lists(self, cand, rho) -> None:
        """Conflict lists of the candidates that have none yet (at threshold ``rho``)."""
        p = self.S.shape[1]
        if self._nb_rho != rho:  # (re)start the lists
            self._nb_rho = rho
            self._nb_start = np.full(p, -1, dtype=np.int64)
            self._nb_len = np.zeros(p, dtype=np.int64)
            self._pool = np.empty(1024, dtype=np.int32)
            self._used = 0
            self._mark = np.zeros(p, dtype=np.uint8)
            self._dot = np.zeros(p, dtype=np.float64)
        c = cand[cand < p]
        new = np.unique(c[self._nb_start[c] < 0])
        if len(new) == 0:
            return
        if self._csr is None:
            R = self.S.tocsr()
            R.sort_indices()
            self._csr = (R.indptr.astype(np.int64), R.indices.astype(np.int32), R.data)
        lens, nbrs, work = _conflict_lists(*self._csc, *self._csr, new, rho, self._dot)
        self.list_work += int(work)
        need = self._used + len(nbrs)
        if need > len(self._pool):
            grown = np.empty(max(need, 2 * len(self._pool)), dtype=np.int32)
            grown[: self._used] = self._pool[: self._used]
            self._pool = grown
        self._pool[self._used : need] = nbrs
        self._nb_start[new] = self._used + np.concatenate([[0], np.cumsum(lens)[:-1]])
        self._nb_len[new] = lens
        self._used = need

    def corr(self, C, D) -> np.ndarray:
        """|estimated correlation| between columns C (rows) and D (cols).

        Ids beyond the sampled columns (e.g. an intercept variable) are independent
        of everything."""
        p = self.S.shape[1]
        cm, dm = C < p, D < p
        Cc, Dc = np.where(cm, C, 0), np.where(dm, D, 0)
        if self.sparse:
            G = (self.S[:, Cc].T @ self.S[:, Dc]).toarray()
        else:
            G = self.S[:, Cc].T @ self.S[:, Dc]
        G = np.abs(G)
        if not (cm.all() and dm.all()):
            G[~cm, :] = 0.0
            G[:, ~dm] = 0.0
        return G


@numba.njit(cache=True, fastmath=True)  # fastmath: the dot products vectorise (order-free sums)
def _greedy_dense(S, cand, blocked, rho, limit):
    """:meth:`RowSample.independent` on a dense (Fortran, unit columns) sample."""
    p = S.shape[1]
    n = S.shape[0]
    m = cand.shape[0]
    keep = np.zeros(m, dtype=np.bool_)
    acc = np.empty(m, dtype=np.int64)
    na = 0
    for i in range(m):
        if na >= limit:
            break
        ci = cand[i]
        ok = True
        if ci < p:
            for t in range(blocked.shape[0] + na):
                k = blocked[t] if t < blocked.shape[0] else acc[t - blocked.shape[0]]
                if k >= p or k == ci:
                    continue
                s = np.float32(0.0)
                for r in range(n):
                    s += S[r, ci] * S[r, k]
                if abs(s) >= rho:
                    ok = False
                    break
        if ok:
            keep[i] = True
            acc[na] = ci
            na += 1
    return keep


@numba.njit(cache=True)
def _conflict_lists(cp, ci, cv, rp, ri, rv, cols, rho, dot):
    """For each column j of ``cols`` (unit columns; CSC ``cp, ci, cv`` and CSR ``rp, ri,
    rv`` of the same matrix): the columns k != j with |x_j . x_k| >= ``rho`` (exact dot
    products, float64; one walk over the rows of x_j). ``dot`` is a zeroed work array
    of the columns, left as found. Returns (list lengths, concatenated lists, entries
    walked)."""
    p = cp.shape[0] - 1
    lens = np.zeros(cols.shape[0], dtype=np.int64)
    out = np.empty(max(16, 4 * cols.shape[0]), dtype=np.int32)
    touched = np.empty(p, dtype=np.int64)
    n_out = 0
    work = 0
    for a in range(cols.shape[0]):
        j = cols[a]
        nt = 0
        for q in range(cp[j], cp[j + 1]):
            r = ci[q]
            v = np.float64(cv[q])
            work += rp[r + 1] - rp[r]
            for e in range(rp[r], rp[r + 1]):
                k = ri[e]
                if dot[k] == 0.0:
                    touched[nt] = k
                    nt += 1
                dot[k] += v * rv[e]
                if dot[k] == 0.0:  # exact cancellation: keep it marked
                    dot[k] = 1e-300
        for t in range(nt):
            k = touched[t]
            if k != j and abs(dot[k]) >= rho:
                if n_out == out.shape[0]:
                    grown = np.empty(2 * n_out, dtype=np.int32)
                    grown[:n_out] = out
                    out = grown
                out[n_out] = k
                n_out += 1
                lens[a] += 1
            dot[k] = 0.0
    return lens, out[:n_out].copy(), work


@numba.njit(cache=True)
def _greedy_lists(nb_start, nb_len, pool, mark, cand, blocked, limit):
    """Greedy filter over cached conflict lists: a candidate is accepted when no
    column of its list is blocked or already accepted (ids beyond the columns, e.g.
    an intercept, conflict with nothing). ``mark`` is a zeroed work array, left as found."""
    p = mark.shape[0]
    m = cand.shape[0]
    keep = np.zeros(m, dtype=np.bool_)
    for t in range(blocked.shape[0]):
        if blocked[t] < p:
            mark[blocked[t]] = 1
    na = 0
    for i in range(m):
        if na >= limit:
            break
        c = cand[i]
        ok = True
        if c < p:
            s = nb_start[c]
            for e in range(s, s + nb_len[c]):
                if mark[pool[e]]:
                    ok = False
                    break
        if ok:
            keep[i] = True
            na += 1
            if c < p:
                mark[c] = 2
    for t in range(blocked.shape[0]):
        if blocked[t] < p:
            mark[blocked[t]] = 0
    for i in range(m):
        if keep[i] and cand[i] < p:
            mark[cand[i]] = 0
    return keep


class SAPScheduler(PriorityScheduler):
    """Priority candidates filtered so that no two dependent variables share a round.

    Candidates turned away (dependent on an accepted one, or beyond the round) are
    offered first in the next round, so a dependency never starves a variable."""

    name = "sap"

    def _on_active(self):
        super()._on_active()
        carry = getattr(self, "_carry", None)
        if carry is not None and len(carry):
            self._carry = carry[np.isin(carry, self.active)]

    def __init__(self, n_vars, round_size=64, depth=0, seed=0, costs=None, eta=1e-2, warmup_sweeps=1,
                 rho=0.1, sample=None):
        super().__init__(n_vars, round_size, depth, seed, costs, eta, warmup_sweeps)
        self.rho = float(rho)
        self._carry = np.empty(0, dtype=np.int64)
        self.set_sample(sample)
        self.exact = False  # set by the engine when rounds run sequentially (no filter needed)

    def set_sample(self, sample) -> None:
        """The view of X the filter uses (rank 0; ``None`` elsewhere: no filter)."""
        self.sample = sample
        # sampling noise of a correlation estimate from s rows is ~ 1/sqrt(s): a
        # threshold below 3/sqrt(s) would mistake noise for dependence
        if sample is not None:
            self.rho = max(self.rho, 3.0 / np.sqrt(max(sample.n_rows, 1)))

    def schedule(self, max_size=None):
        u = self.round_size if max_size is None else min(self.round_size, int(max_size))
        if len(self.active) == 0 or u <= 0:
            return np.empty(0, dtype=np.int64)
        u = min(u, len(self.active))
        if self.sample is None or self.exact or (u == 1 and self.depth == 0):
            return PriorityScheduler.schedule(self, u)
        # candidates turned away last round come first (they cannot starve), then new draws
        carry = self._free(self._carry)
        want = max(0, min(2 * u, len(self.active)) - len(carry))
        extra = self.depth if self._warm_left <= 0 else 0
        new = self._free(self._candidates(min(want * (1 + extra), len(self.active)))) if want else carry[:0]
        new = new[~np.isin(new, carry)]
        c = np.concatenate([carry, new[:want]])
        c = self._nonempty(c, 2 * u)  # then filtered like any candidates
        if len(c) <= 1 and self.depth == 0:
            self._carry = c[:0]
            return c
        blocked = np.concatenate(list(self._recent)) if self._recent else np.empty(0, dtype=np.int64)
        keep = self.sample.independent(c, blocked, self.rho, u)
        self._carry = c[~keep][:u]
        nk = int(keep.sum())
        # candidates turned away by a dependency (not merely beyond the round size)
        last = np.nonzero(keep)[0]
        considered = (last[-1] + 1) if nk >= u and len(last) else len(c)
        self.rejected += int(considered - nk)
        return c[keep]


def make_scheduler(name, n_vars, round_size=64, depth=0, seed=0, costs=None, eta=1e-2, warmup_sweeps=1,
                   rho=0.1, sample=None) -> Scheduler:
    """Build a scheduler by name (``cyclic``, ``random``, ``priority``, ``sap``)."""
    if name == "cyclic":
        return CyclicScheduler(n_vars, round_size, depth, seed, costs)
    if name == "random":
        return RandomScheduler(n_vars, round_size, depth, seed, costs)
    if name == "priority":
        return PriorityScheduler(n_vars, round_size, depth, seed, costs, eta, warmup_sweeps)
    if name == "sap":
        return SAPScheduler(n_vars, round_size, depth, seed, costs, eta, warmup_sweeps, rho, sample)
    raise ConfigError(f"scheduler: unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")
