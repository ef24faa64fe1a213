"""Explicit Arrow schemas for every table in the store, with their metadata.

Each table has one schema factory. Parameters that change the physical layout
(the width of a fingerprint cell: 32 bytes for a 256-bit token, more for an
AEAD ciphertext in ``sealed`` mode) or that a reader must know to interpret the
bytes (hash algorithm, bit count, key id, trust mode) are arguments; they land
in the schema metadata under ``imgdedup.*`` keys, so every Parquet file says
how it was made. Readers get the same schema back even from an empty table.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from imgdedup.pipeline.errors import IncompatibleStoreError, StoreError

#: Version of the table layouts below; bumped on any incompatible change.
FORMAT_VERSION = 1

FINGERPRINTS = "fingerprints"
CLUSTERS = "clusters"
ERRORS = "errors"
REPORTS = "reports"
#: Every table a store holds.
TABLES = (FINGERPRINTS, CLUSTERS, ERRORS, REPORTS)

#: Width in bytes of a keyed content digest (HMAC-SHA-256).
CONTENT_DIGEST_BYTES = 32
RESOLUTION_MAC_BYTES = 32

_PREFIX = "imgdedup."


def _metadata(table: str, **values: object) -> dict[bytes, bytes]:
    items = {"table": table, "format_version": FORMAT_VERSION, **values}
    return {f"{_PREFIX}{k}".encode(): str(v).encode() for k, v in items.items()}


def schema_metadata(schema: pa.Schema) -> dict[str, str]:
    """The ``imgdedup.*`` metadata of ``schema`` as ``{name: value}`` strings (prefix dropped)."""
    return {
        k.decode()[len(_PREFIX):]: v.decode()
        for k, v in (schema.metadata or {}).items()
        if k.decode().startswith(_PREFIX)
    }


#: Schema metadata that must agree for two fingerprints to be comparable.
COMPARABILITY = ("hash_algo", "hash_bits", "key_id", "fingerprint_mode")


def check_comparable(held: pa.Schema, wanted: pa.Schema) -> None:
    """Refuse to mix fingerprints made with other settings into a store's.

    Parameters
    ----------
    held : pyarrow.Schema
        Schema of the store's ``fingerprints`` table (with its metadata).
    wanted : pyarrow.Schema
        Schema of the rows a job would add or compare.

    Raises
    ------
    IncompatibleStoreError
        Hash algorithm, hash length, key id or fingerprint mode differ.
    """
    held_meta, wanted_meta = schema_metadata(held), schema_metadata(wanted)
    differ = [name for name in COMPARABILITY if held_meta.get(name) != wanted_meta.get(name)]
    if differ:
        raise IncompatibleStoreError(FINGERPRINTS, "the store's fingerprints were made with other settings ("
                                     + ", ".join(f"{n} {held_meta.get(n)!r}, this run {wanted_meta.get(n)!r}"
                                                 for n in differ)
                                     + "); use the same key, hash.algo, hash.bits and crypto.mode, "
                                       "or another store")


def binary_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A ``fixed_size_binary(w)`` column as an (n, w) uint8 array.

    One copy from the column's data buffer (no Python object per row); null
    rows come out as w zero bytes.
    """
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    width = array.type.byte_width
    n = len(array)
    if n == 0:
        return np.zeros((0, width), np.uint8)
    matrix = np.frombuffer(array.buffers()[1], np.uint8, count=n * width,
                           offset=array.offset * width).reshape(n, width).copy()
    if array.null_count:
        matrix[~array.is_valid().to_numpy(zero_copy_only=False)] = 0
    return matrix


def fingerprints_schema(
    fingerprint_bytes: int = 32,
    *,
    algo: str = "lbph",
    bits: int = 256,
    key_id: str = "",
    mode: str = "tokens",
) -> pa.Schema:
    """Schema of the ``fingerprints`` table: one row per ingested image.

    Parameters
    ----------
    fingerprint_bytes : int
        Width of the ``fingerprint`` cell: ``bits // 8`` for a keyed token
        (``tokens`` mode), the AEAD ciphertext length in ``sealed`` mode.
    algo : str
        Hash algorithm (``lbph``, ``phash``, ...).
    bits : int
        Hash length in bits.
    key_id : str
        Id of the group key the tokens and sealed columns were made with.
    mode : str
        ``tokens`` or ``sealed``.

    Notes
    -----
    Columns: ``image_id`` (string), ``fingerprint`` (fixed_size_binary),
    ``algo``, ``key_id`` (string), ``cluster_id`` (int32, null before
    clustering), ``width``/``height`` (int32, pixels), ``bytes`` (int64, file
    size), ``blob`` (store-relative blob key, null for a duplicate),
    ``duplicate_of`` (image_id or null), ``distance`` (int16 Hamming distance to
    ``duplicate_of``, or null), ``source`` (string), ``ingested_at``
    (timestamp[us, UTC]), ``hash_sealed`` (binary: the raw hash inside AEAD
    ciphertext, so tokens can be re-keyed after a key rotation),
    ``content_digest`` (fixed_size_binary(32): keyed HMAC of the file bytes),
    ``quality`` (uint8, 0-100); the encoding facts the canonical policy ranks
    by, clear in both trust modes: ``format`` (string, Pillow's name),
    ``lossless`` (bool), ``jpeg_quality`` (uint8 estimated setting 1-100, null
    for other encodings), ``exif`` (bool, EXIF present); ``upload_id``
    (string: the caller-supplied id an upload was identified by, or null when
    its ``source`` identifies it); ``resolution_mac`` (fixed_size_binary(32):
    HMAC of the row's image id, ``duplicate_of`` and ``blob`` under the group's
    ``resolution-mac`` sub-key); ``feature_keys`` (binary: the image's feature
    keys sealed under the group's ``fingerprint-seal`` sub-key, in both trust
    modes; null when the run computed none). Rows written before a column
    existed read it as null.
    """
    if fingerprint_bytes < 1:
        raise StoreError("fingerprints", f"fingerprint width must be >= 1 byte, got {fingerprint_bytes}")
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("fingerprint", pa.binary(fingerprint_bytes), nullable=False),
        pa.field("algo", pa.string(), nullable=False),
        pa.field("key_id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("bytes", pa.int64()),
        pa.field("blob", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("distance", pa.int16()),
        pa.field("source", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field("hash_sealed", pa.binary()),
        pa.field("content_digest", pa.binary(CONTENT_DIGEST_BYTES)),
        pa.field("quality", pa.uint8()),
        pa.field("format", pa.string()),
        pa.field("lossless", pa.bool_()),
        pa.field("jpeg_quality", pa.uint8()),
        pa.field("exif", pa.bool_()),
        pa.field("upload_id", pa.string()),
        pa.field("resolution_mac", pa.binary(RESOLUTION_MAC_BYTES)),
        pa.field("feature_keys", pa.binary()),
    ]
    return pa.schema(fields, metadata=_metadata(
        FINGERPRINTS, hash_algo=algo, hash_bits=bits, key_id=key_id, fingerprint_mode=mode,
        fingerprint_bytes=fingerprint_bytes,
    ))


def clusters_schema(
    centroid_bytes: int = 32,
    *,
    algo: str = "lbph",
    bits: int = 256,
    key_id: str = "",
    mode: str = "tokens",
) -> pa.Schema:
    """Schema of the ``clusters`` table: one row per class centre per clustering version.

    Parameters
    ----------
    centroid_bytes : int
        Width of the ``centroid`` cell: ``bits // 8`` for a centre in token
        space, the AEAD ciphertext length in ``sealed`` mode.
    algo, bits, key_id, mode
        As in :func:`fingerprints_schema`.

    Notes
    -----
    Columns: ``cluster_id`` (int32), ``centroid`` (fixed_size_binary, packed
    bits), ``size`` (int64, members), ``radius`` (int16, largest member
    distance in bits), ``version`` (int64, the clustering it belongs to).
    """
    if centroid_bytes < 1:
        raise StoreError("clusters", f"centroid width must be >= 1 byte, got {centroid_bytes}")
    return pa.schema([
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("centroid", pa.binary(centroid_bytes), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("radius", pa.int16(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
    ], metadata=_metadata(
        CLUSTERS, hash_algo=algo, hash_bits=bits, key_id=key_id, fingerprint_mode=mode,
        centroid_bytes=centroid_bytes,
    ))


def errors_schema() -> pa.Schema:
    """Schema of the ``errors`` table: one row per input that failed a stage.

    Columns: ``source`` (the input as the user named it), ``stage``
    (``decode``, ``hash``, ...), ``error_type`` (exception class name),
    ``message``, ``run_id`` (all strings).
    """
    return pa.schema([
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
    ], metadata=_metadata(ERRORS))


def reports_schema() -> pa.Schema:
    """Schema of the ``reports`` table: one row per metric a run reports.

    Columns: ``run_id`` (string), ``name`` (metric name, e.g.
    ``bytes_saved``), ``value`` (float64), ``unit`` (string, e.g. ``bytes``).
    """
    return pa.schema([
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("unit", pa.string(), nullable=False),
    ], metadata=_metadata(REPORTS))


_DEFAULT_FACTORIES = {
    FINGERPRINTS: fingerprints_schema,
    CLUSTERS: clusters_schema,
    ERRORS: errors_schema,
    REPORTS: reports_schema,
}


def default_schema(table: str) -> pa.Schema:
    """The schema of ``table`` with default parameters (256-bit ``lbph`` tokens).

    Raises
    ------
    StoreError
        ``table`` is not one of the store's tables.
    """
    try:
        return _DEFAULT_FACTORIES[table]()
    except KeyError:
        raise StoreError(table, f"no schema for this table; known: {sorted(_DEFAULT_FACTORIES)}") from None
