"""Pairs of images that share feature keys: the verifier's candidates beside the fingerprint's zone.

A key join is a map-reduce, and these are its pure NumPy steps; the bulk job
runs them as Dask tasks (``jobs/bulk_keys.py``), ``find_duplicates`` and the
tests in one process (:func:`key_candidate_pairs`):

1. :func:`key_postings` flattens each image's keys into ``(key, row)`` postings
   and :func:`split_by_bucket` deals them into buckets by key, so one key's
   postings all land in one bucket;
2. per bucket, :func:`shared_key_pairs` sorts the postings by key and counts,
   for each pair of rows that share keys there, how many; a key held by more
   than ``max_posting`` images is a stop word (flat sky, text, a pattern
   photographed everywhere) and left out, which bounds the work a key costs;
3. a pair's keys may fall in several buckets, so the counts are dealt again by
   pair (:func:`split_by_bucket` on the pair's number) and
   :func:`pairs_sharing` sums them and keeps the pairs sharing at least
   ``min_shared``.

Only pairs with at least one row at or after ``new_from`` are kept: rows
before it were joined by an earlier run.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Multiplier of the bucket hash (Fibonacci hashing): spreads keys whose low bits repeat.
_MIX = np.uint64(0x9E3779B97F4A7C15)


def key_postings(keys: Sequence[np.ndarray], first_row: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Every image's keys as postings.

    Parameters
    ----------
    keys : sequence of ndarray of uint64
        One array of keys per image, images numbered from ``first_row``.

    Returns
    -------
    keys : ndarray of uint64, shape (K,)
    rows : ndarray of int64, shape (K,)
    """
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    flat = np.concatenate(keys).astype(np.uint64) if len(keys) else np.zeros(0, np.uint64)
    return flat, np.repeat(np.arange(first_row, first_row + len(keys), dtype=np.int64), lengths)


def bucket_of(values: np.ndarray, buckets: int) -> np.ndarray:
    """(m,) int64 bucket ``0..buckets-1`` of each uint64 value (the high bits of a multiplicative hash)."""
    mixed = np.asarray(values, np.uint64) * _MIX
    return ((mixed >> np.uint64(32)) % np.uint64(buckets)).astype(np.int64)


def split_by_bucket(values: np.ndarray, buckets: int, *columns: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """``(values, *columns)`` dealt into ``buckets`` parts by :func:`bucket_of` of ``values``, order kept."""
    bucket = bucket_of(values, buckets)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
    return [tuple(np.asarray(c)[order[a:b]] for c in (values, *columns)) for a, b in zip(bounds[:-1], bounds[1:])]


def shared_key_pairs(keys: np.ndarray, rows: np.ndarray, *, max_posting: int,
                     new_from: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of rows sharing keys among these postings, and how many keys each pair shares.

    Parameters
    ----------
    keys : ndarray of uint64, shape (K,)
    rows : ndarray of int64, shape (K,)
        Postings: row ``rows[i]`` holds key ``keys[i]``; a row holds a key once.
    max_posting : int
        Keys held by more rows than this are left out.
    new_from : int
        Pairs whose rows are both below it are left out.

    Returns
    -------
    pairs : ndarray of int64, shape (E, 2)
        ``(i, j)``, ``i < j``, unique, sorted.
    counts : ndarray of int64, shape (E,)
        Keys the pair shares among these postings.
    """
    order = np.lexsort((rows, keys))
    keys, rows = np.asarray(keys)[order], np.asarray(rows)[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, len(keys)])
    kept = (lengths > 1) & (lengths <= max_posting)
    starts, lengths = starts[kept], lengths[kept]
    # Every posting pairs with each later posting of its key: position p of a key's
    # run of length L pairs with the next L - 1 - p.
    first = np.repeat(starts, lengths) + _ranks(lengths)
    later = np.repeat(starts + lengths, lengths) - first - 1
    left = np.repeat(first, later)
    right = left + 1 + _ranks(later)
    i, j = rows[left], rows[right]  # rows ascend within a key, so i < j
    wanted = j >= new_from
    number = pair_numbers(i[wanted], j[wanted])
    unique, counts = np.unique(number, return_counts=True)
    return _pairs_of(unique), counts.astype(np.int64)


def pairs_sharing(parts: Sequence[tuple[np.ndarray, np.ndarray]], min_shared: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum the counts of each pair over ``parts`` of :func:`shared_key_pairs` and keep those reaching ``min_shared``.

    Returns
    -------
    pairs : ndarray of int64, shape (E, 2)
        ``(i, j)``, ``i < j``, unique, sorted.
    counts : ndarray of int64, shape (E,)
        Keys each pair shares in all, at least ``min_shared``.
    """
    if not parts:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    number = np.concatenate([pair_numbers(p[:, 0], p[:, 1]) for p, _ in parts])
    weight = np.concatenate([c for _, c in parts])
    unique, inverse = np.unique(number, return_inverse=True)
    total = np.bincount(inverse.reshape(-1), weights=weight, minlength=len(unique)).astype(np.int64)
    reached = total >= min_shared
    return _pairs_of(unique[reached]), total[reached]


def key_candidate_pairs(keys: Sequence[np.ndarray], *, min_shared: int, max_posting: int,
                        new_from: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The whole key join in one process: pairs of images sharing at least ``min_shared`` keys.

    Parameters
    ----------
    keys : sequence of ndarray of uint64
        One array of keys per image.
    min_shared, max_posting, new_from : int
        As for :func:`pairs_sharing` and :func:`shared_key_pairs`.

    Returns
    -------
    pairs : ndarray of int64, shape (E, 2)
    counts : ndarray of int64, shape (E,)
    """
    flat, rows = key_postings(keys)
    return pairs_sharing([shared_key_pairs(flat, rows, max_posting=max_posting, new_from=new_from)], min_shared)


def _ranks(lengths: np.ndarray) -> np.ndarray:
    """``0..L-1`` for each run length ``L`` of ``lengths``, concatenated."""
    total = int(lengths.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)


def pair_numbers(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """One uint64 per pair ``(i, j)``: ``i`` in the high 32 bits, ``j`` in the low."""
    return (np.asarray(i, np.uint64) << np.uint64(32)) | np.asarray(j, np.uint64)


def _pairs_of(numbers: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pair_numbers`: (E, 2) int64."""
    numbers = np.asarray(numbers, np.uint64)
    return np.stack([(numbers >> np.uint64(32)).astype(np.int64),
                     (numbers & np.uint64(0xFFFFFFFF)).astype(np.int64)], axis=1).reshape(-1, 2)


#: Bits of a posting that hold the image's row in :class:`KeyIndex` (the key sits above them).
_ROW_BITS = 30
#: Feature keys are below this (a 32-bit word and its 2-bit place, ``feature_keys.py``).
_KEY_LIMIT = 1 << (64 - _ROW_BITS)


class KeyIndex:
    """Feature keys of indexed images, searchable one query at a time: ingest's and ``get --like``'s key lookups.

    Each posting is one uint64, the key above the image's row (:data:`_ROW_BITS`),
    kept in one sorted array (searched by bisection) plus the postings added
    since it was last sorted; those are folded in once they outnumber a
    sixteenth of it, so an add costs amortised O(log n) and a query O(k log K)
    for k query keys and K postings. Memory: 8 bytes per posting (~6.3 kB per
    image at 786 keys each) and each image's fingerprint; up to 2^30 images.
    """

    def __init__(self, nbytes: int):
        self.ids: list[str] = []
        self._fingerprints = np.zeros((0, nbytes), np.uint8)
        self._postings = np.zeros(0, np.uint64)
        self._pending: list[np.ndarray] = []
        self._pending_count = 0

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, image_id: str, keys: np.ndarray, fingerprint: np.ndarray) -> None:
        """Index one image's feature keys (uint64, unique, below 2^34) and its fingerprint ``(nbytes,)`` uint8, in
        the index's search space (kept to report a key match's distance); an image with no keys is still counted."""
        row = len(self.ids)
        keys = np.asarray(keys, np.uint64)
        if len(keys) and int(keys.max()) >= _KEY_LIMIT:
            raise ValueError(f"feature keys must be below 2^{64 - _ROW_BITS}, got {int(keys.max())}")
        if row >= 1 << _ROW_BITS:
            raise ValueError(f"a key index holds at most 2^{_ROW_BITS} images")
        self.ids.append(image_id)
        if row == len(self._fingerprints):  # grown by doubling: amortised O(1) per image
            grown = np.zeros((max(16, 2 * row), self._fingerprints.shape[1]), np.uint8)
            grown[:row] = self._fingerprints
            self._fingerprints = grown
        self._fingerprints[row] = fingerprint
        if not len(keys):
            return
        self._pending.append((keys << np.uint64(_ROW_BITS)) | np.uint64(row))
        self._pending_count += len(keys)
        if self._pending_count * 16 > len(self._postings):
            self._fold()

    def _fold(self) -> None:
        self._postings = np.sort(np.concatenate([self._postings, *self._pending]))
        self._pending, self._pending_count = [], 0

    def query(self, keys: np.ndarray, *, min_shared: int, max_posting: int) -> list[tuple[str, int, np.ndarray]]:
        """Indexed images sharing at least ``min_shared`` of ``keys``, most shared first.

        Keys held by more than ``max_posting`` indexed images are left out, as
        the bulk job's key join leaves them out.

        Returns
        -------
        list of (image_id, shared keys, fingerprint (nbytes,) uint8)
        """
        if self._pending:
            self._fold()
        keys = np.asarray(keys, np.uint64)
        keys = keys[keys < np.uint64(_KEY_LIMIT)]
        first = keys << np.uint64(_ROW_BITS)
        lo = np.searchsorted(self._postings, first, side="left")
        hi = np.searchsorted(self._postings, first | np.uint64((1 << _ROW_BITS) - 1), side="right")
        held = (hi > lo) & (hi - lo <= max_posting)
        lo, hi = lo[held], hi[held]
        if not len(lo):
            return []
        postings = self._postings[np.repeat(lo, hi - lo) + _ranks(hi - lo)]
        rows = (postings & np.uint64((1 << _ROW_BITS) - 1)).astype(np.int64)
        counts = np.bincount(rows, minlength=len(self.ids))
        found = np.flatnonzero(counts >= min_shared)
        found = found[np.lexsort((found, -counts[found]))]
        return [(self.ids[r], int(counts[r]), self._fingerprints[r]) for r in found]
