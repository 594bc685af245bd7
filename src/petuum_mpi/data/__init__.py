"""HDF5 data shards: format, writers, converters, partitioned readers, synthetic data.

A dataset is a folder with ``manifest.json`` and ``shard-00000.h5``... (see
``docs/data-format.md``). Readers are collective over an MPI communicator; each
rank reads only its contiguous block of rows.
"""

from ..errors import DataError
from .format import FORMAT_VERSION, Dataset, Shard, open_dataset
from .reader import LocalCorpus, LocalMatrix, LocalRatings, partition_rows, read_bow, read_matrix, read_ratings
from .writer import load_arrays_h5, write_bow, write_matrix, write_ratings

__all__ = [
    "DataError", "FORMAT_VERSION", "Dataset", "Shard", "open_dataset", "partition_rows", "read_matrix", "read_bow",
    "read_ratings", "LocalMatrix", "LocalCorpus", "LocalRatings", "write_matrix", "write_bow", "write_ratings",
    "load_arrays_h5",
]


def prepare_samples(out_dir: str, raw_dir: str | None = None, n_shards: int = 2, overwrite: bool = True) -> dict:
    """Convert the raw sample files (``data/`` of the repository) into datasets.

    Writes ``out_dir/{lasso,clf,ratings,lda}`` (``n_shards`` shards each, truth
    copied in) and returns ``{name: dataset folder}``. ``raw_dir`` defaults to the
    repository's ``data/`` folder; if that is absent (installed package) the raw
    samples are regenerated from their fixed seeds into ``out_dir/raw``.
    """
    import os

    from .convert import convert_libsvm, convert_ratings, convert_uci_bow
    from .synth import SAMPLES, make_samples

    if raw_dir is None:
        here = os.path.dirname(os.path.abspath(__file__))
        raw_dir = os.path.normpath(os.path.join(here, "..", "..", "..", "data"))
    if not all(os.path.isfile(os.path.join(raw_dir, name)) for _, name, _, _ in SAMPLES):
        raw_dir = os.path.join(out_dir, "raw")
        make_samples(raw_dir, overwrite=True)
    r = lambda name: os.path.join(raw_dir, name)  # noqa: E731
    o = lambda name: os.path.join(out_dir, name)  # noqa: E731
    kw = dict(n_shards=n_shards, overwrite=overwrite)
    convert_libsvm(r("lasso_sample.svm"), o("lasso"), task="regression", truth=r("lasso_sample.truth.h5"), **kw)
    convert_libsvm(r("clf_sample.svm"), o("clf"), task="classification", truth=r("clf_sample.truth.h5"), **kw)
    convert_ratings(r("ratings_sample.csv"), o("ratings"), truth=r("ratings_sample.truth.h5"), **kw)
    convert_uci_bow(r("docword.sample.txt"), o("lda"), vocab=r("vocab.sample.txt"),
                    truth=r("docword.sample.truth.h5"), **kw)
    return {k: o(k) for k in ("lasso", "clf", "ratings", "lda")}


__all__ += ["prepare_samples"]
