"""Hamming K-means over fingerprint partitions held by Dask.

The same algorithm as :func:`imgdedup.pipeline.cluster.kmeans.hamming_kmeans`, run by the
same driver (:func:`imgdedup.pipeline.cluster.kmeans.fit_centres`) through
:class:`DaskPartitions`: every mini-batch step sends the current centres to the
partitions that hold the step's rows, each computes its per-centre bit counts
and sizes where it lives, and the partial statistics are summed in a tree of
tasks; only the summed statistics (``k * bits`` counts) and the batch rows'
distances come back. The seeding sample and the few rows an empty centre is
moved to are the only fingerprints that reach the client; consecutive small
partitions are first joined on the workers into blocks of about
:data:`_ROWS_PER_BLOCK` rows, which bounds what one task holds. When all rows
fit in one block (at most 8 MiB of fingerprints), the block comes to the client
and the steps run there: a step over one block is one task either way, and a
few hundred scheduler round trips would cost seconds for nothing.

Same seed, same data in the same order, same centres as the in-memory form,
however the rows are split into partitions: the random draws are made over
global row numbers, and integer statistics add up exactly in any order.
"""
from __future__ import annotations

from collections.abc import Sequence

import dask
import numpy as np
from dask.delayed import Delayed, delayed

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import ArraySource, ClusterStats, KMeansResult, assigned_stats, fit_centres
from imgdedup.pipeline.config import ClusterConfig

_DEFAULTS = ClusterConfig()
# Partial statistics summed per reduction task: a tree of depth log_8(partitions).
_REDUCE_ARITY = 8
# Consecutive partitions are joined on the workers into blocks of at least this
# many rows (8 MiB of 256-bit fingerprints): image partitions hold a few hundred
# rows, and a mini-batch step over thousands of tiny tasks would be all overhead.
_ROWS_PER_BLOCK = 262144


def _take(partition: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.asarray(partition, dtype=np.uint8)[rows]


def _batch_stats(partition: np.ndarray, rows: np.ndarray, centres: np.ndarray) -> tuple[ClusterStats, np.ndarray]:
    return assigned_stats(np.asarray(partition, dtype=np.uint8)[rows], centres)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(part, dtype=np.uint8) for part in parts])


def _blocks(lengths: Sequence[int], rows: int) -> list[slice]:
    """Runs of consecutive partitions holding at least ``rows`` rows each (the last may hold fewer)."""
    runs, start, held = [], 0, 0
    for end, length in enumerate(lengths, start=1):
        held += length
        if held >= rows:
            runs.append(slice(start, end))
            start, held = end, 0
    if start < len(lengths):
        runs.append(slice(start, len(lengths)))
    return runs


def _sum(stats: list[ClusterStats]) -> ClusterStats:
    total = stats[0]
    for part in stats[1:]:
        total = total + part
    return total


def _tree_sum(stats: list[Delayed]) -> Delayed:
    while len(stats) > 1:
        stats = [delayed(_sum)(stats[i:i + _REDUCE_ARITY]) for i in range(0, len(stats), _REDUCE_ARITY)]
    return stats[0]


class DaskPartitions:
    """:class:`~imgdedup.pipeline.cluster.kmeans.FingerprintSource` over Dask partitions.

    Parameters
    ----------
    partitions : sequence of dask Delayed or distributed Future
        Each computes to an ``(n_i, nbytes)`` uint8 array; global row numbers run
        through the partitions in order.
    rows_per_block : int
        Consecutive partitions are joined, on the workers, into blocks of at least
        this many rows; the blocks are persisted (kept in the workers' memory under
        a distributed client) so every step reuses them.
    """

    def __init__(self, partitions: Sequence[Delayed], rows_per_block: int = _ROWS_PER_BLOCK):
        # Persisted first so the lengths and the blocks do not compute a partition twice.
        partitions = list(dask.persist(*partitions))
        lengths = dask.compute(*[delayed(len)(part) for part in partitions])
        runs = _blocks(lengths, rows_per_block)
        self.partitions = list(dask.persist(*[delayed(_join)(partitions[run]) for run in runs]))
        self.offsets = np.concatenate([[0], np.cumsum([sum(lengths[run]) for run in runs], dtype=np.int64)])
        self.n = int(self.offsets[-1])

    def _split(self, indices: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """``(partition, local rows)`` for every partition holding some of the sorted ``indices``."""
        bounds = np.searchsorted(indices, self.offsets)
        return [(i, indices[bounds[i]:bounds[i + 1]] - self.offsets[i])
                for i in range(len(self.partitions)) if bounds[i + 1] > bounds[i]]

    def take(self, indices: np.ndarray) -> np.ndarray:
        parts = dask.compute(*[delayed(_take)(self.partitions[i], rows) for i, rows in self._split(indices)])
        return np.concatenate(parts)

    def batch_stats(self, indices: np.ndarray, centres: np.ndarray) -> tuple[ClusterStats, np.ndarray]:
        shared_centres = delayed(centres)
        parts = [delayed(_batch_stats, nout=2)(self.partitions[i], rows, shared_centres)
                 for i, rows in self._split(indices)]
        total, distances = dask.compute(_tree_sum([stats for stats, _ in parts]),
                                        [distances for _, distances in parts])
        return total, np.concatenate(distances)


def assign_partitions(partitions: Sequence[Delayed], centres: np.ndarray) -> list[Delayed]:
    """Nearest-centre assignment of every partition, left on the cluster.

    Returns
    -------
    list of Delayed
        One per partition, computing to ``(labels (n_i,) int32, distances (n_i,) int32)``
        as :func:`imgdedup.pipeline.cluster.assign.assign` returns them.
    """
    shared_centres = delayed(centres)
    return [delayed(assign, nout=2)(part, shared_centres) for part in partitions]


def distributed_kmeans(partitions: Sequence[Delayed], k: int, *, seed: int = _DEFAULTS.seed,
                       batch_size: int = _DEFAULTS.batch_size, max_batches: int = _DEFAULTS.max_batches,
                       tol: float = _DEFAULTS.tol, seed_sample_size: int = _DEFAULTS.seed_sample_size,
                       seeding: str = _DEFAULTS.seeding,
                       reassign_ratio: float = _DEFAULTS.reassign_ratio,
                       rows_per_block: int = _ROWS_PER_BLOCK) -> KMeansResult:
    """Hamming K-means over fingerprint partitions, computed where they live.

    Runs on the active Dask scheduler (a ``distributed.Client`` when one is
    open). ``**dataclasses.asdict(config.cluster)`` passes the ``[cluster]``
    settings, as for :func:`imgdedup.pipeline.cluster.kmeans.hamming_kmeans`.

    Parameters
    ----------
    partitions : sequence of dask Delayed or distributed Future
        Each computes to an ``(n_i, nbytes)`` uint8 array; ``sum(n_i) >= 1``.
    k : int
    seed, batch_size, max_batches, tol, seed_sample_size, seeding, reassign_ratio
        See :func:`imgdedup.pipeline.cluster.kmeans.fit_centres`.
    rows_per_block : int
        See :class:`DaskPartitions`; when every row fits in one block, the steps run on the client.

    Returns
    -------
    KMeansResult
        Equal, field by field, to ``hamming_kmeans(np.concatenate(partitions), k, ...)``
        with the same settings. ``labels`` holds partition ``i``'s rows at
        ``labels[sum(n_0..n_{i-1}) : sum(n_0..n_i)]``; the final assignment pass
        runs per partition and only labels and distances come back.
    """
    source = DaskPartitions(partitions, rows_per_block)
    fitted = source if len(source.partitions) > 1 else ArraySource(_join(dask.compute(*source.partitions)))
    centres, n_batches = fit_centres(fitted, k, seed=seed, batch_size=batch_size, max_batches=max_batches,
                                     tol=tol, seed_sample_size=seed_sample_size, seeding=seeding,
                                     reassign_ratio=reassign_ratio)
    assigned = dask.compute(*assign_partitions(source.partitions, centres))
    labels = np.concatenate([part_labels for part_labels, _ in assigned])
    inertia = sum(int(distances.sum(dtype=np.int64)) for _, distances in assigned)
    return KMeansResult(centres, np.bincount(labels, minlength=k).astype(np.int64), labels, n_batches, inertia)
