"""The bulk job's cluster and dedup stages, and what it reads back from the store for them.

Fingerprints are compared in one *search space*: keyed tokens in ``tokens``
mode (what the store itself could search without the key), raw hashes in
``sealed`` mode (the bulk job holds the key; the store only ever sees them
sealed). Images the store already holds as canonicals take part in the join
with their plain fingerprint; new images bring their 8 dihedral forms, which is
enough, since a pair's distance is the smallest over either side's forms.
"""
from __future__ import annotations

import dataclasses
import logging
import operator
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from distributed import Client

from imgdedup.jobs.bulk_task import PartitionResult, PartitionSpec
from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import class_count
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.keyed_fingerprint import centre_ids, search_space
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.dedup import NONE, dedup_decisions
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import CLUSTERS, FINGERPRINTS, binary_matrix

log = logging.getLogger(__name__)

_STORED_COLUMNS = ["image_id", "fingerprint", "cluster_id", "width", "height", "bytes", "duplicate_of",
                   "source", "ingested_at", "content_digest", "quality"]


@dataclass(frozen=True)
class StoredSource:
    """The newest row the store holds for one source URL."""

    image_id: str
    bytes: int
    ingested_at: float


@dataclass(frozen=True)
class StoredRows:
    """What the store already holds, as the bulk job needs it.

    Attributes
    ----------
    table : pyarrow.Table
        Latest committed ``fingerprints`` rows (:data:`_STORED_COLUMNS`).
    vectors : ndarray of uint8, shape (n, nbytes)
        Their fingerprints in the search space.
    centres : ndarray of uint8, shape (k, nbytes), or None
        The latest committed class centres in the search space; None if none.
    """

    table: pa.Table
    vectors: np.ndarray
    centres: np.ndarray | None

    def latest_by_source(self) -> dict[str, StoredSource]:
        """``{source URL: its newest row}``."""
        latest: dict[str, StoredSource] = {}
        columns = self.table.select(["source", "image_id", "bytes", "ingested_at"]).to_pydict()
        for source, image_id, size, ingested in zip(*columns.values()):
            seconds = ingested.timestamp() if ingested is not None else 0.0
            if source is not None and (source not in latest or latest[source].ingested_at <= seconds):
                latest[source] = StoredSource(image_id, size if size is not None else -1, seconds)
        return latest

    @property
    def canonical(self) -> np.ndarray:
        """(n,) bool: rows that hold their blob (not pointers)."""
        return self.table.column("duplicate_of").is_null().to_numpy(zero_copy_only=False)


def read_stored_rows(store: Store, key: GroupKey, mode: str, nbytes: int) -> StoredRows:
    """The store's latest fingerprint rows and class centres, in the search space."""
    present = store.read_table(FINGERPRINTS)
    table = store.read_table(FINGERPRINTS, schema=present.schema,
                             columns=[c for c in _STORED_COLUMNS if c in present.schema.names])
    ids = table.column("image_id").to_pylist()
    vectors = (search_space(key, mode, ids, binary_matrix(table.column("fingerprint")))
               if table.num_rows else np.zeros((0, nbytes), np.uint8))
    clusters = store.read_table(CLUSTERS)
    centres = None
    if clusters.num_rows:
        clusters = clusters.sort_by("cluster_id")
        k = clusters.num_rows
        centres = search_space(key, mode, centre_ids(k), binary_matrix(clusters.column("centroid")))
    return StoredRows(table, vectors, centres)


@dataclass(frozen=True)
class DedupOutcome:
    """Cluster and dedup decisions for the new rows of a run, and the run's class table.

    Attributes
    ----------
    cluster_id : ndarray of int32, shape (n_new,)
    duplicate_of : list of str or None, length n_new
        Image id of the canonical a new row points to; None for a canonical.
    distance : ndarray of int32, shape (n_new,)
        Distance to ``duplicate_of`` in bits; -1 for a canonical.
    exact : ndarray of bool, shape (n_new,)
        Pointers whose bytes equal their canonical's (their blob is not kept).
    centres : ndarray of uint8, shape (k, nbytes)
        Class centres in the search space.
    sizes, radii : ndarray of int64, shape (k,)
        Canonical images per class, and their largest distance to the centre.
    """

    cluster_id: np.ndarray
    duplicate_of: list
    distance: np.ndarray
    exact: np.ndarray
    centres: np.ndarray
    sizes: np.ndarray
    radii: np.ndarray


def _fit_centres(client: Client, futures: list, stored: StoredRows, n: int, config: Config) -> np.ndarray:
    """K-means centres over the stored canonical rows and the new partitions, never gathered in one place."""
    from imgdedup.jobs.cluster import distributed_kmeans

    partitions = [client.submit(operator.attrgetter("vectors"), f, pure=False) for f in futures]
    held = stored.vectors[stored.canonical]
    if len(held):
        partitions.insert(0, client.scatter(held))
    result = distributed_kmeans(partitions, class_count(config.dedup.clusters, n),
                                **dataclasses.asdict(config.cluster))
    return result.centres


def cluster_and_dedup(client: Client, futures: list, results: list[PartitionResult], stored: StoredRows,
                      spec: PartitionSpec, config: Config, seconds: dict[str, float]) -> DedupOutcome:
    """Assign classes to the new rows and decide which of them become pointers.

    ``seconds`` receives the ``cluster`` and ``dedup`` stage times.
    """
    nbytes = spec.bits // 8
    clock = time.perf_counter()
    new = np.concatenate([r.vectors for r in results]) if results else np.zeros((0, nbytes), np.uint8)
    held = stored.canonical
    old = stored.vectors[held]
    everything = np.concatenate([old, new])
    if stored.centres is not None:
        centres = stored.centres
    elif len(everything):
        centres = _fit_centres(client, futures, stored, len(everything), config)
    else:
        centres = np.zeros((0, nbytes), np.uint8)
    labels, to_centre = assign(everything, centres) if len(everything) else (np.zeros(0, np.int32),) * 2
    seconds["cluster"] = time.perf_counter() - clock
    log.info("cluster: %d images in %d classes (%s) in %.1f s", len(everything), len(centres),
             "the store's" if stored.centres is not None else "new", seconds["cluster"])

    clock = time.perf_counter()
    forms = None
    if spec.dihedral:
        new_forms = (np.concatenate([r.dihedral for r in results]) if results
                     else np.zeros((0, 8, nbytes), np.uint8))
        forms = np.concatenate([np.repeat(old[:, None, :], 8, axis=1), new_forms])
    table = stored.table.filter(pa.array(held))
    new_tables = [r.rows for r in results]
    quality = np.concatenate([table.column("quality").fill_null(100).to_numpy(),
                              *[t.column("quality").to_numpy() for t in new_tables]]).astype(np.int64)
    digests = np.concatenate([binary_matrix(table.column("content_digest")), *[r.digests for r in results]])
    pixels = np.concatenate([(table.column("width").fill_null(0).to_numpy().astype(np.int64)
                              * table.column("height").fill_null(0).to_numpy()),
                             *[t.column("width").to_numpy().astype(np.int64) * t.column("height").to_numpy()
                               for t in new_tables]])
    decided = dedup_decisions(everything, forms, labels, to_centre, centres, quality, digests, pixels,
                              np.arange(len(everything)) < len(old), threshold_t=config.dedup.threshold_t,
                              min_quality=config.hash.min_quality, batch=config.index.query_batch,
                              threads=config.index.scan_threads)

    ids = table.column("image_id").to_pylist() + [i for t in new_tables for i in t.column("image_id").to_pylist()]
    new_rows = slice(len(old), None)
    pointer_of = decided.plan.duplicate_of[new_rows]
    seconds["dedup"] = time.perf_counter() - clock
    log.info("dedup: %d images joined to a near duplicate within %d bits, %d exact copies, %d pointers among %d "
             "new images", decided.near_links, config.dedup.threshold_t, decided.exact_pairs,
             int((pointer_of != NONE).sum()), len(new))
    return DedupOutcome(
        cluster_id=labels[new_rows].astype(np.int32),
        duplicate_of=[ids[c] if c != NONE else None for c in pointer_of],
        distance=decided.plan.distance[new_rows], exact=decided.exact[new_rows], centres=centres,
        sizes=decided.sizes, radii=decided.radii,
    )
