"""Estimators: one declaration per hyper-parameter, one contract for every app.

An app declares its hyper-parameters once, as :class:`Param` objects in a class
attribute ``params``::

    class KMeans(DataParallelEstimator):
        params = {"n_clusters": Param(8, int, lo=1, doc="number of clusters")}

From that declaration come the keyword-only constructor, validation with an
error naming the parameter (:meth:`Estimator._check_params`), scikit-learn's
``get_params`` / ``set_params`` (the class is a genuine ``BaseEstimator``), the
job-file schema (:meth:`Estimator.job_schema`), the docs table
(:meth:`Estimator.param_table_md`) and the job runner (:func:`job_app`).

The contract (the drivers in :mod:`petuum_mpi.drivers` implement ``fit``)::

    est.fit(X, y=None, *, test=None, callback=None)   # collective, at any rank count
    est.history_      # one metrics row per evaluation (vocabulary: METRICS)
    est.telemetry_    # engine figures (one dict)
    est.save(path); Est.load(path)

``X`` is a dataset folder (each rank reads its rows) or full arrays on every rank.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from .errors import ConfigError, DataError
from .params import check_param

__all__ = ["Param", "Estimator", "METRICS", "InputError", "job_app", "local_rows", "local_columns", "binary_labels"]

# ----------------------------------------------------------------------------- metric vocabulary
#: the names every app uses in its metrics rows (plots and summaries rely on them)
METRICS = {
    "iter": "evaluation point: clocks (data-parallel) or sweeps (model-parallel) done",
    "epoch": "passes over the training data",
    "time": "seconds since fit started (training + evaluation)",
    "objective": "the training objective being minimised (the app's docs define it)",
    "gap": "duality gap or another certificate of suboptimality (model-parallel apps)",
    "train_loss": "mean loss on the training data", "test_loss": "mean loss on the test data",
    "train_score": "score() on the training data", "test_score": "score() on the test data",
    "changed": "variables / assignments changed since the last evaluation",
    "round_size": "variables per STRADS round", "staleness_mean": "mean staleness of parameter-server reads",
    "staleness_max": "largest staleness seen", "wait_s": "seconds this rank waited for the parameter server",
}


class InputError(DataError, ValueError):
    """Bad array input to ``fit`` / ``predict`` (a ValueError too, as scikit-learn expects)."""


# ----------------------------------------------------------------------------- declarations
@dataclass
class Param:
    """One hyper-parameter.

    ``kind`` is bool, int, float, str or None (any value, not validated, never in
    job files); ``lo``/``hi`` bound numbers (``*_open`` excludes the bound),
    ``choices`` lists allowed strings, ``none_ok`` lets None through. ``section``
    is the job-file section (``"model"`` or ``"engine"``); ``job=False`` keeps the
    parameter out of job files (e.g. ``comm``).
    """

    default: Any
    kind: type | None = float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Sequence[str] | None = None
    none_ok: bool = False
    doc: str = ""
    section: str = "model"
    job: bool = True
    path: str | None = None  # a path in job files (Field.path: "file", "dir", "exists", "out")

    def check(self, name: str, value):
        if self.kind is None:
            return value
        return check_param(name, value, self.kind, self.lo, self.hi, self.lo_open, self.hi_open, self.choices,
                           self.none_ok or self.default is None)

    def field(self):
        """The job-file :class:`~petuum_mpi.config.Field` of this parameter."""
        from .config import Field

        chk = (lambda v, p=self: _msg(p, v)) if self.hi_open else None  # a bound Field cannot express
        return Field(self.kind, default=self.default, help=self.doc, choices=self.choices, min=self.lo,
                     max=self.hi, min_exclusive=self.lo_open, check=chk, path=self.path)

    def describe(self) -> str:
        kind = getattr(self.kind, "__name__", "any")
        if self.choices:
            return " \\| ".join(f"`{c!r}`" for c in self.choices)
        lo = "" if self.lo is None else f"{self.lo} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {self.hi}"
        return f"{lo}{kind}{hi}" + (" or None" if self.none_ok or self.default is None else "")


def _msg(p: Param, v) -> str | None:
    try:
        p.check("", v)
    except ConfigError as e:
        return str(e)[2:]
    return None


def _collect(cls) -> dict[str, Param]:
    out: dict[str, Param] = {}
    for base in reversed(cls.__mro__):
        out.update(base.__dict__.get("params", {}))
    return out


def _make_init(names: Sequence[str], defaults: dict):
    """A keyword-only ``__init__(self, *, a=..., b=...)`` that stores its arguments
    unchanged (scikit-learn's rule), with a real signature for ``get_params``."""
    args = ", ".join(f"{n}=_d[{n!r}]" for n in names)
    body = "\n".join(f"    self.{n} = {n}" for n in names) or "    pass"
    src = f"def __init__(self, *, {args}):\n{body}\n" if names else f"def __init__(self):\n{body}\n"
    ns: dict = {"_d": defaults}
    exec(src, ns)  # noqa: S102 - generated from identifiers checked below
    return ns["__init__"]


class Estimator(BaseEstimator):
    """Base of every app estimator: see the module docstring."""

    params: dict[str, Param] = {"comm": Param(None, None, doc="MPI communicator (default COMM_WORLD)", job=False)}
    #: name of the app in job files and model files (default: the class name in lower case)
    app_name: str | None = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        decl = _collect(cls)
        for n in decl:
            if not n.isidentifier() or n.startswith("_"):
                raise TypeError(f"{cls.__name__}.params: {n!r} is not a valid parameter name")
        if "__init__" not in cls.__dict__:  # an app may write its own __init__ (it must match the declaration)
            init = _make_init(list(decl), {n: p.default for n, p in decl.items()})
            init.__qualname__ = f"{cls.__qualname__}.__init__"
            cls.__init__ = init
        else:
            got = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
            if sorted(got) != sorted(decl):
                raise TypeError(f"{cls.__name__}.__init__ arguments {got} differ from its params {list(decl)}")

    # -- parameters ------------------------------------------------------------
    @classmethod
    def declared(cls) -> dict[str, Param]:
        return _collect(cls)

    def _check_params(self) -> SimpleNamespace:
        """Validated (converted) parameter values; ConfigError naming the first bad one."""
        return SimpleNamespace(**{n: p.check(n, getattr(self, n)) for n, p in self.declared().items()})

    @classmethod
    def name(cls) -> str:
        return cls.app_name or cls.__name__.lower()

    @classmethod
    def job_schema(cls) -> dict:
        """Job-file sections from the declarations (``[model]``, ``[engine]``, ...)."""
        from .config import Section

        secs: dict[str, dict] = {}
        for n, p in cls.declared().items():
            if p.job and p.kind is not None:
                secs.setdefault(p.section, {})[n] = p.field()
        doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        return {s: Section(f, help=doc if s == "model" else f"{s} settings") for s, f in secs.items()}

    @classmethod
    def param_table_md(cls) -> str:
        """The parameters as a Markdown table (for the docs)."""
        rows = ["| parameter | section | default | values | meaning |", "|---|---|---|---|---|"]
        for n, p in cls.declared().items():
            sec = f"`[{p.section}]`" if p.job and p.kind is not None else "(Python only)"
            rows.append(f"| `{n}` | {sec} | `{p.default!r}` | {p.describe()} | {p.doc} |")
        return "\n".join(rows)

    # -- the contract ------------------------------------------------------------
    def fit(self, X, y=None, *, test=None, callback: Callable[[dict], None] | None = None):
        raise NotImplementedError(f"{type(self).__name__}: derive from a driver's estimator class")

    def _fitted_names(self) -> list[str]:
        skip = {"history_", "telemetry_"}
        return [k for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_") and k not in skip
                and isinstance(v, (np.ndarray, int, float, np.integer, np.floating))]

    def model_arrays(self) -> tuple[dict, dict]:
        """``(arrays, attrs)`` of the fitted model, for ``model.h5`` (see :meth:`save`)."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        arrays = {k: np.asarray(getattr(self, k)) for k in self._fitted_names()}
        params = {n: getattr(self, n) for n, p in self.declared().items() if p.kind is not None}
        attrs = {"model": self.name(), "class": f"{type(self).__module__}:{type(self).__qualname__}",
                 "params": json.dumps(params), "telemetry": json.dumps(_plain(getattr(self, "telemetry_", {})))}
        return arrays, attrs

    def save(self, path: str) -> None:
        """Write the fitted model to an HDF5 file (call it on one rank)."""
        from .data.writer import save_arrays_h5

        save_arrays_h5(path, *self.model_arrays())

    @classmethod
    def load(cls, path: str):
        """The model written by :meth:`save` (or a job's ``model.h5``)."""
        from .data.writer import load_arrays_h5

        try:
            arrays, attrs = load_arrays_h5(path)
        except OSError as e:
            raise DataError(f"{path}: not a model file ({e})") from None
        if attrs.get("model") != cls.name():
            raise DataError(f"{path}: holds a {attrs.get('model')!r} model, not {cls.name()!r}")
        est = cls(**json.loads(attrs.get("params", "{}")))
        for k, v in arrays.items():
            setattr(est, k, v.item() if v.ndim == 0 else v)
        est.telemetry_ = json.loads(attrs.get("telemetry", "{}"))
        return est


def _plain(d):
    from .rundir import _jsonable

    return _jsonable(d)


# ----------------------------------------------------------------------------- data
def _is_path(X) -> bool:
    return isinstance(X, (str, os.PathLike))


def local_rows(X, y=None, comm=None, layout: str = "csr", est=None, reset: bool = True):
    """This rank's contiguous block of rows: ``(X_local, y_local or None, row_start, n_rows)``.

    ``X`` is a dataset folder (read with :func:`~petuum_mpi.data.read_matrix`; its
    labels are ``y``) or the full array on every rank (validated with scikit-learn's
    rules; ``est`` records ``n_features_in_`` when ``reset``). Never densifies sparse
    input; ``layout="dense"`` asks for a dense block.
    """
    import scipy.sparse as sp

    from .data import partition_rows, read_matrix
    from .runtime import get_comm

    comm = get_comm(comm)
    if _is_path(X):
        part = read_matrix(str(X), comm, layout=layout)
        if est is not None and reset:
            est.n_features_in_ = part.n_cols
        return part.X, part.y, part.row_start, part.n_rows
    Xa, ya = _validated(X, y, est, reset, layout)
    lo, hi = partition_rows(Xa.shape[0], comm.size)[comm.rank]
    Xl = Xa[lo:hi]
    if layout == "csc" and sp.issparse(Xl):
        Xl = sp.csc_matrix(Xl)
    return Xl, (None if ya is None else ya[lo:hi]), lo, Xa.shape[0]


def local_columns(X, y=None, comm=None, est=None, ones: float | None = None):
    """All rows, this rank's contiguous block of columns: ``(X_block CSR, y, col_start, n_cols)``.

    For apps whose variables are the *samples* (dual coordinate descent): a sample's
    inner product with a feature-partitioned weight vector is a sum of per-rank
    partials. ``ones`` appends a constant column (an intercept feature, as
    liblinear's ``intercept_scaling``). A dataset folder is read whole on every rank.
    """
    import scipy.sparse as sp

    from .data import partition_rows, read_matrix
    from .runtime import get_comm

    comm = get_comm(comm)
    if _is_path(X):
        from mpi4py import MPI

        part = read_matrix(str(X), MPI.COMM_SELF, layout="csr")
        Xa, ya = part.X, part.y
        if est is not None:
            est.n_features_in_ = part.n_cols
    else:
        Xa, ya = _validated(X, y, est, True, "csr")
    Xa = sp.csr_matrix(Xa)
    if ones is not None:
        Xa = sp.hstack([Xa, np.full((Xa.shape[0], 1), float(ones))], format="csr")
    lo, hi = partition_rows(Xa.shape[1], comm.size)[comm.rank]
    return sp.csr_matrix(Xa[:, lo:hi]), ya, lo, Xa.shape[1]


def binary_labels(y, est):
    """``y`` -> +-1 labels; sets ``est.classes_``. Errors read as scikit-learn's (InputError)."""
    from sklearn.utils.multiclass import check_classification_targets, type_of_target

    if y is None:
        raise InputError(f"{type(est).__name__} requires y to be passed, but the target y is None")
    try:
        check_classification_targets(y)
    except ValueError as e:
        raise InputError(str(e)) from None
    kind = type_of_target(y)
    if kind != "binary":
        raise InputError(f"Only binary classification is supported. The type of the target is {kind}.")
    est.classes_ = np.unique(y)
    if est.classes_.size < 2:
        raise InputError(f"{type(est).__name__} needs samples of 2 classes, but the data contain only one class: "
                         f"{est.classes_[0]!r}")
    return np.where(np.asarray(y) == est.classes_[1], 1.0, -1.0)


def _validated(X, y, est, reset, layout):
    from sklearn.utils.validation import check_array, check_X_y

    sparse = None if layout == "dense" else ["csr", "csc"]
    kw = dict(accept_sparse=sparse or False, dtype=np.float64, ensure_min_samples=1)
    try:
        if y is None:
            Xa, ya = check_array(X, **kw), None
        else:
            Xa, ya = check_X_y(X, y, **kw, y_numeric=False)
    except ValueError as e:
        raise InputError(str(e)) from None
    if est is not None:
        if reset:
            est.n_features_in_ = Xa.shape[1]
        elif Xa.shape[1] != est.n_features_in_:
            raise InputError(f"X has {Xa.shape[1]} features, but {type(est).__name__} is expecting "
                             f"{est.n_features_in_} features as input")
    return Xa, ya


# ----------------------------------------------------------------------------- job files
def job_app(cls, name: str | None = None) -> SimpleNamespace:
    """Turn an estimator class into a job-file app: ``SCHEMA`` and ``run_job(job, ctx)``.

    The runner builds the estimator from the job's sections (``[run] seed`` ->
    ``random_state``), writes every metrics row to the run directory, shows
    progress, fits on ``[data] train`` with ``[data] test``, saves ``model.h5`` and
    returns the last metrics row plus the telemetry as the summary.
    """
    from .config import merge_schemas

    schema = merge_schemas(getattr(cls, "base_schema", dict)(), cls.job_schema())

    def run_job(job: dict, ctx) -> dict:
        decl = cls.declared()
        kw = {n: job[p.section][n] for n, p in decl.items() if p.job and p.kind is not None and n in job.get(
            p.section, {})}
        if "random_state" in decl:
            kw["random_state"] = int(job["run"]["seed"])
        if "engine_options" in decl:
            kw["engine_options"] = {k: v for k, v in job.get("engine", {}).items() if k not in kw}
        if "eval_every" in decl and "eval_every" not in kw:
            kw["eval_every"] = int(job["run"].get("log_every", 1))
        est = cls(**kw, comm=ctx.comm)
        bar = ctx.progress(est.progress_total(), name or cls.name())
        seen = {"iter": 0}

        def callback(row):
            ctx.rundir.log_metrics(row)
            figs = {k: row[k] for k in ("objective", "gap", "test_score") if k in row}
            bar.update(n=max(0, int(row.get("iter", 0)) - seen["iter"]), **figs)
            seen["iter"] = max(seen["iter"], int(row.get("iter", 0)))

        try:
            est.fit(job["data"]["train"], test=job["data"].get("test"), callback=callback)
        finally:
            bar.close()
        ctx.rundir.save_model(*est.model_arrays())
        summary = {k: v for k, v in est.history_[-1].items() if k != "iter"} if est.history_ else {}
        summary["n_iter"] = int(getattr(est, "n_iter_", 0))
        summary["telemetry"] = _plain(est.telemetry_)
        return summary

    return SimpleNamespace(SCHEMA=schema, run_job=run_job, ESTIMATOR=cls)
