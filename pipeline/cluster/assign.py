"""Nearest-centre assignment of packed-bit fingerprints by Hamming distance.

The hot path of clustering: ``n`` fingerprints against ``k`` centres. Rows are
viewed as 64-bit words (a 256-bit fingerprint is 4 words), so one distance is
a few XORs and ``np.bitwise_count`` calls; the ``(points, centres)`` distance
block is built word by word into reused buffers, a chunk of points at a time,
so memory stays near :data:`_BLOCK_PAIRS` pairs whatever ``n`` and ``k``.
"""
from __future__ import annotations

import numpy as np

# Point-centre pairs per block: 2**19 pairs keep the uint64 XOR buffer at 4 MiB,
# which measured fastest for k = 1024 (blocks of 256-512 points) on a 2-core box.
_BLOCK_PAIRS = 1 << 19


def as_words(fingerprints: np.ndarray) -> np.ndarray:
    """Packed-bit rows as 64-bit words, zero-padded to a whole word.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)

    Returns
    -------
    ndarray of uint64, shape (n, ceil(nbytes / 8))
        Padding bytes are zero on every row, so Hamming distances are unchanged.
    """
    fingerprints = np.ascontiguousarray(fingerprints, dtype=np.uint8)
    if fingerprints.ndim != 2:
        raise ValueError(f"expected (n, nbytes) packed bits, got shape {fingerprints.shape}")
    pad = -fingerprints.shape[1] % 8
    if pad:
        fingerprints = np.pad(fingerprints, ((0, 0), (0, pad)))
    return fingerprints.view(np.uint64)


def _distance_dtype(n_words: int) -> type:
    return np.uint16 if n_words * 64 < np.iinfo(np.uint16).max else np.int32


def word_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All Hamming distances between two small sets of word rows.

    Parameters
    ----------
    a : ndarray of uint64, shape (na, words)
    b : ndarray of uint64, shape (nb, words)
        Rows from :func:`as_words`. The result is ``na * nb`` entries: callers
        keep one side small (a few candidate centres) or chunk.

    Returns
    -------
    ndarray of uint16 (int32 beyond 65535 bits), shape (na, nb)
    """
    out = np.zeros((len(a), len(b)), dtype=_distance_dtype(a.shape[1]))
    columns = np.ascontiguousarray(b.T)
    for word in range(a.shape[1]):
        out += np.bitwise_count(np.bitwise_xor(a[:, word, None], columns[word][None, :]))
    return out


def assign(fingerprints: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every fingerprint.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    centres : ndarray of uint8, shape (k, nbytes), k >= 1

    Returns
    -------
    labels : ndarray of int32, shape (n,)
        Index of the nearest centre; ties go to the lowest index.
    distances : ndarray of int32, shape (n,)
        Hamming distance to that centre, in bits.
    """
    points = as_words(fingerprints)
    centre_words = as_words(centres)
    if points.shape[1] != centre_words.shape[1] and len(points):
        raise ValueError(f"fingerprints of {np.shape(fingerprints)[1]} bytes against centres of "
                         f"{np.shape(centres)[1]} bytes")
    k = len(centre_words)
    if k == 0:
        raise ValueError("no centres to assign to")
    n, n_words = points.shape
    labels = np.empty(n, dtype=np.int32)
    distances = np.empty(n, dtype=np.int32)
    step = max(1, _BLOCK_PAIRS // k)
    rows = min(step, n)
    # Column w of the centres, contiguous, so each XOR streams one row of k words.
    columns = np.ascontiguousarray(centre_words.T)
    xor = np.empty((rows, k), dtype=np.uint64)
    count = np.empty((rows, k), dtype=np.uint8)
    block = np.empty((rows, k), dtype=_distance_dtype(n_words))
    for start in range(0, n, step):
        chunk = points[start:start + step]
        size = len(chunk)
        x, c, d = xor[:size], count[:size], block[:size]
        d[...] = 0
        for word in range(n_words):
            np.bitwise_xor(chunk[:, word, None], columns[word][None, :], out=x)
            np.bitwise_count(x, out=c)
            np.add(d, c, out=d)
        nearest = d.argmin(axis=1)
        labels[start:start + size] = nearest
        distances[start:start + size] = np.take_along_axis(d, nearest[:, None], axis=1)[:, 0]
    return labels, distances
