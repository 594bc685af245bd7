"""The ``[engine]`` job section of data-parallel apps on the parameter server."""

from __future__ import annotations

from ..config import Field, Section
from .snapshot import DEFAULT_KEEP


def _check_engine(e: dict) -> str | None:
    if e.get("snapshot_dir") is None:
        if e.get("resume"):
            return "resume: needs snapshot_dir (the folder the snapshots were written to)"
        if e.get("snapshot_every"):
            return "snapshot_every: needs snapshot_dir (the folder to write snapshots to)"
    return None

STRAGGLER_SCHEMA = Section(
    {
        "ranks": Field(list, default=[], item_type=int, help="ranks slowed down (experiments only)"),
        "factor": Field(float, default=1.0, min=1.0, help="slowed ranks take factor x their compute time per clock"),
        "random_delay_ms": Field(
            float, default=0.0, min=0.0, help="uniform random sleep per clock (listed ranks, or all if none listed)"
        ),
        "seed": Field(int, default=0, min=0, help="seed of the random delays"),
    },
    help="straggler injection for experiments",
)

ENGINE_SCHEMA = Section(
    {
        "consistency": Field(str, default="ssp", choices=("bsp", "ssp", "essp", "asp"), help="consistency model"),
        "staleness": Field(int, default=1, min=0, help="staleness bound s (ssp/essp)"),
        "snapshot_every": Field(int, default=0, min=0, help="snapshot all tables every N clocks (0 = never)"),
        "snapshot_dir": Field(str, default=None, path="out", help="folder of snapshots"),
        "keep_snapshots": Field(int, default=DEFAULT_KEEP, min=0,
                                help="keep the newest N complete snapshots, delete older ones (0 = keep all)"),
        "resume": Field(bool, default=False, help="continue from the newest intact snapshot in snapshot_dir"),
        "mailbox_mb": Field(float, default=0.0, min=0.0, help="per-origin mailbox size in MiB (0 = automatic)"),
    },
    help="parameter server (Bösen) settings",
    subsections={"straggler": STRAGGLER_SCHEMA},
    check=_check_engine,
)
