"""The bulk job's cluster and dedup stages, and what it reads back from the store for them.

Fingerprints are compared in one *search space*: keyed tokens in ``tokens``
mode (what the store itself could search without the key), raw hashes in
``sealed`` mode (the bulk job holds the key; the store only ever sees them
sealed). Images the store already holds as canonicals take part in the join
with their plain fingerprint; new images bring their 8 dihedral forms, which is
enough, since a pair's distance is the smallest over either side's forms.

Pairs in the verified zone above the direct t go to the verification stage
(:mod:`imgdedup.jobs.bulk_verify`): tasks that load the two pictures — a new
image from its source, a stored one from its decrypted blob — and count the
local-feature inliers they share.
"""
from __future__ import annotations

import dataclasses
import logging
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from distributed import Client

from imgdedup.jobs.bulk_keys import join_shape, key_candidates, partition_keys, stored_keys
from imgdedup.jobs.bulk_join import join_rows
from imgdedup.jobs.bulk_task import PartitionResult, PartitionSpec
from imgdedup.jobs.bulk_verify import PictureAt, verify_on_cluster
from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import class_count
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.keyed_fingerprint import centre_ids, search_space
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.dedup import NONE, dedup_decisions, re_pointed
from imgdedup.pipeline.hashing.feature_keys import WORDS
from imgdedup.pipeline.keep import keep_rank
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import CLUSTERS, FINGERPRINTS, binary_matrix

log = logging.getLogger(__name__)

_STORED_COLUMNS = ["image_id", "fingerprint", "cluster_id", "width", "height", "bytes", "duplicate_of",
                   "distance", "source", "ingested_at", "content_digest", "quality", "lossless", "jpeg_quality",
                   "exif"]


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
    version : int
        The store version they were read at.
    table : pyarrow.Table
        Committed ``fingerprints`` rows at :attr:`version` (:data:`_STORED_COLUMNS`
        that the table has).
    vectors : ndarray of uint8, shape (n, nbytes)
        Their fingerprints in the search space.
    centres : ndarray of uint8, shape (k, nbytes), or None
        The latest committed class centres in the search space; None if none.
    parts : list of str
        Store-relative keys of the ``fingerprints`` table's committed parts at
        :attr:`version` (the key join's tasks read their sealed keys from them).
    """

    version: int
    table: pa.Table
    vectors: np.ndarray
    centres: np.ndarray | None
    parts: list[str] = dataclasses.field(default_factory=list)

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
    version = store.latest_version()
    # Only these columns are fetched (not the sealed hashes and feature keys); a column older parts
    # predate reads as nulls.
    table = store.read_table(FINGERPRINTS, version, columns=_STORED_COLUMNS)
    ids = table.column("image_id").to_pylist()
    vectors = (search_space(key, mode, ids, binary_matrix(table.column("fingerprint")))
               if table.num_rows else np.zeros((0, nbytes), np.uint8))
    clusters = store.read_table(CLUSTERS, version)
    centres = None
    if clusters.num_rows:
        clusters = clusters.sort_by("cluster_id")
        k = clusters.num_rows
        centres = search_space(key, mode, centre_ids(k), binary_matrix(clusters.column("centroid")))
    return StoredRows(version, table, vectors, centres, store.committed_files(FINGERPRINTS, version))


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
    threshold_t : int
        The direct-accept t the run used (``dedup.threshold_t``, or lower by the t rule for its collection size).
    verify_t : int
        Top of the verified zone ``(threshold_t, verify_t]``; ``threshold_t`` when there is none.
    expected_false_merges : tuple of float
        Expected false merges among the collection's images: ``(direct, verified)``
        parts, from the false-pair tail at ``threshold_t`` and through the verifier's zone.
    verified, verified_passed : int
        Pairs the verification stage checked (zone pairs and members against
        their canonical), and those that passed.
    errors : list of dict
        Error rows of pictures the verification stage could not load (stage
        ``verify``) and of stored rows whose sealed feature keys failed to open
        (stage ``decrypt``).
    key_min_shared : int
        Feature keys a pair had to share to be verified (the key rule's); 0 when the run used no keys.
    key_pairs : int
        Pairs of images that shared that many keys (candidates beside the zone's).
    review : list of str
        Image ids split off a chained group (beyond t of its canonical, not
        verified against it), for a person to review.
    re_elected : dict of str to (str or None, int or None)
        Committed rows a re-election changes: ``{image_id: (duplicate_of, distance)}``
        (None, None for a pointer promoted to canonical); empty without ``--re-elect``.
    """

    cluster_id: np.ndarray
    duplicate_of: list
    distance: np.ndarray
    exact: np.ndarray
    centres: np.ndarray
    sizes: np.ndarray
    radii: np.ndarray
    threshold_t: int
    verify_t: int
    expected_false_merges: tuple[float, float]
    review: list
    verified: int = 0
    verified_passed: int = 0
    errors: list = dataclasses.field(default_factory=list)
    re_elected: dict = dataclasses.field(default_factory=dict)
    key_min_shared: int = 0
    key_pairs: int = 0

    @property
    def demoted(self) -> list[str]:
        """Committed canonicals a re-election turned into pointers (their blobs are kept through the grace period)."""
        return sorted(i for i, (duplicate_of, _) in self.re_elected.items() if duplicate_of is not None)


def _column(table: pa.Table, name: str, fill) -> np.ndarray:
    """A column of committed rows as an array, nulls (and a column older rows lack) as ``fill``."""
    if name not in table.column_names:
        return np.full(table.num_rows, fill)
    return table.column(name).fill_null(fill).to_numpy(zero_copy_only=False)


def _keep_facts(tables: Sequence[pa.Table]) -> dict[str, np.ndarray]:
    """The columns :func:`keep_rank` ranks by, over the rows of ``tables`` in order."""
    def joined(name: str, fill) -> np.ndarray:
        return np.concatenate([_column(t, name, fill) for t in tables])

    return {"pixels": joined("width", 0).astype(np.int64) * joined("height", 0).astype(np.int64),
            "lossless": joined("lossless", False).astype(bool), "jpeg_quality": joined("jpeg_quality", 0),
            "file_bytes": joined("bytes", 0), "exif": joined("exif", False).astype(bool)}


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
                      spec: PartitionSpec, config: Config, seconds: dict[str, float], *,
                      urls: dict[str, str] | None = None, re_elect: bool = False,
                      live_blobs: frozenset[str] = frozenset()) -> DedupOutcome:
    """Assign classes to the new rows and decide which of them become pointers.

    With ``re_elect``, committed canonicals compete with the new images and
    with the committed pointers whose blobs are still kept (``live_blobs``),
    and the committed rows of a group whose canonical changes are re-pointed
    (:attr:`DedupOutcome.re_elected`). ``urls`` maps each new row's ``source``
    to the URL its picture is read from for verification (the source itself
    when missing). ``seconds`` receives the ``cluster``, ``dedup`` and
    ``verify`` stage times (``dedup`` without ``verify``).
    """
    nbytes = spec.bits // 8
    clock = time.perf_counter()
    new = np.concatenate([r.vectors for r in results]) if results else np.zeros((0, nbytes), np.uint8)
    held = stored.canonical
    stored_ids = stored.table.column("image_id").to_pylist()
    if re_elect:
        held = held | np.array([i in live_blobs for i in stored_ids], dtype=bool)
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
    rank = keep_rank(config.dedup.keep, **_keep_facts([table, *new_tables]))
    links = None
    if re_elect:  # a committed pointer stays in its group whatever its distance
        current = _current_canonical(stored)
        position = np.cumsum(held) - 1
        pointers = np.flatnonzero(held & (current != np.arange(len(held))))
        links = np.stack([position[pointers], position[current[pointers]]], axis=1)
    fixed = np.zeros(len(everything), bool) if re_elect else np.arange(len(everything)) < len(old)
    # The t rule: the configured t, lowered for a collection large enough that it
    # would exceed the false-merge budget (0 at the least: identical fingerprints);
    # above it the verified zone, as wide as the verifier's false-accept rate and cost allow.
    t = max(config.dedup.threshold_for(len(everything)), 0)
    verify_t = config.dedup.verify_threshold_for(len(everything), t)
    ids = table.column("image_id").to_pylist() + [i for part in new_tables for i in part.column("image_id").to_pylist()]
    sources = table.column("source").to_pylist() + [s for part in new_tables for s in part.column("source").to_pylist()]
    verify_errors: list[dict] = []
    seconds["verify"] = 0.0

    def verify(pairs: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        pictures = {}
        for row in np.unique(pairs).tolist():
            name = sources[row] or ids[row]
            pictures[row] = (PictureAt(name, blob_id=ids[row]) if row < len(old)
                             else PictureAt(name, url=(urls or {}).get(sources[row], sources[row])))
        inliers, errors = verify_on_cluster(client, pairs, pictures, spec)
        verify_errors.extend(e for e in errors if e not in verify_errors)
        seconds["verify"] += time.perf_counter() - started
        log.info("verify: %d pairs, %d passed (%d inliers at least), %d pictures failed to load in %.1f s",
                 len(pairs), int((inliers >= config.dedup.verify_min_inliers).sum()),
                 config.dedup.verify_min_inliers, len(errors), time.perf_counter() - started)
        return inliers

    key_pairs, key_min_shared = None, 0
    if verify_t > t and config.key_keypoints and len(new):
        key_min_shared = config.dedup.key_min_shared_for(len(everything))
        key_pairs, key_errors = _key_candidates(client, futures, results,
                                                stored.parts, ids[:len(old)],
                                                key_min_shared, spec, config)
        verify_errors.extend(key_errors)
    decided = dedup_decisions(everything, forms, labels, to_centre, centres, quality, digests, rank, fixed,
                              threshold_t=t, min_quality=config.hash.min_quality, links=links,
                              join=lambda rows, row_forms: join_rows(client, rows, row_forms, centres, t,
                                                                     config.index, verify_t=verify_t),
                              verify_t=verify_t, verify=verify, min_inliers=config.dedup.verify_min_inliers,
                              key_pairs=key_pairs)

    new_rows = slice(len(old), None)
    pointer_of = decided.plan.duplicate_of[new_rows]
    re_elected = _re_elected(stored, current, held, decided.plan.duplicate_of, new, ids[len(old):]) if re_elect else {}
    seconds["dedup"] = time.perf_counter() - clock - seconds["verify"]
    log.info("dedup: %d images joined to a near duplicate within %d bits (t rule at %d images), %d exact copies, "
             "verified zone up to %d bits (%d pairs verified, %d passed), %d pointers among %d new images, "
             "%d split off a chained group for review, %d committed rows re-elected",
             decided.near_links, t, len(everything), decided.exact_pairs, verify_t, decided.verified,
             decided.verified_passed, int((pointer_of != NONE).sum()), len(new), len(decided.review),
             len(re_elected))
    return DedupOutcome(
        cluster_id=labels[new_rows].astype(np.int32),
        duplicate_of=[ids[c] if c != NONE else None for c in pointer_of],
        distance=decided.plan.distance[new_rows], exact=decided.exact[new_rows], centres=centres,
        sizes=decided.sizes, radii=decided.radii, threshold_t=t, verify_t=verify_t,
        expected_false_merges=config.dedup.expected_false_merges(len(everything), t, verify_t,
                                                                 key_min_shared or None),
        review=[ids[i] for i in decided.review], verified=decided.verified,
        verified_passed=decided.verified_passed, errors=verify_errors,
        re_elected=re_elected, key_min_shared=key_min_shared,
        key_pairs=0 if key_pairs is None else len(key_pairs),
    )


def _key_candidates(client: Client, futures: list, results: list[PartitionResult], stored_parts: list[str],
                    held_ids: list[str], min_shared: int, spec: PartitionSpec,
                    config: Config) -> tuple[np.ndarray, list[dict]]:
    """Pairs of the run's rows (held stored rows first, then the new ones, in partition order) that share
    at least ``min_shared`` feature keys, at least one of them new.

    Returns
    -------
    pairs : ndarray of int64, shape (E, 2)
    errors : list of dict
        Errors-table rows of stored rows whose sealed keys failed to open (they take part without keys).
    """
    started = time.perf_counter()
    [rows] = client.scatter([{image_id: row for row, image_id in enumerate(held_ids)}], broadcast=True, hash=False)
    parts = [p for p in stored_parts if p.endswith(".parquet")]
    stored = [client.submit(stored_keys, spec.store_url, dict(spec.storage_options), spec.key, part, rows,
                            pure=False) for part in parts]
    sizes = [len(held_ids), *(r.rows.num_rows for r in results)]
    sources = [*stored, *(client.submit(partition_keys, f, first, pure=False)
                          for f, first in zip(futures, np.cumsum(sizes)[:-1].tolist()))]
    errors = [client.submit(operator.itemgetter(2), f, pure=False) for f in stored]
    passes, buckets = join_shape(int(sum(sizes)) * WORDS * config.hash.feature_keypoints,  # postings, at most
                                 len(client.scheduler_info()["workers"]))
    pairs = key_candidates(client, sources, new_from=len(held_ids), min_shared=min_shared,
                           max_posting=config.dedup.key_max_posting, passes=passes, buckets=buckets)
    errors = [row for part in client.gather(errors) for row in part]
    log.info("keys: %d pairs of images share at least %d feature keys (%.1f s)", len(pairs), min_shared,
             time.perf_counter() - started)
    return pairs, errors


def _current_canonical(stored: StoredRows) -> np.ndarray:
    """(n,) int64: index of each committed row's canonical among the committed rows (itself for a canonical)."""
    ids = stored.table.column("image_id").to_pylist()
    row_of = {image_id: row for row, image_id in enumerate(ids)}
    pointing = stored.table.column("duplicate_of").to_pylist()
    return np.array([row_of.get(p, row) if p is not None else row for row, p in enumerate(pointing)], np.int64)


def _re_elected(stored: StoredRows, current: np.ndarray, held: np.ndarray, canonical_of: np.ndarray,
                new: np.ndarray, new_ids: list[str]) -> dict[str, tuple[str | None, int | None]]:
    """The committed rows whose canonical a re-election changed, as ``{image_id: (duplicate_of, distance)}``.

    ``canonical_of`` is the dedup plan's ``duplicate_of`` over the held
    committed rows (``held``, in order) followed by the new images (``new``
    fingerprints, ``new_ids``).
    """
    n = len(current)
    # Indexes into committed rows + new images, where re_pointed wants them.
    to_all = np.concatenate([np.flatnonzero(held), n + np.arange(len(new))])
    winner = np.arange(n)
    candidates = np.flatnonzero(held)
    chosen = canonical_of[:len(candidates)]
    winner[candidates] = np.where(chosen == NONE, candidates, to_all[np.maximum(chosen, 0)])
    recorded = _column(stored.table, "distance", 0).astype(np.int64)
    plan = re_pointed(current, recorded, winner, np.concatenate([stored.vectors, new]))
    was = np.where(current == np.arange(n), NONE, current)
    ids = stored.table.column("image_id").to_pylist()
    all_ids = ids + list(new_ids)
    changed = np.flatnonzero(plan.duplicate_of != was)
    return {ids[r]: (None, None) if plan.duplicate_of[r] == NONE
            else (all_ids[plan.duplicate_of[r]], int(plan.distance[r])) for r in changed}
