"""Keyed content digests."""
from __future__ import annotations

import hashlib
import hmac
import io
import os

import pytest

from imgdedup.pipeline.crypto.digest import DIGEST_BYTES, content_digest
from imgdedup.pipeline.crypto.group_key import GroupKey

KEY = GroupKey(bytes(range(32)))


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * (1 << 20) + 5])
def test_equal_bytes_equal_digest_whatever_the_chunking(size):
    data = os.urandom(size)
    digest = content_digest(KEY, io.BytesIO(data))
    assert len(digest) == DIGEST_BYTES
    assert content_digest(KEY, io.BytesIO(data), chunk_bytes=7) == digest


def test_digest_is_keyed():
    data = b"the same file"
    mine = content_digest(KEY, io.BytesIO(data))
    assert mine != content_digest(GroupKey.generate(), io.BytesIO(data))
    assert mine != hashlib.sha256(data).digest()
    assert mine != content_digest(KEY, io.BytesIO(data + b"\x00"))
    assert mine != content_digest(KEY, io.BytesIO(b"The same file"))


def test_digest_key_differs_from_other_purposes():
    data = b"x" * 100
    for purpose in ("blob-wrap", "fingerprint-tokens", "fingerprint-seal", "key-commitment"):
        assert content_digest(KEY, io.BytesIO(data)) != hmac.digest(KEY.subkey(purpose), data, "sha256")
