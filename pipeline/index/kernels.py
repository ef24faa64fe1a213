"""Vectorised Hamming kernels over packed fingerprints viewed as 64-bit words.

The index compares one query with many stored rows at a time. Working on
``uint64`` words (4 per 256-bit fingerprint) instead of bytes cuts the XOR and
popcount work eightfold; ``np.bitwise_count`` gives the popcount. Queries carry
``F`` forms (1 for a plain hash, 8 for its dihedral set) and every distance
here is the smallest over the forms.
"""
from __future__ import annotations

import numpy as np

from pipeline.cluster.assign import as_words as rows_as_words

#: Elements per temporary in the dense and pair kernels (bounds memory near 64 MiB).
_BUDGET = 1 << 21


def as_words(packed: np.ndarray) -> np.ndarray:
    """View packed fingerprints of any leading shape as 64-bit words.

    Parameters
    ----------
    packed : ndarray of uint8, shape (..., nbytes)

    Returns
    -------
    ndarray of uint64, shape (..., ceil(nbytes / 8))
        As :func:`pipeline.cluster.assign.as_words`, row by row.
    """
    packed = np.asarray(packed, dtype=np.uint8)
    words = rows_as_words(packed.reshape(-1, packed.shape[-1]))
    return words.reshape(packed.shape[:-1] + (words.shape[-1],))


def dense_distances(queries: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every query to every row, smallest and largest over forms.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    rows : ndarray of uint64, shape (n, w)

    Returns
    -------
    low, high : ndarray of int32, shape (m, n)
        ``min`` and ``max`` over the ``F`` forms of the Hamming distance in bits.
    """
    m, forms, words = queries.shape
    n = rows.shape[0]
    low = np.empty((m, n), dtype=np.int32)
    high = np.empty((m, n), dtype=np.int32)
    step = max(1, _BUDGET // max(1, n))
    for start in range(0, m, step):
        block = queries[start:start + step]
        lo = hi = None
        for f in range(forms):
            acc = np.zeros((block.shape[0], n), dtype=np.uint16)
            for j in range(words):
                acc += np.bitwise_count(block[:, f, j, None] ^ rows[None, :, j])
            lo = acc if lo is None else np.minimum(lo, acc)
            hi = acc if hi is None else np.maximum(hi, acc)
        low[start:start + step] = lo
        high[start:start + step] = hi
    return low, high


def _split_long_ranges(query: np.ndarray, lo: np.ndarray, hi: np.ndarray, size: int):
    """Cut ranges longer than ``size`` into pieces of at most ``size`` rows."""
    pieces = np.maximum(1, -(-(hi - lo) // size))
    if (pieces == 1).all():
        return query, lo, hi
    first = np.repeat(np.cumsum(pieces) - pieces, pieces)
    within = np.arange(pieces.sum()) - first
    query, lo_rep, hi_rep = np.repeat(query, pieces), np.repeat(lo, pieces), np.repeat(hi, pieces)
    start = lo_rep + within * size
    return query, start, np.minimum(start + size, hi_rep)


def scan_ranges(
    queries: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    t: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compare queries with row ranges and keep the matches within ``t``.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    rows : ndarray of uint64, shape (n, w)
    query : ndarray of int64, shape (P,)
        For each range, the query it is compared with.
    lo, hi : ndarray of int64, shape (P,)
        Each range is the row slice ``lo:hi``.
    t : int
        Largest distance kept, in bits.

    Returns
    -------
    query_index, row_index : ndarray of int64, shape (R,)
    distance : ndarray of int32, shape (R,)
        Every (query, row) pair of the ranges whose distance (smallest over the
        query's forms) is at most ``t``.
    """
    forms = queries.shape[1]
    budget = max(1, _BUDGET // (forms * queries.shape[2]))
    query, lo, hi = _split_long_ranges(query.astype(np.int64), lo.astype(np.int64), hi.astype(np.int64), budget)
    lengths = hi - lo
    keep = lengths > 0
    query, lo, lengths = query[keep], lo[keep], lengths[keep]
    ends = np.cumsum(lengths)
    # Chunk boundaries: consecutive ranges whose lengths add up to about one budget.
    cuts = np.unique(np.concatenate([[0], np.searchsorted(ends, np.arange(budget, ends[-1] if len(ends) else 0, budget)), [len(lengths)]]))
    found_q, found_r, found_d = [], [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if a == b:
            continue
        n_rows = lengths[a:b]
        starts = np.cumsum(n_rows) - n_rows
        row_index = np.arange(n_rows.sum()) + np.repeat(lo[a:b] - starts, n_rows)
        query_index = np.repeat(query[a:b], n_rows)
        distance = _pair_distances(queries, rows, query_index, row_index)
        hit = distance <= t
        found_q.append(query_index[hit])
        found_r.append(row_index[hit])
        found_d.append(distance[hit])
    if not found_q:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.int32)
    return np.concatenate(found_q), np.concatenate(found_r), np.concatenate(found_d).astype(np.int32)


def _pair_distances(queries: np.ndarray, rows: np.ndarray, query_index: np.ndarray, row_index: np.ndarray) -> np.ndarray:
    """(P,) uint16 distance of each (query, row) pair, smallest over the query's forms."""
    gathered = rows[row_index]
    best = None
    for f in range(queries.shape[1]):
        form = queries[query_index, f]
        acc = np.zeros(len(row_index), dtype=np.uint16)
        for j in range(rows.shape[1]):
            acc += np.bitwise_count(gathered[:, j] ^ form[:, j])
        best = acc if best is None else np.minimum(best, acc)
    return best
