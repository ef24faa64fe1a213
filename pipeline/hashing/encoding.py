"""How an image file is encoded: the facts the canonical policy ranks copies by.

Read from the opened Pillow image where the file is decoded (client side),
and carried as clear columns of the ``fingerprints`` table (``format``,
``lossless``, ``jpeg_quality``, ``exif``), so the dedup rule
(:func:`imgdedup.pipeline.dedup.rank_members`) can prefer the least-degraded
copy of a group without opening a blob.

JPEG quality is estimated from the file's luminance quantisation table (which
Pillow exposes as ``image.quantization``): the libjpeg quality setting whose
scaled standard table (ITU-T T.81 Annex K, the one every common encoder
scales) has the nearest coefficient sum. For files written by libjpeg, Pillow,
ImageMagick or a camera using the standard tables this recovers the setting
(±1); for custom tables it is the equivalent setting by overall step size.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

#: Formats whose encoding keeps every pixel (lossy sub-formats are told apart below).
LOSSLESS_FORMATS = frozenset({"PNG", "GIF", "BMP", "PPM", "TIFF"})

#: ITU-T T.81 Annex K luminance quantisation table, natural (row-major) order.
_STANDARD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
], dtype=np.int64)


@dataclass(frozen=True)
class Encoding:
    """How one image file is encoded.

    Attributes
    ----------
    format : str
        Pillow's format name (``"JPEG"``, ``"PNG"``, ...).
    lossless : bool
        The encoding keeps every decoded pixel (PNG, GIF, BMP, PPM, TIFF without
        JPEG compression, lossless WebP).
    jpeg_quality : int
        Estimated JPEG quality setting 1-100; 0 for any other encoding.
    exif : bool
        The file carries EXIF metadata.
    """

    format: str
    lossless: bool
    jpeg_quality: int
    exif: bool


@cache
def _standard_sums() -> np.ndarray:
    """(100,) int64: coefficient sum of the libjpeg-scaled standard luminance table for quality 1..100."""
    quality = np.arange(1, 101)
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    tables = np.clip((_STANDARD_LUMINANCE[None, :] * scale[:, None] + 50) // 100, 1, 255)
    return tables.sum(axis=1)


def jpeg_quality(quantization: dict[int, list[int]]) -> int:
    """Estimated quality setting (1-100) of a JPEG from its quantisation tables.

    Parameters
    ----------
    quantization : dict of int to sequence of int
        Pillow's ``image.quantization``: table number to its 64 coefficients;
        table 0 is the luminance table.

    Returns
    -------
    int
        The libjpeg quality whose scaled standard luminance table has the
        nearest coefficient sum (ties go to the higher quality); 0 when the
        file has no tables.
    """
    if not quantization:
        return 0
    luminance = np.asarray(quantization[min(quantization)], dtype=np.int64)
    total = int(luminance.sum()) * 64 // max(len(luminance), 1)
    gaps = np.abs(_standard_sums() - total)
    return int(100 - np.argmin(gaps[::-1]))


def encoding_of(image: Image.Image, prefix: bytes = b"") -> Encoding:
    """The encoding facts of an opened (not necessarily loaded) Pillow image.

    Parameters
    ----------
    image : PIL.Image.Image
        As returned by ``Image.open``, before any conversion.
    prefix : bytes
        The file's first 16 bytes, where a WebP file names its codec
        (``VP8L`` is lossless).
    """
    fmt = image.format or ""
    if fmt == "JPEG":
        lossless, quality = False, jpeg_quality(getattr(image, "quantization", None) or {})
    elif fmt == "WEBP":
        lossless, quality = prefix[12:16] == b"VP8L", 0
    elif fmt == "TIFF":
        lossless, quality = image.info.get("compression") not in ("jpeg", "tiff_jpeg"), 0
    else:
        lossless, quality = fmt in LOSSLESS_FORMATS, 0
    try:
        exif = bool(image.info.get("exif")) or len(image.getexif()) > 0
    except Exception:  # noqa: BLE001 - a malformed EXIF block counts as none
        exif = False
    return Encoding(fmt, lossless, quality, exif)
