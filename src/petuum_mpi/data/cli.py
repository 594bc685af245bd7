"""``petuum-mpi data ...`` subcommands: synth, convert, inspect, reshard (serial, no MPI needed).

Registered by the main command line through :func:`add_subcommands`. Handlers
return an exit code and raise :class:`DataError` for bad input.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ..errors import DataError


def _shard_opts(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shards", type=int, default=None, metavar="N", help="number of shards (default 1)")
    g.add_argument("--rows-per-shard", type=int, default=None, metavar="R", help="rows (docs, users) per shard")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def cmd_synth(args) -> int:
    from .synth import synth_dataset

    k = args.synth_kind
    common = dict(raw=args.raw, seed=args.seed, n_shards=args.shards, rows_per_shard=args.rows_per_shard,
                  overwrite=args.overwrite)
    if k in ("regression", "classification"):
        p = dict(n_rows=args.rows, n_cols=args.cols, nnz=args.nnz, group_size=args.group_size, corr=args.corr,
                 n_informative=args.informative, dense=args.dense or None)
        if k == "regression":
            p["noise"] = args.noise
        else:
            p["n_classes"] = args.classes
    elif k == "ratings":
        p = dict(n_users=args.users, n_items=args.items, rank=args.rank, noise=args.noise, density=args.density,
                 offset=args.offset)
    else:
        p = dict(n_docs=args.docs, n_words=args.words, n_topics=args.topics, doc_length=args.doc_length,
                 alpha=args.alpha, beta=args.beta)
    out = synth_dataset(k, args.out, **common, **p)
    print(f"wrote {out}")
    return 0


def cmd_convert(args) -> int:
    """Convert; print the task of a matrix (and why, when inferred) and converter warnings
    (one ``petuum-mpi: warning: ...`` line each on stderr)."""
    import sys
    import warnings

    from . import convert as C

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", C.DataWarning)
        code = _convert(args, C)
    for w in caught:
        if issubclass(w.category, C.DataWarning):
            print(f"petuum-mpi: warning: {w.message}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return code


def _convert(args, C) -> int:
    fmt = args.format
    inputs, out = args.inputs[:-1], args.inputs[-1]
    if not inputs:
        raise DataError("convert needs INPUT... OUT")
    kw = dict(n_shards=args.shards, rows_per_shard=args.rows_per_shard, overwrite=args.overwrite, truth=args.truth)
    if fmt == "libsvm":
        if len(inputs) != 1:
            raise DataError(f"convert libsvm takes one input file, got {len(inputs)}")
        zb = {"auto": "auto", "zero": True, "one": False}[args.base]
        ds = C.convert_libsvm(inputs[0], out, zero_based=zb, task=args.task, n_features=args.n_features,
                              dtype=np.float32 if args.float32 else np.float64, **kw)
    elif fmt == "uci-bow":
        if not 1 <= len(inputs) <= 2:
            raise DataError("convert uci-bow takes docword.X.txt [vocab.X.txt] OUT")
        ds = C.convert_uci_bow(inputs[0], out, vocab=inputs[1] if len(inputs) == 2 else None, **kw)
    elif fmt == "ratings":
        if len(inputs) != 1:
            raise DataError(f"convert ratings takes one input file, got {len(inputs)}")
        ds = C.convert_ratings(inputs[0], out, duplicates=args.duplicates, **kw)
    else:
        ds = C.convert_npy(inputs, out, task=args.task, dtype=np.float32 if args.float32 else None, **kw)
    if ds.kind == "matrix":
        if ds.meta.get("task_inferred"):
            other = "classification" if ds.task == "regression" else "regression"
            print(f"task: {ds.task} (inferred by --task auto: {ds.meta['task_reason']}; "
                  f"use --task {other} to override)")
        else:
            print(f"task: {ds.task} (--task {ds.task})")
    print(f"wrote {ds.path}: {ds.kind}, {ds.n_rows} x {ds.n_cols}, nnz {ds.nnz}, {len(ds.shards)} shard(s)")
    return 0


def cmd_inspect(args) -> int:
    from .convert import format_inspect, inspect

    info = inspect(args.path)
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(format_inspect(info))
    return 0 if info["ok"] else 1


def cmd_reshard(args) -> int:
    from .convert import reshard

    ds = reshard(args.src, args.dst, n_shards=args.shards, rows_per_shard=args.rows_per_shard,
                 overwrite=args.overwrite)
    print(f"wrote {ds.path}: {len(ds.shards)} shard(s)")
    return 0


def add_subcommands(subparsers) -> None:
    """Register ``synth``, ``convert``, ``inspect``, ``reshard`` on an argparse subparsers object."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    s = subparsers.add_parser("synth", help="generate synthetic data with a planted truth", formatter_class=fmt)
    ks = s.add_subparsers(dest="synth_kind", metavar="KIND", required=True)
    for k, h in (("regression", "sparse regression, correlated feature groups, sparse true coef"),
                 ("classification", "labels from a planted linear model"),
                 ("ratings", "low-rank ratings plus Gaussian noise"),
                 ("lda", "corpus drawn from LDA with planted topics")):
        p = ks.add_parser(k, help=h, formatter_class=fmt)
        p.add_argument("out", metavar="OUT", help="dataset folder (or a text file with --raw)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--raw", action="store_true",
                       help="write text (LIBSVM / ratings CSV / UCI docword+vocab) plus OUT-stem.truth.h5")
        _shard_opts(p)
        if k in ("regression", "classification"):
            p.add_argument("--rows", type=int, default=1000)
            p.add_argument("--cols", type=int, default=1000)
            p.add_argument("--nnz", type=int, default=None, help="non-zeros (default 1%% density)")
            p.add_argument("--dense", action="store_true", help="dense design matrix")
            p.add_argument("--group-size", type=int, default=4, help="columns per correlated group")
            p.add_argument("--corr", type=float, default=0.8 if k == "regression" else 0.5,
                           help="correlation within a group")
            p.add_argument("--informative", type=int, default=None, help="non-zero true coefficients")
            if k == "regression":
                p.add_argument("--noise", type=float, default=0.1, help="noise standard deviation")
            else:
                p.add_argument("--classes", type=int, default=2)
        elif k == "ratings":
            p.add_argument("--users", type=int, default=1000)
            p.add_argument("--items", type=int, default=500)
            p.add_argument("--rank", type=int, default=10)
            p.add_argument("--noise", type=float, default=0.1, help="noise standard deviation")
            p.add_argument("--density", type=float, default=0.05, help="fraction of observed cells")
            p.add_argument("--offset", type=float, default=0.0, help="added to every rating")
        else:
            p.add_argument("--docs", type=int, default=1000)
            p.add_argument("--words", type=int, default=1000)
            p.add_argument("--topics", type=int, default=10)
            p.add_argument("--doc-length", type=float, default=100.0, help="mean document length")
            p.add_argument("--alpha", type=float, default=0.1)
            p.add_argument("--beta", type=float, default=0.01)
        p.set_defaults(func=cmd_synth)

    c = subparsers.add_parser("convert", help="convert LIBSVM, UCI bag-of-words, ratings or NumPy data",
                              formatter_class=fmt)
    c.add_argument("format", choices=["libsvm", "uci-bow", "ratings", "npy"])
    c.add_argument("inputs", nargs="+", metavar="INPUT... OUT",
                   help="libsvm: FILE; uci-bow: docword.X.txt [vocab.X.txt]; ratings: ratings.csv|ratings.dat; "
                        "npy: X.npy y.npy | data.npz | X_sparse.npz y.npy; then the output folder")
    b = c.add_mutually_exclusive_group()
    b.add_argument("--zero-based", dest="base", action="store_const", const="zero", help="LIBSVM indices from 0")
    b.add_argument("--one-based", dest="base", action="store_const", const="one", help="LIBSVM indices from 1")
    c.set_defaults(base="auto")
    c.add_argument("--task", choices=["auto", "regression", "classification"], default="auto",
                   help="libsvm/npy targets; auto: classification only for 2 distinct integer labels or "
                        "labels 0..k-1 / 1..k (k <= 20), else regression (the choice is printed)")
    c.add_argument("--duplicates", choices=["last", "mean", "error"], default="last",
                   help="ratings: a (user, item) pair rated more than once keeps the last rating, the mean "
                        "(both with a warning), or is an error")
    c.add_argument("--n-features", type=int, default=None, help="LIBSVM column count")
    c.add_argument("--float32", action="store_true", help="store values as float32")
    c.add_argument("--truth", default=None, metavar="FILE", help="truth HDF5 file to copy into the dataset")
    _shard_opts(c)
    c.set_defaults(func=cmd_convert)

    i = subparsers.add_parser("inspect", help="shape, nnz, shards and checksums (exit 1 on a bad checksum)")
    i.add_argument("path", metavar="PATH")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    r = subparsers.add_parser("reshard", help="copy a dataset with a new number of shards")
    r.add_argument("src", metavar="SRC")
    r.add_argument("dst", metavar="DST")
    _shard_opts(r)
    r.set_defaults(func=cmd_reshard)
