"""Job files: a TOML schema, strict validation and ``--set`` overrides.

A job file names an ``app`` and holds sections::

    app = "lasso"
    [data]   train = "data/lasso_sample"   test = "..."  (paths of datasets)
    [model]  the app's hyperparameters (scikit-learn names: alpha, tol, max_iter...)
    [engine] how it runs (scheduler, staleness, pipeline depth...)
    [run]    output_dir, name, seed, progress

The common keys live in :data:`COMMON_SCHEMA`; each app adds its own sections
(``apps/<app>.py: SCHEMA``). Validation is strict: an unknown key, a wrong type,
an out-of-range value or a missing file raises one :class:`ConfigError` that
names the key (``[model] alpha: ...``). Rank 0 reads and validates; every rank
receives the same resolved dict (:func:`load_job`).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .errors import ConfigError, collective

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REQUIRED = object()


@dataclass
class Field:
    """One key of a job section.

    ``type`` is one of ``bool, int, float, str, list``; ints are accepted where
    floats are expected. ``path`` = "file" | "dir" | "exists" checks the path,
    "out" (an output folder) only resolves it: relative paths are resolved
    against the job file's folder (also when they come from ``--set``).
    """

    type: type
    default: Any = REQUIRED
    help: str = ""
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    path: str | None = None
    item_type: type | None = None
    check: Callable[[Any], str | None] | None = None

    def describe(self) -> str:
        parts = [self.type.__name__]
        if self.choices:
            parts.append("one of " + ", ".join(map(repr, self.choices)))
        if self.min is not None:
            parts.append((">" if self.min_exclusive else ">=") + f" {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        return ", ".join(parts)


@dataclass
class Section:
    fields: dict[str, Field]
    help: str = ""
    # sub-tables allowed inside this section (e.g. [engine.straggler])
    subsections: dict[str, "Section"] = field(default_factory=dict)
    # a check across keys of the validated section: returns "key: problem" or None
    check: Callable[[dict], str | None] | None = None


def _check_name(v: str) -> str | None:
    if not v or v in (".", "..") or "/" in v or os.sep in v:
        return f"{v!r} is not a folder name"
    return None


COMMON_SCHEMA: dict[str, Section] = {
    "data": Section(
        {
            "train": Field(str, help="dataset folder (manifest.json + shards)", path="exists"),
            "test": Field(str, default=None, help="held-out dataset folder", path="exists"),
        },
        help="datasets in the petuum_mpi shard format (see docs/data-format.md)",
    ),
    "run": Section(
        {
            "output_dir": Field(
                str, default=None, path="out",
                help="parent folder of run directories (default: runs/ in the working directory)",
            ),
            "name": Field(str, default=None, help="run directory name (default: app-timestamp)", check=_check_name),
            "exists": Field(
                str, default="error", choices=("error", "new", "overwrite"),
                help="when output_dir/name exists: stop, write to name-2, name-3..., or replace it",
            ),
            "seed": Field(int, default=0, min=0, help="random seed"),
            "progress": Field(
                str, default="auto", choices=("auto", "bar", "lines", "off"), help="progress display on rank 0"
            ),
            "log_every": Field(int, default=1, min=1, help="record metrics every N iterations"),
        },
        help="where results go and how progress is shown",
    ),
}

DEFAULT_OUTPUT_DIR = "runs"  # [run] output_dir when unset: relative to the working directory
PATH_RULE = "relative paths in the job file and in --set values are relative to the job file's folder"

TOP_LEVEL = {"app": Field(str, help="which app runs the job")}


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(v), type(v).__name__
    )


def _coerce(key: str, f: Field, v: Any, base_dir: str) -> Any:
    if v is None:
        if f.default is None:
            return None
        raise ConfigError(f"{key}: a value is required")
    t = f.type
    if t is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {_type_name(v)} {v!r}")
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: expected a finite number, got {v!r}")
    elif t is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{key}: expected an integer, got {_type_name(v)} {v!r}")
    elif t is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{key}: expected true or false, got {_type_name(v)} {v!r}")
    elif t is str:
        if not isinstance(v, str):
            raise ConfigError(f"{key}: expected a string, got {_type_name(v)} {v!r}")
    elif t is list:
        if not isinstance(v, list):
            raise ConfigError(f"{key}: expected a list, got {_type_name(v)} {v!r}")
        if f.item_type is not None:
            v = [_coerce(f"{key}[{i}]", Field(f.item_type), x, base_dir) for i, x in enumerate(v)]
    if f.choices is not None and v not in f.choices:
        raise ConfigError(f"{key}: {v!r} is not one of {', '.join(map(repr, f.choices))}")
    if f.min is not None:
        if (f.min_exclusive and not v > f.min) or (not f.min_exclusive and not v >= f.min):
            op = ">" if f.min_exclusive else ">="
            raise ConfigError(f"{key}: must be {op} {f.min}, got {v!r}")
    if f.max is not None and not v <= f.max:
        raise ConfigError(f"{key}: must be <= {f.max}, got {v!r}")
    if f.path:
        p = v if os.path.isabs(v) else os.path.normpath(os.path.join(base_dir, v))
        if f.path == "file" and not os.path.isfile(p):
            raise ConfigError(f"{key}: file not found: {p}")
        if f.path == "dir" and not os.path.isdir(p):
            raise ConfigError(f"{key}: folder not found: {p}")
        if f.path == "exists" and not os.path.exists(p):
            raise ConfigError(f"{key}: not found: {p}")
        v = p
    if f.check is not None:
        msg = f.check(v)
        if msg:
            raise ConfigError(f"{key}: {msg}")
    return v


def _validate_section(name: str, sec: Section, raw: Mapping[str, Any], base_dir: str) -> dict:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"[{name}]: expected a table, got {_type_name(raw)}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in sec.subsections:
            out[k] = _validate_section(f"{name}.{k}", sec.subsections[k], v, base_dir)
            continue
        if k not in sec.fields:
            known = ", ".join(sorted(list(sec.fields) + list(sec.subsections))) or "none"
            raise ConfigError(f"[{name}] {k}: unknown key (known keys: {known})")
        out[k] = _coerce(f"[{name}] {k}", sec.fields[k], v, base_dir)
    for k, f in sec.fields.items():
        if k not in out:
            if f.default is REQUIRED:
                raise ConfigError(f"[{name}] {k}: missing required key ({f.help or f.describe()})")
            out[k] = f.default
    for k, s in sec.subsections.items():
        if k not in out:
            out[k] = _validate_section(f"{name}.{k}", s, {}, base_dir)
    if sec.check is not None:
        msg = sec.check(out)
        if msg:
            raise ConfigError(f"[{name}] {msg}")
    return out


def _all_checks(checks):
    if len(checks) <= 1:
        return checks[0] if checks else None
    return lambda sec: next((m for m in (c(sec) for c in checks) if m), None)


def merge_schemas(*schemas: Mapping[str, Section]) -> dict[str, Section]:
    """Union of section schemas; an app may add keys to a common section."""
    merged: dict[str, Section] = {}
    for schema in schemas:
        for name, sec in schema.items():
            if name in merged:
                fields = dict(merged[name].fields)
                fields.update(sec.fields)
                subs = dict(merged[name].subsections)
                subs.update(sec.subsections)
                checks = [c for c in (merged[name].check, sec.check) if c is not None]
                merged[name] = Section(fields, merged[name].help or sec.help, subs, _all_checks(checks))
            else:
                merged[name] = Section(dict(sec.fields), sec.help, dict(sec.subsections), sec.check)
    return merged


def validate(raw: Mapping[str, Any], schema: Mapping[str, Section], base_dir: str = ".") -> dict:
    """Validate a parsed job against ``schema`` (sections) and return the resolved job."""
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k in TOP_LEVEL:
            out[k] = _coerce(k, TOP_LEVEL[k], v, base_dir)
        elif k not in schema:
            known = ", ".join(sorted(list(TOP_LEVEL) + list(schema)))
            raise ConfigError(f"{k}: unknown section or key (known: {known})")
    for name, sec in schema.items():
        out[name] = _validate_section(name, sec, raw.get(name, {}), base_dir)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (["section", "key"], value); value parsed as TOML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, value = text.split("=", 1)
    path = [p.strip() for p in key.strip().split(".") if p.strip()]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"--set {key.strip()}: the value is not UTF-8 text") from None
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word is taken as a string
    return path, parsed


def apply_overrides(raw: dict, overrides: Sequence[str]) -> dict:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for p in path[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {p} is not a section")
            node = nxt
        node[path[-1]] = value
    return raw


def read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}, line {line}); "
            "save the job file as UTF-8"
        ) from None
    except FileNotFoundError:
        raise ConfigError(f"job file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"job file is a folder: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the job file: {e.strerror or e}") from None


def resolve_job(path: str, overrides: Sequence[str] = ()) -> dict:
    """Read, override and validate a job file (serial; see :func:`load_job`)."""
    from .apps import app_schema

    raw = apply_overrides(read_toml(path), overrides)
    app = raw.get("app")
    if app is None:
        raise ConfigError(f"{path}: missing required key 'app'")
    if not isinstance(app, str):
        raise ConfigError(f"app: expected a string, got {_type_name(app)} {app!r}")
    schema = merge_schemas(COMMON_SCHEMA, app_schema(app, base_dir=os.path.dirname(os.path.abspath(path))))
    try:
        job = validate(raw, schema, base_dir=os.path.dirname(os.path.abspath(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if job["run"]["output_dir"] is None:
        job["run"]["output_dir"] = os.path.abspath(DEFAULT_OUTPUT_DIR)
    job["job_file"] = os.path.abspath(path)
    return job


def load_job(path: str, overrides: Sequence[str] = (), comm=None) -> dict:
    """Rank 0 resolves the job; all ranks get the same dict or the same error."""
    from .runtime import get_comm

    comm = get_comm(comm)
    job, err = None, None
    if comm.rank == 0:
        try:
            job = resolve_job(path, overrides)
        except ConfigError as e:
            err = str(e)
    job, err = comm.bcast((job, err), root=0)
    if err is not None:
        raise collective(ConfigError(err))
    return job


def to_toml(obj: Mapping[str, Any]) -> str:
    """Write a resolved job back as TOML (None values are left out)."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        raise TypeError(type(v))

    lines: list[str] = []
    tables: list[tuple[str, Mapping]] = []
    for k, v in obj.items():
        if isinstance(v, Mapping):
            tables.append((k, v))
        elif v is not None:
            lines.append(f"{k} = {fmt(v)}")

    def emit(prefix: str, table: Mapping) -> None:
        lines.append(f"\n[{prefix}]")
        subs = []
        for k, v in table.items():
            if isinstance(v, Mapping):
                subs.append((f"{prefix}.{k}", v))
            elif v is not None:
                lines.append(f"{k} = {fmt(v)}")
        for p, t in subs:
            emit(p, t)

    for k, t in tables:
        emit(k, t)
    return "\n".join(lines).lstrip() + "\n"
