"""Snapshots of parameter-server tables in HDF5, written atomically and checksummed.

Layout: ``<snapshot_dir>/ckpt-<clock:08d>/shard-<rank:05d>.h5`` (each rank's
units of every table, plus the app's state of that rank under ``app/``) and a
``manifest.json`` written last by rank 0, holding the sha256 of every shard.
Every file is written to a temporary name, fsynced and renamed; a checkpoint
without a manifest (a crash mid-write) is ignored, and one whose files do not
match their checksums is skipped with a warning (:func:`read_snapshot` then
resumes from the newest intact one). A failed write (disk full...) removes the
new checkpoint and leaves the older ones as they were; after a complete one,
all but the newest ``ps.keep_snapshots`` are deleted (0 = keep all). Tables are
stored by unit, so a snapshot can be resumed at a different rank count (the
app state then comes from the same rank number if it exists). The server is
reached only through its public API (``ps.shards()``, ``ps.clock_value``,
``ps.comm``, ``ps.me``, ``ps.P``, ``ps.snapshot_dir``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import numpy as np

from ..errors import DataError, collective

MANIFEST = "manifest.json"
DEFAULT_KEEP = 3  # snapshots kept when ``ps.keep_snapshots`` is not set ([engine] keep_snapshots)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def os_problem(e: BaseException) -> str:
    """``OSError`` -> its reason in a few words ("no space left on device")."""
    no = getattr(e, "errno", None)
    if no:
        return os.strerror(no)[:1].lower() + os.strerror(no)[1:]
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def h5_bytes(fill) -> bytes:
    """An HDF5 file built in memory by ``fill(h5py.File)``, as bytes.

    Files are built in memory and written with plain file I/O: HDF5 reports a
    write error at close time (a full disk) only as an ignored exception, which
    would leave a silently truncated file behind.
    """
    import io

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        fill(f)
    return buf.getvalue()


def write_file_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path + ".tmp"``, fsync, rename; on failure remove the tmp file and re-raise."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _write_shard(path: str, ps, state) -> str:
    """Write this rank's shard (atomically); returns its sha256."""

    def fill(f):
        f.attrs["clock"] = ps.clock_value
        f.attrs["rank"] = ps.me
        for t in ps.shards():
            g = f.create_group("tables/" + t.name)
            g.create_dataset("units", data=t.layout.owned_units(ps.me))
            g.create_dataset("data", data=np.asarray(t.data))
        if state:
            g = f.create_group("app")
            for k, v in state.items():
                g.create_dataset(str(k), data=np.asarray(v))

    data = h5_bytes(fill)
    write_file_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def _write_manifest(d: str, man: dict) -> None:
    write_file_atomic(os.path.join(d, MANIFEST), json.dumps(man, indent=1).encode())
    _fsync_dir(d)


def _checkpoints(snapshot_dir: str) -> list[str]:
    """Checkpoint folders of ``snapshot_dir``, newest first."""
    if not snapshot_dir or not os.path.isdir(snapshot_dir):
        return []
    names = [n for n in os.listdir(snapshot_dir) if n.startswith("ckpt-") and not n.endswith(".tmp")]
    return [os.path.join(snapshot_dir, n) for n in sorted(names, reverse=True)]


def prune_snapshots(snapshot_dir: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` complete checkpoints (0 = keep all); returns the removed ones.

    Folders without a manifest older than the newest kept one (failed writes) go too.
    """
    if keep <= 0:
        return []
    removed, kept = [], 0
    for d in _checkpoints(snapshot_dir):
        complete = os.path.isfile(os.path.join(d, MANIFEST))
        if kept < keep:
            kept += complete
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def write_snapshot(ps, state) -> str:
    """Collective: every rank writes its shard, then rank 0 the manifest (with checksums).

    On failure (disk full, permissions...) the new checkpoint is removed, older
    ones stay intact and every rank raises the same one-line :class:`DataError`.
    After success, old checkpoints beyond ``ps.keep_snapshots`` are pruned.
    """
    comm = ps.comm
    d = os.path.join(ps.snapshot_dir, f"ckpt-{ps.clock_value:08d}")
    err = None
    if ps.me == 0:
        try:
            os.makedirs(d, exist_ok=True)
            stale = os.path.join(d, MANIFEST)
            if os.path.exists(stale):
                os.remove(stale)  # being rewritten: invalid until the new manifest lands
        except OSError as e:
            err = f"{d}: {os_problem(e)}"
    err = comm.bcast(err, root=0)
    if err:
        raise collective(DataError(f"snapshot failed: {err}"))
    fn = f"shard-{ps.me:05d}.h5"
    digest = None
    try:
        digest = _write_shard(os.path.join(d, fn), ps, state)
    except OSError as e:
        err = f"{os.path.join(d, fn)}: {os_problem(e)}"
    except Exception as e:  # noqa: BLE001 - reported on every rank below
        err = f"{os.path.join(d, fn)}: {e}"
    results = comm.allgather((err, digest))
    if ps.me == 0 and not any(e for e, _ in results):
        _fsync_dir(d)
        man = {
            "clock": ps.clock_value,
            "nranks": ps.P,
            "files": [f"shard-{r:05d}.h5" for r in range(ps.P)],
            "sha256": {f"shard-{r:05d}.h5": h for r, (_, h) in enumerate(results)},
            "tables": {
                t.name: {"rows": t.layout.rows, "cols": t.layout.cols, "dtype": str(t.layout.dtype), "bw": t.layout.bw}
                for t in ps.shards()
            },
        }
        try:
            _write_manifest(d, man)
        except OSError as e:
            err = f"{os.path.join(d, MANIFEST)}: {os_problem(e)}"
        results[0] = (err, results[0][1])
    errs = comm.bcast([e for e, _ in results if e], root=0)
    if errs:
        if ps.me == 0:
            shutil.rmtree(d, ignore_errors=True)  # older checkpoints stay as they were
        comm.Barrier()
        more = f" (and {len(errs) - 1} more rank(s))" if len(errs) > 1 else ""
        raise collective(DataError(f"snapshot failed: {errs[0]}{more}; the previous snapshots are intact"))
    if ps.me == 0:
        prune_snapshots(ps.snapshot_dir, int(getattr(ps, "keep_snapshots", DEFAULT_KEEP)))
    comm.Barrier()
    return d


def _manifest(d: str) -> tuple[dict | None, str | None]:
    try:
        with open(os.path.join(d, MANIFEST)) as fh:
            man = json.load(fh)
    except FileNotFoundError:
        return None, f"no {MANIFEST} (incomplete)"
    except (OSError, ValueError) as e:
        return None, f"{MANIFEST} unreadable ({os_problem(e) if isinstance(e, OSError) else e})"
    if not isinstance(man, dict) or not isinstance(man.get("files"), list) or "tables" not in man:
        return None, f"{MANIFEST} is not a snapshot manifest"
    return man, None


def check_file(d: str, fn: str, man: dict) -> str | None:
    """Why ``d/fn`` is not the file the manifest describes, or None if it is."""
    import h5py

    p = os.path.join(d, fn)
    if not os.path.isfile(p):
        return f"{fn} is missing"
    want = (man.get("sha256") or {}).get(fn)
    try:
        if want is not None:
            if sha256_file(p) != want:
                return f"{fn}: checksum mismatch (corrupt)"
        else:  # a snapshot from before checksums: at least it must open
            with h5py.File(p, "r"):
                pass
    except OSError as e:
        return f"{fn}: unreadable ({os_problem(e)})"
    return None


def latest_snapshot(snapshot_dir: str) -> str | None:
    """The newest checkpoint folder with a manifest whose files all exist and match their checksums."""
    for d in _checkpoints(snapshot_dir):
        man, why = _manifest(d)
        if man is not None and not any(check_file(d, fn, man) for fn in man["files"]):
            return d
    return None


def _warn(msg: str) -> None:
    sys.stderr.write(f"petuum-mpi: warning: {msg}\n")
    sys.stderr.flush()


def _choose(ps, path: str | None) -> str | None:
    """Collective: the checkpoint to resume from (``path``, or the newest intact one).

    Every rank checks its share of the files of a candidate; a skipped candidate
    is reported by rank 0 in one line. Raises the same DataError on every rank
    when ``path`` is broken or no checkpoint is intact; returns None when there
    is no checkpoint at all.
    """
    comm = ps.comm
    if path is not None:
        cands = [path]
    else:
        cands = comm.bcast(_checkpoints(ps.snapshot_dir) if ps.me == 0 else None, root=0)
    skipped = []
    for d in cands:
        man, why = _manifest(d) if ps.me == 0 else (None, None)
        man, why = comm.bcast((man, why), root=0)
        if man is None and path is None and why.startswith("no "):
            continue  # a crash mid-write: not a snapshot (silently ignored)
        if man is not None:
            mine = [check_file(d, fn, man) for fn in man["files"][ps.me :: ps.P]]
            bad = [w for ws in comm.allgather([w for w in mine if w]) for w in ws]
            why = "; ".join(bad) if bad else None
        if why is None:
            if skipped and ps.me == 0:
                _warn(f"resuming from {d}, not from the newer " + "; ".join(skipped))
            return d
        if path is not None:
            raise collective(DataError(f"{path}: not a usable snapshot: {why}"))
        skipped.append(f"{d} ({why})")
    if skipped:
        raise collective(DataError(f"no intact snapshot in {ps.snapshot_dir}: " + "; ".join(skipped)))
    if ps.me == 0:
        _warn(f"resume: no snapshot in {ps.snapshot_dir} yet: starting from scratch")
    return None


def read_snapshot(ps, path: str | None):
    """Collective: load tables from ``path`` (or the newest intact checkpoint).

    Returns ``(clock, state)``, or None when ``snapshot_dir`` holds no checkpoint
    (rank 0 then says so on stderr).
    """
    import h5py

    d = _choose(ps, path)
    if d is None:
        return None
    with open(os.path.join(d, MANIFEST)) as fh:
        man = json.load(fh)
    shards = ps.shards()
    for t in shards:
        lay = t.layout
        m = man["tables"].get(t.name)
        if m is None:
            raise collective(DataError(f"{d}: no table {t.name!r} in the snapshot (it holds "
                                       f"{', '.join(sorted(man['tables'])) or 'none'}): written by another "
                                       "model or version"))
        if (m["rows"], m["cols"], m["dtype"]) != (lay.rows, lay.cols, str(lay.dtype)):
            raise collective(DataError(f"{d}: table {t.name!r} in the snapshot is {m}, expected "
                                       f"rows={lay.rows} cols={lay.cols} dtype={lay.dtype}"))
    state = None
    full = {}
    try:
        for r, fn in enumerate(man["files"]):
            with h5py.File(os.path.join(d, fn), "r") as f:
                for t in shards:
                    g = f["tables/" + t.name]
                    units = g["units"][:]
                    bw_old = man["tables"][t.name]["bw"]
                    if bw_old == t.layout.bw:
                        mine = units % ps.P == ps.me
                        if mine.any():
                            t.data[units[mine] // ps.P] = g["data"][:][mine]
                    else:  # other block width (other rank count): go through full rows
                        if t.name not in full:
                            nb_old = -(-t.layout.cols // bw_old)
                            full[t.name] = np.zeros((t.layout.rows * nb_old, bw_old), dtype=t.layout.dtype)
                        full[t.name][units] = g["data"][:]
                if r == ps.me and "app" in f:
                    state = {k: f["app"][k][()] for k in f["app"]}
    except (OSError, KeyError) as e:  # intact files that do not hold this layout (or an old, unchecked one)
        why = os_problem(e) if isinstance(e, OSError) else f"missing {e}"
        raise DataError(f"{os.path.join(d, fn)}: cannot read the snapshot ({why})") from None
    for t in shards:
        if t.name in full:
            lay = t.layout
            rowsv = full[t.name].reshape(lay.rows, -1)[:, : lay.cols]
            new = np.zeros((lay.rows, lay.width), dtype=lay.dtype)
            new[:, : lay.cols] = rowsv
            own = lay.owned_units(ps.me)
            t.data[own // ps.P] = new.reshape(lay.n_units, lay.bw)[own]
    return int(man["clock"]), state


def app_states(snapshot_dir: str, clock: int):
    """Yield ``(shard path, app state)`` of every rank's shard of checkpoint ``clock``, in rank
    order: the state is a dict of h5py datasets (slice them to read; valid until the next
    shard). For apps that re-cut per-rank state when resuming at another rank count."""
    import h5py

    d = os.path.join(snapshot_dir, f"ckpt-{clock:08d}")
    with open(os.path.join(d, MANIFEST)) as fh:
        files = json.load(fh)["files"]
    for fn in files:
        with h5py.File(os.path.join(d, fn), "r") as f:
            yield os.path.join(d, fn), (dict(f["app"]) if "app" in f else {})


def remove_snapshots(snapshot_dir: str) -> None:
    """Delete every checkpoint folder (used by tests and benchmarks)."""
    if os.path.isdir(snapshot_dir):
        for name in os.listdir(snapshot_dir):
            if name.startswith("ckpt-"):
                shutil.rmtree(os.path.join(snapshot_dir, name), ignore_errors=True)
