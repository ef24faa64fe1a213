"""Lookups in what the store has decided: by image id, by content digest, by fingerprint.

``get`` asks it which blob holds an image (by id, or by a query image's
digest or nearest fingerprint); ingest asks it the same questions before each
decision and keeps it current. :class:`DecidedImages` is loaded once from the latest committed ``clusters`` and
``fingerprints`` tables (an empty store gives an empty index) and then follows
the commit log: :meth:`DecidedImages.catch_up` reads only the commits that
landed since, so an ingest process sees the decisions of another one before it
commits its own. The image id (keyed digest of the bytes and the upload's name)
is the idempotency key: the first committed decision for an image id is the one
that counts. The first committed decision for a content digest is what a later
byte-identical upload under another name points to.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imgdedup.jobs.hash import configured_algorithm
from imgdedup.jobs.source import SourceImage, read_source
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import centre_ids, open_feature_keys, query_space, search_space
from imgdedup.pipeline.crypto.resolution import check_resolution
from imgdedup.pipeline.errors import IntegrityError
from imgdedup.pipeline.hashing.fingerprint import FingerprintBatch, fingerprint_batch
from imgdedup.pipeline.search_plan import MihPlan, exact_up_to
from imgdedup.pipeline.store import Store, object_paths, schemas

if TYPE_CHECKING:
    from imgdedup.pipeline.index import ClusterIndex
    from imgdedup.pipeline.index.key_join import KeyIndex

log = logging.getLogger(__name__)

#: Columns of the fingerprints table kept in memory for lookups.
DECISION_COLUMNS = ["image_id", "fingerprint", "cluster_id", "duplicate_of", "distance",
                    "content_digest", "quality", "source", "blob", "resolution_mac"]

#: What a decision can be; a replayed upload reports the kind first decided for it.
KINDS = ("stored", "duplicate", "exact_duplicate", "error")


@dataclass(frozen=True)
class Decision:
    """The one decision the store holds for an image.

    Attributes
    ----------
    image_id : str
        32 hex characters (keyed HMAC of content digest and the upload's name);
        ``""`` for an error without readable bytes.
    kind : {"stored", "duplicate", "exact_duplicate", "error"}
        ``exact_duplicate``: a pointer to an image with the same bytes (distance 0).
    cluster_id : int or None
        Class the fingerprint was added to (None for an error).
    duplicate_of : str or None
        Canonical image id of a duplicate.
    distance : int or None
        Hamming distance in bits to ``duplicate_of`` (smallest over dihedral forms).
    message : str
        Why an error failed; empty otherwise.
    source : str
        Where the image came from.
    replayed : bool
        The upload had been decided before (earlier, elsewhere, or earlier in
        the same batch): this call added nothing for it. Not part of equality,
        so a replay equals the decision it repeats.
    """

    image_id: str
    kind: str
    cluster_id: int | None = None
    duplicate_of: str | None = None
    distance: int | None = None
    message: str = ""
    source: str = ""
    replayed: bool = dataclasses.field(default=False, compare=False)

    @property
    def outcome(self) -> str:
        """What this upload counts as in a summary: ``replayed``, else its :attr:`kind`."""
        return "replayed" if self.replayed else self.kind


@dataclass(frozen=True)
class News:
    """What :meth:`DecidedImages.catch_up` found in the commits since the last look.

    Attributes
    ----------
    image_ids : set of str
        Uploads decided for the first time.
    digests : set of bytes
        Content digests decided for the first time.
    sources : set of str
        Sources errors were recorded for.
    reloaded : bool
        A commit replaced the clusters or fingerprints table: the caller must
        :meth:`DecidedImages.load` afresh (the in-memory classes are stale).
    """

    image_ids: set[str]
    digests: set[bytes]
    sources: set[str]
    reloaded: bool


class DecidedImages:
    """The committed decisions of a store as of :attr:`version`, with a class index over them.

    Build it with :meth:`load`. Attributes are read by the ingest job and ``get``.
    The index (and with it the compiled scans) is built only for lookups by
    fingerprint: ``get IMAGE_ID`` needs the pointers alone.

    Attributes
    ----------
    version : int
        The store version everything here reflects.
    index : ClusterIndex or None
        None unless loaded ``searchable``; every fingerprint of a stored or duplicate image whose quality allows
        automatic dedup, in the search space (tokens; raw hashes opened by the key in ``sealed`` mode).
    by_id : dict of str to Decision
        First committed decision per image id (per upload).
    by_digest : dict of bytes to Decision
        First committed decision per keyed content digest.
    errors : dict of str to Decision
        Error decision per source (the errors table has no digest).
    """

    def __init__(self, store: Store, config: Config, key: GroupKey, *, searchable: bool = True):
        self.store = store
        self.config = config
        self.key = key
        self.nbytes = config.hash.bits // 8
        self.version = 0
        self.by_id: dict[str, Decision] = {}
        self.by_digest: dict[bytes, Decision] = {}
        self.errors: dict[str, Decision] = {}
        self._canonical: dict[str, str] = {}
        self._canonical_digest: dict[str, bytes] = {}
        self._mappings: dict[str, tuple[str | None, str | None, bytes | None]] = {}
        self.index: ClusterIndex | None = None
        self.keys: KeyIndex | None = None
        if searchable:
            from imgdedup.pipeline.index import ClusterIndex  # loads the compiled scans (Numba)
            self.index = ClusterIndex.empty(self.nbytes)
            if config.key_keypoints:
                from imgdedup.pipeline.index.key_join import KeyIndex
                self.keys = KeyIndex(self.nbytes)

    @classmethod
    def load(cls, store: Store, key: GroupKey, config: Config, *, searchable: bool = True) -> DecidedImages:
        """Read the latest committed decisions and, when ``searchable``, build the index from the latest clusters."""
        images = cls(store, config, key, searchable=searchable)
        version = store.latest_version()
        if version == 0:
            return images
        fingerprints = store.read_table(schemas.FINGERPRINTS, version, columns=DECISION_COLUMNS)
        if fingerprints.num_rows:
            schemas.check_comparable(fingerprints.schema, schemas.fingerprints_schema(
                images.nbytes, algo=config.hash.algo, bits=config.hash.bits, key_id=key.index_key_id_hex,
                mode=config.crypto.mode))
        images._record_rows(fingerprints)
        images._record_errors(store.read_table(schemas.ERRORS, version, columns=["source", "message"]))
        if searchable:
            images._build_index(fingerprints, store.read_table(schemas.CLUSTERS, version))
            if images.keys is not None:
                images._index_keys(fingerprints, store.read_table(schemas.FINGERPRINTS, version,
                                                                  columns=["feature_keys"]).column("feature_keys"))
        images.version = version
        return images

    # -- reading committed rows --------------------------------------------

    def _record_rows(self, rows: pa.Table) -> tuple[list[int], set[bytes]]:
        """Remember the decisions of ``rows``.

        Returns the positions of rows deciding a new image id, and the content
        digests decided for the first time.

        A pointer whose content digest equals its canonical's is an
        ``exact_duplicate``; canonicals are read first, as a bulk run's
        pointer can precede its canonical in row order.
        """
        fresh, digests = [], set()
        columns = {name: rows.column(name).to_pylist() for name in
                   ("image_id", "cluster_id", "duplicate_of", "distance", "content_digest", "source", "blob",
                    "resolution_mac")}
        for image_id, duplicate_of, digest in zip(columns["image_id"], columns["duplicate_of"],
                                                  columns["content_digest"]):
            if duplicate_of is None and digest is not None:
                self._canonical_digest.setdefault(image_id, digest)
        for i, (image_id, cluster_id, duplicate_of, distance, digest, source, blob, mac) in \
                enumerate(zip(*columns.values())):
            self._canonical[image_id] = duplicate_of or image_id
            self._mappings[image_id] = (duplicate_of, blob, mac)
            if image_id in self.by_id:
                continue
            if duplicate_of is None:
                kind = "stored"
            else:
                exact = digest is not None and self._canonical_digest.get(duplicate_of) == digest
                kind = "exact_duplicate" if exact else "duplicate"
            decision = Decision(image_id, kind, cluster_id, duplicate_of, distance, "", source or "")
            self.by_id[image_id] = decision
            if digest is not None and digest not in self.by_digest:
                self.by_digest[digest] = decision
                digests.add(digest)
            fresh.append(i)
        return fresh, digests

    def _record_errors(self, rows: pa.Table) -> None:
        for source, message in zip(rows.column("source").to_pylist(), rows.column("message").to_pylist()):
            self.errors.setdefault(source, Decision("", "error", message=message, source=source))

    def _searchable(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids (n,) object, fingerprints (n, nbytes) uint8) of the rows automatic dedup may match, and
        which rows those are ((rows,) bool)."""
        quality = rows.column("quality").to_numpy(zero_copy_only=False)
        keep = ~(np.nan_to_num(quality.astype(float), nan=100.0) < self.config.hash.min_quality)
        ids = np.array(rows.column("image_id").to_pylist(), dtype=object)[keep]
        return ids, search_space(self.key, self.config.crypto.mode, list(ids),
                                 schemas.binary_matrix(rows.column("fingerprint"))[keep]), keep

    def _index_keys(self, rows: pa.Table, sealed: pa.ChunkedArray) -> None:
        """Add the feature keys (``sealed``, one value per row of ``rows``) of the searchable rows to :attr:`keys`.

        A row whose sealed keys fail to open is logged and indexed without keys
        (its fingerprint still matches).
        """
        ids, fps, keep = self._searchable(rows)
        failed: list[IntegrityError] = []
        opened = open_feature_keys(self.key, list(ids), np.array(sealed.to_pylist(), dtype=object)[keep].tolist(),
                                   failed=failed)
        for exc in failed:
            log.warning("keys: %s", exc)
        for image_id, fingerprint, keys in zip(ids, fps, opened):
            self.keys.add(image_id, keys, fingerprint)

    def _build_index(self, rows: pa.Table, clusters: pa.Table) -> None:
        """Index the searchable rows under the committed classes.

        A fingerprint goes to its nearest committed centre when that lies within
        N bits; the others are added one by one as the upload protocol adds them
        (joining, or opening, a class), so classes opened since the last
        clustering come back after a restart.
        """
        from imgdedup.pipeline.cluster import assign
        from imgdedup.pipeline.index import ClusterIndex

        ids, fps, _ = self._searchable(rows)
        N = self.config.dedup.centre_threshold
        near = np.zeros(len(ids), bool)
        if clusters.num_rows:
            order = np.argsort(clusters.column("cluster_id").to_numpy())
            centres = search_space(self.key, self.config.crypto.mode, centre_ids(len(order)),
                                   schemas.binary_matrix(clusters.column("centroid"))[order])
            labels, distances = assign(fps, centres)
            near = distances <= N
            self.index = ClusterIndex.build(fps[near], ids[near], centres, labels[near])
        for fp, image_id in zip(fps[~near], ids[~near]):
            self.index.add(fp, image_id, centre_threshold=N)

    def catch_up(self) -> News:
        """Take in the commits that landed since :attr:`version` (all of them unless one replaced a table)."""
        latest = self.store.latest_version()
        news = News(set(), set(), set(), False)
        for version in range(self.version + 1, latest + 1):
            record = self.store.commit_record(version)
            if {schemas.CLUSTERS, schemas.FINGERPRINTS} & set(record["replace"]):
                return dataclasses.replace(news, reloaded=True)
            for part in record["files"].get(schemas.FINGERPRINTS, []):
                whole = self._read_part(part)
                rows = whole.select(DECISION_COLUMNS)
                fresh, digests = self._record_rows(rows)
                taken = pa.array(fresh, pa.int64())
                fresh_rows = rows.take(taken)
                news.image_ids.update(fresh_rows.column("image_id").to_pylist())
                news.digests.update(digests)
                ids, fps, _ = self._searchable(fresh_rows)
                for fp, image_id in zip(fps, ids):
                    self.index.add(fp, image_id, centre_threshold=self.config.dedup.centre_threshold)
                if self.keys is not None:
                    sealed = (whole.column("feature_keys").take(taken) if "feature_keys" in whole.schema.names
                              else pa.chunked_array([pa.nulls(len(fresh), pa.binary())]))
                    self._index_keys(fresh_rows, sealed)
            for part in record["files"].get(schemas.ERRORS, []):
                errors = self._read_part(part)
                self._record_errors(errors)
                news.sources.update(errors.column("source").to_pylist())
            self.version = version
        return news

    def _read_part(self, key: str) -> pa.Table:
        with self.store.open_committed_file(key) as reader:
            return pq.read_table(reader, use_threads=False)

    # -- questions ----------------------------------------------------------

    def canonical_of(self, image_id: str) -> str | None:
        """The image whose blob holds ``image_id``'s picture (itself when stored); None if unknown."""
        return self._canonical.get(image_id)

    def verified_canonical(self, image_id: str, *, allow_unauthenticated: bool = False) -> str | None:
        """:meth:`canonical_of`, once the committed rows of ``image_id`` and of its canonical pass their MACs.

        Raises
        ------
        IntegrityError
            A row's ``resolution_mac`` fails or is missing (see
            :func:`~imgdedup.pipeline.crypto.resolution.check_resolution`), or the
            canonical is not a stored image with its own blob.
        """
        canonical = self._canonical.get(image_id)
        if canonical is None:
            return None
        for row_id in dict.fromkeys((image_id, canonical)):
            if row_id not in self._mappings:
                raise IntegrityError(image_id, f"points to {row_id}, which the store has no row for",
                                     stage="resolve")
            check_resolution(self.key, row_id, *self._mappings[row_id],
                             allow_unauthenticated=allow_unauthenticated)
        if self._mappings[canonical][:2] != (None, object_paths.blob_body_key(canonical)):
            raise IntegrityError(image_id, f"points to {canonical}, which is not a stored image", stage="resolve")
        return canonical

    def point(self, image_id: str, canonical: str) -> None:
        """Note that ``image_id``'s blob is ``canonical``'s (itself when stored), as soon as it is decided.

        Later images of the same micro-batch that match it then point to its
        canonical too; a batch that is decided again reloads everything anyway.
        """
        self._canonical[image_id] = canonical

    def remember(self, digest: bytes, decision: Decision) -> None:
        """Record a stored or duplicate decision this process just committed."""
        self.by_id.setdefault(decision.image_id, decision)
        self.by_digest.setdefault(digest, decision)
        self.point(decision.image_id, decision.duplicate_of or decision.image_id)

    def remember_error(self, decision: Decision) -> None:
        """Record an error decision this process just committed."""
        self.errors.setdefault(decision.source, decision)


def nearest_within(index: ClusterIndex, queries: np.ndarray, config: Config,
                   verify_t: int | None = None) -> list[tuple[str, int] | None]:
    """The nearest indexed image within t (or up to the verified zone's top) of each query, or None.

    t is the bulk job's direct-accept t: ``dedup.threshold_t``, lowered by the
    t rule (``dedup.max_false_merge_rate``) for a store of the index's size. The
    mode and mih plan are ``config.index``'s for the index's size at that t
    (:meth:`~imgdedup.pipeline.config.IndexConfig.resolved`): exact within t;
    with ``verify_t`` the same plan searches on up to it, and finds the zone's
    matches its probes reach (docs/index.md, "The verified zone's candidates").

    Parameters
    ----------
    index : ClusterIndex
    queries : ndarray of uint8, shape (m, nbytes) or (m, 8, nbytes)
        Queries in the index's space (:func:`queries`), or each query's 8 dihedral forms.
    config : Config
        ``[dedup]`` and ``[index]``.
    verify_t : int, optional
        Top of the verified zone, in bits; matches beyond t up to it are returned too.
    """
    t = direct_t(config, len(index) + len(queries))
    forms = queries.shape[1] if queries.ndim == 3 else 1
    search = config.index.resolved(len(index), t, 8 * index.nbytes, forms)
    if search.mode == "mih":
        _note_approximate_plan(search.substring_bits, search.probe_radius, t, 8 * index.nbytes)
    results = index.search(queries, max(t, verify_t or 0), mode=search.mode,
                           centre_threshold=config.dedup.centre_threshold, batch=search.query_batch,
                           threads=search.scan_threads, substring_bits=search.substring_bits,
                           probe_radius=search.probe_radius)
    return [(m.ids[0], int(m.distances[0])) if len(m.ids) else None for m in results]


def direct_t(config: Config, n: int) -> int:
    """The direct-accept t, in bits, for a store of ``n`` images: ``dedup.threshold_t`` under the t rule."""
    return max(config.dedup.threshold_for(n), 0)


def nearest_up_to_zone(index: ClusterIndex, queries: np.ndarray,
                       config: Config) -> tuple[list[tuple[str, int] | None], int]:
    """:func:`nearest_within` up to the verified zone's top, for a store of the index's size plus the queries.

    Returns
    -------
    matches : list of (image_id, distance) or None
        One per query. A distance above t lies in the verified zone: the match
        counts only once the verifier passes it (:mod:`imgdedup.jobs.zone_check`).
    t : int
        The direct-accept t, in bits. The zone's top is ``dedup.verify_threshold_for``
        that size and t (t itself when ``dedup.verify_up_to`` is 0: no zone).
    """
    n = len(index) + len(queries)
    t = direct_t(config, n)
    return nearest_within(index, queries, config, verify_t=config.dedup.verify_threshold_for(n, t)), t


@functools.cache
def _note_approximate_plan(substring_bits: int, probe_radius: int, t: int, nbits: int) -> None:
    """Log, once per plan and t, a mih plan that the pigeonhole bound does not make exact at t."""
    bound = exact_up_to(MihPlan(substring_bits, probe_radius), nbits)
    if bound < t:
        log.warning("index: mih plan substring_bits=%d, probe_radius=%d finds every match only up to %d bits, "
                    "below t = %d: matches beyond %d bits may be missed (set both to \"auto\" for an exact plan)",
                    substring_bits, probe_radius, bound, t, bound)


def lookup_like(images: DecidedImages, key: GroupKey, config: Config, path: str, *,
                allow_unauthenticated: bool = False) -> tuple[str, int] | None:
    """The stored image a query file stands for: its exact copy, else its nearest duplicate.

    The nearest stored fingerprint within the direct-accept t is taken as it
    is; one in the verified zone above t only once the verifier passes the
    query's picture against the picture of that image's canonical, whose
    mapping is checked against its MAC and whose blob is decrypted here
    (:func:`verified_in_zone`). Failing that, the stored image sharing the
    most feature keys with the query (:func:`key_match`) is verified the same
    way: :func:`verified_match`, the rule ingest follows too.

    Returns
    -------
    (image_id, distance) or None
        Distance 0 for an exact copy (same keyed content digest); None for a
        miss, a zone match that failed verification included.

    Raises
    ------
    DecodeError
        The query file is not an image this store's hash can read.
    IntegrityError
        A zone match's mapping to its canonical fails its MAC (stage ``resolve``),
        or the canonical's blob fails to decrypt (stage ``verify``).
    StoreError
        A zone match's canonical has no blob (stage ``verify``).
    """
    image = read_source(key, path)
    exact = images.by_digest.get(image.digest)
    if exact is not None and exact.kind != "error":
        return exact.image_id, 0
    batch = fingerprint_images([image.data], [path], config)
    if not len(batch):
        raise batch.errors[0]  # a DecodeError naming the file and why
    return verified_match(images, queries(key, config.crypto.mode, batch),
                          batch.feature_keys[0] if batch.feature_keys else None, config,
                          lambda match: verified_in_zone(images, image, match,
                                                         allow_unauthenticated=allow_unauthenticated))


def verified_match(images: DecidedImages, query: np.ndarray, keys: np.ndarray | None, config: Config,
                   passes: Callable[[str], bool]) -> tuple[str, int] | None:
    """The stored image a new picture stands for, by its fingerprint or its feature keys: ingest's and
    ``get --like``'s rule.

    The nearest stored fingerprint within the direct-accept t is taken as it
    is; one in the verified zone above t only if ``passes`` it; failing that,
    the stored image sharing the most feature keys (:func:`key_match`) if
    ``passes`` it, unless its canonical is the one the zone match just failed
    against (no second verification of the same pair).

    Parameters
    ----------
    query : ndarray of uint8, shape (1, nbytes) or (1, 8, nbytes)
        The picture's fingerprint (or its dihedral forms) in the index's space.
    keys : ndarray of uint64, or None
        The picture's feature keys.
    passes : callable
        ``passes(image_id) -> bool``: whether the verifier passes the picture
        against the canonical of the stored image ``image_id``.

    Returns
    -------
    (image_id, distance) or None
    """
    [match], t = nearest_up_to_zone(images.index, query, config)
    if match is not None and match[1] <= t:
        return match
    refused = None  # the canonical the zone match failed verification against
    if match is not None:
        if passes(match[0]):
            return match
        refused = images.canonical_of(match[0]) or match[0]
    match = key_match(images, keys, query[0], config)
    if match is None or (images.canonical_of(match[0]) or match[0]) == refused:
        return None
    return match if passes(match[0]) else None


def key_match(images: DecidedImages, keys: np.ndarray | None, query: np.ndarray,
              config: Config) -> tuple[str, int] | None:
    """The indexed image sharing the most feature keys with a query, if it shares at least the key rule's number.

    A candidate for the verifier, whatever its fingerprint distance: a crop
    whose fingerprint lies beyond the verified zone still shares keys with its
    original (:mod:`imgdedup.pipeline.hashing.feature_keys`).

    Parameters
    ----------
    images : DecidedImages
        Its :attr:`~DecidedImages.keys` (None: no key index, no match).
    keys : ndarray of uint64, or None
        The query's feature keys.
    query : ndarray of uint8, shape (nbytes,) or (8, nbytes)
        The query's fingerprint (or its dihedral forms) in the index's space.
    config : Config
        ``dedup.key_min_shared`` (by the key rule for the store's size plus the query) and ``key_max_posting``.

    Returns
    -------
    (image_id, distance) or None
        The distance is the fingerprint's, in bits (the smallest over the query's forms).
    """
    if images.keys is None or keys is None or not len(keys):
        return None
    found = images.keys.query(keys, min_shared=config.dedup.key_min_shared_for(len(images.keys) + 1),
                              max_posting=config.dedup.key_max_posting)
    if not found:
        return None
    image_id, _, fingerprint = found[0]
    forms = np.asarray(query, np.uint8).reshape(-1, len(fingerprint))
    return image_id, int(np.bitwise_count(forms ^ fingerprint).sum(axis=1, dtype=np.int64).min())


def verified_in_zone(images: DecidedImages, image: SourceImage, match: str, *,
                     allow_unauthenticated: bool = False) -> bool:
    """Whether the verifier passes ``image`` against the picture of the canonical of the stored image ``match``.

    A canonical whose mapping or blob fails authentication, or that cannot be
    read or decoded, raises (a lookup does not fall back to a miss).

    Raises
    ------
    IntegrityError
        The mapping fails its MAC (stage ``resolve``), or the blob fails to decrypt (stage ``verify``).
    StoreError
        The canonical has no blob (stage ``verify``).
    """
    from imgdedup.jobs.zone_check import verify_against_canonical  # loads OpenCV, which get by id never needs

    canonical = images.verified_canonical(match, allow_unauthenticated=allow_unauthenticated)
    check = verify_against_canonical(images.store, images.key, images.config, image.data, image.source, canonical)
    check.raise_failure()
    return check.passed


def queries(key: GroupKey, mode: str, batch: FingerprintBatch) -> np.ndarray:
    """A fingerprint batch as queries in the index's space (tokens, or the hashes themselves in
    ``sealed`` mode): (B, 8, nbytes) with dihedral forms, else (B, nbytes)."""
    return query_space(key, mode, batch.dihedral if batch.dihedral is not None else batch.hashes)


def fingerprint_images(data: list[bytes], names: list[str], config: Config) -> FingerprintBatch:
    """Decode and fingerprint images held in memory with the configured hash and decoding limits (and their
    feature keys, ``hash.feature_keypoints``, when there is a verified zone to put key matches to)."""
    algorithm = configured_algorithm(config)
    return fingerprint_batch(data, algorithm, names=names, dihedral=config.hash.dihedral,
                             feature_keypoints=config.key_keypoints,
                             **dataclasses.asdict(config.decode))
