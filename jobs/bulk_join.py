"""The bulk job's near-duplicate join as Dask tasks; the client merges their links into groups.

The fingerprints live on the workers as partitions, each ``(fingerprints (n_p,
nbytes) uint8, forms (n_p, F, nbytes) uint8)`` with forms plain first. The
tasks, by mode:

``mih``
    One task per substring position (:func:`position_pairs`): the plain rows of
    all partitions stacked and bucketed by that substring, then probed by every
    row's forms, one form of every row at a time. A task reads every partition;
    Dask fetches each partition once to each worker that runs a position, so
    the join's work divides among the workers while the data moves once per
    worker. A worker holds the partitions (288 bytes per row with 8 forms of 32
    bytes) and, while it runs a position, the stacked plain rows, their copy
    in bucket order and one form of every row, sorted by bucket (~180 bytes
    per row at most), never all the forms stacked.
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

With a verified zone (``verify_t`` above ``t``) the tasks search at
``verify_t`` and send back, beside the links of the pairs within ``t``, their
zone pairs (each unordered pair once, with its distance); the client drops
those whose ends its union-find already joined as they arrive and, at the end,
keeps one per pair of groups
(:func:`imgdedup.pipeline.index.join.zone_pairs_between_groups`), as the
in-process :func:`imgdedup.pipeline.index.join.near_duplicate_groups` does.
"""
from __future__ import annotations

import math

import numpy as np
from distributed import Client, Future, as_completed

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.config import IndexConfig
from imgdedup.pipeline.index import (ClusterIndex, JoinedGroups, merge_edges, no_zone, pair_distances, position_buckets,
                                     probe_position, spanning_links, unique_pairs, zone_pairs_between_groups)

#: Rows per partition when the client scatters rows it holds.
ROWS_PER_PARTITION = 1 << 16


def _stack(*partitions: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([p[0] for p in partitions]), np.concatenate([p[1] for p in partitions]))


#: What a join task sends back: links of its direct pairs, its zone pairs (m, 2) int64 and their (m,) distances.
TaskPairs = tuple[np.ndarray, np.ndarray, np.ndarray]


def _task_pairs(i: np.ndarray, j: np.ndarray, d: np.ndarray | None, t: int) -> TaskPairs:
    """Pairs ``(i, j)`` at distances ``d`` (None: all within ``t``) as a task sends them back."""
    if d is None:
        return spanning_links(np.stack([i, j], axis=1)), np.zeros((0, 2), np.int64), np.zeros(0, np.int32)
    direct = d <= t
    return (spanning_links(np.stack([i[direct], j[direct]], axis=1)),
            *unique_pairs(i[~direct], j[~direct], d[~direct]))


def position_pairs(position: int, bits: int, radius: int, t: int, *partitions) -> np.ndarray:
    """:func:`~imgdedup.pipeline.index.substring_pairs` of the rows of ``partitions``, numbered through them in
    order, without stacking their forms.

    The plain rows are stacked (32 bytes per row for 256-bit rows) and
    bucketed; the forms probe them one form of every row at a time, that form
    stacked from the partitions (another 32 bytes per row), so all the forms
    (``F`` times that) are never copied into one array.

    Returns
    -------
    ndarray of int64, shape (E, 2)
        Pairs ``(i, j)``, ``i < j``, sorted and unique.
    """
    fingerprints = np.concatenate([p[0] for p in partitions])
    form_columns = (np.concatenate([p[1][:, form] for p in partitions]) for form in range(partitions[0][1].shape[1]))
    return probe_position(position_buckets(fingerprints, position, bits), form_columns, radius, t)


def _position_links(position: int, bits: int, radius: int, t: int, search_t: int, *partitions) -> TaskPairs:
    pairs = position_pairs(position, bits, radius, search_t, *partitions)
    return _task_pairs(pairs[:, 0], pairs[:, 1], None if search_t == t else _pair_distances(partitions, pairs), t)


def _pair_distances(partitions: tuple, pairs: np.ndarray) -> np.ndarray:
    """(m,) int32 :func:`~imgdedup.pipeline.index.pair_distances` of ``pairs`` (m, 2) of rows numbered through the
    ``partitions``, from the rows and forms of only the rows the pairs name."""
    if len(pairs) == 0:
        return np.zeros(0, np.int32)
    firsts = np.cumsum([0] + [len(p[0]) for p in partitions[:-1]])
    rows, inverse = np.unique(pairs.ravel(), return_inverse=True)
    partition = np.searchsorted(firsts, rows, side="right") - 1
    named = [(partitions[p][0][rows[partition == p] - firsts[p]], partitions[p][1][rows[partition == p] - firsts[p]])
             for p in np.unique(partition)]
    return pair_distances(*_stack(*named), inverse.reshape(-1, 2))


def _exact_index(centres: np.ndarray, *partitions: tuple[np.ndarray, np.ndarray]) -> ClusterIndex:
    # The plain rows only: the index never reads the forms (each partition's task probes with its own).
    fingerprints = np.concatenate([p[0] for p in partitions])
    labels = assign(fingerprints, centres)[0] if len(fingerprints) else np.zeros(0, np.int32)
    return ClusterIndex.build(fingerprints, np.arange(len(fingerprints)), centres, labels)


def _exact_links(index: ClusterIndex, partition: tuple[np.ndarray, np.ndarray], first_row: int, t: int,
                 search_t: int, batch: int, threads: int) -> TaskPairs:
    i, j, d = index.search_flat(partition[1], search_t, batch=batch, threads=threads)
    return _task_pairs(i + first_row, j.astype(np.int64), None if search_t == t else d, t)


def join_partitions(client: Client, partitions: list[Future], sizes: list[int], nbytes: int, t: int, *, mode: str,
                    centres: np.ndarray | None, index: IndexConfig, verify_t: int | None = None) -> JoinedGroups:
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
    verify_t : int, optional
        Top of the verified zone, in bits; None (or at most ``t``): no zone.

    Returns
    -------
    JoinedGroups
        Each row's group label (the smallest row of its group) and the zone
        pairs between groups, as
        :func:`imgdedup.pipeline.index.join.near_duplicate_groups` gives them.
    """
    n = int(sum(sizes))
    parent = np.arange(n, dtype=np.int64)
    if n == 0:
        return no_zone(parent)
    search_t = t if verify_t is None else max(t, verify_t)
    if mode == "mih":
        tasks = [client.submit(_position_links, position, index.substring_bits, index.probe_radius, t, search_t,
                               *partitions, pure=False)
                 for position in range(8 * nbytes // index.substring_bits)]
    elif mode == "exact":
        if centres is None or len(centres) == 0:
            raise ValueError("the exact join needs the class centres")
        built = client.submit(_exact_index, np.asarray(centres, np.uint8), *partitions, pure=False)
        firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        tasks = [client.submit(_exact_links, built, partition, int(first), t, search_t, index.query_batch,
                               index.scan_threads, pure=False)
                 for partition, first in zip(partitions, firsts)]
    else:
        raise ValueError(f"the join's mode must be 'exact' or 'mih', got {mode!r}")
    zone_pairs, zone_distances = [], []
    for done in as_completed(tasks):
        links, pairs, distances = done.result()
        done.release()
        merge_edges(parent, links[:, 0], links[:, 1])
        apart = parent[pairs[:, 0]] != parent[pairs[:, 1]]
        zone_pairs.append(pairs[apart])
        zone_distances.append(distances[apart])
    if search_t == t:
        return no_zone(parent)
    return JoinedGroups(parent, *zone_pairs_between_groups(parent, np.concatenate(zone_pairs),
                                                           np.concatenate(zone_distances)))


def join_rows(client: Client, fingerprints: np.ndarray, forms: np.ndarray | None, centres: np.ndarray | None,
              t: int, index: IndexConfig, verify_t: int | None = None) -> JoinedGroups:
    """:func:`join_partitions` over rows the client holds: scattered to the workers in partitions.

    The mode and mih plan are ``index`` resolved for the rows at ``t``
    (:meth:`~imgdedup.pipeline.config.IndexConfig.resolved`; exact for ``paper``).

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    forms : ndarray of uint8, shape (n, F, nbytes), optional
        Query forms, plain first (the 8 dihedral forms); None: the plain rows only.
    centres : ndarray of uint8, shape (k, nbytes), optional
        Exact mode's classes.
    t : int
    index : IndexConfig
    verify_t : int, optional
        Top of the verified zone (see :func:`join_partitions`).

    Returns
    -------
    JoinedGroups
        As :func:`imgdedup.pipeline.index.near_duplicate_groups` gives them.
    """
    fingerprints = np.asarray(fingerprints, np.uint8)
    forms = fingerprints[:, None, :] if forms is None else np.asarray(forms, np.uint8)
    n = len(fingerprints)
    parts = max(1, math.ceil(n / ROWS_PER_PARTITION))
    bounds = np.linspace(0, n, parts + 1).astype(int)
    chunks = [(fingerprints[a:b], forms[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    # The plan is exact within t (pigeonhole); the zone above it, when there is one, gets
    # the pairs that plan's probes reach (docs/index.md, "The verified zone's candidates").
    index = index.resolved(n, t, 8 * fingerprints.shape[1], forms.shape[1], join=True)
    # Without content hashing: joining the same rows twice must not reuse a key the first join released.
    futures = client.scatter(chunks, hash=False)
    # Paper mode is the upload protocol's; the bulk job joins exactly in it.
    mode = "exact" if index.mode == "paper" else index.mode
    return join_partitions(client, futures, [len(c[0]) for c in chunks], fingerprints.shape[1], t, mode=mode,
                           centres=centres, index=index, verify_t=verify_t)
