"""Writing new images to the store, and reading them back, shared by the bulk job's tasks, ingest and reports.

Client side (everything here needs the group key): a new image's blob sealed
and written, its ``fingerprints`` row built (keyed fingerprint, sealed raw
hash, clear columns), and the row's decision columns (class, blob, pointer,
distance) filled in once the dedup decision is known. Both jobs write rows and
blobs through these functions, so a store filled by one reads the same as a
store filled by the other.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from imgdedup.pipeline.crypto.blob import open_stream, seal_stream
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import (fingerprint_width, fingerprints, seal_feature_keys,
                                                        seal_hashes)
from imgdedup.pipeline.crypto.resolution import resolution_macs
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
from imgdedup.pipeline.store.schemas import fingerprints_schema


@dataclass(frozen=True)
class RowSettings:
    """How a run keys, seals and describes the rows and blobs it writes.

    ``ingested_at`` is the run's start time (microseconds, naive UTC), the same
    in every row a run writes; ``segment_bytes`` is the blob segment size.
    """

    key: GroupKey
    algo: str
    bits: int
    mode: str
    segment_bytes: int
    ingested_at: np.datetime64

    def schema(self) -> pa.Schema:
        """Schema of the ``fingerprints`` rows this run writes."""
        width = fingerprint_width(self.mode, self.bits // 8)
        return fingerprints_schema(width, algo=self.algo, bits=self.bits, key_id=self.key.index_key_id_hex,
                                   mode=self.mode)


def seal_and_store(store: Store, settings: RowSettings, blob_id: str, data: bytes, digest: bytes) -> None:
    """Seal ``data`` (an image file's bytes) as blob ``blob_id`` and write it to ``store``."""
    # Sealed convergently (from the keyed content digest): writers racing on one blob id,
    # a retried task or two ingest processes, write the same bytes, so any mix of theirs opens.
    header, body = seal_stream(settings.key, blob_id, io.BytesIO(data), settings.segment_bytes,
                               content_digest=digest)
    store.write_blob(blob_id, header, body)


def read_blob_plaintext(store: Store, key: GroupKey, blob_id: str) -> bytes:
    """The plaintext of blob ``blob_id`` (an image file's bytes), in memory, once every segment authenticated.

    Raises
    ------
    IntegrityError
        The blob does not decrypt under ``key`` (wrong key, tampered header or body).
    StoreError
        The blob is missing.
    """
    header = store.read_blob_header(blob_id)
    with store.open_blob_body(blob_id) as body:
        return b"".join(open_stream(key, blob_id, header, body))


def _binary(array: np.ndarray, type_: pa.DataType) -> pa.Array:
    """An (n, width) uint8 array as a binary Arrow column, straight from its bytes (no object per row)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    n = len(array)
    if pa.types.is_fixed_size_binary(type_):
        return pa.FixedSizeBinaryArray.from_buffers(type_, n, [None, pa.py_buffer(array)])
    offsets = np.arange(n + 1, dtype=np.int32) * array.shape[1]
    return pa.Array.from_buffers(type_, n, [None, pa.py_buffer(offsets), pa.py_buffer(array)])


def fingerprint_rows(settings: RowSettings, ids: Sequence[str], sources: Sequence[str], sizes: Sequence[int],
                     digests: Sequence[bytes], raw: np.ndarray, images: Sequence[Mapping[str, np.ndarray]],
                     upload_ids: Sequence[str | None] | None = None,
                     feature_keys: Sequence[np.ndarray] | None = None) -> pa.Table:
    """New images' ``fingerprints`` rows, keyed; the decision columns still null.

    Parameters
    ----------
    settings : RowSettings
    ids, sources : sequence of str, length n
        Image ids (32 hex characters) and where each image came from.
    sizes : sequence of int, length n
        File sizes in bytes.
    digests : sequence of bytes, length n
        Keyed content digests, 32 bytes each.
    raw : ndarray of uint8, shape (n, bits // 8)
        Raw (unkeyed) hashes; stored only keyed (token or sealed) and sealed.
    images : sequence of mapping
        Per-batch pieces of what decoding learnt of the images
        (:meth:`FingerprintBatch.image_columns`: pixel sizes, quality scores,
        encoding facts), n values in all.
    upload_ids : sequence of str or None, length n, optional
        Caller-supplied upload ids (None where the source identifies the upload).
    feature_keys : sequence of ndarray of uint64, length n, optional
        Each image's feature keys, stored sealed; None: the column stays null.
    """
    schema = settings.schema()
    n = len(ids)
    width = schema.field("fingerprint").type.byte_width

    def joined(name: str, dtype) -> np.ndarray:
        parts = [piece[name] for piece in images]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    keyed = fingerprints(settings.key, settings.mode, ids, raw) if n else np.zeros((0, width), np.uint8)
    sealed = seal_hashes(settings.key, ids, raw) if n else np.zeros((0, 1), np.uint8)
    jpeg_quality = joined("jpeg_quality", np.uint8)
    columns = {
        "image_id": pa.array(ids, pa.string()),
        "fingerprint": _binary(keyed, schema.field("fingerprint").type),
        "algo": pa.array([settings.algo] * n, pa.string()),
        "key_id": pa.array([settings.key.index_key_id_hex] * n, pa.string()),
        "width": pa.array(joined("width", np.int64), pa.int32()),
        "height": pa.array(joined("height", np.int64), pa.int32()),
        "bytes": pa.array(sizes, pa.int64()),
        "source": pa.array(sources, pa.string()),
        "ingested_at": pa.array(np.full(n, settings.ingested_at), pa.timestamp("us", tz="UTC")),
        "hash_sealed": _binary(sealed, pa.binary()),
        "content_digest": pa.array(digests, schema.field("content_digest").type),
        "quality": pa.array(joined("quality", np.uint8), pa.uint8()),
        "format": pa.array(joined("format", object), pa.string()),
        "lossless": pa.array(joined("lossless", bool), pa.bool_()),
        "jpeg_quality": pa.array(jpeg_quality, pa.uint8(), mask=jpeg_quality == 0),
        "exif": pa.array(joined("exif", bool), pa.bool_()),
        "upload_id": pa.array(list(upload_ids) if upload_ids is not None else [None] * n, pa.string()),
        "feature_keys": pa.array(seal_feature_keys(settings.key, ids, feature_keys)
                                 if feature_keys is not None else [None] * n, pa.binary()),
    }
    return pa.table([columns.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def with_decisions(key: GroupKey, rows: pa.Table, cluster_id: Sequence[int | None],
                   duplicate_of: Sequence[str | None], distance: Sequence[int | None]) -> pa.Table:
    """``rows`` with their dedup decisions filled in, each mapping MACed under ``key``.

    A row whose ``duplicate_of`` is None is a canonical and names its own blob;
    a pointer has no blob and a ``distance`` (bits) to its canonical. The
    ``resolution_mac`` column authenticates the mapping (see
    :mod:`imgdedup.pipeline.crypto.resolution`).
    """
    ids = rows.column("image_id").to_pylist()
    blobs = [None if p is not None else blob_body_key(i) for i, p in zip(ids, duplicate_of)]
    filled = {
        "cluster_id": pa.array(cluster_id, pa.int32()),
        "blob": pa.array(blobs, pa.string()),
        "duplicate_of": pa.array(duplicate_of, pa.string()),
        "distance": pa.array(distance, pa.int16()),
        "resolution_mac": pa.array(resolution_macs(key, ids, duplicate_of, blobs),
                                   rows.schema.field("resolution_mac").type),
    }
    for name, column in filled.items():
        rows = rows.set_column(rows.schema.get_field_index(name), rows.schema.field(name), column)
    return rows
