"""HDF5 data shards: format, writers, converters, partitioned readers, synthetic data.

A dataset is a folder with ``manifest.json`` and ``shard-00000.h5``... (see
``docs/data-format.md``). Readers are collective over an MPI communicator; each
rank reads only its contiguous block of rows.
"""

from .format import FORMAT_VERSION, Dataset, Shard, open_dataset
from .reader import LocalCorpus, LocalMatrix, LocalRatings, partition_rows, read_bow, read_matrix, read_ratings
from .writer import load_arrays_h5, write_bow, write_matrix, write_ratings

__all__ = [
    "FORMAT_VERSION", "Dataset", "Shard", "open_dataset", "partition_rows", "read_matrix", "read_bow",
    "read_ratings", "LocalMatrix", "LocalCorpus", "LocalRatings", "write_matrix", "write_bow", "write_ratings",
    "load_arrays_h5",
]
