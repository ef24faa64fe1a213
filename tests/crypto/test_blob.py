"""Sealed blobs: round trips, bounded memory, and every way a blob can be wrong."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.crypto import blob
from imgdedup.pipeline.crypto.blob import (TAG_BYTES, open_bytes, open_stream, parse_header,
                                  rewrap_header, seal_bytes, seal_stream)
from imgdedup.pipeline.crypto.digest import content_digest
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.errors import IntegrityError

SEGMENT = 64


@pytest.fixture(scope="module")
def key():
    return GroupKey.generate()


@pytest.fixture(scope="module")
def other_key():
    return GroupKey.generate()


@pytest.fixture(scope="module")
def sealed(key):
    """A three-segment blob: (plaintext, header, body)."""
    plaintext = os.urandom(2 * SEGMENT + 10)
    header, body = seal_bytes(key, "img-a", plaintext, SEGMENT)
    return plaintext, header, body


def _segments(body: bytes) -> list[bytes]:
    size = SEGMENT + TAG_BYTES
    return [body[i:i + size] for i in range(0, len(body), size)]


def _flip(data: bytes, position: int) -> bytes:
    out = bytearray(data)
    out[position] ^= 0x01
    return bytes(out)


def _assert_refused(keys, image_id, header, body, expected_plain=b""):
    """Opening fails with IntegrityError naming the blob, and only verified plaintext came out."""
    with pytest.raises(IntegrityError) as info:
        open_bytes(keys, image_id, header, body)
    assert info.value.subject == image_id
    received = []
    with pytest.raises(IntegrityError):
        for chunk in open_stream(keys, image_id, header, io.BytesIO(body)):
            received.append(chunk)
    # Segments yielded before the fault are genuine ones; the faulty one never is.
    delivered = b"".join(received)
    assert expected_plain.startswith(delivered)
    assert len(delivered) < len(expected_plain) or not delivered


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT, 1000])
def test_round_trip(key, size):
    plaintext = os.urandom(size)
    header, body = seal_bytes(key, "img-1", plaintext, SEGMENT)
    assert open_bytes(key, "img-1", header, body) == plaintext
    segments = max(1, -(-size // SEGMENT))
    assert len(body) == size + segments * TAG_BYTES
    # A short plaintext turns up in random ciphertext by chance (1 byte in a
    # 17-byte body: 7 % of runs); from 16 bytes on that chance is nil.
    assert size < 16 or plaintext not in body


def test_each_seal_uses_a_fresh_data_key(key):
    plaintext = b"same image bytes" * 10
    first = seal_bytes(key, "img-1", plaintext, SEGMENT)
    second = seal_bytes(key, "img-1", plaintext, SEGMENT)
    assert first[0] != second[0] and first[1] != second[1]


def test_50_mb_stream_holds_a_few_segments(tmp_path, key):
    segment_bytes = 1 << 20
    source, sealed_body = tmp_path / "plain", tmp_path / "body"
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for _ in range(50):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            out.write(chunk)
        out.write(b"tail")
        digest.update(b"tail")

    tracemalloc.start()
    try:
        with source.open("rb") as reader, sealed_body.open("wb") as out:
            header, body = seal_stream(key, "big", reader, segment_bytes)
            for chunk in body:
                out.write(chunk)
        _, seal_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        check = hashlib.sha256()
        with sealed_body.open("rb") as reader:
            for chunk in open_stream(key, "big", header, reader):
                check.update(chunk)
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert check.digest() == digest.digest()
    assert sealed_body.stat().st_size == source.stat().st_size + 51 * TAG_BYTES
    # One plaintext buffer, one ciphertext segment, and the one the caller still holds.
    assert seal_peak < 3.5 * segment_bytes, seal_peak
    assert open_peak < 3.5 * segment_bytes, open_peak


def test_every_header_byte_is_protected(key, sealed):
    plaintext, header, body = sealed
    for position in range(len(header)):
        _assert_refused(key, "img-a", _flip(header, position), body)


def test_every_body_byte_is_protected(key, sealed):
    plaintext, header, body = sealed
    for position in range(len(body)):
        _assert_refused(key, "img-a", header, _flip(body, position), plaintext)


def test_sampled_bytes_of_a_larger_body(key):
    plaintext = os.urandom(40 * SEGMENT + 7)
    header, body = seal_bytes(key, "img-l", plaintext, SEGMENT)
    rng = np.random.default_rng(3)
    for position in rng.choice(len(body), size=200, replace=False):
        _assert_refused(key, "img-l", header, _flip(body, int(position)), plaintext)


def test_truncation_at_every_length(key, sealed):
    plaintext, header, body = sealed
    for length in range(len(body)):
        _assert_refused(key, "img-a", header, body[:length], plaintext)
    for length in range(len(header)):
        _assert_refused(key, "img-a", header[:length], body)


def test_appending_and_reordering(key, sealed):
    plaintext, header, body = sealed
    first, second, third = _segments(body)
    for forged in [body + b"\x00", body + third, body + first,
                   second + first + third, first + third, first + second, first + second + second + third]:
        _assert_refused(key, "img-a", header, forged, plaintext)
    _assert_refused(key, "img-a", header + b"\x00", body)


def test_swapped_blobs_and_moved_ids(key):
    plaintext_a, plaintext_b = os.urandom(3 * SEGMENT), os.urandom(3 * SEGMENT)
    header_a, body_a = seal_bytes(key, "img-a", plaintext_a, SEGMENT)
    header_b, body_b = seal_bytes(key, "img-b", plaintext_b, SEGMENT)
    _assert_refused(key, "img-a", header_a, body_b)  # bodies swapped
    _assert_refused(key, "img-a", header_b, body_a)  # headers swapped
    _assert_refused(key, "img-a", header_b, body_b)  # whole blob b moved under a's id
    _assert_refused(key, "img-c", header_a, body_a)  # read under another image id
    # Mixing segments of two blobs with equal segment count.
    _assert_refused(key, "img-a", header_a, _segments(body_a)[0] + _segments(body_b)[1]
                    + _segments(body_a)[2], plaintext_a)


class _SpyAESGCM:
    """Wraps the real AESGCM, recording each decrypt call."""

    decrypts = 0

    def __init__(self, key):
        self._aead = _REAL_AESGCM(key)

    def encrypt(self, *args):
        return self._aead.encrypt(*args)

    def decrypt(self, *args):
        type(self).decrypts += 1
        return self._aead.decrypt(*args)


_REAL_AESGCM = blob.AESGCM


@pytest.fixture
def spy(monkeypatch):
    monkeypatch.setattr(_SpyAESGCM, "decrypts", 0)
    monkeypatch.setattr(blob, "AESGCM", _SpyAESGCM)
    return _SpyAESGCM


def test_wrong_key_fails_before_any_decryption(key, other_key, sealed, spy):
    plaintext, header, body = sealed
    assert open_bytes(key, "img-a", header, body) == plaintext
    assert spy.decrypts == 4  # the spy sees them: one unwrap, three segments
    spy.decrypts = 0
    with pytest.raises(IntegrityError, match="wrapped under group key id") as info:
        open_bytes(other_key, "img-a", header, body)
    assert info.value.subject == "img-a"
    # A header relabelled with the other key's id fails the commitment, still before decrypting.
    relabelled = parse_header(header, "img-a")
    forged = header.replace(relabelled.wrap_key_id, other_key.key_id)
    with pytest.raises(IntegrityError, match="commitment check failed"):
        open_bytes(other_key, "img-a", forged, body)
    assert spy.decrypts == 0


def test_data_key_commitment_checked_before_segments(key, sealed, spy):
    # Someone holding the group key swaps in another data key: the commitment
    # fails after unwrapping and before the first segment is decrypted.
    plaintext, header, body = sealed
    parsed = parse_header(header, "img-a")
    evil = dataclasses.replace(parsed, wrapped_data_key=_REAL_AESGCM(key.subkey("blob-wrap")).encrypt(
        parsed.wrap_nonce, os.urandom(32), blob._wrap_aad(parsed)))
    with pytest.raises(IntegrityError, match="data key commitment"):
        open_bytes(key, "img-a", blob._signed(key, evil), body)
    assert spy.decrypts == 1


def test_rewrap_keeps_body_and_switches_key(key, other_key, sealed):
    plaintext, header, body = sealed
    rotated = rewrap_header(header, "img-a", key, other_key)
    assert parse_header(rotated, "img-a").wrap_key_id == other_key.key_id
    assert parse_header(rotated, "img-a").seal_key_id == key.key_id
    assert open_bytes(other_key, "img-a", rotated, body) == plaintext
    _assert_refused(key, "img-a", rotated, body)
    # During a rotation a reader holding both keys reads either header.
    assert open_bytes([key, other_key], "img-a", header, body) == plaintext
    assert open_bytes([key, other_key], "img-a", rotated, body) == plaintext
    # And back again: rotation composes.
    assert open_bytes(key, "img-a", rewrap_header(rotated, "img-a", other_key, key), body) == plaintext
    with pytest.raises(IntegrityError):
        rewrap_header(rotated, "img-a", key, other_key)


def test_no_data_key_or_nonce_repeats_over_a_million_blobs():
    draws = 1_000_000
    width = 32 + blob.NONCE_BASE_BYTES
    table = bytearray(draws * width)
    for i in range(draws):
        data_key, nonce_base = blob._fresh_blob_secrets()
        table[i * width:(i + 1) * width] = data_key + nonce_base
    rows = np.frombuffer(table, dtype=f"V{width}")
    assert np.unique(rows).size == draws
    assert np.unique(np.frombuffer(table, np.uint8).reshape(draws, width)[:, :32]
                     .copy().view("V32")).size == draws


def test_no_wrap_nonce_repeats_over_a_million_wraps():
    nonces = np.frombuffer(b"".join(blob._fresh_wrap_nonce() for _ in range(1_000_000)), "V12")
    assert np.unique(nonces).size == nonces.size


class _RecordingAESGCM:
    """The real AESGCM, recording (key number, nonce) of every encryption in ``used``."""

    key_numbers: dict[bytes, int] = {}
    used = bytearray()

    def __init__(self, key):
        self._aead = _REAL_AESGCM(key)
        number = self.key_numbers.setdefault(key, len(self.key_numbers))
        self._key_number = number.to_bytes(4, "big")

    def encrypt(self, nonce, data, associated_data):
        self.used.extend(self._key_number + nonce)
        return self._aead.encrypt(nonce, data, associated_data)

    def decrypt(self, *args):
        return self._aead.decrypt(*args)


def test_no_key_nonce_pair_repeats_over_a_million_real_encryptions(monkeypatch, key, other_key):
    # Every AES-GCM encryption sealing and re-wrapping makes, as they are made:
    # 1000 blobs of 1000 one-byte segments, each data key wrapped and re-wrapped.
    monkeypatch.setattr(_RecordingAESGCM, "key_numbers", {})
    monkeypatch.setattr(_RecordingAESGCM, "used", bytearray())
    monkeypatch.setattr(blob, "AESGCM", _RecordingAESGCM)
    blobs, segments = 1000, 1000
    for i in range(blobs):
        header, body = seal_stream(key, f"img-{i}", io.BytesIO(bytes(segments)), 1)
        assert sum(1 for _ in body) == segments
        rewrap_header(header, f"img-{i}", key, other_key)
    pairs = np.frombuffer(_RecordingAESGCM.used, dtype="V16")
    assert pairs.size == blobs * (segments + 2)
    assert np.unique(pairs).size == pairs.size
    # One segment key per blob plus the two groups' wrapping keys.
    assert len(_RecordingAESGCM.key_numbers) == blobs + 2


def test_segment_nonces_never_repeat_within_a_blob():
    base = os.urandom(blob.NONCE_BASE_BYTES)
    nonces = {blob._segment_nonce(base, i, last) for i in range(500_000) for last in (False, True)}
    assert len(nonces) == 1_000_000
    assert all(len(n) == 12 for n in (blob._segment_nonce(base, 0, True),))
    with pytest.raises(ValueError):
        blob._segment_nonce(base, 2**32, False)


def test_bad_arguments(key):
    with pytest.raises(ValueError):
        seal_bytes(key, "", b"x", SEGMENT)
    with pytest.raises(ValueError):
        seal_bytes(key, "img", b"x", 0)


def _convergent(key, image_id, plaintext, segment_bytes=SEGMENT):
    return seal_bytes(key, image_id, plaintext, segment_bytes,
                      content_digest=content_digest(key, io.BytesIO(plaintext)))


def _data_key(key, image_id, header):
    return blob._unseal_header(key, image_id, header)[1]


def test_convergent_seals_of_the_same_image_are_byte_identical(key):
    plaintext = os.urandom(3 * SEGMENT + 5)
    header, body = _convergent(key, "img-c", plaintext)
    assert (header, body) == _convergent(key, "img-c", plaintext)
    streamed_header, streamed_body = seal_stream(
        key, "img-c", io.BytesIO(plaintext), SEGMENT, content_digest=content_digest(key, io.BytesIO(plaintext)))
    assert (streamed_header, b"".join(streamed_body)) == (header, body)
    assert open_bytes(key, "img-c", header, body) == plaintext


def test_convergent_seals_of_different_content_or_ids_use_different_data_keys(key, other_key):
    plaintext, edited = b"image bytes" * 20, b"image bytez" * 20
    seals = {
        ("img-c", plaintext, key): _convergent(key, "img-c", plaintext),
        ("img-c", edited, key): _convergent(key, "img-c", edited),
        ("img-d", plaintext, key): _convergent(key, "img-d", plaintext),
        ("img-c", plaintext, other_key): _convergent(other_key, "img-c", plaintext),
    }
    data_keys = {_data_key(k, image_id, header) for (image_id, _, k), (header, _) in seals.items()}
    assert len(data_keys) == len(seals)
    for (image_id, data, k), (header, body) in seals.items():
        assert open_bytes(k, image_id, header, body) == data
    # Another segment size is another blob layout: another data key too.
    assert _data_key(key, "img-c", _convergent(key, "img-c", plaintext, SEGMENT + 1)[0]) not in data_keys


def test_racing_writers_header_and_body_mix_opens_only_when_convergent(key):
    plaintext = os.urandom(2 * SEGMENT + 3)
    header_a, body_a = _convergent(key, "img-r", plaintext)
    header_b, body_b = _convergent(key, "img-r", plaintext)
    assert open_bytes(key, "img-r", header_a, body_b) == plaintext
    assert open_bytes(key, "img-r", header_b, body_a) == plaintext
    # Random seals of the same image are what a race used to leave behind: unreadable.
    random_a, random_b = seal_bytes(key, "img-r", plaintext, SEGMENT), seal_bytes(key, "img-r", plaintext, SEGMENT)
    _assert_refused(key, "img-r", random_a[0], random_b[1], plaintext)


def test_convergent_seal_refuses_a_digest_of_other_bytes(key):
    plaintext = os.urandom(3 * SEGMENT)
    wrong = content_digest(key, io.BytesIO(plaintext[:-1]))
    header, body = seal_stream(key, "img-w", io.BytesIO(plaintext), SEGMENT, content_digest=wrong)
    sealed = []
    with pytest.raises(ValueError, match="content_digest"):
        for segment in body:
            sealed.append(segment)
    assert len(sealed) == 2  # the last segment is never sealed under the misused keys
    with pytest.raises(ValueError, match="content digest"):
        seal_bytes(key, "img-w", plaintext, SEGMENT, content_digest=wrong[:16])
    # A digest under another group key is not this key's digest of the bytes either.
    with pytest.raises(ValueError, match="content_digest"):
        seal_bytes(key, "img-w", plaintext, SEGMENT,
                   content_digest=content_digest(GroupKey.generate(), io.BytesIO(plaintext)))


def test_rewrapping_a_convergent_header_draws_a_random_wrap_nonce(key, other_key):
    plaintext = os.urandom(SEGMENT)
    header, body = _convergent(key, "img-k", plaintext)
    first, second = rewrap_header(header, "img-k", key, other_key), rewrap_header(header, "img-k", key, other_key)
    assert parse_header(first, "img-k").wrap_nonce != parse_header(second, "img-k").wrap_nonce
    assert open_bytes(other_key, "img-k", first, body) == plaintext
    assert open_bytes(other_key, "img-k", second, body) == plaintext


class _InputRecordingAESGCM:
    """The real AESGCM, recording what each (key, nonce) pair encrypted in ``inputs``."""

    inputs: dict[tuple[bytes, bytes], set[tuple[bytes, bytes]]] = {}

    def __init__(self, key):
        self._aead, self._key = _REAL_AESGCM(key), key

    def encrypt(self, nonce, data, associated_data):
        self.inputs.setdefault((self._key, nonce), set()).add((bytes(data), associated_data))
        return self._aead.encrypt(nonce, data, associated_data)

    def decrypt(self, *args):
        return self._aead.decrypt(*args)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["img-1", "img-2", "img-3"]),
                          st.binary(max_size=3 * SEGMENT // 2), st.booleans()), min_size=1, max_size=12))
def test_no_key_nonce_pair_encrypts_two_different_inputs(key, other_key, seals):
    # Convergent and random seals mixed, repeated and re-wrapped: a (key, nonce)
    # pair may recur only on the very same plaintext and associated data.
    recorder = type("Recorder", (_InputRecordingAESGCM,), {"inputs": {}})
    original, blob.AESGCM = blob.AESGCM, recorder
    try:
        for image_id, plaintext, convergent in seals:
            header, body = _convergent(key, image_id, plaintext) if convergent else seal_bytes(
                key, image_id, plaintext, SEGMENT)
            rewrap_header(header, image_id, key, other_key)
            assert open_bytes(key, image_id, header, body) == plaintext
    finally:
        blob.AESGCM = original
    assert all(len(inputs) == 1 for inputs in recorder.inputs.values())
