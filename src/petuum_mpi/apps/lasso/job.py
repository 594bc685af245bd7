"""Job files of the ``lasso`` and ``elastic_net`` apps: one fit, or a path when ``alpha`` is omitted."""

from __future__ import annotations

import time

import numpy as np

from ...config import Field, Section, merge_schemas
from .estimator import ElasticNet, Lasso
from .path import enet_path

ESTIMATORS = {"lasso": Lasso, "elastic_net": ElasticNet}
PATH_FIELDS = {
    "alpha": Field(float, default=None, min=0.0, min_exclusive=True, help="penalty strength (omit: a path)"),
    "n_alphas": Field(int, default=20, min=1, help="path length when alpha is omitted"),
    "eps": Field(float, default=1e-3, min=0.0, min_exclusive=True, help="alpha_min / alpha_max of the path"),
}


def SCHEMA(app: str = "lasso") -> dict:
    """Job-file sections (from the estimator's declarations, plus the path keys)."""
    return merge_schemas(ESTIMATORS.get(app, Lasso).job_schema(), {"model": Section(PATH_FIELDS)})


def run_job(job: dict, ctx) -> dict:
    """Run a ``lasso`` / ``elastic_net`` job (collective)."""
    app = job.get("app", "lasso")
    cls = ESTIMATORS[app]
    m = job["model"]
    kw = {n: job[p.section][n] for n, p in cls.declared().items() if p.job and p.kind is not None
          and n in job.get(p.section, {}) and n != "alpha"}
    kw["random_state"] = int(job.get("run", {}).get("seed", 0))
    every = int(job.get("run", {}).get("log_every", 1))
    counter = {"k": 0}
    bar = ctx.progress(m.get("n_alphas") if m.get("alpha") is None else None, app)

    def log_row(row):
        counter["k"] += 1
        if counter["k"] % every == 0:
            ctx.rundir.log_metrics({k: v for k, v in row.items() if not isinstance(v, str)})
        bar.update(1, **{k: row[k] for k in ("alpha", "objective", "dual_gap", "nnz") if k in row})

    t0 = time.perf_counter()
    try:
        if m.get("alpha") is None:  # a path
            kw.pop("warm_start", None)
            kw.setdefault("l1_ratio", 1.0)  # lasso

            def on_alpha(i, a, prob, n_iter, gap, st):
                row = {"iter": i, "alpha": a, "time": time.perf_counter() - t0, "dual_gap": gap / prob.n,
                       "nnz": int(np.count_nonzero(prob.w)), "n_iter": n_iter}
                row.update({k: v for k, v in st.items() if isinstance(v, (int, float))})
                log_row(row)

            alphas, coefs, gaps = enet_path(job["data"]["train"], eps=m["eps"], n_alphas=m["n_alphas"],
                                            comm=ctx.comm, on_alpha=on_alpha, **kw)
            summary = {"n_alphas": len(alphas), "alpha_min": float(alphas[-1]),
                       "nnz_last": int(np.count_nonzero(coefs[:, -1]))}
            arrays = {"alphas": alphas, "coefs": coefs, "dual_gaps": gaps}
        else:
            est = cls(alpha=m["alpha"], comm=ctx.comm, **kw)
            est.fit(job["data"]["train"], test=job["data"].get("test"), callback=log_row)
            last = est.history_[-1]
            summary = {"objective": last["objective"], "dual_gap": est.dual_gap_,
                       "nnz": int(np.count_nonzero(est.coef_)), "n_iter": est.n_iter_, **est.telemetry_}
            if "test_loss" in last:
                summary["test_mse"] = last["test_loss"]
            arrays = {"coef": est.coef_, "intercept": np.array([est.intercept_])}
    finally:
        bar.close()
    summary["time"] = time.perf_counter() - t0
    ctx.rundir.save_model(arrays, {"app": app, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    ctx.rundir.log(f"{app}: " + ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in summary.items()))
    return summary
