"""Numba kernels that parse numeric text (LIBSVM lines, whitespace/CSV tables).

Numbers (up to 18 significant digits, decimal exponent within +-280) are converted
as mantissa x 10^e in double-double arithmetic (~2^-103 relative error) and rounded;
the rare token whose exact value lies too close to a rounding midpoint, and any other
token (longer mantissas, huge exponents, ``nan``, ``inf``), is marked "slow" and
parsed by Python's ``float`` afterwards, so results equal ``float(text)`` exactly.

Error codes returned with the 1-based line number (relative to the chunk):
1 bad number, 2 missing ':' after an index, 3 negative or non-integer index,
4 value out of the allowed range, 5 too few fields.
"""

from __future__ import annotations

import math

import numba
import numpy as np



def _pow10_dd(lo: int = -300, hi: int = 300) -> np.ndarray:
    """10^e for e in [lo, hi] as double-double (hi, lo) rows, rounded exactly."""
    from fractions import Fraction

    out = np.zeros((hi - lo + 1, 2))
    for e in range(lo, hi + 1):
        x = Fraction(10) ** e
        h = float(x)
        out[e - lo, 0] = h
        out[e - lo, 1] = float(x - Fraction(h))
    return out


_POW10 = _pow10_dd()
_P0 = 300

E_NUMBER, E_COLON, E_INDEX, E_RANGE, E_FIELDS = 1, 2, 3, 4, 5
ERRORS = {E_NUMBER: "not a number", E_COLON: "expected 'index:value'", E_INDEX: "bad feature index",
          E_RANGE: "value out of range", E_FIELDS: "too few fields"}


@numba.njit(cache=True, inline="always")
def _is_sep(c):
    return c == 32 or c == 9 or c == 13


@numba.njit(cache=True, inline="always")
def _split(a):
    c = 134217729.0 * a
    ah = c - (c - a)
    return ah, a - ah


@numba.njit(cache=True)
def _dd_scale(mant, e, pow10):
    """Correctly rounded float(mant * 10^e), or (0, False) when it cannot be decided."""
    if e < -280 or e > 280:
        return 0.0, False
    if mant == 0:
        return 0.0, True
    mh = float(mant)
    ml = float(mant - np.int64(mh))
    bh = pow10[e + 300, 0]
    bl = pow10[e + 300, 1]
    p = mh * bh
    ah, al = _split(mh)
    ch, cl = _split(bh)
    err = ((ah * ch - p) + ah * cl + al * ch) + al * cl
    err += mh * bl + ml * bh
    s = p + err
    r = err - (s - p)
    if not (1e-290 < s < 1e290):
        return 0.0, False
    m, ex = math.frexp(s)
    if m == 0.5:
        return 0.0, False
    ulp = math.ldexp(1.0, ex - 53)
    if abs(abs(r) - 0.5 * ulp) <= s * 2.5e-29:
        return 0.0, False
    return s, True


@numba.njit(cache=True)
def _parse_float(buf, i, n, pow10):
    """Parse a number at ``buf[i:]``. Returns (value, end, status): 0 ok, 1 slow, 2 error."""
    start = i
    neg = False
    if i < n and (buf[i] == 45 or buf[i] == 43):
        neg = buf[i] == 45
        i += 1
    mant = 0
    sig = 0
    exp10 = 0
    ndig = 0
    while i < n and 48 <= buf[i] <= 57:
        d = buf[i] - 48
        if sig > 0 or d != 0:
            if sig < 18:
                mant = mant * 10 + d
            else:
                exp10 += 1
            sig += 1
        ndig += 1
        i += 1
    if i < n and buf[i] == 46:
        i += 1
        while i < n and 48 <= buf[i] <= 57:
            d = buf[i] - 48
            if sig > 0 or d != 0:
                if sig < 18:
                    mant = mant * 10 + d
                    exp10 -= 1
                sig += 1
            else:
                exp10 -= 1
            ndig += 1
            i += 1
    status = 0
    if ndig == 0:
        # nan / inf / infinity and anything else alphabetic: leave to Python
        while i < n and not (_is_sep(buf[i]) or buf[i] == 10 or buf[i] == 58 or buf[i] == 44 or buf[i] == 35):
            i += 1
        if i == start:
            return 0.0, i, 2
        return 0.0, i, 1
    if i < n and (buf[i] == 101 or buf[i] == 69):
        i += 1
        eneg = False
        if i < n and (buf[i] == 45 or buf[i] == 43):
            eneg = buf[i] == 45
            i += 1
        e = 0
        ed = 0
        while i < n and 48 <= buf[i] <= 57:
            if e < 100000:
                e = e * 10 + (buf[i] - 48)
            ed += 1
            i += 1
        if ed == 0:
            return 0.0, i, 2
        exp10 += -e if eneg else e
    if sig > 18:
        status = 1
        v = 0.0
    else:
        v, ok = _dd_scale(mant, exp10, pow10)
        if not ok:
            status = 1
    if neg:
        v = -v
    return v, i, status


@numba.njit(cache=True)
def parse_svmlight(buf, pow10):
    """Parse LIBSVM lines ``label [qid:q] idx:val ... [# comment]``.

    Returns labels, indptr, indices, values, slow (pairs of (start, end) byte
    offsets and a target: -1-row for a label, entry index otherwise), n_slow,
    error code and error line (1-based in the chunk).
    """
    n = buf.size
    nl = 1
    ncol = 0
    for j in range(n):
        if buf[j] == 10:
            nl += 1
        elif buf[j] == 58:
            ncol += 1
    labels = np.empty(nl, np.float64)
    indptr = np.zeros(nl + 1, np.int64)
    indices = np.empty(ncol, np.int64)
    values = np.empty(ncol, np.float64)
    slow = np.empty((ncol + nl, 3), np.int64)
    ns = 0
    row = 0
    k = 0
    line = 0
    i = 0
    while i < n:
        line += 1
        while i < n and _is_sep(buf[i]):
            i += 1
        if i >= n:
            break
        if buf[i] == 10 or buf[i] == 35:  # blank or comment line
            while i < n and buf[i] != 10:
                i += 1
            i += 1
            continue
        s0 = i
        v, i, st = _parse_float(buf, i, n, pow10)
        if st == 2 or (i < n and not (_is_sep(buf[i]) or buf[i] == 10)):
            return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], E_NUMBER, line
        if st == 1:
            slow[ns, 0] = s0
            slow[ns, 1] = i
            slow[ns, 2] = -1 - row
            ns += 1
        labels[row] = v
        while True:
            while i < n and _is_sep(buf[i]):
                i += 1
            if i >= n or buf[i] == 10 or buf[i] == 35:
                break
            # index (or qid)
            if buf[i] == 113:  # 'q' of qid:
                while i < n and buf[i] != 58 and not _is_sep(buf[i]) and buf[i] != 10:
                    i += 1
                if i >= n or buf[i] != 58:
                    return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], E_COLON, line
                i += 1
                _, i, st = _parse_float(buf, i, n, pow10)
                if st == 2:
                    return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], E_NUMBER, line
                continue
            idx = 0
            nd = 0
            while i < n and 48 <= buf[i] <= 57:
                idx = idx * 10 + (buf[i] - 48)
                nd += 1
                i += 1
            if nd == 0 or nd > 18:
                return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], E_INDEX, line
            if i >= n or buf[i] != 58:
                return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], E_COLON, line
            i += 1
            s0 = i
            v, i, st = _parse_float(buf, i, n, pow10)
            if st == 2 or (i < n and not (_is_sep(buf[i]) or buf[i] == 10 or buf[i] == 35)):
                return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], E_NUMBER, line
            if st == 1:
                slow[ns, 0] = s0
                slow[ns, 1] = i
                slow[ns, 2] = k
                ns += 1
            indices[k] = idx
            values[k] = v
            k += 1
        while i < n and buf[i] != 10:
            i += 1
        i += 1
        row += 1
        indptr[row] = k
    return labels[:row], indptr[:row + 1], indices[:k], values[:k], slow[:ns], 0, 0


@numba.njit(cache=True)
def parse_table(buf, ncols, lo, hi, integer, pow10):
    """Parse the first ``ncols`` numeric fields of each non-blank line.

    Fields are separated by runs of spaces, tabs, ',' or ':'. Column ``c`` must lie
    in ``[lo[c], hi[c]]`` and be an integer where ``integer[c]``. Returns
    (table (rows, ncols) float64, slow (start, end, row*ncols+col), error, line).
    """
    n = buf.size
    nl = 1
    for j in range(n):
        if buf[j] == 10:
            nl += 1
    out = np.empty((nl, ncols), np.float64)
    slow = np.empty((0, 3), np.int64)
    slow_l = []
    row = 0
    line = 0
    i = 0
    while i < n:
        line += 1
        while i < n and _is_sep(buf[i]):
            i += 1
        if i >= n:
            break
        if buf[i] == 10:
            i += 1
            continue
        for c in range(ncols):
            while i < n and (_is_sep(buf[i]) or buf[i] == 44 or buf[i] == 58):
                i += 1
            if i >= n or buf[i] == 10:
                return out[:row], slow, E_FIELDS, line
            s0 = i
            v, i, st = _parse_float(buf, i, n, pow10)
            if st == 2 or (i < n and not (_is_sep(buf[i]) or buf[i] == 10 or buf[i] == 44 or buf[i] == 58)):
                return out[:row], slow, E_NUMBER, line
            if st == 1:
                slow_l.append((s0, i, row * ncols + c))
                v = lo[c]
            elif v < lo[c] or v > hi[c] or (integer[c] and v != np.floor(v)):
                return out[:row], slow, E_RANGE, line
            out[row, c] = v
        while i < n and buf[i] != 10:
            i += 1
        i += 1
        row += 1
    if len(slow_l):
        slow = np.empty((len(slow_l), 3), np.int64)
        for j in range(len(slow_l)):
            slow[j, 0] = slow_l[j][0]
            slow[j, 1] = slow_l[j][1]
            slow[j, 2] = slow_l[j][2]
    return out[:row], slow, 0, 0


def fix_slow(buf: np.ndarray, slow: np.ndarray, set_value) -> list:
    """Parse the "slow" tokens with Python's float; returns offsets of unparsable ones."""
    bad = []
    raw = buf.tobytes() if len(slow) else b""
    for s, e, t in slow.tolist():
        try:
            set_value(t, float(raw[s:e]))
        except ValueError:
            bad.append(s)
    return bad


def line_of(buf: np.ndarray, offset: int) -> int:
    """1-based line number of byte ``offset`` in ``buf``."""
    return int(np.count_nonzero(buf[:offset] == 10)) + 1


def line_text(buf: np.ndarray, line: int, limit: int = 80) -> str:
    """Text of the 1-based ``line`` of ``buf`` (cut to ``limit`` characters)."""
    nls = np.flatnonzero(buf == 10)
    a = 0 if line <= 1 else int(nls[line - 2]) + 1 if line - 2 < nls.size else buf.size
    b = int(nls[line - 1]) if line - 1 < nls.size else buf.size
    t = buf[a:b].tobytes().decode("utf-8", "replace").rstrip("\r")
    return t if len(t) <= limit else t[:limit] + "..."


POW10 = _POW10
