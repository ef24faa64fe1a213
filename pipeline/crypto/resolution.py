"""Authenticated resolution: a MAC over what ``get`` follows from an image id to a blob.

Each ``fingerprints`` row carries ``resolution_mac``: HMAC-SHA256 under the
``resolution-mac`` index sub-key of the row's image id, its ``duplicate_of``
(the canonical whose blob stands for it, or none) and its ``blob`` key, each
length-prefixed. A row is written with its MAC by the job that decides it
(bulk, ingest) and re-MACed by ``unmerge``, all of which hold the key; ``get``
checks the row of the requested id and of its canonical before it writes a
byte. The image id is inside the MAC, so a valid mapping cannot be moved to
another row; an edited ``duplicate_of`` or ``blob`` fails.

What it does not stop: the store serving an older committed version of the
table (a row as it was before an unmerge, say), which is a rollback of the whole
store (see docs/security.md: freshness is not promised).
"""
from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.errors import IntegrityError

MAC_BYTES = 32


def _field(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    encoded = value.encode("utf-8")
    return b"\x01" + len(encoded).to_bytes(4, "big") + encoded


def resolution_mac(key: GroupKey, image_id: str, duplicate_of: str | None, blob: str | None) -> bytes:
    """The 32-byte MAC of one row's mapping (image id -> canonical, blob key)."""
    message = b"imgdedup/v1/resolution" + _field(image_id) + _field(duplicate_of) + _field(blob)
    return hmac.new(key.subkey("resolution-mac"), message, hashlib.sha256).digest()


def resolution_macs(key: GroupKey, image_ids: Sequence[str], duplicate_of: Sequence[str | None],
                    blobs: Sequence[str | None]) -> list[bytes]:
    """:func:`resolution_mac` of each row; the three sequences have one value per row."""
    return [resolution_mac(key, i, d, b) for i, d, b in zip(image_ids, duplicate_of, blobs, strict=True)]


def check_resolution(key: GroupKey, image_id: str, duplicate_of: str | None, blob: str | None,
                     mac: bytes | None, *, allow_unauthenticated: bool = False) -> None:
    """Verify one row's mapping before it is followed.

    Parameters
    ----------
    mac : bytes or None
        The row's ``resolution_mac``; None for a row written before the column
        existed, accepted only with ``allow_unauthenticated``.

    Raises
    ------
    IntegrityError
        The MAC does not match (a forged, edited or moved mapping), or is
        missing and ``allow_unauthenticated`` is false.
    """
    if mac is None:
        if allow_unauthenticated:
            return
        raise IntegrityError(image_id, "the store's row for this image carries no resolution MAC (written "
                             "before mappings were authenticated, or stripped); pass "
                             "--allow-unauthenticated to follow it anyway", stage="resolve")
    if not hmac.compare_digest(mac, resolution_mac(key, image_id, duplicate_of, blob)):
        raise IntegrityError(image_id, "the store's mapping of this image (duplicate_of "
                             f"{duplicate_of!r}, blob {blob!r}) fails its MAC: forged or edited", stage="resolve")
