"""Sealed blobs: AES-256-GCM envelope encryption in fixed-size segments.

A blob is two objects: a small HEADER and a BODY of segments. Key rotation
rewrites only the header; the body is never touched after it is written.

Construction
------------
* A fresh random 256-bit **data key** per blob, or, when the caller gives the
  blob's keyed content digest, a derived one (see *Convergent sealing*).
  HKDF-SHA256 splits it into a segment key and a commitment key.
* The data key is **wrapped** with AES-256-GCM under the group's ``blob-wrap``
  sub-key (random 96-bit nonce; associated data: image id, sealing key id,
  wrapping key id, nonce base, segment size).
* The body is the **STREAM** construction (Hoang, Reyhanitabar, Rogaway, Vizár,
  2015): plaintext cut into ``segment_bytes`` segments, each sealed with AES-GCM
  under the segment key with nonce ``nonce_base(7) ‖ index(4, big-endian) ‖
  last(1)`` and associated data binding the image id, the sealing key id, the
  format version, the segment index and the last-segment flag. Dropping,
  reordering or appending segments, or cutting the body at a segment boundary,
  breaks a tag. The last segment holds 0..segment_bytes bytes (an empty blob is
  one empty last segment), so every body is at least one 16-byte tag.
* Two **commitments**, because GCM does not commit to its key:

  - ``header_mac`` = HMAC-SHA256 under the group's ``key-commitment`` sub-key
    over every other header byte. It is checked first, before anything is
    decrypted: a header presented under another group key, or with any field
    edited, fails here.
  - ``data_key_commitment`` = HMAC-SHA256 under the data key's commitment key
    over the image id, sealing key id, nonce base and segment size. It is
    checked right after unwrapping and before the first segment is decrypted.
    It is defence in depth: the header MAC already fixes the group key and so
    the one data key the header unwraps to; this check ties the header to that
    data key by itself, should the wrapping ever change. It does not stop a
    group member, who can recompute both MACs, from making new headers.

Key ids: ``seal_key_id`` is the group key id the blob was first sealed under and
never changes; it is what the segments' associated data binds, so rotation can
re-wrap the data key without re-encrypting. ``wrap_key_id`` names the group key
that wraps the data key now; rotation changes it, the wrapping and the header MAC.

Nonces: a (data key, nonce) pair cannot repeat because each blob draws its own
256-bit data key and the segment counter never repeats inside one blob (at most
2**32 segments). Wrap nonces are random 96-bit values under the one wrapping
key: the collision chance stays below 2**-32 up to 2**32 wraps per group key.

Convergent sealing: given the plaintext's keyed content digest
(:func:`imgdedup.pipeline.crypto.digest.content_digest`), the data key, the nonce base
and the wrap nonce are HKDF-SHA256 output under the group's ``blob-derive``
sub-key over (format version, wrapping key id, segment size, image id, content
digest). The same group key, image id, plaintext and segment size then always
give byte-identical header and body, so two writers racing on one blob id (two
ingest processes, a retried task) cannot leave one's header beside the other's
body. No (key, nonce) pair meets two different plaintexts: the data key is a
PRF of the keyed digest (checked against the plaintext as it is sealed), so
different plaintexts or image ids get different data keys; a derived wrap nonce
repeats only with all of its inputs, so it encrypts the same data key under the
same associated data, giving the same ciphertext again, which tells the store
only that the two blobs are equal — already visible in the ``content_digest``
column. Derived wrap nonces are PRF outputs, so they collide with each other or
with random ones no more often than random ones do. Re-wrapping
(:func:`rewrap_header`) draws random wrap nonces, as before.

Header layout (big-endian)::

    magic "IMGDBLOB" (8) | version (1) | segment_bytes (4) | nonce_base (7)
    | seal_key_id (16) | wrap_key_id (16) | wrap_nonce (12) | wrapped_data_key (48)
    | data_key_commitment (32) | image_id length (2) | image_id (utf-8)
    | header_mac (32)
"""
from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imgdedup.pipeline.crypto.digest import DIGEST_BYTES, content_digester
from imgdedup.pipeline.crypto.group_key import KEY_ID_BYTES, GroupKey
from imgdedup.pipeline.errors import IntegrityError

MAGIC = b"IMGDBLOB"
FORMAT_VERSION = 1
TAG_BYTES = 16
NONCE_BASE_BYTES = 7
MAX_SEGMENTS = 2**32
MAX_SEGMENT_BYTES = 1 << 28
MAX_IMAGE_ID_BYTES = 1024

_FIXED = struct.Struct(f">8sBI{NONCE_BASE_BYTES}s{KEY_ID_BYTES}s{KEY_ID_BYTES}s12s48s32sH")
_MAC_BYTES = 32

KeyRing = GroupKey | Iterable[GroupKey]


@dataclass(frozen=True)
class BlobHeader:
    """The parsed header of one sealed blob (public fields only; nothing secret)."""

    segment_bytes: int
    nonce_base: bytes
    seal_key_id: bytes
    wrap_key_id: bytes
    wrap_nonce: bytes
    wrapped_data_key: bytes
    data_key_commitment: bytes
    image_id: str

    def unsigned_bytes(self) -> bytes:
        """Every header byte the header MAC covers."""
        image_id = self.image_id.encode()
        return _FIXED.pack(MAGIC, FORMAT_VERSION, self.segment_bytes, self.nonce_base,
                           self.seal_key_id, self.wrap_key_id, self.wrap_nonce,
                           self.wrapped_data_key, self.data_key_commitment,
                           len(image_id)) + image_id


def _fail(image_id: str, reason: str) -> IntegrityError:
    return IntegrityError(image_id, reason, stage="decrypt")


def _check_image_id(image_id: str) -> bytes:
    encoded = image_id.encode()
    if not encoded or len(encoded) > MAX_IMAGE_ID_BYTES:
        raise ValueError(f"an image id is 1..{MAX_IMAGE_ID_BYTES} utf-8 bytes, got {image_id!r}")
    return encoded


def _check_segment_bytes(segment_bytes: int) -> None:
    if not 1 <= segment_bytes <= MAX_SEGMENT_BYTES:
        raise ValueError(f"segment_bytes must be in 1..{MAX_SEGMENT_BYTES}, got {segment_bytes}")


def _fresh_blob_secrets() -> tuple[bytes, bytes]:
    """A new blob's (data key, nonce base): 32 and 7 bytes from the OS CSPRNG."""
    return os.urandom(32), os.urandom(NONCE_BASE_BYTES)


def _fresh_wrap_nonce() -> bytes:
    """A random 96-bit nonce for wrapping a data key under the group's wrapping key."""
    return os.urandom(12)


def _derived_blob_secrets(key: GroupKey, image_id: bytes, content_digest: bytes,
                          segment_bytes: int) -> tuple[bytes, bytes, bytes]:
    """A convergently sealed blob's (data key, nonce base, wrap nonce): 32, 7 and 12 bytes.

    HKDF-SHA256 under the ``blob-derive`` sub-key; every input that shapes the
    header or the body is in ``info`` (fixed widths, the image id length-prefixed).
    """
    if len(content_digest) != DIGEST_BYTES:
        raise ValueError(f"a content digest is {DIGEST_BYTES} bytes, got {len(content_digest)}")
    info = (b"imgdedup/v1/blob-derive" + bytes([FORMAT_VERSION]) + key.key_id
            + segment_bytes.to_bytes(4, "big") + content_digest
            + len(image_id).to_bytes(2, "big") + image_id)
    derived = HKDF(algorithm=hashes.SHA256(), length=32 + NONCE_BASE_BYTES + 12, salt=None,
                   info=info).derive(key.subkey("blob-derive"))
    return derived[:32], derived[32:32 + NONCE_BASE_BYTES], derived[32 + NONCE_BASE_BYTES:]


def _segment_nonce(nonce_base: bytes, index: int, last: bool) -> bytes:
    """The 96-bit GCM nonce of segment ``index`` (STREAM: base ‖ counter ‖ last flag)."""
    if not 0 <= index < MAX_SEGMENTS:
        raise ValueError(f"a blob holds at most {MAX_SEGMENTS} segments")
    return nonce_base + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _segment_aad(header: BlobHeader, index: int, last: bool) -> bytes:
    image_id = header.image_id.encode()
    return (b"imgdedup/v1/blob-segment" + bytes([FORMAT_VERSION]) + header.seal_key_id
            + len(image_id).to_bytes(2, "big") + image_id
            + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00"))


def _wrap_aad(header: BlobHeader) -> bytes:
    image_id = header.image_id.encode()
    return (b"imgdedup/v1/blob-wrap" + bytes([FORMAT_VERSION]) + header.seal_key_id
            + header.wrap_key_id + header.nonce_base + header.segment_bytes.to_bytes(4, "big")
            + len(image_id).to_bytes(2, "big") + image_id)


def _data_subkeys(data_key: bytes) -> tuple[bytes, bytes]:
    """(segment key, commitment key) derived from a blob's data key."""
    derived = HKDF(algorithm=hashes.SHA256(), length=64, salt=None,
                   info=b"imgdedup/v1/blob-data-key").derive(data_key)
    return derived[:32], derived[32:]


def _data_key_commitment(commit_key: bytes, image_id: str, seal_key_id: bytes,
                         nonce_base: bytes, segment_bytes: int) -> bytes:
    image_id_bytes = image_id.encode()
    message = (b"imgdedup/v1/data-key-commitment" + seal_key_id + nonce_base
               + segment_bytes.to_bytes(4, "big")
               + len(image_id_bytes).to_bytes(2, "big") + image_id_bytes)
    return hmac.new(commit_key, message, hashlib.sha256).digest()


def _header_mac(key: GroupKey, unsigned: bytes) -> bytes:
    return hmac.new(key.subkey("key-commitment"), unsigned, hashlib.sha256).digest()


def _signed(key: GroupKey, header: BlobHeader) -> bytes:
    unsigned = header.unsigned_bytes()
    return unsigned + _header_mac(key, unsigned)


def parse_header(header: bytes, image_id: str) -> BlobHeader:
    """Split a header into its fields; checks the framing only, not the MAC.

    Raises
    ------
    IntegrityError
        Not an imgdedup blob header, an unknown version, or malformed lengths.
    """
    if len(header) < _FIXED.size + _MAC_BYTES or header[:len(MAGIC)] != MAGIC:
        raise _fail(image_id, "not an imgdedup blob header")
    (_, version, segment_bytes, nonce_base, seal_key_id, wrap_key_id, wrap_nonce, wrapped,
     commitment, id_length) = _FIXED.unpack_from(header)
    if version != FORMAT_VERSION:
        raise _fail(image_id, f"blob format version {version} is not supported "
                    f"(this imgdedup reads version {FORMAT_VERSION})")
    if len(header) != _FIXED.size + id_length + _MAC_BYTES:
        raise _fail(image_id, "header length does not match its image id length")
    if not 1 <= segment_bytes <= MAX_SEGMENT_BYTES:
        raise _fail(image_id, f"header names an impossible segment size {segment_bytes}")
    try:
        sealed_for = header[_FIXED.size:_FIXED.size + id_length].decode()
    except UnicodeDecodeError:
        raise _fail(image_id, "header image id is not utf-8") from None
    return BlobHeader(segment_bytes, nonce_base, seal_key_id, wrap_key_id, wrap_nonce,
                      wrapped, commitment, sealed_for)


def _unseal_header(keys: KeyRing, image_id: str, header_bytes: bytes) -> tuple[BlobHeader, bytes]:
    """Verify a header and return it with the blob's data key.

    Order matters: key id, header MAC (the commitment to the group key) and image
    id are checked before the first AES-GCM decryption; the data-key commitment
    right after unwrapping, before any segment.
    """
    header = parse_header(header_bytes, image_id)
    ring = (keys,) if isinstance(keys, GroupKey) else tuple(keys)
    key = next((k for k in ring if k.key_id == header.wrap_key_id), None)
    if key is None:
        held = ", ".join(k.key_id_hex for k in ring) or "none"
        raise _fail(image_id, f"wrapped under group key id {header.wrap_key_id.hex()}; "
                    f"keys held: {held}")
    # The MAC is checked over the bytes as received, not over a re-encoding of
    # the parsed fields, so no parsing leniency can hide an edit.
    expected_mac = _header_mac(key, header_bytes[:-_MAC_BYTES])
    if not hmac.compare_digest(header_bytes[-_MAC_BYTES:], expected_mac):
        raise _fail(image_id, "header commitment check failed: edited header or a header "
                    "made under another group key")
    if header.image_id != image_id:
        raise _fail(image_id, f"blob was sealed for image {header.image_id!r}")
    try:
        data_key = AESGCM(key.subkey("blob-wrap")).decrypt(
            header.wrap_nonce, header.wrapped_data_key, _wrap_aad(header))
    except InvalidTag:
        raise _fail(image_id, "wrapped data key failed authentication") from None
    _, commit_key = _data_subkeys(data_key)
    expected = _data_key_commitment(commit_key, image_id, header.seal_key_id,
                                    header.nonce_base, header.segment_bytes)
    if not hmac.compare_digest(header.data_key_commitment, expected):
        raise _fail(image_id, "data key commitment check failed")
    return header, data_key


def verify_header(keys: KeyRing, image_id: str, header: bytes) -> None:
    """Check a header completely without touching the body.

    The same checks :func:`open_stream` makes before the first segment: key id
    among ``keys``, header MAC, image id, unwrapping, data-key commitment.

    Raises
    ------
    IntegrityError
        The header does not verify under any of ``keys`` for ``image_id``.
    """
    _unseal_header(keys, image_id, header)


def _fill(reader: BinaryIO, view: memoryview, start: int) -> int:
    """Read into ``view[start:]`` until it is full or the file ends; the new fill level."""
    position = start
    while position < len(view):
        count = reader.readinto(view[position:])
        if not count:
            break
        position += count
    return position


def _segments_with_last_flag(reader: BinaryIO, size: int) -> Iterator[tuple[memoryview, bool]]:
    """``(segment, is_last)`` pairs of ``size`` bytes (the last one shorter or equal).

    One byte of look-ahead tells whether a full segment is the last, so a single
    reused buffer of ``size + 1`` bytes serves the whole stream. Each view is
    valid only until the next step.
    """
    buffer = bytearray(size + 1)
    view = memoryview(buffer)
    filled = _fill(reader, view, 0)
    while filled > size:
        yield view[:size], False
        buffer[0] = buffer[size]
        filled = _fill(reader, view, 1)
    yield view[:filled], True


def seal_stream(key: GroupKey, image_id: str, reader: BinaryIO, segment_bytes: int, *,
                content_digest: bytes | None = None) -> tuple[bytes, Iterator[bytes]]:
    """Seal a stream of plaintext into a header and body segments.

    Holds about two segments in memory whatever the stream's length (one
    plaintext buffer, one ciphertext segment), plus the one the consumer holds.

    Parameters
    ----------
    key : GroupKey
        The group key that wraps the data key.
    image_id : str
        Id the blob is stored under; bound into every segment.
    reader : binary file-like
        Plaintext, read with ``readinto`` one segment at a time as the body
        iterator advances.
    segment_bytes : int
        Plaintext bytes per segment (``crypto.segment_bytes``).
    content_digest : bytes, optional
        The plaintext's keyed content digest (32 bytes, under ``key``). Given,
        the blob is sealed convergently (see the module notes): the same key,
        image id, plaintext and segment size always give the same header and
        body bytes. Omitted, the data key and nonces are fresh random values.

    Returns
    -------
    header : bytes
        The blob header (about 180 bytes plus the image id).
    body : iterator of bytes
        Ciphertext segments of ``segment_bytes + 16`` bytes each, the last shorter.

    Raises
    ------
    ValueError
        Bad image id, segment size or digest length; or, during iteration and
        before the last segment is sealed, a ``content_digest`` that is not the
        plaintext's (derived keys must never meet a second plaintext).
    """
    image_id_bytes = _check_image_id(image_id)
    _check_segment_bytes(segment_bytes)
    if content_digest is None:
        data_key, nonce_base = _fresh_blob_secrets()
        wrap_nonce = _fresh_wrap_nonce()
        digester = None
    else:
        data_key, nonce_base, wrap_nonce = _derived_blob_secrets(
            key, image_id_bytes, content_digest, segment_bytes)
        digester = content_digester(key)
    segment_key, commit_key = _data_subkeys(data_key)
    header = BlobHeader(
        segment_bytes=segment_bytes, nonce_base=nonce_base, seal_key_id=key.key_id,
        wrap_key_id=key.key_id, wrap_nonce=wrap_nonce, wrapped_data_key=b"",
        data_key_commitment=_data_key_commitment(commit_key, image_id, key.key_id,
                                                 nonce_base, segment_bytes),
        image_id=image_id)
    header = replace(header, wrapped_data_key=AESGCM(key.subkey("blob-wrap")).encrypt(
        header.wrap_nonce, data_key, _wrap_aad(header)))

    def body() -> Iterator[bytes]:
        aead = AESGCM(segment_key)
        for index, (segment, last) in enumerate(_segments_with_last_flag(reader, segment_bytes)):
            if digester is not None:
                digester.update(segment)
                if last and not hmac.compare_digest(digester.digest(), content_digest):
                    raise ValueError(f"content_digest is not the keyed digest of the plaintext "
                                     f"sealed for {image_id!r}")
            yield aead.encrypt(_segment_nonce(nonce_base, index, last), segment,
                               _segment_aad(header, index, last))

    return _signed(key, header), body()


def open_stream(keys: KeyRing, image_id: str, header: bytes, body: BinaryIO) -> Iterator[bytes]:
    """Authenticate and decrypt a sealed blob segment by segment.

    The header is checked when this is called; each segment is authenticated
    before it is yielded. Whether the body ENDS where it should (not truncated,
    nothing appended) is known only at the last segment, so a consumer that
    writes chunks as they come must write to a temporary place and discard it if
    iteration raises; :func:`open_bytes` does that for small blobs.

    Parameters
    ----------
    keys : GroupKey or iterable of GroupKey
        The group key, or several (during a rotation): the one whose id the
        header names is used.
    image_id : str
        The id the blob is expected to belong to.
    header : bytes
        The header object.
    body : binary file-like
        The body object, read one segment (plus one byte of look-ahead) at a time
        with ``readinto``.

    Yields
    ------
    bytes
        Verified plaintext segments.

    Raises
    ------
    IntegrityError
        Wrong key, edited header or body, truncated, extended, reordered or moved
        blob; the message names ``image_id``. Raised at the call for header faults
        and during iteration for body faults.
    """
    parsed, data_key = _unseal_header(keys, image_id, header)
    segment_key, _ = _data_subkeys(data_key)
    return _open_body(parsed, segment_key, body)


def _open_body(header: BlobHeader, segment_key: bytes, body: BinaryIO) -> Iterator[bytes]:
    aead = AESGCM(segment_key)
    sealed_size = header.segment_bytes + TAG_BYTES
    for index, (segment, last) in enumerate(_segments_with_last_flag(body, sealed_size)):
        if len(segment) < TAG_BYTES:
            raise _fail(header.image_id, f"body is truncated (segment {index} is incomplete)")
        if index >= MAX_SEGMENTS:
            raise _fail(header.image_id, "body has more segments than a blob can hold")
        try:
            plaintext = aead.decrypt(_segment_nonce(header.nonce_base, index, last), segment,
                                     _segment_aad(header, index, last))
        except InvalidTag:
            raise _fail(header.image_id, f"segment {index} failed authentication (tampered, "
                        "truncated, extended, reordered or swapped body)") from None
        yield plaintext


def seal_bytes(key: GroupKey, image_id: str, plaintext: bytes, segment_bytes: int, *,
               content_digest: bytes | None = None) -> tuple[bytes, bytes]:
    """:func:`seal_stream` for data already in memory; returns (header, body)."""
    header, body = seal_stream(key, image_id, io.BytesIO(plaintext), segment_bytes,
                               content_digest=content_digest)
    return header, b"".join(body)


def open_bytes(keys: KeyRing, image_id: str, header: bytes, body: bytes) -> bytes:
    """:func:`open_stream` for small blobs: returns the plaintext only once all of it verified."""
    return b"".join(open_stream(keys, image_id, header, io.BytesIO(body)))


def rewrap_header(header: bytes, image_id: str, old: KeyRing, new: GroupKey) -> bytes:
    """Re-wrap a blob's data key under ``new``; the body stays valid as it is.

    The old header is fully verified first (MAC, unwrap, data-key commitment).
    ``seal_key_id``, the nonce base and the data-key commitment are kept, so the
    segments' associated data still matches; a fresh wrap nonce is drawn.

    Raises
    ------
    IntegrityError
        The header does not verify under any of ``old``.
    """
    parsed, data_key = _unseal_header(old, image_id, header)
    rewrapped = replace(parsed, wrap_key_id=new.key_id, wrap_nonce=_fresh_wrap_nonce())
    rewrapped = replace(rewrapped, wrapped_data_key=AESGCM(new.subkey("blob-wrap")).encrypt(
        rewrapped.wrap_nonce, data_key, _wrap_aad(rewrapped)))
    return _signed(new, rewrapped)
