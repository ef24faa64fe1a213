"""Throughput of sealed blobs and keyed fingerprints, against bare AES-GCM in the same run.

    python scripts/bench_crypto.py [--mib 64] [--rounds 3] [--rows 100000] [--blobs 300]

Times, interleaved round by round, on one file of random bytes in a temporary folder:

- seal: ``seal_stream`` file → file (data key, wrapping, STREAM segments of
  ``crypto.segment_bytes``); open: ``open_stream`` file → discard;
- references: the same files read into one reused buffer segment by segment,
  each segment ``AESGCM.encrypt``-ed (written out) or ``decrypt``-ed (discarded)
  under one key with a counter nonce and no associated data: the least any
  segmented AEAD does with the same I/O, so each ratio is the construction's cost.

Then keyed fingerprints over random 256-bit hashes (tokens, seal_hashes,
open_hashes, rows/s) and ``rotate-key`` over a local store (headers/s).
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imgdedup.jobs.keygen import rotate_store
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.blob import open_stream, seal_stream
from imgdedup.pipeline.crypto.keyed_fingerprint import open_hashes, seal_hashes, tokens
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.store import Store


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def _seal(key, source: Path, target: Path, segment_bytes: int) -> None:
    with source.open("rb") as reader, target.open("wb") as out:
        header, body = seal_stream(key, "bench", reader, segment_bytes)
        for chunk in body:
            out.write(chunk)
    target.with_suffix(".hdr").write_bytes(header)


def _open(key, target: Path) -> None:
    with target.open("rb") as body:
        for _ in open_stream(key, "bench", target.with_suffix(".hdr").read_bytes(), body):
            pass


def _bare_segments(path: Path, size: int):
    """``(index, segment)`` of ``path`` read into one reused ``size``-byte buffer."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    with path.open("rb") as reader:
        index = 0
        while count := reader.readinto(buffer):
            yield index, view[:count]
            index += 1


def _bare_seal(aead: AESGCM, source: Path, target: Path, segment_bytes: int) -> None:
    with target.open("wb") as out:
        for index, segment in _bare_segments(source, segment_bytes):
            out.write(aead.encrypt(index.to_bytes(12, "big"), segment, b""))


def _bare_open(aead: AESGCM, target: Path, segment_bytes: int) -> None:
    for index, segment in _bare_segments(target, segment_bytes + 16):
        aead.decrypt(index.to_bytes(12, "big"), segment, b"")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the sealed file in MiB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000, help="hashes for the fingerprint timings")
    parser.add_argument("--blobs", type=int, default=300, help="blobs in the rotation store")
    args = parser.parse_args()
    segment_bytes = load_config().crypto.segment_bytes
    key, new_key = GroupKey.generate(), GroupKey.generate()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        source = folder / "plain"
        with source.open("wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(1 << 20))
        bare = AESGCM(os.urandom(32))
        seal_s, open_s, bare_seal_s, bare_open_s = [], [], [], []
        for _ in range(args.rounds):
            seal_s.append(_timed(lambda: _seal(key, source, folder / "sealed", segment_bytes)))
            open_s.append(_timed(lambda: _open(key, folder / "sealed")))
            bare_seal_s.append(_timed(lambda: _bare_seal(bare, source, folder / "bare", segment_bytes)))
            bare_open_s.append(_timed(lambda: _bare_open(bare, folder / "bare", segment_bytes)))

        store = Store(str(folder / "store"))
        for i in range(args.blobs):
            header, body = seal_stream(key, f"blob{i:05d}", io.BytesIO(os.urandom(4096)), segment_bytes)
            store.write_blob(f"blob{i:05d}", header, body)
        rotate_s = _timed(lambda: rotate_store(store, [key], new_key))

    hashes = np.random.default_rng(0).integers(0, 256, (args.rows, 32), dtype=np.uint8)
    ids = [f"img{i}" for i in range(args.rows)]
    tokens_s = min(_timed(lambda: tokens(key, hashes)) for _ in range(args.rounds))
    sealed = seal_hashes(key, ids, hashes)
    seal_rows_s = _timed(lambda: seal_hashes(key, ids, hashes))
    open_rows_s = _timed(lambda: open_hashes(key, ids, sealed))

    seal_rate, open_rate = args.mib / min(seal_s), args.mib / min(open_s)
    bare_seal_rate, bare_open_rate = args.mib / min(bare_seal_s), args.mib / min(bare_open_s)
    print(f"seal_stream file->file:                {seal_rate:8.1f} MiB/s")
    print(f"bare AES-GCM encrypt file->file:       {bare_seal_rate:8.1f} MiB/s")
    print(f"open_stream file->discard:             {open_rate:8.1f} MiB/s")
    print(f"bare AES-GCM decrypt file->discard:    {bare_open_rate:8.1f} MiB/s")
    print(f"tokens:      {args.rows / tokens_s:12.0f} rows/s")
    print(f"seal_hashes: {args.rows / seal_rows_s:12.0f} rows/s")
    print(f"open_hashes: {args.rows / open_rows_s:12.0f} rows/s")
    print(f"rotate-key (local store): {args.blobs / rotate_s:8.1f} headers/s")
    print(json.dumps({
        "seal_vs_bare_aesgcm_ratio": round(seal_rate / bare_seal_rate, 3),
        "open_vs_bare_aesgcm_ratio": round(open_rate / bare_open_rate, 3),
        "seal_mib_per_s": round(seal_rate, 1),
        "open_mib_per_s": round(open_rate, 1),
        "bare_encrypt_mib_per_s": round(bare_seal_rate, 1),
        "bare_decrypt_mib_per_s": round(bare_open_rate, 1),
        "segment_bytes": segment_bytes,
        "tokens_rows_per_s": round(args.rows / tokens_s),
        "seal_hashes_rows_per_s": round(args.rows / seal_rows_s),
        "open_hashes_rows_per_s": round(args.rows / open_rows_s),
        "rotate_headers_per_s": round(args.blobs / rotate_s, 1),
        "mib": args.mib,
        "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
