"""Planted clusters: fingerprints a few bits away from random, far-apart seeds."""
from __future__ import annotations

import numpy as np


def planted_clusters(rng: np.random.Generator, n_seeds: int, per_seed: int, flips: int,
                     nbytes: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fingerprints (n_seeds * per_seed, nbytes) uint8, truth (n,) int, seeds (n_seeds, nbytes) uint8)``.

    Each member is its seed with exactly ``flips`` distinct bits flipped; random
    seeds of 256 bits lie ~128 bits apart, far beyond ``2 * flips``.
    """
    seeds = rng.integers(0, 256, (n_seeds, nbytes), dtype=np.uint8)
    truth = np.repeat(np.arange(n_seeds), per_seed)
    bits = np.unpackbits(seeds[truth], axis=1)
    for row in bits:
        row[rng.choice(bits.shape[1], flips, replace=False)] ^= 1
    order = rng.permutation(len(truth))
    return np.packbits(bits, axis=1)[order], truth[order], seeds
