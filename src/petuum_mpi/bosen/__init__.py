"""Bösen: a stale-synchronous parameter server on one-sided MPI windows.

>>> from petuum_mpi.bosen import ParameterServer, TableSpec
>>> with ParameterServer([TableSpec("w", 1, 100)], consistency="ssp", staleness=2) as ps:
...     w = ps.get("w", 0)
...     ps.inc("w", 0, -0.1 * w)
...     ps.clock()

See docs/bosen.md.
"""

from .layout import TableSpec
from .schema import ENGINE_SCHEMA, STRAGGLER_SCHEMA
from .server import ParameterServer, Table
from .snapshot import latest_snapshot

__all__ = ["ParameterServer", "Table", "TableSpec", "ENGINE_SCHEMA", "STRAGGLER_SCHEMA", "latest_snapshot"]
