"""Convergence plots of a finished run (``petuum-mpi plot RUN_DIR``).

Reads ``metrics.jsonl`` and writes ``plots/convergence.png``: one panel per
numeric metric against the iteration, plus the suboptimality (objective minus the best value seen) against wall time.
Metrics that span several decades (duality gap, suboptimality) get a log axis.
Rows may carry a ``series`` key (e.g. one per scheduler or per alpha of a
path): each series is drawn as its own line.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

from .errors import UsageError
from .rundir import read_metrics

X_KEYS = ("iter", "epoch", "clock", "round", "sweep")
SKIP = set(X_KEYS) | {"wall", "time", "series", "rank", "alpha_index", "final"}
PRIORITY = [
    "objective", "loss", "train_objective", "dual_gap", "nnz", "loglik", "loglik_per_token", "perplexity",
    "train_rmse", "test_rmse", "rmse", "train_logloss", "test_logloss", "train_accuracy", "test_accuracy",
    "tokens_per_s", "updates_per_s", "staleness_mean", "staleness_max", "wait_s",
]


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plot_run(run_dir: str, out_dir: str | None = None) -> list[str]:
    """Write PNG plots for ``run_dir``; returns their paths."""
    try:
        rows = read_metrics(run_dir)
    except FileNotFoundError:
        raise UsageError(f"{run_dir}: no metrics.jsonl (is this a run directory?)") from None
    if not rows:
        raise UsageError(f"{run_dir}: metrics.jsonl is empty (the run recorded no iteration)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey = next((k for k in X_KEYS if k in rows[0]), None)
    series = defaultdict(list)
    for i, r in enumerate(rows):
        series[str(r.get("series", ""))].append((i, r))
    keys = []
    for r in rows:
        for k, v in r.items():
            if k not in SKIP and k not in keys and _numeric(v):
                keys.append(k)
    # a metric that never changes (e.g. engine counters of a run that used another solver) gets no panel
    keys = [k for k in keys if len({r[k] for r in rows if _numeric(r.get(k))}) > 1 or k in ("objective", "loss")]
    # the figures people look at first, then the rest in the order they appear
    seen = {k: i for i, k in enumerate(keys)}
    keys.sort(key=lambda k: (PRIORITY.index(k) if k in PRIORITY else len(PRIORITY), seen[k]))
    keys = keys[:11]
    time_key = "wall" if "wall" in rows[0] else ("time" if "time" in rows[0] else None)
    obj = next((k for k in ("objective", "loss", "train_objective") if k in keys), None)
    n = len(keys) + (1 if (obj and time_key) else 0)
    ncols = min(3, max(1, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    flat = axes.ravel()
    panels = [(k, xkey) for k in keys] + ([(obj, time_key)] if (obj and time_key) else [])
    for p, (ax, (k, xk)) in enumerate(zip(flat, panels)):
        allv = []
        # the last panel (objective vs time) shows the suboptimality, objective - best seen
        sub = obj is not None and time_key is not None and p == len(panels) - 1
        best = min((r[k] for r in rows if _numeric(r.get(k))), default=0.0) if sub else 0.0
        for name, items in series.items():
            xs, ys = [], []
            for i, r in items:
                if _numeric(r.get(k)) and (not sub or r[k] - best > 0):
                    xs.append(r[xk] if xk and _numeric(r.get(xk)) else i)
                    ys.append(r[k] - best)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 60 else None, label=name or None)
                allv += ys
        pos = [v for v in allv if v > 0]
        if allv and len(pos) == len(allv) and max(pos) / min(pos) > 100:
            ax.set_yscale("log")
        ax.set_xlabel({"wall": "wall time (s)", "time": "time (s)"}.get(xk, xk or "row"))
        ax.set_title(f"{k} - best" if sub else k)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    for ax in flat[len(panels):]:
        ax.axis("off")
    fig.suptitle(os.path.basename(os.path.normpath(run_dir)))
    fig.tight_layout()
    out_dir = out_dir or os.path.join(run_dir, "plots")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "convergence.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
