"""The bulk job's near-duplicate join as Dask tasks; the client merges their links into groups.

The fingerprints live on the workers as partitions, each ``(fingerprints (n_p,
nbytes) uint8, forms (n_p, F, nbytes) uint8)`` with forms plain first. The
tasks, by mode:

``mih``
    One task per substring position
    (:func:`imgdedup.pipeline.index.substrings.substring_pairs`): every row's
    forms probe the rows bucketed by that substring. A task reads every
    partition; Dask fetches each partition once to each worker that runs a
    position, so the join's work divides among the workers while the data
    moves once per worker.
``exact``
    One task per partition: its rows' forms searched, in exact mode, in the
    :class:`imgdedup.pipeline.index.ClusterIndex` of all rows (built once, on a
    worker, with each row in its nearest class).

Each task sends back a spanning forest of the pairs it found
(:func:`imgdedup.pipeline.index.join.spanning_links`), at most one link per row
it touched; the client merges them into one union-find as they arrive. It
holds the group labels (8 bytes per row) and one task's links at a time, never
a fingerprint. The groups equal those of
:func:`imgdedup.pipeline.index.join.near_duplicate_components` in the same mode.
"""
from __future__ import annotations

import math

import numpy as np
from distributed import Client, Future, as_completed

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.config import IndexConfig
from imgdedup.pipeline.index import ClusterIndex, merge_edges, spanning_links, substring_pairs

#: Rows per partition when the client scatters rows it holds.
ROWS_PER_PARTITION = 1 << 16


def _stack(*partitions: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([p[0] for p in partitions]), np.concatenate([p[1] for p in partitions]))


def _position_links(position: int, bits: int, radius: int, t: int, *partitions) -> np.ndarray:
    return spanning_links(substring_pairs(*_stack(*partitions), position, bits, radius, t))


def _exact_index(centres: np.ndarray, stacked: tuple[np.ndarray, np.ndarray]) -> ClusterIndex:
    fingerprints = stacked[0]
    labels = assign(fingerprints, centres)[0] if len(fingerprints) else np.zeros(0, np.int32)
    return ClusterIndex.build(fingerprints, np.arange(len(fingerprints)), centres, labels)


def _exact_links(index: ClusterIndex, partition: tuple[np.ndarray, np.ndarray], first_row: int, t: int,
                 batch: int, threads: int) -> np.ndarray:
    i, j, _ = index.search_flat(partition[1], t, batch=batch, threads=threads)
    return spanning_links(np.stack([i + first_row, j.astype(np.int64)], axis=1))


def join_partitions(client: Client, partitions: list[Future], sizes: list[int], nbytes: int, t: int, *, mode: str,
                    centres: np.ndarray | None, index: IndexConfig) -> np.ndarray:
    """Duplicate groups of the rows of ``partitions``, joined by tasks on the cluster.

    Parameters
    ----------
    client : distributed.Client
    partitions : list of Future
        Each resolves to ``(fingerprints (n_p, nbytes) uint8, forms (n_p, F, nbytes) uint8)``.
    sizes : list of int
        Rows of each partition; rows are numbered through the partitions in order.
    nbytes : int
        Bytes per fingerprint.
    t : int
        Largest distance of a pair, in bits.
    mode : {"exact", "mih"}
    centres : ndarray of uint8, shape (k, nbytes), optional
        Class centres, exact mode only.
    index : IndexConfig
        ``substring_bits`` and ``probe_radius`` (mih), ``query_batch`` and
        ``scan_threads`` (exact).

    Returns
    -------
    ndarray of int64, shape (n,)
        Each row's group label: the smallest row of its group.
    """
    n = int(sum(sizes))
    parent = np.arange(n, dtype=np.int64)
    if n == 0:
        return parent
    if mode == "mih":
        tasks = [client.submit(_position_links, position, index.substring_bits, index.probe_radius, t, *partitions,
                               pure=False)
                 for position in range(8 * nbytes // index.substring_bits)]
    elif mode == "exact":
        if centres is None or len(centres) == 0:
            raise ValueError("the exact join needs the class centres")
        stacked = client.submit(_stack, *partitions, pure=False)
        built = client.submit(_exact_index, np.asarray(centres, np.uint8), stacked, pure=False)
        del stacked
        firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        tasks = [client.submit(_exact_links, built, partition, int(first), t, index.query_batch, index.scan_threads,
                               pure=False)
                 for partition, first in zip(partitions, firsts)]
    else:
        raise ValueError(f"the join's mode must be 'exact' or 'mih', got {mode!r}")
    for done in as_completed(tasks):
        links = done.result()
        merge_edges(parent, links[:, 0], links[:, 1])
        done.release()
    return parent


def join_rows(client: Client, fingerprints: np.ndarray, forms: np.ndarray | None, centres: np.ndarray | None,
              t: int, index: IndexConfig) -> np.ndarray:
    """:func:`join_partitions` over rows the client holds: scattered to the workers in partitions.

    The mode is ``index.search_mode(len(fingerprints))`` (exact for ``paper``).

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    forms : ndarray of uint8, shape (n, F, nbytes), optional
        Query forms, plain first (the 8 dihedral forms); None: the plain rows only.
    centres : ndarray of uint8, shape (k, nbytes), optional
        Exact mode's classes.
    t : int
    index : IndexConfig

    Returns
    -------
    ndarray of int64, shape (n,)
        Group labels as :func:`imgdedup.pipeline.index.near_duplicate_components` gives them.
    """
    fingerprints = np.asarray(fingerprints, np.uint8)
    forms = fingerprints[:, None, :] if forms is None else np.asarray(forms, np.uint8)
    n = len(fingerprints)
    parts = max(1, math.ceil(n / ROWS_PER_PARTITION))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    chunks = [(fingerprints[a:b], forms[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    futures = client.scatter(chunks)
    # Paper mode is the upload protocol's; the bulk job joins exactly in it.
    mode = "exact" if index.search_mode(n) == "paper" else index.search_mode(n)
    return join_partitions(client, futures, [len(c[0]) for c in chunks], fingerprints.shape[1], t, mode=mode,
                           centres=centres, index=index)
