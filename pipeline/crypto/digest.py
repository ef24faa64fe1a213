"""Keyed content digests: HMAC-SHA256 of a file's bytes under the ``content-digest`` sub-key.

Two files with equal bytes get equal digests, so a digest is an exact-duplicate
and idempotency key (the same upload twice is recognised); without the group key
a digest reveals nothing about the file, not even whether it equals a file
someone else can hash (a plain SHA-256 would allow that confirmation attack).
"""
from __future__ import annotations

import hashlib
import hmac
from typing import BinaryIO

from pipeline.crypto.keys import GroupKey

DIGEST_BYTES = 32


def content_digest(key: GroupKey, reader: BinaryIO, chunk_bytes: int = 1 << 20) -> bytes:
    """HMAC-SHA256 of everything ``reader`` yields, read ``chunk_bytes`` at a time.

    Parameters
    ----------
    key : GroupKey
    reader : binary file-like
        Read to its end.
    chunk_bytes : int
        Read size; memory stays near one chunk.

    Returns
    -------
    bytes
        32-byte digest.
    """
    mac = hmac.new(key.subkey("content-digest"), digestmod=hashlib.sha256)
    while chunk := reader.read(chunk_bytes):
        mac.update(chunk)
    return mac.digest()
