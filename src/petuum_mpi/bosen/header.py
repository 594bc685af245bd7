"""The window header: named int64 fields at the start of every rank's window.

===================  ======================================================================
``version``          seqlock: odd while the owner applies updates (readers retry)
``clock``            the owner's clock
``gate``             bsp: the owner finished its reads of clock ``gate - 1``
``reserved``         unused
``applied[p]``       every update of origin ``p`` from clocks ``< applied[p]`` is in the
                     shard (a reader at clock ``c`` needs ``min_p >= c - s``)
``consumed[p]``      bytes of ``p``'s mailbox ring the owner has applied (``p`` reads
                     it before reusing ring space)
``consumed_seq[p]``  sequence number of ``p``'s last applied chunk (read-my-writes:
                     ``p`` adds its later chunks to what it fetched)
``written[p]``       bytes ``p`` has written into its ring (``p`` Puts it after the chunks)
``log_head[t]``      bytes ever appended to table ``t``'s delta log (every change of its shard)
``log_tail[t]``      oldest position of that log still held (older copies are fetched whole)
===================  ======================================================================

The owner writes its own header directly; other ranks ``Get`` it whole (or one
field, at :meth:`Header.disp`) and ``Put`` only their own ``written[p]``.
"""

from __future__ import annotations

import numpy as np

_SCALARS = ("version", "clock", "gate", "reserved")
_PER_ORIGIN = ("applied", "consumed", "consumed_seq", "written")


_PER_TABLE = ("log_head", "log_tail")


def header_dtype(P: int, T: int = 1) -> np.dtype:
    """The header of a window shared by ``P`` ranks with ``T`` tables, as a NumPy structured dtype."""
    return np.dtype([(f, "<i8") for f in _SCALARS] + [(f, "<i8", (P,)) for f in _PER_ORIGIN]
                    + [(f, "<i8", (T,)) for f in _PER_TABLE])


class Header:
    """Named views of a header held in ``buf`` (a window's bytes or a fetched copy).

    ``version``, ``clock`` and ``gate`` are 1-element arrays (``h.clock[0] = c``);
    ``applied``, ``consumed``, ``consumed_seq`` and ``written`` have one entry per rank,
    ``log_head`` and ``log_tail`` one per table.
    """

    def __init__(self, buf: np.ndarray, P: int, T: int = 1):
        self.dtype = header_dtype(P, T)
        self.nbytes = self.dtype.itemsize
        self.raw = buf[: self.nbytes]  # uint8: what a Get fills
        rec = self.raw.view(self.dtype)
        self.version, self.clock, self.gate = rec["version"], rec["clock"], rec["gate"]
        self.log_head, self.log_tail = rec["log_head"][0], rec["log_tail"][0]
        self.applied = rec["applied"][0]
        self.consumed = rec["consumed"][0]
        self.consumed_seq = rec["consumed_seq"][0]
        self.written = rec["written"][0]

    def disp(self, field: str, p: int = 0) -> int:
        """Byte offset of ``field`` (entry ``p`` of a per-origin field) in the window."""
        return self.dtype.fields[field][1] + 8 * p
