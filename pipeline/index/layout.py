"""Members stored by class: the sorted layout the index scans.

Members are stored contiguously sorted by class and, inside a class, by their
distance to the class centre, so a class is a slice and the members at a given
distance from their centre are a sub-slice (``searchsorted`` on one sorted key
``class * (bits + 1) + distance``).
"""
from __future__ import annotations

import numpy as np

from imgdedup.pipeline.hamming import as_words, word_columns
from imgdedup.pipeline.index.kernels import candidate_ranges, scan_ranges
from imgdedup.pipeline.index.substrings import SubstringTable


class Layout:
    """Fingerprints sorted by (class, distance to the class centre), with class radii.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    ids : ndarray, shape (n,)
    labels : ndarray of int64, shape (n,)
        Class of each fingerprint, ``0..k-1``.
    centres : ndarray of uint8, shape (k, nbytes)
        The centres the distances, radii and pruning bounds are measured against.

    Attributes
    ----------
    fingerprints, ids, labels
        The members in layout order.
    radii : ndarray of int32, shape (k,)
        Largest member distance to its centre, in bits (0 for an empty class).
    offsets : ndarray of int64, shape (k + 1,)
        Class ``c`` is rows ``offsets[c]:offsets[c + 1]``.
    """

    def __init__(self, fingerprints: np.ndarray, ids: np.ndarray, labels: np.ndarray, centres: np.ndarray):
        words = as_words(fingerprints)
        # A copy: the index updates its centres in place as members are added.
        self._centre_words = as_words(centres).copy()
        k = len(centres)
        distance = np.zeros(len(labels), dtype=np.int64)
        for j in range(words.shape[1]):
            distance += np.bitwise_count(words[:, j] ^ self._centre_words[labels, j])
        self._stride = fingerprints.shape[1] * 8 + 1
        key = labels * self._stride + distance
        order = np.argsort(key, kind="stable")
        self._columns = word_columns(words[order])
        self._centre_columns = word_columns(self._centre_words)
        self._keys = key[order]
        self.fingerprints = fingerprints[order]
        self.ids = ids[order]
        self.labels = labels[order]
        self.offsets = np.searchsorted(self.labels, np.arange(k + 1))
        self.radii = np.zeros(k, dtype=np.int32)
        np.maximum.at(self.radii, labels, distance.astype(np.int32))
        self._substring_table: SubstringTable | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_classes(self) -> int:
        return len(self.offsets) - 1

    def class_members(self, cls: int) -> np.ndarray:
        """(size, nbytes) uint8 fingerprints of one class (empty beyond the laid-out classes)."""
        if cls >= self.n_classes:
            return self.fingerprints[:0]
        return self.fingerprints[self.offsets[cls]:self.offsets[cls + 1]]

    def scan_exact(self, block: np.ndarray, t: int, threads: int = 1):
        """Every (query, row, distance) within ``t``, skipping what the triangle inequality rules out.

        Parameters
        ----------
        block : ndarray of uint64, shape (m, F, w)
            Queries as words, F forms each.
        t : int
        threads : int
            Threads the row scans are shared among.

        Returns
        -------
        query, row : ndarray of int64, shape (R,)
        distance : ndarray of int32, shape (R,)
        """
        query, lo, hi = candidate_ranges(block, self._centre_columns, self.radii, self._keys, self.offsets,
                                         self._stride, t)
        return scan_ranges(block, self._columns, query, lo, hi, t, threads=threads)

    def substring_table(self, bits: int) -> SubstringTable:
        """The members bucketed by their ``bits``-bit substrings (``mih`` mode), built on first use.

        One table is kept: a search with another width (the plan rule chose
        another as the index grew) replaces it, so memory holds one table.
        """
        if self._substring_table is None or self._substring_table.bits != bits:
            self._substring_table = None  # the old table's memory goes before the new one is built
            self._substring_table = SubstringTable(self.fingerprints, bits)
        return self._substring_table

    def scan_whole_classes(self, block: np.ndarray, query: np.ndarray, cls: np.ndarray, t: int, threads: int = 1):
        """Every (query, row, distance) within ``t`` among all members of the given classes.

        Parameters
        ----------
        block : ndarray of uint64, shape (m, F, w)
        query, cls : ndarray of int64, shape (P,)
            Each query's classes to scan (laid-out classes only).
        t : int
        threads : int
        """
        return scan_ranges(block, self._columns, query, self.offsets[cls], self.offsets[cls + 1], t, threads=threads)


class Tail:
    """Members added since the layout was built: unsorted, in buffers that double as they fill.

    Parameters
    ----------
    nbytes : int
        Bytes per fingerprint.
    """

    def __init__(self, nbytes: int):
        self._fingerprints = np.zeros((16, nbytes), dtype=np.uint8)
        self._labels = np.zeros(16, dtype=np.int64)
        self._ids = np.empty(16, dtype=object)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, fingerprint: np.ndarray, id, label: int) -> None:
        if self._size == len(self._labels):
            self._fingerprints = np.concatenate([self._fingerprints, np.zeros_like(self._fingerprints)])
            self._labels = np.concatenate([self._labels, np.zeros_like(self._labels)])
            self._ids = np.concatenate([self._ids, np.empty(len(self._ids), dtype=object)])
        self._fingerprints[self._size] = fingerprint
        self._labels[self._size] = label
        self._ids[self._size] = id
        self._size += 1

    @property
    def fingerprints(self) -> np.ndarray:
        """(size, nbytes) uint8, in the order added."""
        return self._fingerprints[:self._size]

    @property
    def labels(self) -> np.ndarray:
        """(size,) int64 class of each added member."""
        return self._labels[:self._size]

    @property
    def ids(self) -> np.ndarray:
        """(size,) object ids of the added members."""
        return self._ids[:self._size]
