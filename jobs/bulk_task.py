"""The bulk job's per-partition task: read, digest, fingerprint, seal and store one partition of files.

It runs on a Dask worker. Each file is read once, straight from its source URL
(its bytes never reach the scheduler or the client), into memory a few files at
a time (:data:`READ_BATCH`; two such chunks while one chunk's blobs are written
and the next is decoded), so a worker holds at most that many files plus one
partition's thumbnails and rows. What goes back is small: the partition's
fingerprint rows (an Arrow table), its fingerprints in the space the job
searches in, and its error rows.

Deterministic and idempotent: image ids are keyed digests of the bytes and the
source URL, so a retried task (a lost worker, a re-run after a crash) produces
the same rows and rewrites the same, still uncommitted, blob ids.
"""
from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from imgdedup.jobs.source import NOT_REGULAR, SIGNATURE_BYTES, SourceError, SourceFile, looks_like_image
from imgdedup.jobs.upload import RowSettings, fingerprint_rows, seal_and_store
from imgdedup.pipeline.crypto.digest import content_digest, image_id
from imgdedup.pipeline.crypto.keyed_fingerprint import dihedral_tokens, tokens
from imgdedup.pipeline.errors import ImgdedupError
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import FINGERPRINTS

#: Files a task holds in memory at once; bounds a worker's memory by file size, not partition size.
READ_BATCH = 16
#: Blobs a task seals and writes at once (threads: the writes mostly wait on the store).
BLOB_WRITERS = 8

#: Columns of the errors table a task fills (``run_id`` is added at commit).
ERROR_COLUMNS = ("source", "stage", "error_type", "message")


@dataclass(frozen=True)
class PartitionSpec(RowSettings):
    """Everything a partition task needs besides its files; one per run, sent to each task.

    The run's row settings, plus: ``storage_options`` open the store,
    ``source_options`` the source files; ``size``, ``dihedral`` and ``decode``
    configure the hash and the decoder; ``extensions`` are the file name
    extensions taken for images. ``deferred_sync``: the workers share the
    client's host, so the commit's filesystem flush covers their writes (see
    :class:`imgdedup.pipeline.store.Store`). ``based_on``: the store version
    the run's view of the stored rows reflects.
    """

    store_url: str
    storage_options: Mapping[str, object]
    source_options: Mapping[str, object]
    size: int
    trim_borders: bool
    dihedral: bool
    decode: Mapping[str, object]
    extensions: frozenset[str]
    deferred_sync: bool
    based_on: int = 0
    feature_keypoints: int = 0


def committed_since(store: Store, version: int) -> set[str]:
    """Image ids that commits after ``version`` hold (an ingest or another run that landed meanwhile).

    A task takes such an image as unchanged, never writing its blob again
    (committed bodies are immutable) nor a second row; a write that loses this
    race fails the task, and its retry finds the image here.
    """
    return set(rows_committed_since(store, version, ("image_id",))["image_id"])


def rows_committed_since(store: Store, version: int, columns: Sequence[str]) -> dict[str, list]:
    """``columns`` of the fingerprints rows that commits after ``version`` added, as lists of values.

    Reads only those commits' fingerprints parts.
    """
    found: dict[str, list] = {name: [] for name in columns}
    for later in range(version + 1, store.latest_version() + 1):
        for part in store.commit_record(later)["files"].get(FINGERPRINTS, []):
            with store.open_committed_file(part) as reader:
                table = pq.read_table(reader, columns=list(columns))
            for name in columns:
                found[name] += table.column(name).to_pylist()
    return found


@dataclass
class PartitionResult:
    """What one partition task returns to the client.

    Attributes
    ----------
    index : int
        Partition number.
    rows : pyarrow.Table
        One ``fingerprints`` row per new image (``cluster_id``, ``blob``,
        ``duplicate_of`` and ``distance`` still null), in listing order.
    vectors : ndarray of uint8, shape (n, bits // 8)
        The rows' fingerprints in the space the job searches in: tokens in
        ``tokens`` mode, raw hashes in ``sealed`` mode (the job holds the key).
    dihedral : ndarray of uint8, shape (n, 8, bits // 8), or None
        The 8 dihedral forms of each fingerprint, in the same space.
    digests : ndarray of uint8, shape (n, 32)
        Keyed content digests of the rows' files.
    blob_written : ndarray of bool, shape (n,)
        True where this task wrote the row's blob (False for a byte-for-byte
        copy of an earlier file of the partition).
    errors : list of dict
        One per bad file: :data:`ERROR_COLUMNS`.
    skipped : int
        Files that are not images (neither named nor shaped like one).
    unchanged : int
        Files the store already holds with the same bytes at the same URL.
    bytes_read : int
    seconds : dict of str to float
        Worker time per stage: ``read`` (reading and digesting), ``decode_hash``,
        ``encrypt_write``.
    feature_keys : list of ndarray of uint64, or None
        Each row's feature keys (``hash.feature_keypoints``), n arrays; None when the run computes none.
    """

    index: int
    rows: pa.Table
    vectors: np.ndarray
    dihedral: np.ndarray | None
    digests: np.ndarray
    blob_written: np.ndarray
    errors: list[dict] = field(default_factory=list)
    skipped: int = 0
    unchanged: int = 0
    bytes_read: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    feature_keys: list[np.ndarray] | None = None


def _error_row(source: str, exc: BaseException, stage: str) -> dict:
    """An errors-table row; an imgdedup error names its own stage and reason."""
    if isinstance(exc, ImgdedupError):
        stage, message = exc.stage, exc.reason
    else:
        message = str(exc)
    return {"source": source, "stage": stage, "error_type": type(exc).__name__, "message": message}


def fingerprint_partition(index: int, files: Sequence[SourceFile], known: Mapping[str, str],
                          spec: PartitionSpec) -> PartitionResult:
    """Fingerprint, seal and store the blobs of one partition of source files.

    Parameters
    ----------
    index : int
        Partition number (carried into the result).
    files : sequence of SourceFile
    known : mapping of str to str
        ``{source name (SourceFile.source): image id}`` of rows the store already holds for these
        files; a file whose new id equals its known one is counted unchanged and
        not fingerprinted again.
    spec : PartitionSpec

    Returns
    -------
    PartitionResult
    """
    algorithm = get_algorithm(spec.algo, size=spec.size, bits=spec.bits, trim_borders=spec.trim_borders)
    store = Store(spec.store_url, spec.storage_options, deferred_sync=spec.deferred_sync)
    landed = committed_since(store, spec.based_on)
    seconds = {"read": 0.0, "decode_hash": 0.0, "encrypt_write": 0.0}
    ids, sources, sizes, digests, hashes, variants, keys = [], [], [], [], [], [], []
    images, written, errors = [], [], []
    skipped = unchanged = bytes_read = 0
    stored_digests: set[bytes] = set()
    # Blob writes wait on the store (file creation, network), not the CPU: a few run at once, and
    # a chunk's blobs are written while the next chunk is decoded (two chunks in memory at most).
    writes = []
    source_fs = _source_filesystem(files, spec.source_options)
    with ThreadPoolExecutor(BLOB_WRITERS) as writers:
        for start in range(0, len(files), READ_BATCH):
            started = time.perf_counter()
            batch = []  # (file, bytes, digest, image id) of files to fingerprint
            for file in files[start:start + READ_BATCH]:
                if not file.regular:
                    errors.append(_error_row(file.source, SourceError(file.source, NOT_REGULAR), "list"))
                    continue
                try:
                    data = source_fs.cat_file(fsspec.core.strip_protocol(file.url))
                except OSError as exc:
                    errors.append(_error_row(file.source, exc, "read"))
                    continue
                bytes_read += len(data)
                if not looks_like_image(file.name, data[:SIGNATURE_BYTES], spec.extensions):
                    skipped += 1
                    continue
                digest = content_digest(spec.key, io.BytesIO(data))
                new_id = image_id(spec.key, digest, file.source)
                if known.get(file.source) == new_id or new_id in landed:
                    unchanged += 1
                    continue
                batch.append((file, data, digest, new_id))
            seconds["read"] += time.perf_counter() - started

            started = time.perf_counter()
            result = fingerprint_batch([data for _, data, _, _ in batch], algorithm, dihedral=spec.dihedral,
                                       names=[file.source for file, *_ in batch],
                                       feature_keypoints=spec.feature_keypoints, **dict(spec.decode))
            seconds["decode_hash"] += time.perf_counter() - started
            errors.extend(_error_row(exc.subject, exc, "decode") for exc in result.errors)

            started = time.perf_counter()
            for write in writes:  # the previous chunk's, written while this one was decoded
                write.result()  # a failed write fails the task (Dask retries it)
            writes = []
            for position in result.indices:
                file, data, digest, new_id = batch[position]
                first_copy = digest not in stored_digests
                if first_copy:  # a byte-for-byte copy earlier in this partition already stored these bytes
                    writes.append(writers.submit(seal_and_store, store, spec, new_id, data, digest))
                    stored_digests.add(digest)
                written.append(first_copy)
                ids.append(new_id)
                sources.append(file.source)
                sizes.append(len(data))
                digests.append(digest)
            seconds["encrypt_write"] += time.perf_counter() - started
            hashes.append(result.hashes)
            if result.dihedral is not None:
                variants.append(result.dihedral)
            images.append(result.image_columns())
            if result.feature_keys is not None:
                keys.extend(result.feature_keys)
        started = time.perf_counter()
        for write in writes:
            write.result()
        seconds["encrypt_write"] += time.perf_counter() - started

    nbytes = algorithm.nbytes
    raw = np.concatenate(hashes) if hashes else np.zeros((0, nbytes), np.uint8)
    forms = (np.concatenate(variants) if variants else np.zeros((0, 8, nbytes), np.uint8)) if spec.dihedral else None
    started = time.perf_counter()
    if spec.mode == "tokens":
        vectors = tokens(spec.key, raw)
        forms = None if forms is None else dihedral_tokens(spec.key, forms)
    else:
        vectors = raw
    keys = keys if spec.feature_keypoints else None
    rows = fingerprint_rows(spec, ids, sources, sizes, digests, raw, images, feature_keys=keys)
    seconds["encrypt_write"] += time.perf_counter() - started
    digest_array = np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32)
    return PartitionResult(index, rows, vectors, forms, digest_array, np.array(written, dtype=bool), errors,
                           skipped, unchanged, bytes_read, seconds, keys)


def _source_filesystem(files: Sequence[SourceFile], options: Mapping[str, object]) -> fsspec.AbstractFileSystem:
    """The one filesystem every file of a partition is read through.

    A partition comes from one source listing, so its files share a protocol;
    resolving the URL once (not per file, ~60 µs each) leaves only the read.

    Raises
    ------
    ValueError
        The files do not all share the first one's protocol.
    """
    if not files:
        return fsspec.filesystem("file")
    fs = fsspec.core.url_to_fs(files[0].url, **dict(options))[0]
    protocols = {fsspec.utils.get_protocol(file.url) for file in files}
    if len(protocols) > 1:
        raise ValueError(f"a partition mixes source protocols {sorted(protocols)}")
    return fs
