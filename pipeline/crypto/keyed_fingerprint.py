"""Keyed fingerprints: similarity tokens and sealed hashes.

Two trust modes (``crypto.mode``):

``tokens``
    ``F = permute_K(H) XOR mask_K`` (the paper's scheme). The permutation and
    mask come from the group's ``fingerprint-tokens`` sub-key. Hamming distance
    between two tokens equals that between their hashes exactly, so the store
    can search and cluster tokens with no key. This is a keyed similarity token,
    **not encryption**: it shows equality, every pairwise distance and which
    permuted bit positions differ; and since it is linear, a few dozen known
    (hash, token) pairs give away the permutation and the mask
    (``tests/crypto/test_keyed_fingerprint.py`` performs that recovery).

``sealed``
    The hash inside AES-256-GCM under the ``fingerprint-seal`` sub-key, with a
    random nonce and associated data binding the image id, the key id and the
    hash length; equal hashes give unrelated ciphertexts. Search runs in the
    key-holding jobs after :func:`open_hashes`.

In both modes the raw hash is also kept as :func:`seal_hashes` output, so the
tokens could be recomputed under new index keys without reading any image
again. (Key rotation does not need that: it re-wraps the index keys, see
:mod:`imgdedup.pipeline.crypto.index_keys`.) In ``sealed`` mode the fingerprint column and the sealed-hash column
hold the same kind of value.

Hashes are packed bits: ``(B, nbytes)`` uint8 rows, most significant bit first
(``np.packbits`` order).
"""
from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.errors import IntegrityError

MODES = ("tokens", "sealed")
SEAL_NONCE_BYTES = 12
SEAL_OVERHEAD = SEAL_NONCE_BYTES + 16


def fingerprint_width(mode: str, nbytes: int) -> int:
    """Bytes per fingerprint row for a hash of ``nbytes`` bytes (a fixed_size_binary width)."""
    if mode == "tokens":
        return nbytes
    if mode == "sealed":
        return nbytes + SEAL_OVERHEAD
    raise ValueError(f"unknown trust mode {mode!r}; known: {MODES}")


def _check_hashes(hashes: np.ndarray) -> np.ndarray:
    hashes = np.asarray(hashes)
    if hashes.dtype != np.uint8 or hashes.ndim != 2:
        raise ValueError(f"hashes must be (B, nbytes) uint8, got {hashes.dtype} {hashes.shape}")
    return hashes


def _keystream(subkey: bytes, label: bytes) -> Iterator[int]:
    """Bytes of HMAC-SHA256(subkey, label ‖ counter) blocks, one int at a time."""
    counter = 0
    while True:
        yield from hmac.new(subkey, label + counter.to_bytes(8, "big"), hashlib.sha256).digest()
        counter += 1


def _keyed_permutation(subkey: bytes, bits: int) -> np.ndarray:
    """Fisher-Yates shuffle of ``range(bits)`` driven by the keyed stream.

    Drawn with our own stream and rejection sampling rather than a NumPy
    generator, whose algorithms may change between releases: a token key must
    give the same permutation forever.
    """
    stream = _keystream(subkey, b"permutation" + bits.to_bytes(4, "big"))
    order = list(range(bits))
    for i in range(bits - 1, 0, -1):
        span = i + 1
        limit = (1 << 32) - (1 << 32) % span
        while True:
            draw = int.from_bytes(bytes(next(stream) for _ in range(4)), "big")
            if draw < limit:
                break
        j = draw % span
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.intp)


@lru_cache(maxsize=16)
def _token_parameters_cached(subkey: bytes, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    bits = 8 * nbytes
    permutation = _keyed_permutation(subkey, bits)
    stream = _keystream(subkey, b"mask" + bits.to_bytes(4, "big"))
    mask = np.frombuffer(bytes(next(stream) for _ in range(nbytes)), dtype=np.uint8)
    permutation.setflags(write=False)
    return permutation, mask


def token_parameters(key: GroupKey, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The secret permutation and mask of ``nbytes``-byte tokens under ``key``.

    Returns
    -------
    permutation : (8 * nbytes,) intp
        Token bit ``j`` is hash bit ``permutation[j]`` (bits numbered in
        ``np.unpackbits`` order).
    mask : (nbytes,) uint8
        XORed onto the permuted, packed bits.
    """
    return _token_parameters_cached(key.subkey("fingerprint-tokens"), nbytes)


def tokens(key: GroupKey, hashes: np.ndarray) -> np.ndarray:
    """Keyed similarity tokens ``permute_K(H) XOR mask_K``.

    Parameters
    ----------
    key : GroupKey
    hashes : (B, nbytes) uint8
        Packed hash bits.

    Returns
    -------
    (B, nbytes) uint8
        Tokens; ``popcount(t1 ^ t2) == popcount(h1 ^ h2)`` for every pair.
    """
    hashes = _check_hashes(hashes)
    permutation, mask = token_parameters(key, hashes.shape[1])
    permuted = np.packbits(np.unpackbits(hashes, axis=1)[:, permutation], axis=1)
    return permuted ^ mask


def dihedral_tokens(key: GroupKey, dihedral: np.ndarray) -> np.ndarray:
    """Keyed tokens of each image's 8 dihedral hashes: (B, 8, nbytes) uint8 -> the same shape."""
    b, forms, nbytes = dihedral.shape
    return tokens(key, dihedral.reshape(b * forms, nbytes)).reshape(b, forms, nbytes)


def _seal_aad(key_id: bytes, image_id: str, nbytes: int) -> bytes:
    encoded = image_id.encode()
    return (b"imgdedup/v1/hash-seal" + key_id + nbytes.to_bytes(2, "big")
            + len(encoded).to_bytes(2, "big") + encoded)


def _check_ids(image_ids: Sequence[str], rows: int) -> None:
    if len(image_ids) != rows:
        raise ValueError(f"{len(image_ids)} image ids for {rows} rows")


def seal_hashes(key: GroupKey, image_ids: Sequence[str], hashes: np.ndarray) -> np.ndarray:
    """AES-256-GCM of each hash, bound to its image id and the key id.

    Parameters
    ----------
    key : GroupKey
    image_ids : sequence of str, length B
    hashes : (B, nbytes) uint8

    Returns
    -------
    (B, nbytes + 28) uint8
        Each row is ``nonce (12) ‖ ciphertext (nbytes) ‖ tag (16)``; a fresh
        random nonce per row, so equal hashes give unrelated rows.
    """
    hashes = _check_hashes(hashes)
    _check_ids(image_ids, hashes.shape[0])
    nbytes = hashes.shape[1]
    aead = AESGCM(key.subkey("fingerprint-seal"))
    out = np.empty((hashes.shape[0], nbytes + SEAL_OVERHEAD), dtype=np.uint8)
    for row, (image_id, value) in enumerate(zip(image_ids, hashes)):
        nonce = os.urandom(SEAL_NONCE_BYTES)
        sealed = aead.encrypt(nonce, value.tobytes(), _seal_aad(key.index_key_id, image_id, nbytes))
        out[row] = np.frombuffer(nonce + sealed, dtype=np.uint8)
    return out


def open_hashes(key: GroupKey, image_ids: Sequence[str], sealed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`seal_hashes`.

    Returns
    -------
    (B, nbytes) uint8

    Raises
    ------
    IntegrityError
        A row was edited, belongs to another image id, or was sealed under
        another key; the error names that row's image id.
    """
    sealed = _check_hashes(sealed)
    _check_ids(image_ids, sealed.shape[0])
    nbytes = sealed.shape[1] - SEAL_OVERHEAD
    if nbytes <= 0:
        raise ValueError(f"sealed rows are at least {SEAL_OVERHEAD + 1} bytes, got {sealed.shape[1]}")
    aead = AESGCM(key.subkey("fingerprint-seal"))
    out = np.empty((sealed.shape[0], nbytes), dtype=np.uint8)
    for row, (image_id, value) in enumerate(zip(image_ids, sealed)):
        data = value.tobytes()
        try:
            plain = aead.decrypt(data[:SEAL_NONCE_BYTES], data[SEAL_NONCE_BYTES:],
                                 _seal_aad(key.index_key_id, image_id, nbytes))
        except InvalidTag:
            raise IntegrityError(image_id, "sealed hash failed authentication (edited, moved to "
                                 "another image id, or sealed under another key)",
                                 stage="decrypt") from None
        out[row] = np.frombuffer(plain, dtype=np.uint8)
    return out


def fingerprints(key: GroupKey, mode: str, image_ids: Sequence[str],
                 hashes: np.ndarray) -> np.ndarray:
    """The fingerprint column for ``mode``: :func:`tokens` or :func:`seal_hashes`.

    Returns
    -------
    (B, fingerprint_width(mode, nbytes)) uint8
    """
    if mode not in MODES:
        raise ValueError(f"unknown trust mode {mode!r}; known: {MODES}")
    return tokens(key, hashes) if mode == "tokens" else seal_hashes(key, image_ids, hashes)


def centre_ids(k: int) -> list[str]:
    """The ids ``k`` sealed class centres are bound to (``sealed`` mode seals centres like fingerprints)."""
    return [f"centre-{i}" for i in range(k)]


def search_space(key: GroupKey, mode: str, image_ids: Sequence[str], values: np.ndarray) -> np.ndarray:
    """Stored fingerprint cells as the vectors search compares: tokens as they are, sealed hashes opened.

    Parameters
    ----------
    values : ndarray of uint8, shape (n, fingerprint_width(mode, nbytes))
    image_ids : sequence of str, length n
        The ids sealed cells are bound to (:func:`centre_ids` for class centres).

    Returns
    -------
    (n, nbytes) uint8
    """
    return values if mode == "tokens" else open_hashes(key, image_ids, values)


def query_space(key: GroupKey, mode: str, hashes: np.ndarray) -> np.ndarray:
    """Raw query hashes, (B, nbytes) or dihedral (B, 8, nbytes), in the space of :func:`search_space`."""
    if mode == "sealed":
        return hashes
    return tokens(key, hashes) if hashes.ndim == 2 else dihedral_tokens(key, hashes)


def _feature_keys_aad(key_id: bytes, image_id: str) -> bytes:
    encoded = image_id.encode()
    return b"imgdedup/v1/feature-keys-seal" + key_id + len(encoded).to_bytes(2, "big") + encoded


def seal_feature_keys(key: GroupKey, image_ids: Sequence[str], keys: Sequence[np.ndarray]) -> list[bytes]:
    """AES-256-GCM of each image's feature keys, bound to its image id and the key id.

    The ``fingerprint-seal`` sub-key, with associated data of its own
    (``feature-keys-seal``), so a sealed hash never opens as keys nor the other
    way round; like sealed hashes, they outlive a key rotation.

    Parameters
    ----------
    key : GroupKey
    image_ids : sequence of str, length B
    keys : sequence of ndarray of uint64, length B
        Each image's feature keys (:func:`imgdedup.pipeline.hashing.feature_keys.feature_keys`).

    Returns
    -------
    list of bytes, length B
        ``nonce (12) ‖ ciphertext (8 k, little-endian uint64) ‖ tag (16)``, a fresh nonce each.
    """
    _check_ids(image_ids, len(keys))
    aead = AESGCM(key.subkey("fingerprint-seal"))
    out = []
    for image_id, values in zip(image_ids, keys):
        nonce = os.urandom(SEAL_NONCE_BYTES)
        plain = np.ascontiguousarray(values, dtype="<u8").tobytes()
        out.append(nonce + aead.encrypt(nonce, plain, _feature_keys_aad(key.index_key_id, image_id)))
    return out


def open_feature_keys(key: GroupKey, image_ids: Sequence[str], sealed: Sequence[bytes | None], *,
                      failed: list[IntegrityError] | None = None) -> list[np.ndarray]:
    """Inverse of :func:`seal_feature_keys`; a missing value (a row written without keys) gives no keys.

    Parameters
    ----------
    failed : list, optional
        When given, a value that fails to open gives no keys and its
        IntegrityError is appended here instead of raised (the jobs record it
        and go on).

    Returns
    -------
    list of ndarray of uint64, length B

    Raises
    ------
    IntegrityError
        Without ``failed``: a value was edited, belongs to another image id, or
        was sealed under another key; the error names that row's image id.
    """
    _check_ids(image_ids, len(sealed))
    aead = AESGCM(key.subkey("fingerprint-seal"))
    out = []
    for image_id, data in zip(image_ids, sealed):
        try:
            out.append(np.zeros(0, np.uint64) if data is None else _open_keys(aead, key.index_key_id, image_id, data))
        except IntegrityError as exc:
            if failed is None:
                raise
            failed.append(exc)
            out.append(np.zeros(0, np.uint64))
    return out


def _open_keys(aead: AESGCM, key_id: bytes, image_id: str, data: bytes) -> np.ndarray:
    try:
        plain = aead.decrypt(data[:SEAL_NONCE_BYTES], data[SEAL_NONCE_BYTES:], _feature_keys_aad(key_id, image_id))
    except InvalidTag:
        raise IntegrityError(image_id, "sealed feature keys failed authentication (edited, moved to "
                             "another image id, or sealed under another key)", stage="decrypt") from None
    if len(plain) % 8:
        raise IntegrityError(image_id, "sealed feature keys are not whole uint64 values", stage="decrypt")
    return np.frombuffer(plain, dtype="<u8").astype(np.uint64)
