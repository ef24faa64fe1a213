"""Mini-batch Hamming K-means over packed-bit fingerprints.

A centre is the bitwise majority of the fingerprints assigned to it, so the
whole state of a centre is its members' per-bit counts and their number
(:class:`ClusterStats`); statistics of disjoint sets of fingerprints combine
by addition, which is what lets the same algorithm run over partitions
(``jobs/cluster.py``). The update is Sculley's mini-batch K-means: each step
assigns a random batch to the current centres and adds the batch's statistics
to each centre's running totals, so a centre is the majority of every member
it has ever been given (a per-centre learning rate of 1 / count). Centres left
with (almost) no member, or equal to another centre, move to the batch's
farthest rows.

The driver :func:`fit_centres` reaches fingerprints only through a
:class:`FingerprintSource`, so the in-memory form here and the Dask form take
the same random draws and produce the same centres for the same seed and data.

References
----------
D. Sculley, "Web-scale k-means clustering", WWW 2010.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.seeding import seed_centres

# Rows unpacked to bits at a time by member_stats; below 2**15 so a group's bit
# counts fit the int16 sums, which reduce about twice as fast as int64 ones.
_UNPACK_ROWS = 16384


@dataclass(frozen=True)
class ClusterStats:
    """Per-centre sufficient statistics of a set of fingerprints.

    Attributes
    ----------
    bit_counts : ndarray of int64, shape (k, bits)
        For each centre, how many of its members have each bit set (bit order as
        ``np.unpackbits``).
    sizes : ndarray of int64, shape (k,)
        Members per centre.
    """

    bit_counts: np.ndarray
    sizes: np.ndarray

    @classmethod
    def zeros(cls, k: int, bits: int) -> ClusterStats:
        return cls(np.zeros((k, bits), dtype=np.int64), np.zeros(k, dtype=np.int64))

    def __add__(self, other: ClusterStats) -> ClusterStats:
        return ClusterStats(self.bit_counts + other.bit_counts, self.sizes + other.sizes)


@dataclass(frozen=True)
class KMeansResult:
    """Outcome of Hamming K-means.

    Attributes
    ----------
    centres : ndarray of uint8, shape (k, nbytes)
    counts : ndarray of int64, shape (k,)
        Fingerprints per class under ``labels`` (0 for an empty class).
    labels : ndarray of int32, shape (n,)
        Nearest centre of each fingerprint (the final assignment pass).
    n_batches : int
        Mini-batch steps taken before stopping.
    inertia : int
        Sum over fingerprints of the Hamming distance to their centre, in bits.
    """

    centres: np.ndarray
    counts: np.ndarray
    labels: np.ndarray
    n_batches: int
    inertia: int


def member_stats(fingerprints: np.ndarray, labels: np.ndarray, k: int) -> ClusterStats:
    """Statistics of fingerprints whose classes are already known.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    labels : ndarray of int, shape (n,), values in [0, k)
    k : int

    Returns
    -------
    ClusterStats
        ``bits = 8 * nbytes``. Rows are grouped by label (a stable sort) and each
        group's unpacked bits summed with one ``np.add.reduceat``.
    """
    fingerprints = np.asarray(fingerprints, dtype=np.uint8)
    labels = np.asarray(labels)
    stats = ClusterStats.zeros(k, 8 * fingerprints.shape[1])
    for start in range(0, len(labels), _UNPACK_ROWS):
        chunk_labels = labels[start:start + _UNPACK_ROWS]
        order = np.argsort(chunk_labels, kind="stable")
        grouped = chunk_labels[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        bits = np.unpackbits(fingerprints[start:start + _UNPACK_ROWS][order], axis=1).astype(np.int16)
        stats.bit_counts[grouped[starts]] += np.add.reduceat(bits, starts, axis=0)
    stats.sizes[:] = np.bincount(labels, minlength=k)
    return stats


def assigned_stats(fingerprints: np.ndarray, centres: np.ndarray) -> tuple[ClusterStats, np.ndarray]:
    """:func:`partial_stats` and each fingerprint's distance to its nearest centre.

    Returns
    -------
    stats : ClusterStats
    distances : ndarray of int32, shape (n,)
    """
    labels, distances = assign(fingerprints, centres)
    return member_stats(fingerprints, labels, len(centres)), distances


def partial_stats(fingerprints: np.ndarray, centres: np.ndarray) -> ClusterStats:
    """Assign fingerprints to their nearest centres and return the per-centre statistics.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    centres : ndarray of uint8, shape (k, nbytes)

    Returns
    -------
    ClusterStats
        Statistics of disjoint sets of fingerprints add up to those of their union.
    """
    return assigned_stats(fingerprints, centres)[0]


def majority(stats: ClusterStats, previous: np.ndarray) -> np.ndarray:
    """Centres as the bitwise majority of their members.

    Parameters
    ----------
    stats : ClusterStats
    previous : ndarray of uint8, shape (k, nbytes)
        Current centres; a bit set in exactly half the members (and every bit of
        an empty centre) keeps its value here, so ties never flip a centre back
        and forth.

    Returns
    -------
    ndarray of uint8, shape (k, nbytes)
    """
    twice = 2 * stats.bit_counts
    sizes = stats.sizes[:, None]
    bits = np.where(twice == sizes, np.unpackbits(previous, axis=1), twice > sizes)
    return np.packbits(bits.astype(np.uint8), axis=1)


class FingerprintSource(Protocol):
    """Where :func:`fit_centres` reads fingerprints from: an array, or partitions on a cluster."""

    n: int

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Rows at sorted global ``indices`` (a small sample), ``(len(indices), nbytes)`` uint8."""

    def batch_stats(self, indices: np.ndarray, centres: np.ndarray) -> tuple[ClusterStats, np.ndarray]:
        """Statistics of the rows at sorted ``indices`` and each row's distance to its centre."""


class ArraySource:
    """:class:`FingerprintSource` over one in-memory ``(n, nbytes)`` uint8 array."""

    def __init__(self, fingerprints: np.ndarray):
        self.fingerprints = np.ascontiguousarray(fingerprints, dtype=np.uint8)
        self.n = len(self.fingerprints)

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self.fingerprints[indices]

    def batch_stats(self, indices: np.ndarray, centres: np.ndarray) -> tuple[ClusterStats, np.ndarray]:
        return assigned_stats(self.fingerprints[indices], centres)


def _idle_centres(totals: ClusterStats, centres: np.ndarray, reassign_ratio: float) -> np.ndarray:
    """Centres with fewer members than ``reassign_ratio`` times the average count, or none,
    and centres equal to a lower-numbered one; fewest members first.

    Seeding sometimes puts two centres in one tight group (and none in another):
    the second then holds the few rows nearer to it than to the group's majority,
    or, once the two majorities agree, nothing at all (ties go to the lowest
    index), while the group left without a centre is merged into a neighbour.
    """
    _, first = np.unique(centres, axis=0, return_index=True)
    idle = totals.sizes < reassign_ratio * totals.sizes.mean()
    idle[totals.sizes == 0] = True
    repeated = np.ones(len(centres), dtype=bool)
    repeated[first] = False
    idle |= repeated
    candidates = np.flatnonzero(idle)
    return candidates[np.argsort(totals.sizes[candidates], kind="stable")]


def _reseed_idle(totals: ClusterStats, centres: np.ndarray, source: FingerprintSource,
                 indices: np.ndarray, distances: np.ndarray, reassign_ratio: float) -> None:
    """Move idle centres (:func:`_idle_centres`) onto the batch rows farthest from their centres.

    Only rows at a positive distance qualify (a row sitting on a centre would only
    duplicate it); each moved centre takes its row as its one member. In place.
    """
    idle = _idle_centres(totals, centres, reassign_ratio)
    if idle.size == 0:
        return
    farthest = np.argsort(-distances, kind="stable")[: idle.size]
    farthest = farthest[distances[farthest] > 0]
    if farthest.size == 0:
        return
    targets = idle[: farthest.size]
    rows = source.take(indices[np.sort(farthest)])[np.argsort(np.argsort(farthest))]
    centres[targets] = rows
    totals.bit_counts[targets] = np.unpackbits(rows, axis=1)
    totals.sizes[targets] = 1


def fit_centres(source: FingerprintSource, k: int, *, seed: int, batch_size: int, max_batches: int,
                tol: float, seed_sample_size: int, seeding: str, reassign_ratio: float) -> tuple[np.ndarray, int]:
    """Mini-batch Hamming K-means centres of the fingerprints ``source`` reaches.

    Parameters
    ----------
    source : FingerprintSource
        ``source.n >= 1`` fingerprints.
    k : int
        Number of centres, >= 1 (may exceed the number of distinct fingerprints).
    seed : int
        Seeds the one random generator every draw comes from.
    batch_size : int
        Fingerprints per mini-batch, drawn without replacement (all of them when fewer).
    max_batches : int
        Batch budget.
    tol : float
        Stop once a step changes at most this fraction of all ``k * bits`` centre bits.
    seed_sample_size : int
        Fingerprints drawn for seeding.
    seeding : str
        ``"k-means++"`` or ``"k-means||"`` (see :mod:`imgdedup.pipeline.cluster.seeding`).
    reassign_ratio : float
        After each step, a centre with fewer members so far than this times the
        average count (or with none, or equal to another centre) moves to one of
        the batch's farthest rows (scikit-learn's ``MiniBatchKMeans`` does the
        same against the largest count).

    Returns
    -------
    centres : ndarray of uint8, shape (k, nbytes)
    n_batches : int
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if source.n < 1:
        raise ValueError("no fingerprints to cluster")
    rng = np.random.default_rng(seed)
    sample_indices = np.sort(rng.choice(source.n, size=min(seed_sample_size, source.n), replace=False))
    centres = seed_centres(source.take(sample_indices), k, rng, seeding)
    totals = ClusterStats.zeros(k, 8 * centres.shape[1])
    # Centres are reseeded only once the batches seen would give each about this many members.
    reseed_after = 4 * k
    seen = 0
    n_batches = 0
    while n_batches < max_batches:
        indices = np.sort(rng.choice(source.n, size=min(batch_size, source.n), replace=False))
        batch, distances = source.batch_stats(indices, centres)
        totals = totals + batch
        updated = majority(totals, centres)
        seen += len(indices)
        n_batches += 1
        if seen >= reseed_after:
            _reseed_idle(totals, updated, source, indices, distances, reassign_ratio)
        moved = int(np.bitwise_count(np.bitwise_xor(updated, centres)).sum())
        centres = updated
        if moved <= tol * totals.bit_counts.size:
            break
    return centres, n_batches


def class_count(clusters: int | str, n: int) -> int:
    """k for ``n`` fingerprints: ``clusters``, or round(sqrt(n)) for ``"auto"``; at least 1, never more than ``n``."""
    k = max(1, round(math.sqrt(n))) if clusters == "auto" else int(clusters)
    return max(1, min(k, n))


def hamming_kmeans(fingerprints: np.ndarray, k: int, *, seed: int = 0, batch_size: int = 8192,
                   max_batches: int = 200, tol: float = 0.0, seed_sample_size: int = 65536,
                   seeding: str = "k-means||", reassign_ratio: float = 0.1) -> KMeansResult:
    """Cluster packed-bit fingerprints into ``k`` classes by Hamming distance.

    Seeding on a sample, mini-batch majority updates (:func:`fit_centres`), then
    one assignment pass over every fingerprint. Deterministic for a given seed.
    Defaults are those of ``[cluster]`` in ``conf/default.toml``.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes), n >= 1
    k : int
        Number of classes; with fewer distinct fingerprints than ``k`` the surplus
        classes are empty (``counts`` 0).
    seed, batch_size, max_batches, tol, seed_sample_size, seeding, reassign_ratio
        See :func:`fit_centres`.

    Returns
    -------
    KMeansResult
    """
    source = ArraySource(fingerprints)
    centres, n_batches = fit_centres(source, k, seed=seed, batch_size=batch_size, max_batches=max_batches,
                                     tol=tol, seed_sample_size=seed_sample_size, seeding=seeding,
                                     reassign_ratio=reassign_ratio)
    labels, distances = assign(source.fingerprints, centres)
    return KMeansResult(centres, np.bincount(labels, minlength=k).astype(np.int64), labels, n_batches,
                        int(distances.sum(dtype=np.int64)))
