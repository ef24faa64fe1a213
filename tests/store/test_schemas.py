"""Table schemas: explicit types, parameters in the metadata, and a round trip through Parquet."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgdedup.pipeline.errors import IncompatibleStoreError, StoreError
from imgdedup.pipeline.store import schemas


def test_fingerprint_width_and_provenance_are_parameters():
    tokens = schemas.fingerprints_schema(32, algo="lbph", bits=256, key_id="kid-1", mode="tokens")
    sealed = schemas.fingerprints_schema(60, algo="phash", bits=64, key_id="kid-2", mode="sealed")
    assert tokens.field("fingerprint").type == pa.binary(32)
    assert sealed.field("fingerprint").type == pa.binary(60)
    assert schemas.schema_metadata(sealed) == {
        "table": "fingerprints", "format_version": str(schemas.FORMAT_VERSION), "hash_algo": "phash",
        "hash_bits": "64", "key_id": "kid-2", "fingerprint_mode": "sealed", "fingerprint_bytes": "60",
    }
    assert tokens.field("content_digest").type == pa.binary(schemas.CONTENT_DIGEST_BYTES)
    assert tokens.field("hash_sealed").type == pa.binary()
    assert not tokens.field("image_id").nullable and tokens.field("duplicate_of").nullable


@pytest.mark.parametrize("table", [schemas.FINGERPRINTS, schemas.CLUSTERS, schemas.ERRORS, schemas.REPORTS])
def test_every_table_has_a_schema_that_survives_parquet(table):
    schema = schemas.default_schema(table)
    assert schemas.schema_metadata(schema)["table"] == table
    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    assert pq.read_table(io.BytesIO(buffer.getvalue())).schema.equals(schema, check_metadata=True)


def test_unknown_table_and_empty_width_are_refused():
    with pytest.raises(StoreError, match="no schema"):
        schemas.default_schema("thumbnails")
    with pytest.raises(StoreError):
        schemas.fingerprints_schema(0)
    with pytest.raises(StoreError):
        schemas.clusters_schema(0)


def test_binary_matrix_reads_chunks_slices_and_nulls():
    rows = [bytes([i] * 4) for i in range(1, 6)]
    column = pa.chunked_array([pa.array(rows[:2], pa.binary(4)), pa.array(rows[2:] + [None], pa.binary(4))[1:]])
    matrix = schemas.binary_matrix(column)
    assert matrix.dtype == np.uint8 and matrix.shape == (5, 4)
    assert matrix.tolist() == [[1] * 4, [2] * 4, [4] * 4, [5] * 4, [0] * 4]
    with_null = schemas.binary_matrix(pa.array([rows[0], None, rows[2]], pa.binary(4)))
    assert with_null.tolist() == [[1] * 4, [0] * 4, [3] * 4]
    assert schemas.binary_matrix(pa.array([], pa.binary(8))).shape == (0, 8)


def test_check_comparable_names_every_setting_that_differs():
    held = schemas.fingerprints_schema(32, algo="lbph", bits=256, key_id="aa", mode="tokens")
    schemas.check_comparable(held, schemas.fingerprints_schema(32, algo="lbph", bits=256, key_id="aa", mode="tokens"))
    with pytest.raises(IncompatibleStoreError) as info:
        schemas.check_comparable(held, schemas.fingerprints_schema(16, algo="phash", bits=128, key_id="aa",
                                                                   mode="tokens"))
    assert "hash_algo 'lbph', this run 'phash'" in str(info.value)
    assert "hash_bits '256', this run '128'" in str(info.value)
    assert "key_id" not in str(info.value)
