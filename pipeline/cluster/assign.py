"""Nearest-centre assignment of packed-bit fingerprints by Hamming distance.

The hot path of clustering: ``n`` fingerprints against ``k`` centres, by the
compiled word kernels of :mod:`imgdedup.pipeline.hamming` (centres word-major, each
fingerprint compared with a block of centres in one vectorised loop), with no
``(n, k)`` distance matrix in memory.
"""
from __future__ import annotations

import numpy as np

from imgdedup.pipeline.hamming import as_words, nearest_centres, word_columns


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
    fingerprints = np.asarray(fingerprints, dtype=np.uint8)
    centres = np.asarray(centres, dtype=np.uint8)
    if fingerprints.ndim != 2:
        raise ValueError(f"expected (n, nbytes) packed bits, got shape {fingerprints.shape}")
    if len(centres) == 0:
        raise ValueError("no centres to assign to")
    if len(fingerprints) and fingerprints.shape[1] != centres.shape[1]:
        raise ValueError(f"fingerprints of {fingerprints.shape[1]} bytes against centres of "
                         f"{centres.shape[1]} bytes")
    return nearest_centres(as_words(fingerprints), word_columns(as_words(centres)))
