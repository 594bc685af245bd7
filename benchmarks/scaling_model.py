"""Scaling models of STRADS (Lasso regimes) and Bösen (LDA K=50/1000, MF-like tables): measure, fit, predict.

    python benchmarks/scaling_model.py                    # measure at 1, 2, 4 ranks (4: MPIR_CVAR_NOLOCAL=1),
                                                          # fit, check, predict 8-256 ranks, write plots
    python benchmarks/scaling_model.py --model-only       # refit from the saved JSON (no measuring)

Steps (each writes/reads JSON in ``--out``, default ``benchmarks/results/scaling``):

1. ``strads-P.json`` (``mpiexec -n P python scaling_model.py --strads-measure``): Allreduce time vs message
   size (min of N) and, per Lasso regime of ``bench_lasso.py --size small`` (``large`` halved: 10,000 x
   20,000, 800k nnz, 2,000 planted), the fit's wall time (min of
   ``--repeat``), the engine's telemetry (rounds, updates, push/pull/schedule time) and every Allreduce
   outside the engine's rounds (count, bytes, time: gap passes, working-set checks, Gram matrices).
2. ``bosen-P.jsonl``: ``bench_bosen.py --traffic`` and ``--lda`` rows (bytes and time per clock per rank,
   sparse wire format and dense path).
3. The model (this file's functions; no measured figure is written in the code): fitted on 1 and 2 ranks,
   checked against 4 ranks, then refitted with every rank count and evaluated on an InfiniBand network
   (``--ib-alpha`` latency, ``--ib-bw`` bandwidth). See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PREDICT_P = (8, 16, 32, 64, 128, 256)


# ============================================================== the model (pure arithmetic)
def allreduce_time(P, nbytes, alpha, beta):
    """Allreduce of ``nbytes`` over ``P`` ranks: 2 log2(P) latencies + 2 (P-1)/P n per-byte times."""
    if P <= 1:
        return 0.0
    return 2.0 * math.log2(P) * alpha + 2.0 * (P - 1) / P * nbytes * beta


def fit_alpha_beta(P, sizes, times):
    """(alpha, beta) of :func:`allreduce_time` from measured (bytes, seconds) at ``P`` ranks (least squares
    of the relative error, so that small messages fix the latency and large ones the bandwidth)."""
    t = np.asarray(times, float)
    A = np.column_stack([np.full(len(sizes), 2.0 * math.log2(P)), 2.0 * (P - 1) / P * np.asarray(sizes, float)])
    (a, b), *_ = np.linalg.lstsq(A / t[:, None], np.ones(len(t)), rcond=None)
    return max(float(a), 0.0), max(float(b), 0.0)


def power_fit(ps, qs, default):
    """Exponent g of q(P) = q(P0) (P / P0)^g through measured (P, q) (P0 = smallest P); ``default`` with one point."""
    ps, qs = np.asarray(ps, float), np.asarray(qs, float)
    ok = qs > 0
    if ok.sum() < 2:
        return default
    return float(np.polyfit(np.log(ps[ok]), np.log(qs[ok]), 1)[0])


def strads_inputs(m1, m2, net2, more=()):
    """Model inputs of one regime from its 1-rank and 2-rank measurements (``more``: further P >= 2 ones,
    used only for the growth exponents of the counts). ``net2`` = (alpha, beta) measured at 2 ranks."""
    # 1 rank: wall-clock parts scaled by the share of a core the fit got (CPU / wall), i.e. a dedicated core
    k = min(1.0, m1["cpu"] / m1["wall"]) if m1.get("cpu") else 1.0
    upd1 = max(m1["updates"], 1)
    c_u = k * max(m1["time_rounds"] - m1["time_schedule"], 0.0) / upd1  # s per update with all rows on one rank
    s_u = m2["time_schedule"] / m2["updates"] if m2["updates"] else m1["time_schedule"] / upd1
    u2 = m2["updates"] / m2["rounds"] if m2["rounds"] else 0.0
    h = 0.0
    if m2["rounds"]:
        comm = m2["rounds"] * allreduce_time(2, 8 * (2 * u2 + 1), *net2)
        h = max(0.0, (m2["time_rounds"] - m2["time_schedule"] - c_u * m2["updates"] / 2 - comm) / m2["rounds"])
    # outside the rounds: o(P) = o_div / P + o_rep (gap passes and Gram products split by rows; the Gram
    # solver's sweeps, O(p) screening and working-set selection, Python per call do not), through the CPU
    # seconds at 1 and 2 ranks (CPU time is not inflated by waiting for a core); o_rep >= the timed Gram sweeps
    o1 = k * (m1["wall"] - m1["time_rounds"])
    o2 = m2["compute_cpu"] - c_u * m2["updates"] / 2 - s_u * m2["updates"] if "compute_cpu" in m2 else o1 / 2
    o_rep = min(max(2.0 * o2 - o1, k * m1["gram_time"]), o1)
    o_div = o1 - o_rep
    ms = [m2, *more]
    ps = [2] + [m["ranks"] for m in more]
    grow = {k: power_fit(ps, [m[k] for m in ms], d)
            for k, d in (("updates", 0.0), ("ar_calls", 0.0), ("ar_bytes", 0.0))}
    grow["round"] = power_fit(ps, [m["updates"] / m["rounds"] if m["rounds"] else 0 for m in ms], 1.0)
    return dict(wall1=k * m1["wall"], cpu_share1=k, c_u=c_u, s_u=s_u, h=h, o_div=o_div, o_rep=o_rep,
                updates2=m2["updates"],
                round2=u2, ar_calls2=m2["ar_calls"], ar_bytes2=m2["ar_bytes"], grow=grow, round_cap=4096)


def strads_counts(inp, P):
    """(updates, rounds, outside Allreduce calls, bytes) at P >= 2 ranks."""
    g, f = inp["grow"], P / 2.0
    upd = inp["updates2"] * f ** g["updates"]
    u = min(inp["round2"] * f ** g["round"], inp["round_cap"]) if inp["round2"] else 0.0
    rounds = upd / u if u else 0.0
    return upd, rounds, inp["ar_calls2"] * f ** g["ar_calls"], inp["ar_bytes2"] * f ** g["ar_bytes"]


def strads_time(inp, P, alpha, beta):
    """Predicted wall time of the fit at P ranks and its parts (compute, rounds' comm, scheduling, rest)."""
    if P == 1:
        return inp["wall1"], {}
    upd, rounds, calls, nbytes = strads_counts(inp, P)
    u = upd / rounds if rounds else 0.0
    parts = dict(compute=inp["c_u"] * upd / P + inp["o_div"] / P + inp["o_rep"],
                 rounds_comm=rounds * (inp["h"] + allreduce_time(P, 8 * (2 * u + 1), alpha, beta)),
                 schedule=inp["s_u"] * upd,
                 other_comm=calls * (allreduce_time(P, 0, alpha, beta)) + allreduce_time(P, nbytes, 0, beta))
    return sum(parts.values()), parts


# ---------------------------------------------------------------- Bösen: bytes from the wire format
def pad8(x):
    return 8 * np.ceil(np.asarray(x, float) / 8)


def unit_bytes(cols, itemsize):
    """Dense chunk bytes of one unit (row): its int64 id + values."""
    return 8 + cols * itemsize


def delta_bytes(rows, cols, itemsize, density, entries=True):
    """Chunk bytes of one rank's whole delta (sparse wire format: per unit, sparse when
    12 + nnz (2 + itemsize) <= unit bytes / 4, else dense) and of the dense path, and the dirty units.
    ``entries``: a ``density`` of all entries nonzero at random (a unit's nonzeros are binomial);
    else a ``density`` of whole rows."""
    from scipy.stats import binom

    dense_u = unit_bytes(cols, itemsize)
    if not entries:
        dirty = density * rows
        return float(dirty * dense_u), float(dirty * dense_u), float(dirty)
    m = np.arange(1, cols + 1)
    units = rows * binom.pmf(m, cols, density)  # units with m nonzeros
    sparse_u = 12 + m * ((2 if cols < 65536 else 4) + itemsize)
    per_unit = np.where(sparse_u <= dense_u / 4, sparse_u, dense_u)
    return float(units @ per_unit), float(units.sum() * dense_u), float(units.sum())


def bosen_bytes(P, rows, cols, itemsize, b_all_sparse, b_all_dense, first_fetch_clocks=0, fetch_share=1.0,
                log_clocks=1.0):
    """Bytes per clock per rank at P ranks: (inc sparse, pull sparse, inc dense, pull dense).

    Incs: the (P-1)/P of a rank's delta owned elsewhere, plus a 64-byte header per owner.
    Dense pulls fetch every remote unit in a ``fetch_share`` of the clocks (1: the whole table is read
    every clock). Sparse pulls read each other owner's delta log since the last fetch, which holds every
    origin's chunks for that owner's units (~ one rank's whole delta per clock, times ``log_clocks``
    clocks of deltas per fetch), unless the units are fewer bytes.
    ``first_fetch_clocks`` > 0: the first whole-table fetch spread over that many clocks."""
    if P <= 1:
        return 0.0, 0.0, 0.0, 0.0
    table = rows * unit_bytes(cols, itemsize)
    remote = (P - 1) / P
    head = 64.0 * (P - 1)
    first = remote * table / first_fetch_clocks if first_fetch_clocks else 0.0
    inc_s = remote * b_all_sparse + head
    inc_d = remote * b_all_dense + head
    pull_d = fetch_share * remote * table
    pull_s = min(log_clocks * (P - 1) * b_all_sparse, pull_d) + first
    return inc_s, pull_s, inc_d, pull_d


def clock_messages(P):
    """Latencies per clock per rank: a put and two gets (header, log/units) per other owner, a barrier."""
    return 0 if P <= 1 else 3 * (P - 1) + 2 * math.ceil(math.log2(P))


def clock_time(compute1, P, nbytes, c_byte, alpha, beta, fixed=0.0):
    """Time per clock per rank: compute / P + ``fixed`` local work (the same at every P) + per-byte CPU
    (pack, apply) + network bytes and latencies."""
    if P <= 1:
        return compute1 + fixed
    return compute1 / P + fixed + nbytes * (c_byte + beta) + clock_messages(P) * alpha


def fit_c_byte(t2, compute1, nbytes2, alpha2, beta2, fixed=0.0):
    """Per-byte CPU cost from the time per clock at 2 ranks (what the other terms do not explain)."""
    if nbytes2 <= 0:
        return 0.0
    return max(0.0, (t2 - compute1 / 2 - fixed - clock_messages(2) * alpha2) / nbytes2 - beta2)


# ============================================================== measuring (under mpiexec)


def strads_measure(out, repeat):
    sys.path.insert(0, HERE)
    from lasso_data import alpha_max, genotypes

    from mpi4py import MPI

    import petuum_mpi.apps.lasso.estimator as est_mod
    import petuum_mpi.strads.engine as eng
    from petuum_mpi.apps.lasso import Lasso, lasso_path
    from petuum_mpi.data.synth import make_regression

    comm = MPI.COMM_WORLD
    P = comm.size
    res = {"ranks": P, "nolocal": os.environ.get("MPIR_CVAR_NOLOCAL") == "1", "regimes": {}}
    if P > 1:  # Allreduce vs message size, min of N
        sizes, times = [8, 1024, 65536, 1 << 20, 4 << 20], []
        for s in sizes:
            a, b = np.ones(s // 8), np.empty(s // 8)
            best = np.inf
            for _ in range(200 if s <= 65536 else 20):
                comm.Barrier()
                t0 = time.perf_counter()
                comm.Allreduce(a, b)
                best = min(best, time.perf_counter() - t0)
            times.append(comm.allreduce(best, op=MPI.MAX))
        res["allreduce"] = {"sizes": sizes, "times": times}
    # every Allreduce outside the engine's rounds, and every engine's telemetry
    ar = {"calls": 0, "bytes": 0, "time": 0.0, "engine_time": 0.0, "cpu": 0.0}
    orig = eng.allreduce_sum

    def counter(key):
        def counted(x, comm=None, **kw):
            t0, c0 = time.perf_counter(), time.process_time()
            r = orig(x, comm, **kw)
            ar[key] += time.perf_counter() - t0
            ar["cpu"] += time.process_time() - c0
            ar["calls"] += 1
            ar["bytes"] += np.asarray(x).nbytes
            return r
        return counted

    est_mod.allreduce_sum = counter("time")
    eng.allreduce_sum = counter("engine_time")  # engine.allreduce: also counted in the engine's time_comm
    gram = {"time": 0.0}  # the Gram solver's sweeps: replicated on every rank
    gram_cd = est_mod.K.gram_cd

    def timed_gram_cd(*a):
        t0 = time.perf_counter()
        r = gram_cd(*a)
        gram["time"] += time.perf_counter() - t0
        return r

    est_mod.K.gram_cd = timed_gram_cd
    tels = []
    init = eng.Telemetry.__init__

    def tel_init(self):
        init(self)
        tels.append(self)

    eng.Telemetry.__init__ = tel_init

    def run(name, fit, nnz, shape):
        fit(1e-2)  # warm-up: compilation
        best = None
        for _ in range(repeat):
            ar.update(calls=0, bytes=0, time=0.0, engine_time=0.0, cpu=0.0)
            gram["time"] = 0.0
            tels.clear()
            comm.Barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            fit(1e-7)
            cpu = time.process_time() - c0
            comm.Barrier()
            wall = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            row = dict(wall=wall, ar_calls=ar["calls"], ar_bytes=ar["bytes"],
                       ar_time=ar["time"] + ar["engine_time"], gram_time=gram["time"], nnz=int(nnz),
                       shape=list(shape), ranks=P)
            for k in ("rounds", "updates", "t_schedule", "t_push", "t_pull", "t_comm", "t_run"):
                row[{"t_run": "time_rounds"}.get(k, k.replace("t_", "time_"))] = float(sum(getattr(t, k)
                                                                                            for t in tels))
            row["time_schedule"] = comm.bcast(row["time_schedule"], root=0)  # rank 0 schedules
            # compute = wall - time in collectives (the rounds' and the others'), the slowest rank's
            row["compute"] = comm.allreduce(wall - row["time_comm"] - ar["time"], op=MPI.MAX)
            row["ar_time"] = comm.allreduce(row["ar_time"], op=MPI.MAX)
            # CPU seconds of the fit (not inflated by waiting for a core), and outside the Allreduces
            # (the rounds' Iallreduce waits, which MPICH spends polling, are still inside)
            row["cpu"] = comm.allreduce(cpu, op=MPI.MAX)
            row["compute_cpu"] = comm.allreduce(cpu - ar["cpu"], op=MPI.MAX)
            if best is None or wall < best["wall"]:
                best = row
        res["regimes"][name] = best
        if comm.rank == 0:
            print(f"# {P} ranks {name}: {best['wall']:.3f}s rounds {best['rounds']:.0f} "
                  f"updates {best['updates']:.0f} allreduces {best['ar_calls']}", flush=True)

    kw = dict(max_iter=100000)
    Xa, ya, _ = make_regression(5000, 10000, nnz=500_000, group_size=4, corr=0.8, seed=0)
    run("tall", lambda t: Lasso(alpha=alpha_max(Xa, ya, True) / 20, tol=t, **kw).fit(Xa, ya), Xa.nnz, Xa.shape)
    run("path", lambda t: lasso_path(Xa, ya, n_alphas=50, eps=1e-2, tol=t, **kw), Xa.nnz, Xa.shape)
    Xl, yl, _ = make_regression(10000, 20000, nnz=800_000, group_size=4, corr=0.8, n_informative=2000, seed=0)
    run("large", lambda t: Lasso(alpha=alpha_max(Xl, yl, False) / 20, fit_intercept=False, tol=t, **kw).fit(Xl, yl),
        Xl.nnz, Xl.shape)
    del Xl
    Xb, yb, _ = make_regression(100, 20000, dense=True, group_size=4, corr=0.8, seed=1)
    run("wide", lambda t: Lasso(alpha=alpha_max(Xb, yb, True) / 20, tol=t, **kw).fit(Xb, yb), Xb.size, Xb.shape)
    Xg, yg = genotypes(2000, 20000)
    run("genomics", lambda t: Lasso(alpha=alpha_max(Xg, yg, True) / 10, tol=t, **kw).fit(Xg, yg), Xg.size, Xg.shape)
    if comm.rank == 0:
        with open(out, "w") as f:
            json.dump(res, f, indent=1)


def measure(out, ranks, repeat, lda_sweeps):
    """Run the measuring steps at every rank count (4 and more: MPIR_CVAR_NOLOCAL=1)."""
    os.makedirs(out, exist_ok=True)
    py, mpiexec = sys.executable, os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for P in ranks:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if P > 2:
            env.update(MPIR_CVAR_NOLOCAL="1", MPIR_CVAR_POLLS_BEFORE_YIELD="1")
        load = os.getloadavg()[0]
        print(f"## measuring at {P} ranks (load {load:.1f})", flush=True)
        cmds = [[__file__, "--strads-measure", "--out", os.path.join(out, f"strads-{P}.json"),
                 "--repeat", str(repeat)]]
        jl = os.path.join(out, f"bosen-{P}.jsonl")
        if os.path.exists(jl):
            os.remove(jl)
        cmds += [[os.path.join(HERE, "bench_bosen.py"), "--traffic", "--repeat", "1", "--clocks", "4", "--jsonl", jl],
                 [os.path.join(HERE, "bench_bosen.py"), "--lda", "--repeat", "1", "--lda-sweeps", str(lda_sweeps),
                  "--jsonl", jl]]
        for c in cmds:
            subprocess.run([mpiexec, "-n", str(P), py, *c], env=env, check=True)
        with open(os.path.join(out, f"load-{P}.json"), "w") as f:
            json.dump({"before": load, "after": os.getloadavg()[0]}, f)


# ============================================================== fitting, checking, predicting
def load_strads(out):
    ms = {}
    for fn in glob.glob(os.path.join(out, "strads-*.json")):
        with open(fn) as f:
            m = json.load(f)
        ms[m["ranks"]] = m
    return ms


def net_of(m):
    a = m["allreduce"]
    return fit_alpha_beta(m["ranks"], a["sizes"], a["times"])


def load_bosen(out):
    """{P: {(name, density): {"inc": (sparse, dense), "pull": ..., "time": ...}}} from the bench rows."""
    res = {}
    for fn in glob.glob(os.path.join(out, "bosen-*.jsonl")):
        with open(fn) as f:
            for line in f:
                r = json.loads(line)
                kind = "inc" if "incs" in r["what"] else "pull" if "pulls" in r["what"] else "time"
                if r["what"].startswith("LDA app"):
                    K = int(re.search(r"K=(\d+)", r["data"]).group(1))
                    words = 1000 * int(re.search(r"(\d+)k words", r["data"]).group(1))
                    sw, cl = map(int, re.search(r"(\d+) sweeps x (\d+) clocks", r["data"]).groups())
                    key = ("lda", K)
                    spec = dict(rows=words, cols=K, itemsize=4, clocks=sw * cl, cps=cl)
                else:
                    g = re.match(r"(\d+)x(\d+) (\w+), ([\d.]+)% (entries|rows)", r["data"])
                    rows, cols, dt, pct, what = g.groups()
                    key = (r["what"].split(" incs")[0].split(" pulls")[0].split(" time")[0], float(pct) / 100)
                    spec = dict(rows=int(rows), cols=int(cols), itemsize=np.dtype(dt).itemsize,
                                entries=what == "entries", density=float(pct) / 100)
                d = res.setdefault(r["ranks"], {}).setdefault(key, {"spec": spec})
                d[kind] = (r["value"], r["baseline"])
    return res


def rel_err(pred, meas):
    return (pred - meas) / meas if meas else float("nan")


def strads_report(ms, ib, plots):
    """Fit on 1-2 ranks, check every further measured P, refit with all, predict on InfiniBand."""
    lines, preds = [], {}
    if 1 not in ms or 2 not in ms:
        return ["(strads: 1- and 2-rank measurements missing)"], preds
    net2 = net_of(ms[2])
    def net_str(P):
        a, b = net_of(ms[P])
        return f"alpha {a * 1e6:.2f} us, {1e-9 / max(b, 1e-30):.2f} GB/s"

    lines.append("Allreduce fit, 2 ranks (shm): " + net_str(2)
                 + "".join(f"; {P} ranks{' NOLOCAL' if ms[P]['nolocal'] else ''}: {net_str(P)}"
                           for P in sorted(ms) if P > 2))
    lines.append("| regime | P | measured s | predicted s (from 1-2 ranks) | error | CPU outside Allreduces meas / "
                 "predicted compute (s) | error "
                 "| updates meas / pred | rounds meas / pred | outside Allreduces meas / pred |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for name in ms[1]["regimes"]:
        m1, m2 = ms[1]["regimes"][name], ms[2]["regimes"][name]
        inp = strads_inputs(m1, m2, net2)
        for P in sorted(ms):
            m = ms[P]["regimes"][name]
            if P == 1:
                t, parts, c = inp["wall1"], {}, (m["updates"], m["rounds"], m["ar_calls"])
                comp = inp["wall1"]
            else:
                t, parts = strads_time(inp, P, *net_of(ms[P]))
                c = strads_counts(inp, P)[:3]
                comp = parts["compute"] + parts["schedule"]  # time outside any collective
            lines.append(f"| {name} | {P}{' NOLOCAL' if ms[P]['nolocal'] else ''} | {m['wall']:.3f} | {t:.3f} | "
                         f"{rel_err(t, m['wall']):+.0%} | {m['compute_cpu']:.3f} / {comp:.3f} | "
                         f"{rel_err(comp, m['compute_cpu']):+.0%} | {m['updates']:.0f} / {c[0]:.0f} | "
                         f"{m['rounds']:.0f} / {c[1]:.0f} | {m['ar_calls']} / {c[2]:.0f} |")
        full = strads_inputs(m1, m2, net2, [ms[P]["regimes"][name] for P in sorted(ms) if P > 2])
        preds[name] = {P: strads_time(full, P, *ib) for P in PREDICT_P}
        preds[name]["inputs"] = full
    lines.append("")
    lines.append(f"Predicted on InfiniBand (alpha {ib[0] * 1e6:.1f} us, {1e-9 / ib[1]:.0f} GB/s), speedup T(1)/T(P) "
                 "and the largest part at 256 ranks:")
    lines.append("| regime | " + " | ".join(f"P={P}" for P in PREDICT_P) + " | at 256: parts (s) | P=256 with h = 0 |")
    lines.append("|---|" + "---|" * (len(PREDICT_P) + 2))
    for name, pr in preds.items():
        t1 = pr["inputs"]["wall1"]
        parts = pr[256][1]
        h0 = strads_time(dict(pr["inputs"], h=0.0), 256, *ib)[0]
        lines.append(f"| {name} | " + " | ".join(f"{t1 / pr[P][0]:.1f}x" for P in PREDICT_P) + " | "
                     + ", ".join(f"{k} {v:.3g}" for k, v in parts.items()) + f" | {t1 / h0:.1f}x |")
    lines.append("Inputs per regime: " + "; ".join(
        f"{n}: c_u {pr['inputs']['c_u'] * 1e6:.3g} us/update, s_u {pr['inputs']['s_u'] * 1e6:.3g} us/update, "
        f"h {pr['inputs']['h'] * 1e3:.3g} ms/round, o_div {pr['inputs']['o_div']:.3g} s, "
        f"o_rep {pr['inputs']['o_rep']:.3g} s"
        for n, pr in preds.items()))
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axs = plt.subplots(1, 2, figsize=(11, 4.5))
        Ps = [1, 2, 4] + list(PREDICT_P)
        for i, (name, pr) in enumerate(preds.items()):
            col, inp, mp = f"C{i}", pr["inputs"], sorted(ms)
            t1 = inp["wall1"]
            axs[0].plot(Ps, [1.0] + [t1 / strads_time(inp, P, *ib)[0] for P in Ps[1:]], "-", color=col, label=name)
            axs[0].plot(mp, [ms[1]["regimes"][name]["wall"] / ms[P]["regimes"][name]["wall"] for P in mp], "o",
                        color=col)
            comp = [t1] + [sum(v for k, v in strads_time(inp, P, *ib)[1].items() if k in ("compute", "schedule"))
                           for P in Ps[1:]]
            axs[1].plot(Ps, comp, "-", color=col, label=name)
            axs[1].plot(mp, [ms[P]["regimes"][name]["compute_cpu"] for P in mp], "o", color=col)
        axs[0].plot([1, 256], [1, 256], ":", color="grey", label="ideal")
        axs[0].set(xscale="log", yscale="log", xlabel="ranks P", ylabel="speedup T(1)/T(P)",
                   title="wall time: model on InfiniBand (lines),\nmeasured here, loaded 2 cores (dots; 4 = NOLOCAL)")
        axs[1].set(xscale="log", yscale="log", xlabel="ranks P", ylabel="seconds",
                   title="compute outside collectives: model (lines),\nmeasured CPU seconds (dots)")
        axs[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plots["strads"], dpi=110)
    return lines, preds


def bosen_report(bs, ib, plots):
    lines = []
    if 1 not in bs or 2 not in bs:
        return ["(bosen: 1- and 2-rank measurements missing)"]
    nets = {}
    for P in bs:
        fn = os.path.join(OUT, f"strads-{P}.json")
        if P > 1 and os.path.exists(fn):
            with open(fn) as f:
                nets[P] = net_of(json.load(f))
    lines.append("| table, delta per clock | P | incs sparse meas / pred | pulls sparse meas / pred | "
                 "incs dense meas / pred | pulls dense meas / pred | time sparse meas / pred | "
                 "time dense meas / pred |")
    lines.append("|---|---|---|---|---|---|---|---|")
    fits, curves = {}, {}
    for key in bs[2]:
        spec = bs[2][key]["spec"]
        R, C, isz = spec["rows"], spec["cols"], spec["itemsize"]
        table = R * unit_bytes(C, isz)
        m2 = bs[2][key]
        if key[0] == "lda":
            # The app runs `cps(P)` clocks per sweep, so a rank handles tok(P) = 1 / (P cps(P)) of the tokens
            # per clock: compute per clock ~ tok(P), one rank's delta ~ tok(P)^g (g = 1 unless P > 2 was measured;
            # fewer collisions per entry make g < 1). The delta at 2 ranks is the inverse of the inc formula.
            cps = {P: bs[P][key]["spec"]["cps"] for P in bs if key in bs[P]}
            kappa = power_fit(sorted(cps), [cps[P] for P in sorted(cps)], 0.0)

            def tok(P, c1=cps[1], kappa=kappa):
                return 1.0 / (P * c1 * P ** kappa)
            b2 = (2 * (m2["inc"][0] - 64), 2 * (m2["inc"][1] - 64))
            more = [P for P in bs if P > 2 and key in bs[P]]
            grow = tuple(power_fit([tok(2)] + [tok(P) for P in more],
                                   [b2[j]] + [bs[P][key]["inc"][j] * P / (P - 1) for P in more], 1.0) for j in (0, 1))
            # how the app reads (2-rank bytes): the share of clocks that fetch (dense path: the whole remote
            # table per fetch) and how many clocks of deltas a sparse fetch's log spans
            first2 = table / 2 / bs[2][key]["spec"]["clocks"]
            reads = (m2["pull"][1] / (table / 2), max(0.0, m2["pull"][0] - first2) / b2[0])
            c1 = min(bs[1][key]["time"])  # one rank: no communication, both paths do the same work

            def deltas(P, g=(1.0, 1.0), b2=b2, tok=tok, table=table):
                return tuple(min(b2[j] * (tok(P) / tok(2)) ** g[j], table) for j in (0, 1))

            def comp(P, c1=c1, tok=tok):  # the whole job's compute per clock (clock_time divides by P)
                return c1 * tok(P) / tok(1) * P
            fixed = (0.0, 0.0)
        else:  # each rank incs `density` of the table and reads all of it every clock, at every P
            b = delta_bytes(R, C, isz, spec["density"], spec["entries"])
            grow, reads = (1.0, 1.0), (1.0, 1.0)

            def deltas(P, g=None, b=b):
                return b[0], b[1]

            def comp(P):
                return 0.0
            fixed = bs[1][key]["time"]  # the 1-rank time per clock: local work that P does not split

        def nbytes(P, check):
            ff = bs[P][key]["spec"].get("clocks", 0) if check else 0
            return bosen_bytes(P, R, C, isz, *deltas(P, (1.0, 1.0) if check else grow), ff, *reads)
        pred = {P: nbytes(P, True) for P in bs if key in bs[P]}
        a2, be2 = nets.get(2, (0.0, 0.0))
        cb = (fit_c_byte(m2["time"][0], comp(2), pred[2][0] + pred[2][1], a2, be2, fixed[0]),
              fit_c_byte(m2["time"][1], comp(2), pred[2][2] + pred[2][3], a2, be2, fixed[1]))
        label = f"LDA app K={key[1]}" if key[0] == "lda" else f"{key[0]}, {spec['density']:.1%}"
        for P in sorted(pred):
            m = bs[P][key]
            al, be = nets.get(P, (0.0, 0.0))
            ts = clock_time(comp(P), P, pred[P][0] + pred[P][1], cb[0], al, be, fixed[0])
            td = clock_time(comp(P), P, pred[P][2] + pred[P][3], cb[1], al, be, fixed[1])
            cells = [f"{m[k][j]:.3g} / {pred[P][i]:.3g}" for i, (k, j) in enumerate((("inc", 0), ("pull", 0),
                                                                                    ("inc", 1), ("pull", 1)))]
            cells += [f"{m['time'][0]:.3g} / {ts:.3g}", f"{m['time'][1]:.3g} / {td:.3g}"]
            lines.append(f"| {label} | {P}{' NOLOCAL' if P > 2 else ''} | " + " | ".join(cells) + " |")
        fits[label] = dict(compute1=comp(1), fixed=fixed, c_byte=cb, grow=grow, reads=reads, lda=key[0] == "lda")
        curves[label] = {}
        for P in (2, 4) + PREDICT_P:
            bb = nbytes(P, False) if P in bs and key in bs[P] else \
                bosen_bytes(P, R, C, isz, *deltas(P, grow), 0, *reads)
            curves[label][P] = dict(bytes_sparse=bb[0] + bb[1], bytes_dense=bb[2] + bb[3],
                                    clocks_per_sweep=1.0 / (P * tok(P)) if key[0] == "lda" else None,
                                    t_sparse=clock_time(comp(P), P, bb[0] + bb[1], cb[0], *ib, fixed[0]),
                                    t_dense=clock_time(comp(P), P, bb[2] + bb[3], cb[1], *ib, fixed[1]))
    lines.append("")
    lines.append(f"Predicted on InfiniBand (alpha {ib[0] * 1e6:.1f} us, {1e-9 / ib[1]:.0f} GB/s), steady state (no "
                 "first fetch): bytes per clock per rank (incs + pulls) sparse / dense, and time per clock "
                 "sparse / dense")
    lines.append("| table | " + " | ".join(f"P={P}" for P in PREDICT_P) + " |")
    lines.append("|---|" + "---|" * len(PREDICT_P))
    for label, cv in curves.items():
        lines.append(f"| {label} | " + " | ".join(f"{cv[P]['bytes_sparse']:.2g} / {cv[P]['bytes_dense']:.2g} B, "
                                                 f"{cv[P]['t_sparse'] * 1e3:.3g} / {cv[P]['t_dense'] * 1e3:.3g} ms"
                                                 for P in PREDICT_P) + " |")
        if cv[2]["clocks_per_sweep"]:
            lines.append(f"| {label}: seconds per sweep sparse / dense (1 rank: {fits[label]['compute1']:.3g}) | "
                         + " | ".join(f"{cv[P]['t_sparse'] * cv[P]['clocks_per_sweep']:.3g} / "
                                      f"{cv[P]['t_dense'] * cv[P]['clocks_per_sweep']:.3g}" for P in PREDICT_P) + " |")
    lines.append("Fitted per table: " + "; ".join(
        f"{k}: 1 rank {v['compute1'] + v['fixed'][0]:.3g} s/clock, CPU per byte sparse {v['c_byte'][0] * 1e9:.3g} "
        f"ns, dense {v['c_byte'][1] * 1e9:.3g} ns" + (f", delta ~ tokens per rank and clock^{v['grow'][0]:.2f} "
                                                      f"(sparse), fetches in {v['reads'][0]:.0%} of the clocks, "
                                                      f"a log spans {v['reads'][1]:.2f} clocks" if v["lda"] else "")
        for k, v in fits.items()))
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axs = plt.subplots(1, 2, figsize=(11, 4.5))
        keys = {(f"LDA app K={k[1]}" if k[0] == "lda" else f"{k[0]}, {bs[2][k]['spec']['density']:.1%}"): k
                for k in bs[2]}
        shown = [k for k in curves if k.startswith("LDA app") or k.endswith("K=1000, 1.0%") or
                 (k.startswith("MF") and k.endswith(", 1.0%"))]
        for i, label in enumerate(shown):
            col, cv, key = f"C{i}", curves[label], keys[label]
            Ps = sorted(cv)
            mp = [P for P in sorted(bs) if P > 1 and key in bs[P]]
            for j, (mode, ls, mk) in enumerate((("sparse", "-", "o"), ("dense", "--", "s"))):
                axs[0].plot(Ps, [cv[P][f"bytes_{mode}"] for P in Ps], ls, color=col, label=f"{label} {mode}")
                axs[0].plot(mp, [bs[P][key]["inc"][j] + bs[P][key]["pull"][j] for P in mp], mk, color=col,
                            mfc="none" if j else col)
                if label.startswith("LDA app"):  # seconds per sweep: clocks per sweep x time per clock
                    axs[1].plot([1] + Ps, [fits[label]["compute1"]] + [cv[P][f"t_{mode}"] * cv[P]["clocks_per_sweep"]
                                                                      for P in Ps], ls, color=col,
                                label=f"{label} {mode}")
                    meas = [min(bs[1][key]["time"])] + [bs[P][key]["time"][j] * bs[P][key]["spec"]["cps"]
                                                         for P in mp]
                    axs[1].plot([1] + mp, meas, mk, color=col, mfc="none" if j else col)
        axs[0].set(xscale="log", yscale="log", xlabel="ranks P", ylabel="bytes per clock per rank (incs + pulls)",
                   title="bytes: model (lines: sparse -, dense --), measured (o, s)")
        axs[1].set(xscale="log", yscale="log", xlabel="ranks P", ylabel="seconds per sweep",
                   title="LDA app: model on InfiniBand (lines), measured here (o, s)")
        axs[1].legend(fontsize=7)
        axs[0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(plots["bosen"], dpi=110)
    return lines


OUT = os.path.join(HERE, "results", "scaling")


def main():
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=2, help="timed fits per regime (min is kept)")
    ap.add_argument("--lda-sweeps", type=int, default=2)
    ap.add_argument("--model-only", action="store_true")
    ap.add_argument("--strads-measure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ib-alpha", type=float, default=1.5e-6, help="InfiniBand latency (s)")
    ap.add_argument("--ib-bw", type=float, default=10e9, help="InfiniBand bandwidth (bytes/s)")
    ap.add_argument("--plots", default=os.path.join(HERE, "..", "docs", "img"))
    a = ap.parse_args()
    OUT = a.out
    if a.strads_measure:
        strads_measure(a.out, a.repeat)
        return
    if not a.model_only:
        measure(a.out, [int(x) for x in a.ranks.split(",")], a.repeat, a.lda_sweeps)
    ib = (a.ib_alpha, 1.0 / a.ib_bw)
    os.makedirs(a.plots, exist_ok=True)
    plots = {"strads": os.path.join(a.plots, "scaling-strads.png"), "bosen": os.path.join(a.plots, "scaling-bosen.png")}
    loads = {}
    for fn in glob.glob(os.path.join(a.out, "load-*.json")):
        with open(fn) as f:
            loads[fn.split("-")[-1][:-5]] = json.load(f)
    print("load average (1 min) before/after each rank count's measurements: "
          + ", ".join(f"{P} ranks {v['before']:.1f}/{v['after']:.1f}" for P, v in sorted(loads.items())))
    print("\n## STRADS (Lasso regimes)")
    lines, _ = strads_report(load_strads(a.out), ib, plots)
    print("\n".join(lines))
    print("\n## Bösen (bytes and time per clock per rank)")
    print("\n".join(bosen_report(load_bosen(a.out), ib, plots)))


if __name__ == "__main__":
    main()
