"""A store's index keys, wrapped under its current group keys: what makes key rotation complete.

The tables of a store are keyed, not only its blobs: similarity tokens, sealed
hashes, content digests and the image ids made from them come from the
sub-keys of :data:`~imgdedup.pipeline.crypto.group_key.INDEX_PURPOSES`. Those
cannot be re-keyed in place: a pointer row keeps no blob, so its content digest
(an HMAC of bytes the store no longer has) and its image id cannot be
recomputed under a new key, and ids are what users hold. So rotation keeps the
index keys and re-wraps them, as it re-wraps blob data keys: the store holds,
per group key that may open it, one record ``_keys/<key_id>.json``::

    {"format": "imgdedup-index-keys", "version": 1, "wrap_key_id": "<32 hex>",
     "nonce": "<base64, 12 bytes>", "ciphertext": "<base64>"}

whose ciphertext is AES-256-GCM under the wrapping key's ``index-wrap`` sub-key
(associated data: the format label and the wrapping key id) of the JSON
``{"index_key_id": "<32 hex>", "subkeys": {purpose: base64}}``. A store with
no record was never rotated: its index keys are its one key's own.
:func:`key_for_store` gives a command the key it works with.
"""
from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imgdedup.pipeline.crypto.group_key import INDEX_PURPOSES, GroupKey
from imgdedup.pipeline.errors import IntegrityError, KeyFileError

RECORD_FORMAT = "imgdedup-index-keys"
RECORD_VERSION = 1


def _aad(wrap_key_id: bytes) -> bytes:
    return b"imgdedup/v1/index-keys" + bytes([RECORD_VERSION]) + wrap_key_id


def _record_name(wrap_key_id_hex: str) -> str:
    return f"_keys/{wrap_key_id_hex}.json"


def wrap_index_keys(index: GroupKey, wrapping: GroupKey) -> bytes:
    """The record that lets ``wrapping`` open ``index``'s index keys (JSON bytes, a few hundred)."""
    plaintext = json.dumps({
        "index_key_id": index.index_key_id_hex,
        "subkeys": {p: base64.b64encode(k).decode() for p, k in index.index_subkeys().items()},
    }).encode()
    nonce = os.urandom(12)
    ciphertext = AESGCM(wrapping.subkey("index-wrap")).encrypt(nonce, plaintext, _aad(wrapping.key_id))
    return json.dumps({
        "format": RECORD_FORMAT, "version": RECORD_VERSION, "wrap_key_id": wrapping.key_id_hex,
        "nonce": base64.b64encode(nonce).decode(), "ciphertext": base64.b64encode(ciphertext).decode(),
    }, indent=1).encode() + b"\n"


def unwrap_index_keys(record: bytes, wrapping: GroupKey) -> GroupKey:
    """``wrapping`` carrying the index keys of ``record``.

    Raises
    ------
    IntegrityError
        The record is malformed, names another wrapping key, or fails
        authentication (edited, or moved from another key's name).
    """
    name = _record_name(wrapping.key_id_hex)
    try:
        document = json.loads(record)
        if document.get("format") != RECORD_FORMAT or document.get("version") != RECORD_VERSION:
            raise ValueError("unknown format or version")
        if document.get("wrap_key_id") != wrapping.key_id_hex:
            raise ValueError(f"wrapped under key {document.get('wrap_key_id')!r}")
        nonce = base64.b64decode(document["nonce"], validate=True)
        ciphertext = base64.b64decode(document["ciphertext"], validate=True)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise IntegrityError(name, f"not a valid index-keys record ({exc})", stage="keys") from None
    try:
        plaintext = AESGCM(wrapping.subkey("index-wrap")).decrypt(nonce, ciphertext, _aad(wrapping.key_id))
    except (InvalidTag, ValueError):
        raise IntegrityError(name, "index-keys record failed authentication (edited, or made under "
                             "another key)", stage="keys") from None
    content = json.loads(plaintext)
    missing = [p for p in INDEX_PURPOSES if p not in content["subkeys"]]
    if missing:
        raise IntegrityError(name, f"index-keys record lacks the sub-keys {missing}", stage="keys")
    subkeys = {p: base64.b64decode(content["subkeys"][p]) for p in INDEX_PURPOSES}
    return wrapping.with_index(bytes.fromhex(content["index_key_id"]), subkeys)


def key_for_store(key: GroupKey, records: Mapping[str, bytes]) -> GroupKey:
    """The key a command uses on a store whose ``_keys/`` records are ``records``.

    Parameters
    ----------
    key : GroupKey
        The group key the user gave.
    records : mapping of str to bytes
        ``{wrap_key_id_hex: record}`` as :meth:`Store.key_records` returns them.

    Returns
    -------
    GroupKey
        ``key`` itself when the store was never rotated (no record), else
        ``key`` carrying the store's index keys.

    Raises
    ------
    KeyFileError
        The store was rotated and ``key`` is not one of its current keys (a
        retired key, or another group's).
    IntegrityError
        ``key``'s record fails authentication.
    """
    if not records:
        return key
    record = records.get(key.key_id_hex)
    if record is None:
        raise KeyFileError(key.key_id_hex, "this store's keys were rotated and this key is not one of its "
                           f"current keys ({', '.join(sorted(records))}); it was retired by rotate-key, or "
                           "belongs to another store: use the current group key")
    return unwrap_index_keys(record, key)
