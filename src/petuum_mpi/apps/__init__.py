"""Apps built on the engines, and the app registry of job files.

An app is a module that provides ``SCHEMA`` (its job-file sections, see
:mod:`petuum_mpi.config`) and ``run_job(job, ctx)``, or an estimator class built on
:mod:`petuum_mpi.drivers` (adapted by :func:`petuum_mpi.estimator.job_app`). A job
file names it by

* a built-in name (``REGISTRY``): ``app = "lasso"``;
* an entry point of installed packages, group ``petuum_mpi.apps``:
  ``[project.entry-points."petuum_mpi.apps"] kmeans = "mypkg.kmeans:KMeans"``;
* a module path, optionally with an attribute: ``app = "mypkg.kmeans:KMeans"``;
* a Python file, relative to the job file's folder (like every path in a job file; to
  the working directory when there is no job file): ``app = "kmeans.py:KMeans"``.

Without an attribute the module's ``SCHEMA`` / ``run_job`` are used, else its
``APP`` (an estimator class). Apps are imported lazily so ``petuum-mpi info`` and
job validation stay fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

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
ENTRY_POINT_GROUP = "petuum_mpi.apps"
_CACHE: dict = {}


def _entry_point(name: str):
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep
    return None


def _import_file(path: str) -> ModuleType:
    # named after the file (Numba's cache records the module name), unless that name is taken by another file
    path = os.path.abspath(path)
    key = os.path.splitext(os.path.basename(path))[0]
    have = sys.modules.get(key)
    if have is not None and os.path.abspath(getattr(have, "__file__", "") or "") == path:
        return have
    if have is not None or not key.isidentifier():
        key = "petuum_mpi_plugin_" + "".join(c if c.isalnum() else "_" for c in path)
        if key in sys.modules:
            return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[key] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[key]
        raise
    return mod


def _as_app(obj, name: str):
    """A module with SCHEMA + run_job, or an app made from an estimator class."""
    from ..estimator import Estimator, job_app

    if isinstance(obj, type) and issubclass(obj, Estimator):
        return job_app(obj)
    if isinstance(obj, ModuleType) and not hasattr(obj, "run_job") and hasattr(obj, "APP"):
        return _as_app(obj.APP, name)
    if hasattr(obj, "SCHEMA") and callable(getattr(obj, "run_job", None)):
        return obj
    raise ConfigError(f"app: {name!r} is neither an app module (SCHEMA and run_job) nor an estimator class "
                      "built on petuum_mpi.drivers")


def _load(name: str, base_dir: str | None):
    if name in REGISTRY:
        return importlib.import_module(REGISTRY[name])
    ep = _entry_point(name)
    if ep is not None:
        return _as_app(ep.load(), name)
    target, _, attr = name.partition(":")
    try:
        if target.endswith(".py"):
            cands = [target] if os.path.isabs(target) else [os.path.join(base_dir or os.getcwd(), target)]
            path = next((c for c in cands if os.path.isfile(c)), None)
            if path is None:
                raise ConfigError(f"app: file not found: {target} (looked in {', '.join(cands)})")
            mod = _import_file(path)
        elif "." in target or attr:
            mod = importlib.import_module(target)
        else:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(f"app: unknown app {name!r} (known: {known}; or a module path 'pkg.module[:Class]', "
                              "a file 'path.py[:Class]', or an installed entry point)")
    except ImportError as e:
        raise ConfigError(f"app: cannot import {target!r}: {e}") from None
    obj = mod
    if attr:
        if not hasattr(mod, attr):
            raise ConfigError(f"app: {target!r} has no attribute {attr!r}")
        obj = getattr(mod, attr)
    return _as_app(obj, name)


def app_module(name: str, base_dir: str | None = None):
    """The app named ``name`` (an object with ``SCHEMA`` and ``run_job``)."""
    key = (name, base_dir)
    if key not in _CACHE:
        _CACHE[key] = _load(name, base_dir)
    return _CACHE[key]


def app_schema(name: str, base_dir: str | None = None):
    mod = app_module(name, base_dir)
    schema = mod.SCHEMA
    return schema(name) if callable(schema) else schema


__all__ = ["REGISTRY", "ENTRY_POINT_GROUP", "app_module", "app_schema"]
