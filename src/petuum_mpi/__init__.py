"""petuum_mpi: iterative-convergent ML on MPI.

* :mod:`petuum_mpi.strads` -- model-parallel engine (schedule / push / pull).
* :mod:`petuum_mpi.bosen` -- stale-synchronous parameter server on RMA windows.
* :mod:`petuum_mpi.data` -- HDF5 shard format, converters, partitioned readers.
* :mod:`petuum_mpi.apps` -- Lasso, logistic regression, MF, LDA on top.
"""

from . import runtime as _runtime  # noqa: F401  (sets a node-local NUMBA_CACHE_DIR first)
from .errors import ConfigError, DataError, PetuumError, UsageError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "PetuumError", "UsageError", "__version__"]
