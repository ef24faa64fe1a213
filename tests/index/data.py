"""Small generated fingerprint sets for the index tests."""
from __future__ import annotations

import numpy as np

from imgdedup.pipeline.hashing.bits import hamming

NBYTES = 32  # 256-bit fingerprints


def flip_bits(rows: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Copies of packed rows with each bit flipped with probability ``rate``."""
    bits = np.unpackbits(rows, axis=-1)
    return np.packbits(bits ^ (rng.random(bits.shape) < rate), axis=-1)


def fingerprint_set(rng: np.random.Generator, n: int, k: int, clustered: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(fingerprints (n, 32), centres (k, 32))``: random rows, or rows a few bits from k seeds."""
    centres = rng.integers(0, 256, (k, NBYTES), dtype=np.uint8)
    if not clustered:
        return rng.integers(0, 256, (n, NBYTES), dtype=np.uint8), centres
    return flip_bits(centres[rng.integers(0, k, n)], 0.06, rng), centres


def nearest_labels(fingerprints: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(n,) index of each fingerprint's nearest centre."""
    if len(fingerprints) == 0:
        return np.zeros(0, dtype=np.int64)
    return hamming(fingerprints, centres).argmin(axis=1)
