"""The ingest engine, the paper's upload protocol (§5(2)): one decision per new image.

Python API (what a web handler embeds)::

    ingestor = Ingestor(Store(url), load_key_file(path), config)
    decision = ingestor.submit(image_bytes_or_path, upload_id="req-42")   # -> Decision
    decisions = ingestor.submit_batch([...])             # one commit for the lot

An upload is identified by its keyed content digest and its name (the
caller's upload id when given, else its source): the image id is a keyed hash
of both. An upload the store has already decided returns that decision, marked
``replayed``, and adds nothing (across replays, restarts and processes). The
same bytes under another name are another upload: an ``exact_duplicate`` row,
a pointer (distance 0, no blob) to the canonical image of the first upload of
those bytes (a ``duplicate`` at its distance if that upload was itself a near
duplicate of another picture). A new picture is fingerprinted (LBPH with its dihedral forms,
keyed into tokens) and searched in the class index: the nearest stored
fingerprint within the direct-accept t (``dedup.threshold_t`` under the t rule)
makes it a ``duplicate`` (a pointer to that image's canonical, no blob), and
so does one in the verified zone above t once local features on the two
pictures agree (:meth:`Ingestor._verified`), or else the stored image sharing
the most feature keys with it once verified the same way (crops whose
fingerprints lie beyond the zone); otherwise its sealed blob is written and
it is ``stored``. Either way its token joins its nearest class, or opens a new
class when no centre lies within ``dedup.centre_threshold`` (N). A file that
cannot be read or decoded is an ``error`` row. Images whose quality is below
``hash.min_quality`` are stored and kept out of the index, as in the bulk job.

Each micro-batch is published with one store commit whose run id is derived
from the batch's image ids, so replaying a batch is a no-op. Just before
committing, the commits that landed meanwhile are read; if another process
decided any of the batch's uploads or contents, the index is reloaded and the
batch decided again. Two processes that both pass that check within the same
instant can still both commit a decision for one upload; readers (this
module, ``get``) take the first committed one.

Re-clustering: once the index has opened ``ingest.recluster_new_classes``
classes, or moved a centre ``ingest.recluster_centre_shift`` bits, since it was
loaded, the micro-batch ends with a K-means over every indexed fingerprint
(``[cluster]`` settings, k = ``dedup.clusters``) whose centres replace the
``clusters`` table in one commit (``replace=["clusters"]``); readers switch from
the old classes to the new ones atomically. It runs in the ingesting process,
between micro-batches.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from imgdedup.jobs.lookup import DecidedImages, Decision, News, fingerprint_images, queries, verified_match
from imgdedup.jobs.source import SourceImage, read_source
from imgdedup.jobs.upload import RowSettings, fingerprint_rows, seal_and_store, with_decisions
from imgdedup.jobs.zone_check import STAGE, verify_against_canonical
from imgdedup.pipeline.cluster import hamming_kmeans
from imgdedup.pipeline.cluster.kmeans import class_count
from imgdedup.pipeline.config import Config, load_config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.index_keys import key_for_store
from imgdedup.pipeline.crypto.keyed_fingerprint import centre_ids, fingerprint_width, seal_hashes
from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.index import ClusterIndex
from imgdedup.pipeline.store import Store, schemas

log = logging.getLogger(__name__)

__all__ = ["Decision", "Ingestor"]


class _DecidedElsewhere(Exception):
    """Another process committed part of the batch being decided; it must be decided again."""


@dataclasses.dataclass
class _Plan:
    """A micro-batch decided in memory, not yet committed."""

    spec: RowSettings
    rows: pa.Table
    errors: list[dict]
    to_store: list[SourceImage]
    digests: dict[str, bytes]
    decisions: dict[str, Decision]
    error_decisions: dict[str, Decision]

    def keys(self) -> set[str]:
        """The uploads this plan decides, as :func:`_upload_key` names them."""
        return set(self.decisions) | {_upload_key(d) for d in self.error_decisions.values()}


class Ingestor:
    """Decide and store uploads one micro-batch at a time, exactly once per upload.

    Parameters
    ----------
    store : Store
    key : GroupKey
        The group key (ingest is client side: it reads plaintext and seals blobs).
    config : Config, optional
        ``conf/default.toml`` when omitted.

    Examples
    --------
    >>> import tempfile, imgdedup
    >>> folder = tempfile.mkdtemp()
    >>> samples = imgdedup.build_sample_set(folder, originals=("coffee",))
    >>> ingestor = imgdedup.Ingestor(imgdedup.Store(folder + "/store"), imgdedup.GroupKey.generate())
    >>> first = ingestor.submit(folder + "/images/coffee.jpg")
    >>> first.kind
    'stored'
    >>> copy = ingestor.submit(folder + "/images/coffee-half.png")
    >>> copy.kind, copy.duplicate_of == first.image_id
    ('duplicate', True)
    """

    def __init__(self, store: Store, key: GroupKey, config: Config | None = None):
        self.store = store
        self.key = key_for_store(key, store.key_records())
        self.config = config or load_config()
        self.images = DecidedImages.load(store, self.key, self.config)

    def submit(self, image: bytes | str | os.PathLike, *, source: str | None = None,
               upload_id: str | None = None) -> Decision:
        """Decide one image (bytes, a path or an fsspec URL); commits at once. See :meth:`submit_batch`."""
        return self.submit_batch([image], sources=None if source is None else [source],
                                 upload_ids=None if upload_id is None else [upload_id])[0]

    def submit_batch(self, images: Sequence[bytes | str | os.PathLike],
                     sources: Sequence[str | None] | None = None,
                     upload_ids: Sequence[str | None] | None = None) -> list[Decision]:
        """Decide a micro-batch and publish it with one commit.

        Parameters
        ----------
        images : sequence of bytes, str or path-like
        sources : sequence of str or None, optional
            Name recorded per image (default: its path or URL as given, as the
            bulk job names the files it lists; for bytes, ``upload:`` and a prefix of the keyed digest).
        upload_ids : sequence of str or None, optional
            Caller-supplied id per upload (a request id; prefix it with the
            caller's name where callers share a store). Given, it identifies
            the upload instead of its source: resending the same bytes under
            it is a replay, other bytes under it another upload. The errors
            table has no upload id: a failed upload is known by its source.

        Returns
        -------
        list of Decision
            One per input, in order. An upload already decided (earlier, by
            another process, or earlier in this batch) gets its first committed
            decision with ``replayed`` set; the others are this call's new rows.
        """
        sources = list(sources) if sources is not None else [None] * len(images)
        upload_ids = list(upload_ids) if upload_ids is not None else [None] * len(images)
        if not len(sources) == len(upload_ids) == len(images):
            raise ValueError(f"{len(images)} images, {len(sources)} sources and {len(upload_ids)} upload ids")
        read: list[SourceImage | Decision] = []
        for image, source, upload_id in zip(images, sources, upload_ids):
            try:
                read.append(read_source(self.key, image, source, upload_id))
            except OSError as exc:
                name = source if source is not None else os.fspath(image)
                read.append(Decision("", "error", message=f"cannot read: {exc}", source=name))
        while True:
            self._take_in_other_commits()
            try:
                plan = self._decide(read)
                if plan is None:
                    committed: set[str] = set()
                    break
                committed = self._publish(plan)
                if committed is not None:
                    break
            except _DecidedElsewhere:
                pass
            log.info("another ingest decided some of this batch first; deciding it again")
            self.images = DecidedImages.load(self.store, self.key, self.config)
        self._recluster_if_drifted()
        answers = []
        for item in read:  # an upload this call committed is new once, then a replay
            upload = _upload_key(item)
            answer = self._answer(item)
            answers.append(answer if upload in committed else dataclasses.replace(answer, replayed=True))
            committed.discard(upload)
        return answers

    # -- deciding -----------------------------------------------------------

    def _answer(self, item: SourceImage | Decision) -> Decision:
        if isinstance(item, Decision):
            return self.images.errors.get(item.source, item)
        return self.images.by_id.get(item.image_id) or self.images.errors[item.source]

    def _take_in_other_commits(self) -> None:
        if self.images.catch_up().reloaded:
            self.images = DecidedImages.load(self.store, self.key, self.config)

    def _decide(self, read: list[SourceImage | Decision]) -> _Plan | None:
        """Decide every undecided upload of the batch in memory; None when there is nothing new."""
        errors: list[dict] = []
        error_decisions: dict[str, Decision] = {}
        new: dict[str, SourceImage] = {}
        for item in read:
            if isinstance(item, Decision):
                if item.source not in self.images.errors and item.source not in error_decisions:
                    errors.append(_error_row(item.source, "read", "OSError", item.message))
                    error_decisions[item.source] = item
            elif item.image_id not in self.images.by_id and item.source not in self.images.errors:
                new.setdefault(item.image_id, item)
        if not new and not errors:
            return None
        pending = list(new.values())
        batch = fingerprint_images([p.data for p in pending], [p.source for p in pending], self.config)
        for position, exc in zip(sorted(set(range(len(pending))) - set(batch.indices.tolist())), batch.errors):
            if exc.subject in error_decisions or exc.subject in self.images.errors:
                continue  # the same source under two upload ids: one error row
            errors.append(_error_row(exc.subject, exc.stage, type(exc).__name__, exc.reason))
            error_decisions[exc.subject] = Decision(pending[position].image_id, "error", message=exc.reason,
                                                    source=exc.subject)
        decided = [pending[i] for i in batch.indices]
        searched = queries(self.key, self.config.crypto.mode, batch)
        plain = searched[:, 0] if searched.ndim == 3 else searched
        decisions: dict[str, Decision] = {}
        first_of: dict[bytes, Decision] = {}  # this batch's first decision per content digest
        for row, image in enumerate(decided):
            earlier = self.images.by_digest.get(image.digest) or first_of.get(image.digest)
            if earlier is not None:
                decision = self._copy_of_known_bytes(image, earlier)
            else:
                decision = self._decide_one(image, plain[row], searched[row:row + 1],
                                            batch.feature_keys[row] if batch.feature_keys is not None else None,
                                            int(batch.quality[row]) >= self.config.hash.min_quality, new, errors)
                first_of[image.digest] = decision
            decisions[image.image_id] = decision
        to_store = [image for image in decided if decisions[image.image_id].kind == "stored"]
        spec = self._spec()
        table = self._rows_table(spec, decided, batch, [decisions[image.image_id] for image in decided])
        return _Plan(spec, table, errors, to_store, {i.image_id: i.digest for i in decided}, decisions,
                     error_decisions)

    def _copy_of_known_bytes(self, image: SourceImage, earlier: Decision) -> Decision:
        """A pointer (no blob) from a new upload of bytes the store holds to their group's canonical image.

        ``exact_duplicate`` (distance 0) when the canonical holds these very
        bytes; when the earlier upload of them was itself a near duplicate,
        the new one is a ``duplicate`` at the same distance.
        """
        canonical = self.images.canonical_of(earlier.image_id) or earlier.image_id
        self.images.point(image.image_id, canonical)
        if earlier.kind == "duplicate":
            return Decision(image.image_id, "duplicate", earlier.cluster_id, canonical, earlier.distance, "",
                            image.source)
        return Decision(image.image_id, "exact_duplicate", earlier.cluster_id, canonical, 0, "", image.source)

    def _decide_one(self, image: SourceImage, token: np.ndarray, query: np.ndarray, keys: np.ndarray | None,
                    searchable: bool, batch: dict[str, SourceImage], errors: list[dict]) -> Decision:
        """The paper's upload step for one fingerprinted image: pointer, or blob to store; class update.

        The nearest stored fingerprint within the direct-accept t makes a
        pointer; one in the verified zone above it makes a pointer only if the
        verifier passes the upload against that image's canonical (its pixels
        from ``batch`` when it was stored earlier in this micro-batch, else its
        blob, decrypted here). Failing that, the stored image sharing the most
        feature keys with the upload (``keys``) is verified the same way
        (:func:`~imgdedup.jobs.lookup.verified_match`). A canonical that cannot
        be read adds a row to ``errors`` (stage ``verify``) and the upload is stored.
        """
        match, cluster_id = None, None
        if searchable:
            match = verified_match(self.images, query, keys, self.config,
                                   lambda stored: self._verified(image, self._canonical(stored), batch, errors))
            cluster_id, _ = self.images.index.add(token, image.image_id,
                                                  centre_threshold=self.config.dedup.centre_threshold)
            if self.images.keys is not None and keys is not None:
                self.images.keys.add(image.image_id, keys, token)
        if match is not None:
            canonical = self._canonical(match[0])
            self.images.point(image.image_id, canonical)
            return Decision(image.image_id, "duplicate", cluster_id, canonical, match[1], "", image.source)
        self.images.point(image.image_id, image.image_id)
        return Decision(image.image_id, "stored", cluster_id, None, None, "", image.source)

    def _canonical(self, image_id: str) -> str:
        """The image whose blob stands for the known image ``image_id`` (itself when stored)."""
        return self.images.canonical_of(image_id) or image_id

    def _verified(self, image: SourceImage, canonical: str, batch: dict[str, SourceImage],
                  errors: list[dict]) -> bool:
        """Whether the verifier passes ``image`` against the picture of the stored image ``canonical``.

        A picture that cannot be had adds a row of stage ``verify`` to ``errors``.
        """
        check = verify_against_canonical(self.store, self.key, self.config, image.data, image.source, canonical,
                                         batch[canonical].data if canonical in batch else None)
        for name, exc in check.failed.items():
            log.warning("verify: %s", exc)
            errors.append(_error_row(name, STAGE, type(exc).__name__, getattr(exc, "reason", str(exc))))
        return check.passed

    def _spec(self) -> RowSettings:
        """This batch's row settings: ingest seals blobs and builds rows as the bulk job does."""
        return RowSettings(key=self.key, algo=self.config.hash.algo, bits=self.config.hash.bits,
                           mode=self.config.crypto.mode, segment_bytes=self.config.crypto.segment_bytes,
                           ingested_at=np.datetime64("now", "us"))

    @staticmethod
    def _rows_table(spec: RowSettings, decided: list[SourceImage], batch, decisions: list[Decision]) -> pa.Table:
        """The batch's fingerprints rows: the bulk job's columns plus this batch's decisions."""
        table = fingerprint_rows(spec, [i.image_id for i in decided], [i.source for i in decided],
                                 [len(i.data) for i in decided], [i.digest for i in decided], batch.hashes,
                                 [batch.image_columns()], [i.upload_id for i in decided],
                                 feature_keys=batch.feature_keys)
        return with_decisions(spec.key, table, [d.cluster_id for d in decisions],
                              [d.duplicate_of for d in decisions], [d.distance for d in decisions])

    # -- publishing ---------------------------------------------------------

    def _publish(self, plan: _Plan) -> set[str] | None:
        """Commit ``plan``; None (nothing committed) when another process decided part of it first.

        Returns the uploads (image ids, error sources) this call committed: all
        of the plan's, or none when the same batch was committed by another
        process at once.
        """
        if self._decided_elsewhere(plan, self.images.catch_up()):
            return None
        # Blobs are written only now, once no other process is known to have decided
        # these images: two writers of one blob id could leave one's header on the
        # other's body.
        for image in plan.to_store:
            try:
                seal_and_store(self.store, plan.spec, image.image_id, image.data, image.digest)
            except StoreError:
                # Refused because another process committed this very image meanwhile?
                if self._decided_elsewhere(plan, self.images.catch_up()):
                    raise _DecidedElsewhere(image.image_id) from None
                raise
        blobs = [image.image_id for image in plan.to_store]
        run_id = _run_id(plan)
        files: dict[str, list[str]] = {}
        if plan.rows.num_rows:
            files[schemas.FINGERPRINTS] = [self.store.write_table_part(schemas.FINGERPRINTS, run_id, 0, plan.rows)]
        if plan.errors:
            table = pa.Table.from_pylist([dict(e, run_id=run_id) for e in plan.errors], schema=schemas.errors_schema())
            files[schemas.ERRORS] = [self.store.write_table_part(schemas.ERRORS, run_id, 0, table)]
        kinds = [d.kind for d in plan.decisions.values()]
        version = self.store.commit(run_id, files, blobs, meta={
            "job": "ingest", "images": plan.rows.num_rows, "errors": len(plan.errors),
            "stored": kinds.count("stored"), "duplicates": kinds.count("duplicate"),
            "exact_duplicates": kinds.count("exact_duplicate")})
        ours = all(set(keys) <= set(self.store.commit_record(version)["files"].get(table, []))
                   for table, keys in files.items())
        if not ours:
            # The same batch was committed by another process: its rows are the decisions.
            self.images = DecidedImages.load(self.store, self.key, self.config)
            return set()
        for image_id, decision in plan.decisions.items():
            self.images.remember(plan.digests[image_id], decision)
        for decision in plan.error_decisions.values():
            self.images.remember_error(decision)
        self._take_in_other_commits()
        log.info("committed %d decisions and %d errors at version %d", plan.rows.num_rows, len(plan.errors), version)
        return plan.keys()

    @staticmethod
    def _decided_elsewhere(plan: _Plan, news: News) -> bool:
        """True if commits of another process decided one of the plan's uploads or contents (or reloaded)."""
        return (news.reloaded or bool(news.image_ids & set(plan.decisions))
                or bool(news.digests & set(plan.digests.values())) or bool(news.sources & set(plan.error_decisions)))

    # -- re-clustering ------------------------------------------------------

    def _recluster_if_drifted(self) -> None:
        drift = self.images.index.drift()
        settings = self.config.ingest
        # New classes count against the classes the last clustering made, so a
        # store of many distinct pictures is not re-clustered every few uploads.
        built = len(drift.centre_shift)
        if not ((settings.recluster_new_classes and drift.new_classes >= max(settings.recluster_new_classes, built))
                or (settings.recluster_centre_shift and drift.max_shift >= settings.recluster_centre_shift)):
            return
        self.recluster()

    def recluster(self) -> int:
        """K-means over every indexed fingerprint; publish the classes with ``replace=["clusters"]``.

        Returns
        -------
        int
            The store version that holds the new classes.
        """
        ids, fingerprints, _ = self.images.index.members()
        k = class_count(self.config.dedup.clusters, len(ids))
        result = hamming_kmeans(fingerprints, k, **dataclasses.asdict(self.config.cluster))
        index = ClusterIndex.build(fingerprints, ids, result.centres, result.labels)
        columns = index.to_cluster_columns()
        if self.config.crypto.mode == "sealed":  # the centres are hashes here: sealed like fingerprints
            sealed = seal_hashes(self.key, centre_ids(len(index.centres)), index.centres)
            columns["centroid"] = [row.tobytes() for row in sealed]
        based_on = self.images.version
        columns["version"] = np.full(len(result.centres), based_on + 1, np.int64)
        width = fingerprint_width(self.config.crypto.mode, self.images.nbytes)
        table = pa.table(columns, schema=schemas.clusters_schema(
            width, algo=self.config.hash.algo, bits=self.config.hash.bits, key_id=self.key.index_key_id_hex,
            mode=self.config.crypto.mode))
        run_id = "recluster-" + hashlib.sha256(
            based_on.to_bytes(8, "big") + result.centres.tobytes()).hexdigest()[:32]
        part = self.store.write_table_part(schemas.CLUSTERS, run_id, 0, table)
        version = self.store.commit(run_id, {schemas.CLUSTERS: [part]}, replace=[schemas.CLUSTERS],
                                    meta={"job": "ingest-recluster", "k": k, "images": len(ids)})
        log.info("re-clustered %d fingerprints into %d classes (version %d)", len(ids), k, version)
        if version == based_on + 1:
            self.images.index, self.images.version = index, version
        else:  # other commits came in between: take everything from the store
            self.images = DecidedImages.load(self.store, self.key, self.config)
        return version


def _error_row(source: str, stage: str, error_type: str, message: str) -> dict:
    return {"source": source, "stage": stage, "error_type": error_type, "message": message}


def _upload_key(item: SourceImage | Decision) -> str:
    """What identifies an upload in a plan: its image id, or the source of a file that could not be read."""
    return item.image_id or item.source


def _run_id(plan: _Plan) -> str:
    """A run id fixed by the batch's uploads: the same micro-batch replayed commits nothing new."""
    h = hashlib.sha256()
    for image_id in sorted(plan.decisions):
        h.update(image_id.encode())
    for source in sorted(plan.error_decisions):
        h.update(source.encode() + b"\x00")
    return "ingest-" + h.hexdigest()[:32]
