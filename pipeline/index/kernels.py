"""Compiled scans of the cluster index: row ranges of its layout against batches of queries.

Built on :mod:`imgdedup.pipeline.hamming` (word-major rows, a block of rows against all
forms of a query in one vectorised loop). :func:`candidate_ranges` picks, for
each query, the row ranges the triangle inequality leaves; :func:`scan_ranges`
compares the queries with their ranges and keeps the matches within ``t``,
writing them without a branch into buffers that grow between compiled calls
(growing them inside the loop stops LLVM vectorising it). A pass's ranges can be
shared among threads: the compiled loops release the GIL.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from imgdedup.pipeline.cores import usable_cores
from imgdedup.pipeline.hamming import BLOCK, FAR, candidate_ranges_into, scan_into

#: Most matches the first output buffers of a scan hold (more take further calls).
_FIRST_BUFFER = 1 << 22
#: Fewest rows (times forms) worth handing to a thread of their own (~0.3 ms of work).
_ROWS_PER_THREAD = 1 << 18
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    """One pool for the process, made on first use: starting threads per scan cost more than small scans."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(usable_cores(), thread_name_prefix="imgdedup-scan")
        return _pool


def _scan_all(queries, columns, query, lo, hi, t):
    """:func:`imgdedup.pipeline.hamming.scan_into` over all ranges.

    The first buffers hold as many matches as the ranges have rows (up to
    ``_FIRST_BUFFER``): pages never written are never committed, so one call
    usually suffices.
    """
    if len(query) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
    parts = []
    p, start = 0, int(lo[0])
    size = min(int(np.maximum(hi - lo, 0).sum()), _FIRST_BUFFER) + BLOCK
    while p < len(query):
        buffers = np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int32)
        count, p, start = scan_into(queries, columns, query, lo, hi, t, p, start, *buffers)
        parts.append(tuple(buffer[:count] for buffer in buffers))
    return tuple(np.concatenate(part) for part in zip(*parts)) if len(parts) > 1 else parts[0]


def candidate_ranges(queries: np.ndarray, centre_columns: np.ndarray, radii: np.ndarray, keys: np.ndarray,
                     offsets: np.ndarray, stride: int, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of each class that the triangle inequality leaves for each query.

    For a member ``x`` of class ``c``, ``d(q, x) >= |d(q, c) - d(x, c)|``: only
    members whose distance to the centre lies within ``t`` of some form's
    distance to it can match, and a class whose radius is below ``d(q, c) - t``
    (smallest over forms) holds none.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    centre_columns : ndarray of uint64, shape (w, k)
        The centres, from :func:`imgdedup.pipeline.hamming.word_columns`.
    radii : ndarray of int, shape (k,)
        Largest member distance to each centre, in bits.
    keys : ndarray of int64, shape (n,)
        Members' ``class * stride + distance to the class centre``, ascending.
    offsets : ndarray of int64, shape (k + 1,)
        Class ``c`` is rows ``offsets[c]:offsets[c + 1]``.
    stride : int
        Bits per fingerprint plus one.
    t : int

    Returns
    -------
    query, lo, hi : ndarray of int64, shape (P,)
        Row ranges ``lo:hi`` to scan for each query, by query, then class;
        ranges that meet are joined.
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    # Room for every (query, class): pages never written are never committed.
    ranges = tuple(np.empty(len(queries) * centre_columns.shape[1], np.int64) for _ in range(3))
    count = candidate_ranges_into(queries, centre_columns, np.ascontiguousarray(radii, dtype=np.int64), keys,
                              np.ascontiguousarray(offsets, dtype=np.int64), int(stride), int(t), *ranges)
    return tuple(r[:count] for r in ranges)


def scan_ranges(
    queries: np.ndarray,
    columns: np.ndarray,
    query: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    t: int,
    *,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compare queries with row ranges and keep the matches within ``t``.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    columns : ndarray of uint64, shape (w, n)
        Rows from :func:`imgdedup.pipeline.hamming.word_columns`.
    query : ndarray of int, shape (P,)
        For each range, the query it is compared with; non-decreasing (a
        query's ranges are consecutive).
    lo, hi : ndarray of int, shape (P,)
        Each range is the row slice ``lo:hi``.
    t : int
        Largest distance kept, in bits.
    threads : int
        Most threads the ranges are shared among (the compiled loop releases the
        GIL); each takes a run of consecutive rows of the ranges (a range may be
        cut), about as many as the others and at least ``_ROWS_PER_THREAD``
        row-forms.

    Returns
    -------
    query_index, row_index : ndarray of int64, shape (R,)
    distance : ndarray of int32, shape (R,)
        Every (query, row) pair of the ranges whose distance (smallest over the
        query's forms) is at most ``t``, range after range (so by query).

    Raises
    ------
    ValueError
        ``query`` decreases somewhere.
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    query, lo, hi = (np.ascontiguousarray(a, dtype=np.int64) for a in (query, lo, hi))
    if queries.shape[-1] != columns.shape[0]:
        raise ValueError(f"queries of {queries.shape[-1]} words against rows of {columns.shape[0]} words")
    if len(query) and (lo.min() < 0 or hi.max() > columns.shape[1] or query.min() < 0 or query.max() >= len(queries)):
        raise ValueError("a range lies outside the rows, or names a query that does not exist")
    if (np.diff(query) < 0).any():
        raise ValueError("ranges must be grouped by query, in ascending query order")
    t = max(-1, min(int(t), int(FAR) - 1))
    hi = np.maximum(hi, lo)
    rows = int((hi - lo).sum())
    threads = min(threads, rows * queries.shape[1] // _ROWS_PER_THREAD)
    if threads <= 1:
        return _scan_all(queries, columns, query, lo, hi, t)
    parts = list(_thread_pool().map(lambda share: _scan_all(queries, columns, *share, t),
                                    _shares(query, lo, hi, rows, threads)))
    return tuple(np.concatenate(part) for part in zip(*parts))


def _shares(query: np.ndarray, lo: np.ndarray, hi: np.ndarray, rows: int, parts: int) -> list[tuple]:
    """The ranges cut into ``parts`` runs of consecutive rows of about equal length.

    A range may be cut in two; run after run, the pieces keep the ranges' order,
    so the runs' matches, concatenated, are those of one scan.
    """
    ends = np.cumsum(hi - lo)
    shares = []
    for part in range(parts):
        start, stop = rows * part // parts, rows * (part + 1) // parts
        first, last = np.searchsorted(ends, start, side="right"), np.searchsorted(ends, stop, side="left")
        if start == stop:
            continue
        piece_lo, piece_hi = lo[first:last + 1].copy(), hi[first:last + 1].copy()
        piece_lo[0] += start - (ends[first] - (hi[first] - lo[first]))
        piece_hi[-1] -= ends[last] - stop
        shares.append((query[first:last + 1], piece_lo, piece_hi))
    return shares
