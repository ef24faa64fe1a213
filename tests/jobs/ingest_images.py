"""Small helpers shared by the ingest, get and ingest-kill tests."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imgdedup.pipeline.store import Store, schemas


def noise_png(seed: int, size: int = 96) -> bytes:
    """A random picture (upscaled noise) that no photo and no other seed lies near."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((size * 4, size * 4), Image.Resampling.BILINEAR).save(buffer, "PNG")
    return buffer.getvalue()


def rows_per_digest(store: Store) -> dict[bytes, int]:
    """How many fingerprints rows the store holds for each keyed content digest."""
    digests = store.read_table(schemas.FINGERPRINTS, columns=["content_digest"]).column("content_digest").to_pylist()
    counts: dict[bytes, int] = {}
    for digest in digests:
        counts[digest] = counts.get(digest, 0) + 1
    return counts


#: What an ``imgdedup ingest`` process logs once it has decided and committed everything (its summary line).
SUMMARY_LOGGED = b"INFO imgdedup.jobs.ingest: ingest:"


def ingest_finished(returncode: int, stderr: bytes, expected: int) -> bool:
    """True if an ``imgdedup ingest`` subprocess ended with ``expected``, or aborted only after its summary.

    pyarrow's native thread pools can abort the interpreter at exit (SIGABRT,
    "terminate called without an active exception", apache/arrow#34314) after
    all work is done and logged; that is not an ingest failure.
    """
    return returncode == expected or (returncode == -6 and SUMMARY_LOGGED in stderr)
