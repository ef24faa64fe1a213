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

from imgdedup.pipeline.crypto.group_key import GroupKey

DIGEST_BYTES = 32


def content_digester(key: GroupKey) -> hmac.HMAC:
    """An empty :func:`content_digest` computation: ``update`` it with the bytes, then ``digest``."""
    return hmac.new(key.subkey("content-digest"), digestmod=hashlib.sha256)


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
    mac = content_digester(key)
    while chunk := reader.read(chunk_bytes):
        mac.update(chunk)
    return mac.digest()


#: Hex characters in an image id (128 bits).
IMAGE_ID_CHARS = 32


def image_id(key: GroupKey, digest: bytes, source: str) -> str:
    """The id of the image with content ``digest`` found at ``source``: 32 hex characters.

    A keyed HMAC (``content-digest`` sub-key) of the digest and the source
    string, so the same file at the same place always gets the same id — a
    re-run or a retried task writes the same rows and blob ids — while two
    copies of one file at different places get different ids, and an id reveals
    nothing about the file or its name without the key.

    Parameters
    ----------
    key : GroupKey
    digest : bytes
        The file's :func:`content_digest` (32 bytes).
    source : str
        Where the file was read from, as the job names it (a URL or path).

    Returns
    -------
    str
        ``IMAGE_ID_CHARS`` lower-case hex characters.
    """
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a content digest is {DIGEST_BYTES} bytes, got {len(digest)}")
    mac = hmac.new(key.subkey("content-digest"), b"image-id\x00" + digest + source.encode("utf-8"),
                   digestmod=hashlib.sha256)
    return mac.hexdigest()[:IMAGE_ID_CHARS]
