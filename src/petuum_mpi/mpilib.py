"""Which MPI library runs us, and what each one needs (MPICH, Open MPI, Intel MPI).

Used by ``petuum-mpi info`` / ``launch`` and by ``tests/run_suite.py``. Pure
functions of the library's version string, so they also describe *another*
environment's MPI (run_suite asks each venv's python for its string).
"""

from __future__ import annotations

import os
import re

MPICH, OPENMPI, IMPI = "MPICH", "Open MPI", "Intel MPI"

VERSION_SNIPPET = (
    "import mpi4py; mpi4py.rc.initialize = False; from mpi4py import MPI; print(MPI.Get_library_version())"
)


def identify(library_version: str) -> tuple[str, str]:
    """``(name, version)`` from ``MPI.Get_library_version()``; name is MPICH,
    Open MPI, Intel MPI or the first line as it stands."""
    s = library_version.strip()
    if m := re.search(r"Intel\(R\) MPI Library ([\d.]+)", s):
        return IMPI, m.group(1)
    if m := re.search(r"Open MPI v([\w.]+)", s):
        return OPENMPI, m.group(1)
    if m := re.search(r"MPICH Version:\s*([\w.]+)", s) or re.search(r"MPICH ([\d.]+\w*)", s):
        return MPICH, m.group(1)
    return (s.splitlines()[0].strip() if s else "unknown"), ""


def oversubscribe_env(name: str, ranks: int, cores: int | None = None) -> dict:
    """Settings for ``ranks`` processes on ``cores`` cores (empty if they fit).

    Open MPI 5 refuses more ranks than cores unless told to oversubscribe (the
    5.x spelling; ``OMPI_MCA_rmaps_base_oversubscribe`` is ignored by PRRTE), and
    all libraries busy-poll while waiting, so waiting ranks must yield the core."""
    cores = cores or os.cpu_count() or 1
    if ranks <= cores:
        return {}
    if name == OPENMPI:
        return {"PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe", "OMPI_MCA_mpi_yield_when_idle": "1"}
    if name == MPICH:
        return {"MPIR_CVAR_POLLS_BEFORE_YIELD": "1"}
    return {}


def between_nodes_env(name: str) -> dict:
    """Settings that make ranks on one machine talk as if on separate nodes
    (no shared-memory transport, no shared-memory RMA windows)."""
    if name == OPENMPI:
        # UCX over TCP for both two-sided and one-sided (osc/ucx): a Put then needs the target to
        # enter MPI, as between nodes without hardware RMA. ob1 + btl tcp + osc/rdma does NOT show
        # that (Put+Flush completes there while the target only sleeps; docs/bosen.md "Transports").
        # The opal_common_ucx_* keys let UCX run without an InfiniBand device.
        return {"OMPI_MCA_pml": "ucx", "OMPI_MCA_osc": "ucx", "OMPI_MCA_opal_common_ucx_tls": "any",
                "OMPI_MCA_opal_common_ucx_devices": "any", "UCX_TLS": "tcp,self"}
    if name == IMPI:
        return {"I_MPI_FABRICS": "ofi", "FI_PROVIDER": "tcp"}
    if name == MPICH:
        return {"MPIR_CVAR_NOLOCAL": "1"}
    return {}


def root_env(name: str) -> dict:
    """Open MPI refuses to start as root (containers, CI) unless this is set."""
    if name == OPENMPI and hasattr(os, "geteuid") and os.geteuid() == 0:
        return {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return {}


def pitfalls(name: str, ranks: int | None = None, cores: int | None = None, env=None) -> list[str]:
    """Known pitfalls of the library, as one line each."""
    env = os.environ if env is None else env
    cores = cores or os.cpu_count() or 1
    out = []
    if name == OPENMPI:
        out.append(f"Open MPI 5 refuses more ranks than cores ({cores} here) unless you pass --oversubscribe "
                   "or set PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe (petuum-mpi launch does)")
        out.append("Open MPI: 'OSC UCX component priority ... failed' on window creation is harmless noise "
                   "when UCX has no usable device; OMPI_MCA_osc=^ucx silences it")
    if name == MPICH:
        now = ranks is not None and ranks > cores and env.get("MPIR_CVAR_POLLS_BEFORE_YIELD") is None
        out.append((f"MPICH busy-polls: {ranks} ranks on {cores} cores starve each other NOW; " if now else
                    "MPICH busy-polls: with more ranks than cores ")
                   + "set MPIR_CVAR_POLLS_BEFORE_YIELD=1 (petuum-mpi launch does)")
    return out
