"""Decoding untrusted image files into upright 8-bit RGB pictures.

Every hash starts here, so every way a file can differ without the picture
differing is undone here: the EXIF orientation is applied, transparency is
composited on white, palettes, CMYK, YCbCr, HSV, LAB, 1-bit and 16-bit/integer/
float samples all become 8-bit RGB, and an animation becomes its first frame.
Large JPEGs are decoded at a reduced scale (libjpeg's DCT scaling), which is both
much faster and a good low-pass filter before the hash's own downscaling.

Input is untrusted: the format must be on a whitelist before any decoder runs,
the pixel count is checked from the header before the pixels are read or
decoded (the file is streamed to Pillow, not read whole first, so refusing a
huge non-image or oversized file costs a few bytes of reading), and every
failure — empty, non-image, unsupported format, too large, corrupt, truncated —
raises :class:`~imgdedup.pipeline.errors.DecodeError` naming the file.
Nothing here changes Pillow's global settings (``LOAD_TRUNCATED_IMAGES`` stays
False, ``MAX_IMAGE_PIXELS`` untouched).
"""
from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from imgdedup.pipeline.errors import ConfigError, DecodeError
from imgdedup.pipeline.hashing.encoding import Encoding, encoding_of

Source = str | os.PathLike | bytes

# Modes whose samples are wider than 8 bits; Pillow's own conversion to L clips them at 255.
_WIDE_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")
# Modes with an alpha channel; P, L and RGB may instead carry a transparent colour
# in info["transparency"].
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA")

# Pillow reports an oversized image through a warning; silencing it means swapping the
# process-wide warnings filters, which is only safe when one thread does it at a time.
_OPEN_LOCK = threading.Lock()


@dataclass(frozen=True)
class DecodedImage:
    """A decoded picture and the size of the file it came from.

    Attributes
    ----------
    image : PIL.Image.Image
        Mode ``"RGB"``, upright; smaller than the original when JPEG draft
        decoding was used.
    width, height : int
        Size of the original image in pixels, upright (after the EXIF
        orientation), whatever scale it was decoded at.
    encoding : Encoding
        How the file is encoded: format (Pillow's name, ``"JPEG"``, ``"PNG"``,
        ...), lossless or not, estimated JPEG quality, EXIF present.
    """

    image: Image.Image
    width: int
    height: int
    encoding: Encoding

    @property
    def format(self) -> str:
        """Pillow's name of the file format."""
        return self.encoding.format


def decode(
    source: Source,
    *,
    name: str | None = None,
    max_pixels: int,
    formats: Iterable[str],
    draft_min_side: int,
) -> DecodedImage:
    """Decode an image file into an upright RGB picture and its original size.

    Parameters
    ----------
    source : path-like or bytes
        The file, or its whole content.
    name : str, optional
        What error messages call the file; the path (or ``"<bytes>"``) by default.
    max_pixels : int
        Largest accepted ``width * height``, checked from the header before any
        pixel is read. Pillow's own error limit (twice ``Image.MAX_IMAGE_PIXELS``,
        ~179 MP) still applies above it: raising that would change a process-wide
        setting.
    formats : iterable of str
        Pillow format names allowed to be decoded (``"JPEG"``, ``"PNG"``, ...;
        case does not matter).
    draft_min_side : int
        Decode JPEGs at 1/2, 1/4 or 1/8 scale as long as the short side stays at
        least this many pixels; 0 always decodes at full size.

    Returns
    -------
    DecodedImage

    Raises
    ------
    DecodeError
        The file cannot be read, is empty, is not an image, is in a format not
        allowed, has more than ``max_pixels`` pixels, or is corrupt or truncated.
    ConfigError
        ``formats`` names a format Pillow does not know.
    """
    if name is None:
        name = "<bytes>" if isinstance(source, bytes | bytearray) else os.fspath(source)
    formats = known_formats(formats)
    with _opened(source, name) as fp:
        prefix = _prefix(fp)
        fp.seek(0)
        image = _open(fp, name, formats, max_pixels)
        encoding = encoding_of(image, prefix)
        width, height = image.size
        try:
            if draft_min_side > 0 and min(width, height) >= 2 * draft_min_side:
                # JPEG only (a no-op for other formats); must precede load().
                image.draft("RGB", (draft_min_side, draft_min_side))
            image.load()
            orientation = _orientation(image)
            if orientation in range(2, 9):
                ImageOps.exif_transpose(image, in_place=True)
                if orientation >= 5:  # the transposing orientations swap width and height
                    width, height = height, width
        except Exception as exc:  # noqa: BLE001 - malformed input makes Pillow's plugins raise any type
            raise DecodeError(name, f"corrupt or truncated {image.format} data ({_describe(exc)})") from exc
    try:
        rgb = _to_rgb(image)
    except ValueError as exc:  # Pillow has no conversion from this mode to RGB
        raise DecodeError(name, f"unsupported pixel mode {image.mode} ({exc})") from exc
    return DecodedImage(rgb, width, height, encoding)


def decode_image(
    source: Source,
    *,
    name: str | None = None,
    max_pixels: int,
    formats: Iterable[str],
    draft_min_side: int,
) -> Image.Image:
    """Decode an image file into an upright mode-``"RGB"`` picture.

    The same as :func:`decode` without the original size; see there for the
    parameters and errors.
    """
    return decode(
        source, name=name, max_pixels=max_pixels, formats=formats, draft_min_side=draft_min_side
    ).image


def known_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """``formats`` upper-cased, checked against Pillow's registry.

    Pillow itself fails on an unknown name only when a file reaches it, and then
    with a bare ``KeyError`` that would read as every file being corrupt.

    Raises
    ------
    ConfigError
        A name Pillow does not know.
    """
    formats = tuple(fmt.upper() for fmt in formats)
    Image.init()
    unknown = [fmt for fmt in formats if fmt not in Image.OPEN]
    if unknown:
        raise ConfigError(f"formats={list(formats)}", f"Pillow knows no image format {', '.join(unknown)}")
    return formats


@contextmanager
def _opened(source: Source, name: str) -> Iterator[BinaryIO]:
    """The source as an open binary file, closed on leaving; empty or unreadable ones refused."""
    if isinstance(source, bytes | bytearray):
        if not source:
            raise DecodeError(name, "empty file")
        yield io.BytesIO(source)
        return
    try:
        fp = open(source, "rb")
    except OSError as exc:
        raise DecodeError(name, f"cannot read file ({exc.strerror or exc})") from exc
    with fp:
        try:
            empty = not fp.peek(1)
        except OSError as exc:
            raise DecodeError(name, f"cannot read file ({exc.strerror or exc})") from exc
        if empty:
            raise DecodeError(name, "empty file")
        yield fp


def _open(fp: BinaryIO, name: str, formats: tuple[str, ...], max_pixels: int) -> Image.Image:
    """Identify the format among ``formats`` and check the header's pixel count."""
    with _OPEN_LOCK, warnings.catch_warnings():
        # max_pixels decides, checked below; Pillow's warning (between its own limit and
        # twice it) would only add noise for images the configured limit accepts.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(fp, formats=formats)
        except Image.DecompressionBombError as exc:
            raise DecodeError(name, f"too many pixels, refused as a decompression bomb ({exc})") from exc
        except Image.UnidentifiedImageError as exc:
            raise DecodeError(name, _unidentified_reason(_prefix(fp), formats)) from exc
        except Exception as exc:  # noqa: BLE001 - a malformed header makes plugins raise any type
            raise DecodeError(name, f"corrupt or truncated image header ({_describe(exc)})") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise DecodeError(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(
            name, f"too many pixels: {width}x{height} = {width * height} > max_pixels {max_pixels}"
        )
    return image


def _prefix(fp: BinaryIO) -> bytes:
    """The first 16 bytes, what Pillow's signature checks look at (none if ``fp`` cannot rewind)."""
    try:
        fp.seek(0)
        return fp.read(16)
    except OSError:
        return b""


def _unidentified_reason(prefix: bytes, formats: tuple[str, ...]) -> str:
    """Say whether the first bytes look like a known but refused format, or like no image at all.

    Only the plugins' signature checks run on them (no decoder), so asking
    costs nothing and exposes no decoder outside the whitelist.
    """
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            recognised = accept is not None and accept(prefix) is True
        except Exception:  # noqa: BLE001 - a signature check may choke on odd bytes
            recognised = False
        if recognised:
            if fmt in formats:
                return f"corrupt {fmt} header"
            return f"format {fmt} is not among the accepted formats {list(formats)}"
    return "not a recognised image format"


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1-8), or 1 when the EXIF block is unreadable.

    A damaged EXIF block does not make the pixels unusable, so it is ignored
    rather than failing the file.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - EXIF parsing of untrusted bytes may raise any type
        return 1
    return orientation if isinstance(orientation, int) else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """First frame of any Pillow mode → 8-bit RGB, transparency composited on white."""
    mode = image.mode
    if mode in _WIDE_MODES:
        return Image.fromarray(_wide_to_8bit(np.asarray(image), mode), "L").convert("RGB")
    if mode in ("P", "L", "RGB") and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES:
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(image.convert("RGBA"))
        return canvas.convert("RGB")
    return image.convert("RGB")


def _wide_to_8bit(samples: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit, 32-bit integer or float samples to 0..255.

    ``I;16*`` are 16-bit samples: divided by 257 so 65535 maps to 255. Modes
    ``I`` and ``F`` do not say their range: values already in 0..255 are kept
    (what Pillow makes of an 8-bit picture converted to I or F), float values in
    0..1 are scaled by 255, values in 0..65535 are taken as 16-bit, and anything
    else is stretched from its minimum to its maximum.
    """
    values = samples.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = values / 257.0
    else:
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if low >= 0 and mode == "F" and high <= 1.0:
            scaled = values * 255.0
        elif low >= 0 and high <= 255:
            scaled = values
        elif low >= 0 and high <= 65535:
            scaled = values / 257.0
        else:
            scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).round().astype(np.uint8)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
