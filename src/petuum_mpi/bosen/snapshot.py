"""Snapshots of parameter-server tables in HDF5, written atomically.

Layout: ``<snapshot_dir>/ckpt-<clock:08d>/shard-<rank:05d>.h5`` (each rank's
units of every table, plus the app's state of that rank under ``app/``) and a
``manifest.json`` written last by rank 0. Every file is written to a temporary
name, fsynced and renamed; a checkpoint without a manifest (a crash mid-write)
is ignored by :func:`read_snapshot`. Tables are stored by unit, so a snapshot
can be resumed at a different rank count (the app state then comes from the
same rank number if it exists).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from ..errors import DataError

MANIFEST = "manifest.json"


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


def _write_shard(path: str, ps, state) -> None:
    import h5py

    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["clock"] = ps.clock_value
        f.attrs["rank"] = ps.me
        for t in ps._tables:
            g = f.create_group("tables/" + t.name)
            g.create_dataset("units", data=t.lay.owned_units(ps.me))
            g.create_dataset("data", data=np.asarray(t.shard))
        if state:
            g = f.create_group("app")
            for k, v in state.items():
                g.create_dataset(str(k), data=np.asarray(v))
        f.flush()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_snapshot(ps, state) -> str:
    """Collective: every rank writes its shard, then rank 0 the manifest."""
    comm = ps.comm
    d = os.path.join(ps.snapshot_dir, f"ckpt-{ps.clock_value:08d}")
    if ps.me == 0:
        os.makedirs(d, exist_ok=True)
        stale = os.path.join(d, MANIFEST)
        if os.path.exists(stale):
            os.remove(stale)  # being rewritten: invalid until the new manifest lands
    comm.Barrier()
    err = None
    try:
        _write_shard(os.path.join(d, f"shard-{ps.me:05d}.h5"), ps, state)
    except Exception as e:  # noqa: BLE001 - reported on every rank below
        err = f"rank {ps.me}: {e}"
    errs = [e for e in comm.allgather(err) if e]
    if errs:
        raise DataError(f"snapshot {d} failed: {'; '.join(errs)}")
    if ps.me == 0:
        _fsync_dir(d)
        man = {
            "clock": ps.clock_value,
            "nranks": ps.P,
            "files": [f"shard-{r:05d}.h5" for r in range(ps.P)],
            "tables": {
                t.name: {"rows": t.lay.rows, "cols": t.lay.cols, "dtype": str(t.dtype), "bw": t.lay.bw}
                for t in ps._tables
            },
        }
        tmp = os.path.join(d, MANIFEST + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(man, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(d, MANIFEST))
        _fsync_dir(d)
    comm.Barrier()
    return d


def latest_snapshot(snapshot_dir: str) -> str | None:
    """The newest checkpoint folder with a readable manifest and all its files."""
    if not snapshot_dir or not os.path.isdir(snapshot_dir):
        return None
    for name in sorted(os.listdir(snapshot_dir), reverse=True):
        d = os.path.join(snapshot_dir, name)
        if not name.startswith("ckpt-"):
            continue
        try:
            with open(os.path.join(d, MANIFEST)) as fh:
                man = json.load(fh)
        except (OSError, ValueError):
            continue
        if all(os.path.isfile(os.path.join(d, f)) for f in man.get("files", ["?"])):
            return d
    return None


def read_snapshot(ps, path: str | None):
    """Collective: load tables from ``path`` (or the latest good checkpoint)."""
    import h5py

    comm = ps.comm
    err, d = None, None
    if ps.me == 0:
        d = path or latest_snapshot(ps.snapshot_dir)
        if path is not None and not os.path.isfile(os.path.join(path, MANIFEST)):
            err = f"{path}: not a complete snapshot (no {MANIFEST})"
    d, err = comm.bcast((d, err), root=0)
    if err:
        raise DataError(err)
    if d is None:
        return None
    with open(os.path.join(d, MANIFEST)) as fh:
        man = json.load(fh)
    for t in ps._tables:
        m = man["tables"].get(t.name)
        if m is None or (m["rows"], m["cols"], m["dtype"]) != (t.lay.rows, t.lay.cols, str(t.dtype)):
            raise DataError(f"{d}: table {t.name!r} in the snapshot is {m}, expected "
                            f"rows={t.lay.rows} cols={t.lay.cols} dtype={t.dtype}")
    state = None
    full = {}
    for r, fn in enumerate(man["files"]):
        with h5py.File(os.path.join(d, fn), "r") as f:
            for t in ps._tables:
                g = f["tables/" + t.name]
                units = g["units"][:]
                bw_old = man["tables"][t.name]["bw"]
                if bw_old == t.lay.bw:
                    mine = units % ps.P == ps.me
                    if mine.any():
                        t.shard[units[mine] // ps.P] = g["data"][:][mine]
                else:  # other block width (other rank count): go through full rows
                    if t.name not in full:
                        nb_old = -(-t.lay.cols // bw_old)
                        full[t.name] = np.zeros((t.lay.rows * nb_old, bw_old), dtype=t.dtype)
                    full[t.name][units] = g["data"][:]
            if r == ps.me and "app" in f:
                state = {k: f["app"][k][()] for k in f["app"]}
    for t in ps._tables:
        if t.name in full:
            lay = t.lay
            rowsv = full[t.name].reshape(lay.rows, -1)[:, : lay.cols]
            new = np.zeros((lay.rows, lay.width), dtype=t.dtype)
            new[:, : lay.cols] = rowsv
            own = lay.owned_units(ps.me)
            t.shard[own // ps.P] = new.reshape(lay.n_units, lay.bw)[own]
    return int(man["clock"]), state


def remove_snapshots(snapshot_dir: str) -> None:
    """Delete every checkpoint folder (used by tests and benchmarks)."""
    if os.path.isdir(snapshot_dir):
        for name in os.listdir(snapshot_dir):
            if name.startswith("ckpt-"):
                shutil.rmtree(os.path.join(snapshot_dir, name), ignore_errors=True)
