"""Compiled scans of the cluster index: row ranges of its layout against batches of queries.

Built on :mod:`pipeline.hamming` (word-major rows, a block of rows against all
forms of a query in one vectorised loop). :func:`candidate_ranges` picks, for
each query, the row ranges the triangle inequality leaves; :func:`scan_ranges`
compares the queries with their ranges and keeps the matches within ``t``,
writing them without a branch into buffers that grow between compiled calls
(growing them inside the loop stops LLVM vectorising it). A pass's ranges can be
shared among threads: the compiled loops release the GIL.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from pipeline.hamming import BLOCK, FAR, block_distances

#: Most matches the first output buffers of a scan hold (more take further calls).
_FIRST_BUFFER = 1 << 22
#: Fewest rows (times forms) worth handing to a thread of their own (~0.3 ms of work).
_ROWS_PER_THREAD = 1 << 18
_pool: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    """One pool for the process, made on first use: starting threads per scan cost more than small scans."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="imgdedup-scan")
    return _pool


@njit(nogil=True, cache=True)
def _scan(queries, columns, query, lo, hi, t, p, start, found_q, found_r, found_d):
    """Matches within ``t`` over the ranges ``lo[p]:hi[p]`` of ``query[p]``, from range ``p`` at row ``start``.

    Fills ``found_*`` until fewer than one block of slots is left and returns
    ``(count, p, start)``: where to resume (``p == len(query)`` when done). The
    buffers never grow inside the loop, which keeps the block loops vectorised.
    """
    low = np.empty(BLOCK, np.uint16)
    high = np.empty(BLOCK, np.uint16)
    acc = np.empty(BLOCK, np.uint16)
    count = 0
    while p < len(query):
        forms = queries[query[p]]
        while start < hi[p]:
            if len(found_q) - count < BLOCK:
                return count, p, start
            stop = min(hi[p], start + BLOCK)
            block_distances(columns, start, stop, forms, low, high, acc)
            nearest = FAR
            for i in range(stop - start):
                nearest = min(nearest, low[i])
            if nearest > t:  # most blocks of a scan far from its query
                start = stop
                continue
            for i in range(stop - start):
                # Written always, kept by advancing: no branch to mispredict.
                found_q[count] = query[p]
                found_r[count] = start + i
                found_d[count] = low[i]
                count += low[i] <= t
            start = stop
        p += 1
        if p < len(query):
            start = lo[p]
    return count, p, start


def _scan_all(queries, columns, query, lo, hi, t):
    """:func:`_scan` over all ranges.

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
        count, p, start = _scan(queries, columns, query, lo, hi, t, p, start, *buffers)
        parts.append(tuple(buffer[:count] for buffer in buffers))
    return tuple(np.concatenate(part) for part in zip(*parts)) if len(parts) > 1 else parts[0]


@njit(nogil=True, cache=True)
def _candidate_ranges(queries, centre_columns, radii, keys, offsets, stride, t, query, lo, hi):
    """Fill ``query``/``lo``/``hi`` (room for every query and class) and return how many ranges."""
    k = centre_columns.shape[1]
    low = np.empty(k, np.uint16)
    high = np.empty(k, np.uint16)
    acc = np.empty(k, np.uint16)
    count = 0
    for q in range(queries.shape[0]):
        block_distances(centre_columns, 0, k, queries[q], low, high, acc)
        for c in range(k):
            if offsets[c + 1] == offsets[c] or np.int64(low[c]) - radii[c] > t:
                continue
            members = keys[offsets[c]:offsets[c + 1]]
            base = c * stride
            first = offsets[c] + np.searchsorted(members, base + max(np.int64(low[c]) - t, 0), side="left")
            last = offsets[c] + np.searchsorted(members, base + min(np.int64(high[c]) + t, stride - 1), side="right")
            if count and query[count - 1] == q and hi[count - 1] == first:
                hi[count - 1] = last  # continues the previous range (whole neighbouring classes): one range
            else:
                query[count], lo[count], hi[count] = q, first, last
                count += 1
    return count


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
        The centres, from :func:`pipeline.hamming.word_columns`.
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
    count = _candidate_ranges(queries, centre_columns, np.ascontiguousarray(radii, dtype=np.int64), keys,
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
        Rows from :func:`pipeline.hamming.word_columns`.
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
