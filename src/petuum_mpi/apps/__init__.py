"""Apps built on the engines. Each app module provides ``SCHEMA`` (its job-file
sections, see :mod:`petuum_mpi.config`) and ``run_job(job, ctx)``.

Apps are imported lazily so ``petuum-mpi info`` and job validation stay fast.
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError

# app name in job files -> module
REGISTRY = {
    "lasso": "petuum_mpi.apps.lasso",
    "elastic_net": "petuum_mpi.apps.lasso",
    "l1_logistic": "petuum_mpi.apps.logistic_l1",
    "logreg": "petuum_mpi.apps.logreg",
    "mf": "petuum_mpi.apps.mf",
    "lda": "petuum_mpi.apps.lda",
}


def app_module(name: str):
    if name not in REGISTRY:
        raise ConfigError(f"app: unknown app {name!r} (known: {', '.join(sorted(REGISTRY))})")
    return importlib.import_module(REGISTRY[name])


def app_schema(name: str):
    mod = app_module(name)
    schema = mod.SCHEMA
    return schema(name) if callable(schema) else schema
