"""Multi-index hashing: rows bucketed by substrings, for search within ``t``.

Each fingerprint of ``nbits`` bits is cut into ``m = nbits // b`` substrings of
``b`` bits (Norouzi et al., *Fast Search in Hamming Space with Multi-Index
Hashing*, CVPR 2012). For each substring position the rows are bucketed by the
substring's value (a direct-addressed table: ``2^b + 1`` bucket starts and the
rows in bucket order). Every form of a query probes, at every position, the
bucket of its substring and those of the substrings within ``radius`` bits of
it; every row found is compared with all the query's forms and kept when the
smallest distance is at most ``t``, so nothing beyond ``t`` is ever returned.

By the pigeonhole principle every row within ``m * (radius + 1) - 1`` bits of
any form is found (:func:`imgdedup.pipeline.search_plan.exact_up_to`): a plan
with ``m * (radius + 1) > t`` is exact, and
:func:`imgdedup.pipeline.search_plan.choose_plan` picks the cheapest such one.
Beyond that bound a match is found when its differing bits leave one substring
(nearly) whole, which real edits, whose changes are uneven over the bits,
mostly do (docs/index.md gives the recall measured on real edited copies). The
cost per query is ``F * m * (1 + b + ...)`` probes plus the rows in the buckets
probed, about ``n / 2^b`` each on near-random codes.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from imgdedup.pipeline.hamming import as_words, bucket_pairs_into, probe_into, substrings_into
from imgdedup.pipeline.search_plan import RADII, SUBSTRING_BITS
_FIRST_BUFFER = 1 << 16


class SubstringTable:
    """Rows bucketed by each of their ``m`` substrings of ``bits`` bits.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
        The rows; searches return their positions.
    bits : int
        Substring width ``b``, in :data:`~imgdedup.pipeline.search_plan.SUBSTRING_BITS`; ``m = 8 * nbytes // b``
        substrings (bits beyond ``m * b`` are compared, never bucketed).

    Raises
    ------
    ValueError
        ``bits`` is not supported or wider than the fingerprints.
    """

    def __init__(self, fingerprints: np.ndarray, bits: int):
        fingerprints = np.asarray(fingerprints, dtype=np.uint8)
        nbits = fingerprints.shape[1] * 8
        if bits not in SUBSTRING_BITS or bits > nbits:
            raise ValueError(f"substring width must lie in {SUBSTRING_BITS.start}..{SUBSTRING_BITS.stop - 1} "
                             f"bits and within the {nbits}-bit fingerprints, got {bits}")
        self.bits = bits
        self.offsets = np.arange(nbits // bits, dtype=np.int64) * bits
        self._rows = np.ascontiguousarray(as_words(fingerprints))
        self._order, self._starts = _buckets(self._rows, self.offsets, bits)
        # Per-thread "verified by query" marks (n,) with the next unused stamp:
        # kept between searches, so a single query never pays O(n) to clear them.
        self._marks: list[list] = []
        self._marks_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def substrings(self) -> int:
        """m, the substrings bucketed per row."""
        return len(self.offsets)

    def search(self, queries: np.ndarray, t: int, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows within ``t`` of each query found by probing its substrings' buckets.

        Parameters
        ----------
        queries : ndarray of uint64, shape (q, F, w)
            Queries as words (:func:`imgdedup.pipeline.hamming.as_words`), F forms
            each, plain form first.
        t : int
            Largest distance kept, in bits.
        radius : int
            Probe radius of every form's substrings, in :data:`~imgdedup.pipeline.search_plan.RADII`.

        Returns
        -------
        query, row : ndarray of int64, shape (R,)
            Grouped by query, ascending; each query's rows in the order found.
        distance : ndarray of int32, shape (R,)
            Smallest distance over the query's forms, in bits (at most ``t``).
        """
        if radius not in RADII:
            raise ValueError(f"probe radius must be one of {RADII}, got {radius}")
        queries = np.ascontiguousarray(queries, dtype=np.uint64)
        if queries.shape[-1] != self._rows.shape[1]:
            raise ValueError(f"queries of {queries.shape[-1]} words against rows of {self._rows.shape[1]} words")
        if len(queries) == 0 or len(self._rows) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int32)
        marks = self._take_marks()
        try:
            return self._probe(queries, int(t), radius, marks)
        finally:
            with self._marks_lock:
                self._marks.append(marks)

    def _take_marks(self) -> list:
        with self._marks_lock:
            if self._marks:
                return self._marks.pop()
        return [np.full(len(self._rows), -1, np.int64), 0]

    def _probe(self, queries: np.ndarray, t: int, radius: int, marks: list):
        seen, parts, first, size = marks[0], [], 0, _FIRST_BUFFER
        while first < len(queries):
            buffers = np.empty(size, np.int64), np.empty(size, np.int64), np.empty(size, np.int32)
            count, done = probe_into(queries, self._rows, self._starts, self._order, self.offsets, self.bits,
                                     radius, t, first, marks[1], seen, *buffers)
            # Stamps of this call are marks[1] + q: the next call starts above all of them.
            marks[1] += len(queries)
            if done == first:  # one query's matches did not fit
                size *= 2
                continue
            parts.append(tuple(buffer[:count] for buffer in buffers))
            first = done
        return tuple(np.concatenate(part) for part in zip(*parts)) if len(parts) > 1 else parts[0]


def _buckets(words: np.ndarray, offsets: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows by bucket at each position: ``order (m, n)`` rows in bucket order, ``starts (m, 2^b + 1)``."""
    n = len(words)
    values = np.empty((len(offsets), n), np.uint32)
    substrings_into(words, offsets, bits, values)
    index = np.int32 if n < 2**31 else np.int64
    # Values of 16 bits or fewer sort by radix, several times faster than a comparison sort.
    narrow = values.astype(np.uint16) if bits <= 16 else values
    order = np.argsort(narrow, axis=1, kind="stable").astype(index)
    starts = np.zeros((len(offsets), 2**bits + 1), index)
    for s, row in enumerate(values):
        np.cumsum(np.bincount(row, minlength=2**bits), out=starts[s, 1:])
    return order, starts


class PositionBuckets(NamedTuple):
    """The rows bucketed by their substring at one position: what a task of the distributed join probes.

    ``offsets`` (1,) int64 holds the substring's first bit and ``bits`` its
    width; bucket ``v`` holds rows ``order[starts[v]:starts[v + 1]]`` (``order``
    (n,) and ``starts`` (2^b + 1,), int32 below 2^31 rows, else int64), whose
    words are ``rows[starts[v]:starts[v + 1]]`` (``rows`` (n, w) uint64, the
    rows copied in bucket order); ``largest`` is the rows of the fullest bucket.
    """

    offsets: np.ndarray
    bits: int
    order: np.ndarray
    starts: np.ndarray
    rows: np.ndarray
    largest: int


def position_buckets(fingerprints: np.ndarray, position: int, bits: int) -> PositionBuckets:
    """The rows bucketed by their substring at ``position``, built once for all the probes of a join task.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
        The plain rows; pairs name them by their index here.
    position : int
        Which substring, ``0 <= position < 8 * nbytes // bits``.
    bits : int
        Substring width, in :data:`~imgdedup.pipeline.search_plan.SUBSTRING_BITS`.

    Returns
    -------
    PositionBuckets
        About ``n * (w * 8 + 4)`` bytes plus ``2^b * 4`` (the rows' words, in
        bucket order, and the bucket table).
    """
    words = np.ascontiguousarray(as_words(fingerprints))
    nbits = np.asarray(fingerprints).shape[1] * 8
    if bits not in SUBSTRING_BITS or not 0 <= position < nbits // bits:
        raise ValueError(f"no substring {position} of {bits} bits in {nbits}-bit rows")
    offsets = np.array([position * bits], np.int64)
    order, starts = _buckets(words, offsets, bits)
    order, starts = order[0], starts[0]
    return PositionBuckets(offsets, bits, order, starts, np.ascontiguousarray(words[order]),
                           int(np.diff(starts).max(initial=0)))


def probe_position(buckets: PositionBuckets, form_columns: Iterable[np.ndarray], radius: int, t: int) -> np.ndarray:
    """The pairs the rows' forms find in ``buckets``, one form of every row at a time.

    Every form probes the bucket of its substring and those within ``radius``
    bits of it; a pair is kept when the probing form lies within ``t`` of the
    row (any form within ``t`` makes a pair, so the others are not compared).
    The probes of a form run sorted by the bucket they probe, over the rows
    copied in bucket order: the buckets' rows and the probing forms are then
    both read in one pass, not each from a random place. Only one form of
    every row is needed at a time (32 bytes per row for 256-bit rows).

    Parameters
    ----------
    buckets : PositionBuckets
        All rows, from :func:`position_buckets`.
    form_columns : iterable of ndarray of uint8, shape (n, nbytes)
        Each form of every row (``[f][i]``: form ``f`` of row ``i``), plain form first.
    radius, t : int
        As for :meth:`SubstringTable.search`.

    Returns
    -------
    ndarray of int64, shape (E, 2)
        Pairs ``(i, j)``, ``i < j``, within ``t`` by the form of one side that
        found it, sorted and unique.
    """
    if radius not in RADII:
        raise ValueError(f"probe radius must be one of {RADII}, got {radius}")
    pairs = [np.zeros((0, 2), np.int64)]
    room = max(_FIRST_BUFFER, buckets.largest)
    for column in form_columns:
        words = as_words(column)
        if words.shape != buckets.rows.shape:
            raise ValueError(f"forms of shape {words.shape} probing rows of shape {buckets.rows.shape}, as words")
        values = np.empty((1, len(words)), np.uint32)
        substrings_into(words, buckets.offsets, buckets.bits, values)
        sequence = np.argsort(values[0].astype(np.uint16) if buckets.bits <= 16 else values[0], kind="stable")
        entries, probed = words[sequence], values[0, sequence]
        # Flipping bit j of ascending values swaps neighbouring runs of 2^j buckets:
        # the flipped probes still read the buckets nearly in order, so they need no sort of their own.
        for flip in _flips(buckets.bits, radius):
            first = 0
            while first < len(entries):
                found_entry, found_row = np.empty(room, np.int64), np.empty(room, np.int64)
                count, first = bucket_pairs_into(entries, probed ^ flip, buckets.rows, buckets.starts, int(t), first,
                                                 found_entry, found_row)
                pairs.append(np.stack([sequence[found_entry[:count]], buckets.order[found_row[:count]]], axis=1))
    i, j = np.concatenate(pairs).T
    keep = i != j
    return np.unique(np.stack([np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])], axis=1), axis=0)


def substring_pairs(fingerprints: np.ndarray, forms: np.ndarray, position: int, bits: int, radius: int,
                    t: int) -> np.ndarray:
    """The near-duplicate pairs one substring position finds: every row's forms probing all rows.

    :func:`probe_position` of every form in :func:`position_buckets` of
    ``fingerprints``. The union over positions ``0..m-1`` is the pair set of the join.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    forms : ndarray of uint8, shape (n, F, nbytes)
        Each row's query forms, plain form first.
    position, bits : int
        As for :func:`position_buckets`.
    radius, t : int
        As for :meth:`SubstringTable.search`.

    Returns
    -------
    ndarray of int64, shape (E, 2)
        Pairs ``(i, j)``, ``i < j``, within ``t`` by the form of one side that
        found it, sorted and unique.
    """
    return probe_position(position_buckets(fingerprints, position, bits),
                          np.moveaxis(np.asarray(forms, np.uint8), 1, 0), radius, t)


def _flips(bits: int, radius: int) -> np.ndarray:
    """(k,) int64 masks of ``bits`` bits with at most ``radius`` bits set, 0 first."""
    masks = [0]
    if radius >= 1:
        masks += [1 << j for j in range(bits)]
    if radius >= 2:
        masks += [(1 << j) | (1 << k) for j in range(bits) for k in range(j + 1, bits)]
    return np.array(masks, np.int64)
