"""pipeline/hashing/encoding.py: the encoding facts the canonical policy ranks copies by."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from imgdedup.pipeline.hashing.decode import decode


def _encoded(fmt: str, **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def _encoding(data: bytes):
    return decode(data, max_pixels=10**8, formats=["JPEG", "PNG", "WEBP", "GIF"], draft_min_side=0).encoding


@pytest.mark.parametrize("quality", [10, 35, 50, 75, 90, 95])
def test_jpeg_quality_is_recovered_from_the_quantisation_tables(quality):
    encoding = _encoding(_encoded("JPEG", quality=quality))
    assert encoding.format == "JPEG" and not encoding.lossless
    assert abs(encoding.jpeg_quality - quality) <= 1


def test_lossless_formats_and_exif():
    png, lossless_webp, lossy_webp = (_encoded("PNG"), _encoded("WEBP", lossless=True),
                                      _encoded("WEBP", quality=80))
    assert (_encoding(png).lossless, _encoding(png).jpeg_quality) == (True, 0)
    assert _encoding(lossless_webp).lossless and not _encoding(lossy_webp).lossless
    assert not _encoding(_encoded("JPEG")).exif
    exif = Image.Exif()
    exif[0x010F] = "camera"
    assert _encoding(_encoded("JPEG", exif=exif.tobytes())).exif
