"""Vectorised Hamming kernels over packed fingerprints viewed as 64-bit words.

The index compares one query with many stored rows at a time. Working on
``uint64`` words (4 per 256-bit fingerprint) instead of bytes cuts the XOR and
popcount work eightfold; ``np.bitwise_count`` gives the popcount. Queries carry
``F`` forms (1 for a plain hash, 8 for its dihedral set) and every distance
here is the smallest over the forms.
"""
from __future__ import annotations

import numpy as np

#: Elements per temporary in the pair kernels, and cells per dense comparison (bounds memory near 64 MiB).
_BUDGET = 1 << 21
#: Cells (query x row) per tile of :func:`dense_distances`, and rows per tile (sized to stay in cache).
_TILE = 1 << 15
_TILE_COLUMNS = 4096
#: A class visited by at least this many queries of a batch is scanned as a dense block.
_DENSE_MIN_QUERIES = 8


def as_words(packed: np.ndarray) -> np.ndarray:
    """View packed fingerprints of any leading shape as 64-bit words.

    Parameters
    ----------
    packed : ndarray of uint8, shape (..., nbytes)

    Returns
    -------
    ndarray of uint64, shape (..., ceil(nbytes / 8))
        Zero-padded to whole words (padding bits are equal on both sides, so
        distances are unchanged). Word byte order is irrelevant to popcounts of XORs.
    """
    packed = np.asarray(packed, dtype=np.uint8)
    pad = -packed.shape[-1] % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def dense_distances(queries: np.ndarray, rows: np.ndarray, *, high: bool = False):
    """Distances from every query to every row, smallest (and largest) over forms.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    rows : ndarray of uint64, shape (n, w)
    high : bool
        Also return the largest distance over the forms.

    Returns
    -------
    low : ndarray of uint16, shape (m, n)
        ``min`` over the ``F`` forms of the Hamming distance in bits.
    high : ndarray of uint16, shape (m, n)
        ``max`` over the forms; only when ``high`` is true.
    """
    m, forms, words = queries.shape
    n = rows.shape[0]
    low = np.empty((m, n), dtype=np.uint16)
    largest = np.empty((m, n), dtype=np.uint16) if high else None
    # Tiles of about _TILE cells keep every temporary in cache, and the ufuncs
    # write into buffers made once: twice as fast as whole-block temporaries.
    columns = max(1, min(n, _TILE_COLUMNS))
    step = max(1, _TILE // columns)
    xor = np.empty((step, columns), np.uint64)
    bits = np.empty((step, columns), np.uint8)
    acc = np.empty((step, columns), np.uint16)
    row_words = np.ascontiguousarray(np.asarray(rows).T)  # (w, n): one word of every row is contiguous
    for first_column in range(0, n, columns):
        tile_rows = row_words[:, first_column:first_column + columns]
        width = tile_rows.shape[1]
        for start in range(0, m, step):
            block = queries[start:start + step]
            x, b, a = xor[:len(block), :width], bits[:len(block), :width], acc[:len(block), :width]
            lo = low[start:start + step, first_column:first_column + width]
            hi = largest[start:start + step, first_column:first_column + width] if high else None
            for f in range(forms):
                a[...] = 0
                for j in range(words):
                    np.bitwise_xor(block[:, f, j, None], tile_rows[j][None, :], out=x)
                    np.add(a, np.bitwise_count(x, out=b), out=a)
                if f == 0:
                    lo[...] = a
                    if high:
                        hi[...] = a
                else:
                    np.minimum(lo, a, out=lo)
                    if high:
                        np.maximum(hi, a, out=hi)
    return (low, largest) if high else low


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


def scan_classes(
    queries: np.ndarray,
    rows: np.ndarray,
    query: np.ndarray,
    cls: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    t: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compare queries with row ranges of their candidate classes; keep matches within ``t``.

    A class that many queries of the batch must visit is compared as one dense
    block (its queries against the union of their ranges: no row is gathered,
    and rows outside a query's own range lie beyond ``t`` anyway); the other
    ranges are gathered and compared pair by pair in one vectorised pass, so a
    batch spread thinly over many classes costs no Python loop per class.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    rows : ndarray of uint64, shape (n, w)
    query, cls : ndarray of int64, shape (P,)
        For each range, the query it is compared with and the class it lies in.
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
    visits = np.bincount(cls, minlength=1)
    dense = visits[cls] >= _DENSE_MIN_QUERIES
    found = [scan_ranges(queries, rows, query[~dense], lo[~dense], hi[~dense], t)]
    order = np.argsort(cls[dense], kind="stable")
    query, cls, lo, hi = query[dense][order], cls[dense][order], lo[dense][order], hi[dense][order]
    bounds = np.flatnonzero(np.r_[True, cls[1:] != cls[:-1], True]) if len(cls) else []
    for a, b in zip(bounds[:-1], bounds[1:]):
        members = query[a:b]
        start, stop = lo[a:b].min(), hi[a:b].max()
        step = max(1, _BUDGET // len(members))
        for first in range(start, stop, step):
            low = dense_distances(queries[members], rows[first:min(first + step, stop)])
            q, r = np.nonzero(low <= t)
            found.append((members[q], first + r, low[q, r].astype(np.int32)))
    return tuple(np.concatenate(part) for part in zip(*found))


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
    total = int(ends[-1]) if len(ends) else 0
    # Chunk boundaries: consecutive ranges whose lengths add up to about one budget.
    cuts = np.unique(np.concatenate([[0], np.searchsorted(ends, np.arange(budget, total, budget)), [len(lengths)]]))
    found_q, found_r, found_d = [], [], []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if a == b:
            continue
        n_rows = lengths[a:b]
        starts = np.cumsum(n_rows) - n_rows
        row_index = np.arange(n_rows.sum()) + np.repeat(lo[a:b] - starts, n_rows)
        distance = _range_distances(queries[query[a:b]], n_rows, rows[row_index])
        hit = distance <= t
        found_q.append(np.repeat(query[a:b], n_rows)[hit])
        found_r.append(row_index[hit])
        found_d.append(distance[hit])
    if not found_q:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros(0, dtype=np.int32)
    return np.concatenate(found_q), np.concatenate(found_r), np.concatenate(found_d).astype(np.int32)


def _range_distances(range_queries: np.ndarray, lengths: np.ndarray, gathered: np.ndarray) -> np.ndarray:
    """Distances of gathered rows to the query of their range, smallest over forms.

    Parameters
    ----------
    range_queries : ndarray of uint64, shape (R, F, w)
        The query of each range.
    lengths : ndarray of int64, shape (R,)
        Rows per range.
    gathered : ndarray of uint64, shape (sum(lengths), w)
        The ranges' rows, range after range.

    Returns
    -------
    ndarray of uint16, shape (sum(lengths),)
    """
    best = None
    for f in range(range_queries.shape[1]):
        # Repeating each range's query row is a block copy, cheaper than gathering it per pair.
        distance = row_popcount(gathered ^ np.repeat(range_queries[:, f], lengths, axis=0))
        best = distance if best is None else np.minimum(best, distance)
    return best


def row_popcount(words: np.ndarray) -> np.ndarray:
    """Set bits per row of 64-bit words, ``(n, w) uint64 -> (n,) uint16``."""
    counts = np.bitwise_count(words)
    if counts.shape[1] != 4:
        return counts.sum(axis=1, dtype=np.uint16)
    # 256-bit rows: the 4 per-word counts (each <= 64) are the bytes of one
    # uint32; add them in two SWAR steps instead of a slow reduction over 4 columns.
    packed = counts.view(np.uint32).ravel()
    pairs = (packed & 0x00FF00FF) + ((packed >> 8) & 0x00FF00FF)
    return ((pairs & 0xFFFF) + (pairs >> 16)).astype(np.uint16)
