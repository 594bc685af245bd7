"""Converters from common text/NumPy formats to sharded datasets, plus reshard and inspect.

Text is read in blocks of ``block_bytes`` (cut at line ends) and parsed by Numba
kernels (:mod:`.textparse`), so a file of a few hundred MB converts in seconds.
Malformed input raises :class:`DataError` naming the file and line.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from ..errors import DataError
from . import textparse as T
from . import validate as V
from .format import SPARSE_ARRAYS, Dataset, file_sha256, open_dataset, read_manifest, to_jsonable, write_manifest
from .writer import copy_meta_files, prepare_folder, shard_bounds, write_bow, write_matrix, write_ratings, \
    write_shard

BLOCK = 64 << 20


def _blocks(path: str, block_bytes: int = BLOCK, skip_lines: int = 0):
    """Yield (uint8 array ending at a line end, first line number) blocks of a text file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    line0 = 1
    rest = b""
    with open(path, "rb") as f:
        while skip_lines > 0:
            if not f.readline():
                break
            skip_lines -= 1
            line0 += 1
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1:]
            buf = np.frombuffer(data[:cut + 1], dtype=np.uint8)
            yield buf, line0
            line0 += int(np.count_nonzero(buf == 10))
        if rest:
            yield np.frombuffer(rest + b"\n", dtype=np.uint8), line0


def _err(path, line, what, buf=None, rel=None):
    text = f": {T.line_text(buf, rel)!r}" if buf is not None and rel else ""
    return DataError(f"{path}, line {line}: {what}{text}")


class DataWarning(UserWarning):
    """Input a converter accepted after changing it (e.g. duplicate ratings dropped)."""


def _data_lines(path: str, rows, skip_lines: int = 0, comments: bool = False) -> dict:
    """1-based file line of each data row in ``rows`` (0-based, as the parsers count them:
    blank lines, and with ``comments`` lines starting with '#', hold no row)."""
    want = set(int(r) for r in rows)
    out = {}
    row = 0
    with open(path, "rb") as f:
        for ln, raw in enumerate(f, start=1):
            if ln <= skip_lines:
                continue
            s = raw.lstrip(b" \t\r")
            if not s or s[:1] == b"\n" or (comments and s[:1] == b"#"):
                continue
            if row in want:
                out[row] = ln
                if len(out) == len(want):
                    break
            row += 1
    return out


def _row_err(path, row, what, skip_lines=0, comments=False):
    """DataError naming the file line of data row ``row``."""
    line = _data_lines(path, [row], skip_lines, comments).get(int(row))
    return DataError(f"{path}, line {line}: {what}" if line else f"{path}, data row {row}: {what}")


# ----------------------------------------------------------------------------- LIBSVM

def load_svmlight(path: str, zero_based="auto", block_bytes: int = BLOCK):
    """Parse a LIBSVM / svmlight file into (indptr, indices (0-based), values, labels, zero_based_used).

    ``zero_based``: True, False, or "auto" (like scikit-learn: 1-based unless an
    index 0 occurs).
    """
    ptrs, idxs, vals, labs = [], [], [], []
    off = 0
    for buf, line0 in _blocks(path, block_bytes):
        lab, ptr, idx, val, slow, code, line = T.parse_svmlight(buf, T.POW10)
        if code:
            raise _err(path, line0 + line - 1, T.ERRORS[code], buf, line)

        def setv(t, v, lab=lab, val=val):
            if t < 0:
                lab[-1 - t] = v
            else:
                val[t] = v

        bad = T.fix_slow(buf, slow, setv)
        if bad:
            rel = T.line_of(buf, bad[0])
            raise _err(path, line0 + rel - 1, "not a number", buf, rel)
        ptrs.append(ptr[1:] + off if ptrs else ptr + off)
        off += int(ptr[-1])
        idxs.append(idx)
        vals.append(val)
        labs.append(lab)
    labels = np.concatenate(labs) if labs else np.zeros(0)
    if labels.size == 0:
        raise DataError(f"{path}: no data lines (empty file?)")
    indptr = np.concatenate(ptrs)
    indices = np.concatenate(idxs)
    values = np.concatenate(vals)

    def row_of(pos):
        return int(np.searchsorted(indptr, int(pos), side="right")) - 1

    if zero_based == "auto":
        zero_based = bool(indices.size and indices.min() == 0)
    if not zero_based and indices.size and indices.min() == 0:
        raise _row_err(path, row_of(np.argmin(indices)), "feature id 0 but the file was declared 1-based "
                       "(use --zero-based or zero_based='auto')", comments=True)
    bad = np.flatnonzero(~np.isfinite(labels))
    if bad.size:
        raise _row_err(path, bad[0], f"label {labels[bad[0]]} is not finite", comments=True)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise _row_err(path, row_of(bad[0]), f"value {values[bad[0]]} of feature {int(indices[bad[0]])} is not "
                       "finite", comments=True)
    dup = _first_duplicate(indptr, indices)
    if dup is not None:
        raise _row_err(path, row_of(dup), f"feature id {int(indices[dup])} appears more than once in the row "
                       "(scikit-learn rejects this too)", comments=True)
    if not zero_based:
        indices = indices - 1
    return indptr, indices, values, labels, zero_based


def _first_duplicate(indptr: np.ndarray, indices: np.ndarray):
    """Position of the first repeated column index within a row, or None."""
    if indices.size < 2:
        return None
    n_rows = indptr.size - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    same_row = rows[1:] == rows[:-1]
    d = np.diff(indices)
    if not np.any(same_row & (d <= 0)):
        return None  # every row strictly increasing: no duplicates
    order = np.lexsort((indices, rows))
    rs, ix = rows[order], indices[order]
    hit = np.flatnonzero((rs[1:] == rs[:-1]) & (ix[1:] == ix[:-1]))
    if not hit.size:
        return None
    h = hit[np.argmin(rs[hit])]  # in the first row that holds a duplicate
    return int(order[h + 1])


MAX_AUTO_CLASSES = 20


def infer_task(labels: np.ndarray) -> tuple[str, str]:
    """(task, reason) for ``task="auto"``.

    Classification only when the labels look like class ids: integers with exactly
    2 distinct values (any two: -1/1, 0/1, 2/4...), or 3..20 distinct values that are
    exactly ``0..k-1`` or ``1..k``. Anything else is regression: integer targets
    such as 10, 20, 40 are kept as values.
    """
    def show(u):
        v = [str(int(x)) for x in u[:5]]
        return ", ".join(v) + (", ..." if u.size > 5 else "")

    if labels.size == 0 or not np.all(labels == np.round(labels)):
        return "regression", "labels are not all integers"
    u = np.unique(labels)
    k = u.size
    if k == 1:
        return "regression", f"a single label value {show(u)}"
    if k == 2:
        return "classification", f"2 distinct integer labels {show(u)}"
    if k > MAX_AUTO_CLASSES:
        return "regression", f"{k} distinct integer labels, more than {MAX_AUTO_CLASSES}"
    if u[0] in (0, 1) and u[-1] == u[0] + k - 1:
        return "classification", f"{k} distinct integer labels {int(u[0])}..{int(u[-1])}"
    return "regression", f"integer labels {show(u)} are not class ids 0..k-1 or 1..k"


def _labels_to_task(labels: np.ndarray, task: str, path: str, row_err=None):
    """Targets, task, n_classes, meta for ``task`` in {auto, regression, classification}.

    ``row_err(row, what)`` builds the DataError for a bad label in data row ``row``.
    """
    if row_err is None:
        def row_err(row, what):
            return DataError(f"{path}, row {row}: {what}")
    meta = {}
    if task not in ("auto", "regression", "classification"):
        raise DataError(f"task must be auto, regression or classification, got {task!r}")
    bad = np.flatnonzero(~np.isfinite(labels))
    if bad.size:
        raise row_err(int(bad[0]), f"label {labels[bad[0]]} is not finite")
    if task == "auto":
        task, meta["task_reason"] = infer_task(labels)
        meta["task_inferred"] = True
    if task == "regression":
        return labels.astype(np.float64), task, None, meta
    bad = np.flatnonzero(labels != np.round(labels))
    if bad.size:
        raise row_err(int(bad[0]), f"class label {labels[bad[0]]} is not an integer")
    classes, y = np.unique(labels, return_inverse=True)
    meta["classes"] = [int(c) for c in classes]
    return y.astype(np.int64), task, int(classes.size), meta


def convert_libsvm(src: str, out: str, zero_based="auto", task: str = "auto", n_features: int | None = None,
                   dtype=np.float64, n_shards=None, rows_per_shard=None, overwrite=False, truth: str | None = None,
                   meta=None) -> Dataset:
    """Convert a LIBSVM/svmlight text file to a sparse matrix dataset.

    Parameters
    ----------
    zero_based : bool or "auto"
    task : {"auto", "regression", "classification"}
        "auto": see :func:`infer_task`; the reason is kept in ``meta["task_reason"]``. Class labels are mapped to ``0..n_classes-1``; the original values
        are kept in ``meta["classes"]``.
    n_features : int, optional
        Column count (default: largest index + 1).
    truth : str, optional
        A truth HDF5 file (e.g. from ``synth --raw``) copied into the dataset.
    """
    import scipy.sparse as sp

    indptr, indices, values, labels, zb = load_svmlight(src, zero_based)

    def row_err(row, what):
        return _row_err(src, row, what, comments=True)

    def row_of(pos):
        return int(np.searchsorted(indptr, int(pos), side="right")) - 1

    n_cols = int(indices.max()) + 1 if indices.size else 0
    if n_features is not None:
        if n_features < n_cols:
            pos = int(np.argmax(indices))
            raise row_err(row_of(pos), f"feature id {int(indices[pos]) + (0 if zb else 1)} exceeds --n-features "
                                       f"{n_features}")
        n_cols = int(n_features)
    dtype = np.dtype(dtype)
    if dtype == np.float32 and values.size:
        big = np.flatnonzero(np.abs(values) > np.finfo(np.float32).max)
        if big.size:
            raise row_err(row_of(big[0]), f"value {values[big[0]]} of feature {int(indices[big[0]]) + (0 if zb else 1)}"
                                          " overflows float32 (convert without --float32)")
    y, task, n_classes, m = _labels_to_task(labels, task, src, row_err)
    X = sp.csr_matrix((values, indices, indptr), shape=(labels.size, n_cols))
    m.update({"source": os.path.abspath(src), "source_format": "libsvm", "zero_based": bool(zb)})
    m.update(meta or {})
    return write_matrix(out, X, y, n_shards=n_shards, rows_per_shard=rows_per_shard, task=task,
                        n_classes=n_classes, dtype=dtype, meta=m, truth=_truth(truth), overwrite=overwrite)


def _truth(path):
    if path is None:
        return None
    from .writer import load_arrays_h5

    if not os.path.isfile(path):
        raise DataError(f"{path}: truth file not found")
    return load_arrays_h5(path)


def export_libsvm(path: str, X, y, zero_based: bool = False, comment: str | None = None,
                  precision: int | None = None) -> None:
    """Write a (sparse or dense) matrix and targets as LIBSVM text: shortest round-trip
    floats, or ``precision`` significant digits."""
    import scipy.sparse as sp

    X = sp.csr_matrix(X)
    X.sort_indices()
    base = 0 if zero_based else 1
    yl = np.asarray(y).tolist()
    ind, dat, ptr = (X.indices + base).tolist(), X.data.tolist(), X.indptr.tolist()
    with open(path, "w") as f:
        if comment:
            f.write("".join(f"# {c}\n" for c in comment.splitlines()))
        for r in range(X.shape[0]):
            a, b = ptr[r], ptr[r + 1]
            lab = yl[r]
            lab = int(lab) if float(lab).is_integer() and abs(lab) < 2 ** 53 else lab
            if precision is None:
                items = [f"{i}:{v!r}" for i, v in zip(ind[a:b], dat[a:b])]
                ls = repr(lab)
            else:
                items = [f"{i}:{v:.{precision}g}" for i, v in zip(ind[a:b], dat[a:b])]
                ls = repr(lab) if isinstance(lab, int) else f"{lab:.{precision}g}"
            f.write(" ".join([ls] + items) + "\n")


# ----------------------------------------------------------------------------- tables

def load_table(path: str, ncols: int, lo, hi, integer, skip_lines: int = 0, block_bytes: int = BLOCK,
               names=None, limits=None):
    """Parse the first ``ncols`` numeric fields of every line (see :func:`textparse.parse_table`).

    ``names`` (one per column, e.g. "doc id") and ``limits`` (text for the upper
    bound, e.g. "D=5 from the header", or None) make range errors say which
    field is wrong and why.
    """
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    integer = np.asarray(integer, np.bool_)

    def range_err(line, buf, rel):
        text = T.line_text(buf, rel, limit=10 ** 6)
        fields = [f for f in re.split(r"[ \t\r,:]+", text.strip()) if f]
        for c, tok in enumerate(fields[:ncols]):
            try:
                v = float(tok)
            except ValueError:
                break
            name = names[c] if names else f"field {c + 1}"
            if v < lo[c]:
                what = f"{name} {tok} is below {lo[c]:g}"
            elif v > hi[c]:
                what = f"{name} {tok} exceeds {limits[c] if limits and limits[c] else f'{hi[c]:g}'}"
            elif integer[c] and v != np.floor(v):
                what = f"{name} {tok} is not an integer"
            else:
                continue
            return _err(path, line, what, buf, rel)
        return _err(path, line, T.ERRORS[T.E_RANGE], buf, rel)

    parts = []
    for buf, line0 in _blocks(path, block_bytes, skip_lines):
        tab, slow, code, line = T.parse_table(buf, ncols, lo, hi, integer, T.POW10)
        if code == T.E_RANGE:
            raise range_err(line0 + line - 1, buf, line)
        if code:
            raise _err(path, line0 + line - 1, T.ERRORS[code], buf, line)
        flat = tab.reshape(-1)

        def setv(t, v, flat=flat):
            flat[t] = v

        bad = T.fix_slow(buf, slow, setv)
        if bad:
            rel = T.line_of(buf, bad[0])
            raise _err(path, line0 + rel - 1, "not a number", buf, rel)
        for s, e, t in slow.tolist():  # re-check range of slow tokens
            c = t % ncols
            v = flat[t]
            if not (lo[c] <= v <= hi[c]) or (integer[c] and v != np.floor(v)):
                rel = T.line_of(buf, s)
                raise range_err(line0 + rel - 1, buf, rel)
        parts.append(tab)
    return np.concatenate(parts) if parts else np.zeros((0, ncols))


# ----------------------------------------------------------------------------- UCI bag of words

def _read_header_ints(path: str, n: int, least=None) -> tuple[list[int], int]:
    """The first ``n`` non-blank lines as integers (each >= ``least[i]``), and the lines read."""
    vals, lines = [], 0
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        while len(vals) < n:
            raw = f.readline()
            lines += 1
            if not raw:
                raise DataError(f"{path}: expected a {n}-line header (D, W, NNZ), file ends at line {lines}")
            s = raw.strip()
            if not s:
                continue
            try:
                vals.append(int(s))
            except ValueError:
                raise DataError(f"{path}, line {lines}: header value {s.decode(errors='replace')!r} "
                                f"is not an integer") from None
            if least is not None and vals[-1] < least[len(vals) - 1][1]:
                name, lo = least[len(vals) - 1]
                raise DataError(f"{path}, line {lines}: header {name}={vals[-1]} must be >= {lo}")
    return vals, lines


def read_vocab_file(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"{path}: vocabulary file not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        words = [w.rstrip("\r\n") for w in f]
    while words and words[-1] == "":
        words.pop()
    return words


def convert_uci_bow(docword: str, out: str, vocab: str | None = None, n_shards=None, rows_per_shard=None,
                    overwrite=False, truth: str | None = None, meta=None) -> Dataset:
    """Convert a UCI bag-of-words corpus (``docword.*.txt``: D, W, NNZ, then
    ``docID wordID count`` 1-based; optional ``vocab.*.txt``) to a bow dataset.

    Entries are sorted by (doc, word); repeated (doc, word) pairs are summed.
    Documents without words are dropped (their count is ``meta["dropped_empty_docs"]``
    and the original 0-based id of every kept document is in ``ids.h5``).
    """
    (D, W, NNZ), hl = _read_header_ints(docword, 3, least=[("D", 1), ("W", 1), ("NNZ", 0)])
    tab = load_table(docword, 3, [1, 1, 1], [D, W, np.iinfo(np.int32).max], [True, True, True], skip_lines=hl,
                     names=["doc id", "word id", "count"], limits=[f"D={D} from the header",
                                                                   f"W={W} from the header", "2^31-1"])
    if tab.shape[0] != NNZ:
        raise DataError(f"{docword}: header says NNZ={NNZ} but the file has {tab.shape[0]} entries")
    if NNZ == 0:
        raise DataError(f"{docword}: no entries (header NNZ=0): a corpus needs at least one word")
    d = tab[:, 0].astype(np.int64) - 1
    w = tab[:, 1].astype(np.int64) - 1
    c = tab[:, 2].astype(np.int64)
    del tab
    key = d * W + w
    if key.size and np.any(np.diff(key) <= 0):
        order = np.argsort(key, kind="stable")
        key, c = key[order], c[order]
        first = np.concatenate(([True], np.diff(key) != 0))
        starts = np.flatnonzero(first)
        c = np.add.reduceat(c, starts) if key.size else c
        key = key[starts]
    d, w = key // W, key % W
    per_doc = np.bincount(d, minlength=D)
    kept = np.flatnonzero(per_doc > 0)
    m = {"source": os.path.abspath(docword), "source_format": "uci-bow", "D": int(D), "W": int(W)}
    id_map = None
    if kept.size < D:
        m["dropped_empty_docs"] = int(D - kept.size)
        id_map = {"doc_ids": kept}
    doc_ptr = np.zeros(kept.size + 1, np.int64)
    np.cumsum(per_doc[kept], out=doc_ptr[1:])
    if np.any(c > np.iinfo(np.int32).max):
        raise DataError(f"{docword}: a (doc, word) count exceeds 2^31-1")
    words = None
    if vocab is not None:
        words = read_vocab_file(vocab)
        if len(words) != W:
            raise DataError(f"{vocab}: {len(words)} words but {docword} says W={W}")
        m["vocab_source"] = os.path.abspath(vocab)
    m.update(meta or {})
    ds = write_bow(out, doc_ptr, w.astype(np.int32), c.astype(np.int32), W, vocab=words, n_shards=n_shards,
                   rows_per_shard=rows_per_shard, meta=m, truth=_truth(truth), overwrite=overwrite)
    if id_map is not None:
        _add_id_map(ds, id_map)
    return open_dataset(out)


def _add_id_map(ds: Dataset, arrays: dict) -> None:
    from .writer import IDMAP_FILE, save_arrays_h5

    save_arrays_h5(os.path.join(ds.path, IDMAP_FILE), arrays)
    man = read_manifest(ds.path)
    man["meta"]["id_map"] = IDMAP_FILE
    write_manifest(ds.path, man)


def export_uci_bow(docword: str, doc_ptr, word_ids, counts, n_words: int, vocab_path: str | None = None,
                   vocab=None) -> None:
    """Write a corpus as UCI ``docword`` text (1-based ids) and optionally ``vocab``."""
    doc_ptr = np.asarray(doc_ptr)
    D = doc_ptr.size - 1
    docs = np.repeat(np.arange(1, D + 1), np.diff(doc_ptr))
    tab = np.column_stack([docs, np.asarray(word_ids) + 1, np.asarray(counts)]).astype(np.int64)
    with open(docword, "w") as f:
        f.write(f"{D}\n{n_words}\n{tab.shape[0]}\n")
        np.savetxt(f, tab, fmt="%d")
    if vocab_path is not None:
        with open(vocab_path, "w", encoding="utf-8") as f:
            f.write("\n".join(vocab) + "\n")


# ----------------------------------------------------------------------------- ratings

def _ratings_layout(path: str):
    """(skip_lines, user_col, item_col, rating_col) from the first line of a ratings file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", "replace").strip()
    if not re.search(r"[A-Za-z]", first):
        return 0, 0, 1, 2
    names = [s.strip().strip('"').lower() for s in re.split(r"::|,|\t|;| +", first)]

    def find(pats, default):
        for j, nm in enumerate(names):
            if any(p in nm for p in pats):
                return j
        return default

    u = find(("user",), 0)
    i = find(("movie", "item", "product", "book"), 1)
    r = find(("rating", "value", "score", "stars"), 2)
    if len({u, i, r}) < 3 or max(u, i, r) >= len(names):
        raise DataError(f"{path}, line 1: cannot find user, item and rating columns in header {first!r}")
    return 1, u, i, r


DUPLICATES = ("last", "mean", "error")


def convert_ratings(src: str, out: str, n_shards=None, rows_per_shard=None, overwrite=False,
                    truth: str | None = None, meta=None, duplicates: str = "last") -> Dataset:
    """Convert MovieLens-style ratings (CSV with a ``userId,movieId,rating,...`` header,
    or ``::``/tab/space separated ``user item rating [...]`` lines) to a ratings dataset.

    Raw user and item ids are remapped to dense ``0..n-1`` in order of raw id; the
    raw id of every dense id is stored in ``ids.h5`` (``user_ids``, ``item_ids``).

    ``duplicates``: what to do with a (user, item) pair rated more than once:
    ``"last"`` keeps the rating that comes last in the file, ``"mean"`` averages
    them (both warn with a :class:`DataWarning` that counts them), ``"error"``
    raises a DataError naming both lines.
    """
    if duplicates not in DUPLICATES:
        raise DataError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {duplicates!r}")
    skip, uc, ic, rc = _ratings_layout(src)
    nc = max(uc, ic, rc) + 1
    lo = np.full(nc, -np.inf)
    hi = np.full(nc, np.inf)
    integer = np.zeros(nc, bool)
    lo[[uc, ic]] = -(2.0 ** 53)
    hi[[uc, ic]] = 2.0 ** 53
    integer[[uc, ic]] = True
    names = [f"field {c + 1}" for c in range(nc)]
    names[uc], names[ic], names[rc] = "user id", "item id", "rating"
    tab = load_table(src, nc, lo, hi, integer, skip_lines=skip, names=names)
    if tab.shape[0] == 0:
        raise DataError(f"{src}: no ratings")
    vals = tab[:, rc]
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        raise _row_err(src, bad[0], f"rating {vals[bad[0]]} is not finite", skip_lines=skip)
    raw_u, raw_i = tab[:, uc].astype(np.int64), tab[:, ic].astype(np.int64)
    del tab
    uids, users = np.unique(raw_u, return_inverse=True)
    iids, items = np.unique(raw_i, return_inverse=True)
    m = {"source": os.path.abspath(src), "source_format": "ratings-text"}
    key = users.astype(np.int64) * iids.size + items
    order = np.argsort(key, kind="stable")
    ks = key[order]
    same = ks[1:] == ks[:-1]
    n_dup = int(np.count_nonzero(same))
    if n_dup:
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        q = int(np.flatnonzero(same)[np.argmin(order[1:][same])]) + 1  # sorted position of the earliest repeat
        r2, r1 = int(order[q]), int(order[starts[np.searchsorted(starts, q, side="right") - 1]])
        ln = _data_lines(src, [r1, r2], skip_lines=skip)
        if duplicates == "error":
            raise DataError(f"{src}, line {ln[r2]}: user {raw_u[r2]}, item {raw_i[r2]} already rated on line "
                            f"{ln[r1]} (--duplicates last|mean to keep one rating per pair)")
        if duplicates == "last":
            keep = order[np.concatenate((starts[1:], [order.size])) - 1]
            users, items, vals = users[keep], items[keep], vals[keep]
        else:
            cnt = np.diff(np.concatenate((starts, [order.size])))
            vals = np.add.reduceat(vals[order], starts) / cnt
            users, items = users[order[starts]], items[order[starts]]
        how = "kept the last of each" if duplicates == "last" else "averaged"
        warnings.warn(f"{src}: {n_dup} duplicate (user, item) ratings, {how} (first: line {ln[r2]} repeats line "
                      f"{ln[r1]}; --duplicates error|last|mean)", DataWarning, stacklevel=2)
        m.update(duplicates=duplicates, duplicate_ratings=n_dup)
    m.update(rating_min=float(vals.min()), rating_max=float(vals.max()))
    m.update(meta or {})
    return write_ratings(out, users, items, vals, uids.size, iids.size, id_map={"user_ids": uids, "item_ids": iids},
                         n_shards=n_shards, rows_per_shard=rows_per_shard, meta=m, truth=_truth(truth),
                         overwrite=overwrite)


def export_ratings_csv(path: str, users, items, values, header: str = "userId,movieId,rating") -> None:
    """Write ratings as CSV with a MovieLens header (ids as given)."""
    with open(path, "w") as f:
        f.write(header + "\n")
        for u, i, v in zip(np.asarray(users).tolist(), np.asarray(items).tolist(), np.asarray(values).tolist()):
            f.write(f"{u},{i},{v!r}\n")


# ----------------------------------------------------------------------------- NumPy

def _load_np(path: str):
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy/.npz file ({e})") from None


def _npz_array(npz, key: str, path: str) -> np.ndarray:
    """Array ``key`` of an open .npz (loaded lazily: errors surface here)."""
    try:
        return npz[key]
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(f"{path}: array '{key}' holds Python objects (dtype object); save numbers "
                            f"(e.g. np.savez(..., {key}=np.asarray({key}, dtype=float)))") from None
        raise DataError(f"{path}: array '{key}' cannot be read ({e})") from None
    except (OSError, EOFError, KeyError) as e:
        raise DataError(f"{path}: array '{key}' cannot be read ({e})") from None


def convert_npy(inputs, out: str, task: str = "auto", dtype=None, n_shards=None, rows_per_shard=None,
                overwrite=False, truth: str | None = None, meta=None) -> Dataset:
    """Convert NumPy data to a matrix dataset.

    ``inputs`` is one of: ``[X.npy, y.npy]`` (dense); ``[data.npz]`` holding arrays
    ``X`` and ``y``; ``[X_csr.npz, y.npy]`` with a matrix saved by
    ``scipy.sparse.save_npz``.
    """
    import scipy.sparse as sp

    inputs = [os.fspath(p) for p in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    if not 1 <= len(inputs) <= 2:
        raise DataError(f"npy conversion takes X.npy y.npy, data.npz, or X_sparse.npz y.npy; got {inputs}")
    first = _load_np(inputs[0])
    y = None
    if isinstance(first, np.lib.npyio.NpzFile):
        with first:
            keys = set(first.files)
            if {"indptr", "indices", "data", "shape"} <= keys:
                try:
                    X = sp.load_npz(inputs[0]).tocsr()
                except Exception as e:  # noqa: BLE001 - any scipy failure is a bad file
                    raise DataError(f"{inputs[0]}: not a scipy.sparse .npz ({e})") from None
            elif "X" in keys:
                X = _npz_array(first, "X", inputs[0])
                if "y" in keys:
                    y = _npz_array(first, "y", inputs[0])
            else:
                raise DataError(f"{inputs[0]}: .npz must hold arrays 'X' and 'y' or a scipy.sparse matrix "
                                f"(found {sorted(keys)})")
    else:
        X = first
    if len(inputs) == 2:
        y = _load_np(inputs[1])
        if isinstance(y, np.lib.npyio.NpzFile):
            y.close()
            raise DataError(f"{inputs[1]}: y must be a .npy array")
    if y is None:
        raise DataError(f"{inputs[0]}: no targets: give y.npy as a second input (or 'y' inside the .npz)")
    if not sp.issparse(X) and (X.ndim != 2 or X.dtype.kind not in "fiub"):
        raise DataError(f"{inputs[0]}: X must be a 2-D numeric array, got shape {X.shape} dtype {X.dtype}")
    if X.shape[0] == 0:
        raise DataError(f"{inputs[0]}: no rows (X has shape {X.shape})")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != X.shape[0] or y.dtype.kind not in "fiub":
        raise DataError(f"{inputs[-1]}: y has shape {y.shape} ({y.dtype}); expected ({X.shape[0]},) numbers")
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        V.check_sparse("matrix", X.indptr, X.indices, X.data, X.shape[1], 0, inputs[0])
    else:
        V.check_dense(X, 0, inputs[0])
    yv, task, n_classes, m = _labels_to_task(y.astype(np.float64), task, inputs[-1])
    m.update({"source": [os.path.abspath(p) for p in inputs], "source_format": "npy"})
    m.update(meta or {})
    return write_matrix(out, X, yv, n_shards=n_shards, rows_per_shard=rows_per_shard, task=task,
                        n_classes=n_classes, dtype=dtype, meta=m, truth=_truth(truth), overwrite=overwrite)


# ----------------------------------------------------------------------------- reshard / inspect

def reshard(src: str, dst: str, n_shards: int | None = None, rows_per_shard: int | None = None,
            overwrite: bool = False) -> Dataset:
    """Copy a dataset with a new shard layout (serial; one target shard in memory at a time).

    Source checksums are verified while reading.
    """
    from .reader import read_rows

    ds = open_dataset(src)
    if os.path.abspath(src) == os.path.abspath(dst):
        raise DataError(f"{dst}: reshard needs a different destination folder")
    bounds = shard_bounds(ds.n_rows, n_shards, rows_per_shard)
    prepare_folder(dst, overwrite)
    shards = []
    for i, (a, b) in enumerate(bounds):
        blk = read_rows(ds, a, b, verify=True)
        if ds.dense:
            arrays = {"X": blk["X"], "y": blk["y"]}
            nnz = int(np.count_nonzero(blk["X"]))
        else:
            p, ix, v = SPARSE_ARRAYS[ds.kind]
            arrays = {p: blk["ptr"], ix: blk["idx"], v: blk["val"]}
            if ds.kind == "matrix":
                arrays["y"] = blk["y"]
            nnz = int(blk["ptr"][-1])
        shards.append(write_shard(dst, i, ds.kind, arrays, a, b - a, nnz))
    copy_meta_files(ds, dst)
    man = dict(ds.manifest)
    man["shards"] = shards
    man["meta"] = dict(ds.meta, resharded_from=os.path.abspath(src))
    write_manifest(dst, to_jsonable(man))
    return open_dataset(dst)


def inspect(path: str) -> dict:
    """Summary of a dataset: shape, nnz, density, and a per-shard table with checksum
    status ("OK", "FAIL", "MISSING"); ``ok`` is False if any shard fails."""
    ds = open_dataset(path, check_shards=False)
    rows = []
    for s in ds.shards:
        p = ds.shard_path(s)
        if not os.path.isfile(p):
            st = "MISSING"
        else:
            st = "OK" if file_sha256(p) == s.sha256 else "FAIL"
        rows.append({"file": s.file, "row_start": s.row_start, "n_rows": s.n_rows, "nnz": s.nnz, "checksum": st})
    cells = ds.n_rows * ds.n_cols
    info = {"path": ds.path, "kind": ds.kind, "layout": ds.layout, "dtype": ds.dtype, "n_rows": ds.n_rows,
            "n_cols": ds.n_cols, "nnz": ds.nnz, "density": ds.nnz / cells if cells else 0.0,
            "shards": rows, "ok": all(r["checksum"] == "OK" for r in rows), "meta": ds.meta}
    if ds.kind == "matrix":
        info.update(task=ds.task, n_classes=ds.n_classes)
    if ds.kind == "bow":
        info["n_tokens"] = ds.n_tokens
    return info


def format_inspect(info: dict) -> str:
    """Human-readable text of :func:`inspect`'s result."""
    names = {"matrix": ("rows", "cols"), "bow": ("docs", "words"), "ratings": ("users", "items")}[info["kind"]]
    lines = [f"dataset  {info['path']}",
             f"kind     {info['kind']} ({info['layout']}, {info['dtype']})"
             + (f", task {info['task']}" if info.get("task") else "")
             + (f", {info['n_classes']} classes" if info.get("n_classes") else ""),
             f"shape    {info['n_rows']} {names[0]} x {info['n_cols']} {names[1]}",
             f"nnz      {info['nnz']}  (density {info['density']:.4g})"]
    if info.get("n_tokens") is not None:
        lines.append(f"tokens   {info['n_tokens']}")
    for k in ("source", "seed", "truth", "vocab", "id_map", "generator"):
        if k in info["meta"]:
            lines.append(f"{k:<8} {info['meta'][k]}")
    lines.append(f"{'shard':<18}{'row_start':>12}{'rows':>10}{'nnz':>12}  checksum")
    for r in info["shards"]:
        lines.append(f"{r['file']:<18}{r['row_start']:>12}{r['n_rows']:>10}{r['nnz']:>12}  {r['checksum']}")
    lines.append("all checksums OK" if info["ok"] else "CHECKSUM FAILURE")
    return "\n".join(lines)
