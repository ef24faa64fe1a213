"""Decoding: every mode and orientation gives the same picture; every bad input one typed error."""
from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from imgdedup.pipeline.config import DecodeConfig
from imgdedup.pipeline.errors import ConfigError, DecodeError
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.decode import decode, decode_image

DEFAULTS = DecodeConfig()
OPTIONS = dict(max_pixels=DEFAULTS.max_pixels, formats=DEFAULTS.formats, draft_min_side=DEFAULTS.draft_min_side)
MODE_FILES = ["1.png", "CMYK.jpg", "F.webp", "HSV.webp", "I.webp", "L.png", "LA.png", "LAB.webp",
              "P.png", "PA.webp", "RGB.jpg", "RGBA.png", "YCbCr.jpg"]


def gray_thumb(image: Image.Image, side: int = 64) -> np.ndarray:
    return np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float32)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def modes_dir(test_data):
    return test_data / "pdq" / "modes"


@pytest.fixture(scope="module")
def original(modes_dir) -> Image.Image:
    return decode_image(modes_dir / "original.jpg", **OPTIONS)


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real photo, 512x512 RGB, for building files in odd modes and formats."""
    from skimage import data

    return Image.fromarray(data.astronaut())


# ---- every mode, every orientation, the same picture ------------------------------------------

@pytest.mark.parametrize("filename", MODE_FILES)
def test_every_mode_file_decodes_to_the_original_picture(modes_dir, original, filename):
    decoded = decode(modes_dir / filename, **OPTIONS)
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (400, 251)
    # 16 px: boxes of 25 x 16 pixels, so the 1-bit file's dithering averages out
    difference = np.abs(gray_thumb(decoded.image, 16) - gray_thumb(original, 16)).mean()
    assert difference < 3.0, f"{filename} differs from original.jpg by {difference:.1f} grey levels"


@pytest.mark.parametrize("algo, max_bits", [("phash", 2), ("lbph-paper", 3), ("lbph", 6)])
def test_every_mode_file_hashes_like_the_original(modes_dir, original, algo, max_bits):
    algorithm = get_algorithm(algo)
    reference = algorithm.hash_image(original)
    for filename in MODE_FILES:
        hashed = algorithm.hash_image(decode_image(modes_dir / filename, **OPTIONS))
        assert int(np.unpackbits(hashed ^ reference).sum()) <= max_bits, filename


def test_exif_orientations_decode_upright(test_data):
    folder = test_data / "pdq" / "exif-rotn"
    upright = gray_thumb(decode_image(folder / "exif-rotn-1.jpg", **OPTIONS), 16)
    upright -= upright.mean()
    for tag in (1, 3, 6, 8):
        decoded = decode(folder / f"exif-rotn-{tag}.jpg", **OPTIONS)
        stored = Image.open(folder / f"exif-rotn-{tag}.jpg").size
        assert (decoded.width, decoded.height) == (stored if tag in (1, 3) else stored[::-1])
        assert (decoded.image.width > decoded.image.height) == (decoded.width > decoded.height)
        thumb = gray_thumb(decoded.image, 16)
        thumb -= thumb.mean()
        # Four shots of one scene (their hashes differ): the upright decode must be
        # closer to the upright reference than any other quarter turn of it.
        distances = [np.abs(np.rot90(thumb, k) - upright).mean() for k in range(4)]
        assert int(np.argmin(distances)) == 0, (tag, distances)


def test_orientation_tag_of_a_drafted_jpeg_is_applied_after_reduction(photo):
    big = photo.resize((1600, 1200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(big, "JPEG", quality=90, exif=exif.tobytes())
    decoded = decode(data, **{**OPTIONS, "draft_min_side": 256})
    assert (decoded.width, decoded.height) == (1200, 1600)
    assert decoded.image.size == (300, 400)  # 1/4 scale, short side still >= 256
    expected = big.transpose(Image.Transpose.ROTATE_270)
    assert np.abs(gray_thumb(decoded.image) - gray_thumb(expected)).mean() < 3.0


def test_large_jpeg_is_drafted_but_small_jpeg_and_png_are_not(photo):
    big = photo.resize((2048, 1536))
    drafted = decode(encode(big, "JPEG", quality=90), **{**OPTIONS, "draft_min_side": 256})
    assert drafted.image.size == (512, 384)  # 1/4 scale: 1/8 would leave a short side under 256
    assert (drafted.width, drafted.height) == (2048, 1536)
    full = decode(encode(big, "JPEG", quality=90), **{**OPTIONS, "draft_min_side": 0})
    assert full.image.size == (2048, 1536)
    assert np.abs(gray_thumb(drafted.image) - gray_thumb(full.image)).mean() < 1.5
    assert decode(encode(big, "PNG"), **OPTIONS).image.size == (2048, 1536)
    small = encode(photo.resize((500, 500)), "JPEG")
    assert decode(small, **{**OPTIONS, "draft_min_side": 256}).image.size == (500, 500)


def test_sixteen_bit_samples_are_scaled_not_clipped(photo):
    gray = np.asarray(photo.convert("L"), dtype=np.uint16)
    sixteen = Image.fromarray(gray * 257)
    assert sixteen.mode == "I;16"
    for fmt in ("PNG", "TIFF"):
        decoded = np.asarray(decode_image(encode(sixteen, fmt), **OPTIONS))
        np.testing.assert_array_equal(decoded[..., 0], gray)


@pytest.mark.parametrize("mode", ["I", "F"])
def test_wide_modes_holding_8bit_values_keep_them(photo, mode):
    gray = np.asarray(photo.convert("L"), dtype=int)
    decoded = np.asarray(decode_image(encode(photo.convert(mode), "TIFF"), **OPTIONS))
    assert np.abs(decoded[..., 1] - gray).max() <= 1  # F keeps the fraction L rounds away


def test_float_samples_in_unit_range_are_scaled(photo):
    gray = np.asarray(photo.convert("L"))
    unit = Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    decoded = np.asarray(decode_image(encode(unit, "TIFF"), **OPTIONS))
    assert np.abs(decoded[..., 0].astype(int) - gray).max() <= 1


def test_transparency_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)  # opaque red top, transparent black bottom
    for image in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA")):
        decoded = np.asarray(decode_image(encode(image, "PNG"), **OPTIONS))
        assert (decoded[4:] == 255).all()
        assert (decoded[:4] != 255).any()
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    transparent = palette.getpixel((0, 7))
    decoded = np.asarray(decode_image(encode(palette, "PNG", transparency=transparent), **OPTIONS))
    assert (decoded[4:] == 255).all()
    keyed = Image.fromarray(rgba[..., :3])  # RGB with black as the transparent colour
    decoded = np.asarray(decode_image(encode(keyed, "PNG", transparency=(0, 0, 0)), **OPTIONS))
    assert (decoded[4:] == 255).all() and (decoded[:4] == (255, 0, 0)).all()


def test_animation_decodes_to_its_first_frame():
    frames = [Image.new("RGB", (16, 16), color) for color in ((200, 30, 30), (30, 30, 200))]
    for fmt in ("GIF", "WEBP", "PNG"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, loop=0)
        red, green, blue = np.asarray(decode_image(data, **OPTIONS)).reshape(-1, 3).mean(0)
        assert red > 150 and blue < 80, fmt


def test_lossless_formats_decode_to_the_exact_pixels(photo):
    expected = np.asarray(photo)
    for fmt in ("PNG", "BMP", "TIFF", "PPM"):
        np.testing.assert_array_equal(np.asarray(decode_image(encode(photo, fmt), **OPTIONS)), expected)
    np.testing.assert_array_equal(np.asarray(decode_image(encode(photo, "WEBP", lossless=True), **OPTIONS)),
                                  expected)


# ---- every bad input raises DecodeError naming the file --------------------------------------

def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header(width: int, height: int) -> bytes:
    """A well-formed PNG claiming any size, with no pixel data (a few dozen bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def assert_refused(source, reason_fragment: str, **options):
    with pytest.raises(DecodeError) as info:
        decode(source, name="bad-file.img", **{**OPTIONS, **options})
    assert info.value.subject == "bad-file.img"
    assert info.value.stage == "decode"
    assert reason_fragment in info.value.reason, info.value.reason
    assert "bad-file.img" in str(info.value)


def test_empty_input_is_refused(tmp_path):
    assert_refused(b"", "empty")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty.jpg.*empty file"):
        decode(tmp_path / "empty.jpg", **OPTIONS)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(DecodeError, match="cannot read"):
        decode(tmp_path / "nope.png", **OPTIONS)


def test_text_and_random_bytes_are_refused():
    assert_refused(b"name,hash\nphoto.jpg,ffd7918181c9ffff\n", "not a recognised image")
    assert_refused(np.random.default_rng(1).bytes(4096), "not a recognised image")


def test_corrupt_header_is_refused():
    assert_refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "PNG")
    assert_refused(b"\xff\xd8\xff\xe0" + b"\x13" * 300, "corrupt")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_files_are_refused(photo, fmt):
    data = encode(photo, fmt)
    assert_refused(data[: len(data) // 2], "corrupt")


def test_truncated_large_jpeg_is_refused_when_drafted(photo):
    data = encode(photo.resize((2048, 2048)), "JPEG", quality=90)
    assert_refused(data[: len(data) * 2 // 3], "truncated")


def test_format_off_the_whitelist_is_refused(photo):
    assert_refused(encode(photo, "BMP"), "format BMP is not among", formats=["JPEG", "PNG"])
    assert_refused(encode(photo.convert("RGB"), "PCX"), "format PCX is not among")


def test_image_over_max_pixels_is_refused_before_decoding(photo):
    assert_refused(encode(photo, "PNG"), "too many pixels", max_pixels=512 * 512 - 1)
    decode(encode(photo, "PNG"), **{**OPTIONS, "max_pixels": 512 * 512})
    # Headers claiming more than Pillow's warning limit and more than its error limit.
    assert_refused(png_header(10_001, 10_000), "too many pixels")
    assert_refused(png_header(100_000, 100_000), "too many pixels")


def test_between_pillow_limits_the_configured_limit_decides():
    pixels = Image.MAX_IMAGE_PIXELS + 1_000_000  # Pillow merely warns here
    side = int(pixels ** 0.5) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_refused(png_header(side, side), "too many pixels", max_pixels=pixels - 1)
        # Accepted by the size guard, then fails for lack of pixel data.
        assert_refused(png_header(side, side), "corrupt", max_pixels=side * side)


def test_a_huge_non_image_is_refused_from_its_first_bytes(tmp_path):
    import tracemalloc

    path = tmp_path / "movie.jpg"
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42")
        f.truncate(64 << 20)  # sparse: 64 MiB of size, next to no disk
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="not a recognised image"):
            decode(path, **OPTIONS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes held while refusing a 64 MiB non-image"


def _open_descriptors() -> int:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd to count open files")
    return len(list(fd_dir.iterdir()))


def test_files_are_closed_whatever_the_outcome(photo, tmp_path):
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.png"
    good.write_bytes(encode(photo.resize((1024, 1024)), "JPEG"))  # drafted, EXIF-less
    bad.write_bytes(encode(photo, "PNG")[:5000])
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    before = _open_descriptors()
    for _ in range(3):
        decode(good, **OPTIONS)
        decode(gif, **OPTIONS)
        with pytest.raises(DecodeError):
            decode(bad, **OPTIONS)
        with pytest.raises(DecodeError):
            decode(good, **{**OPTIONS, "max_pixels": 100})
    assert _open_descriptors() == before


def test_format_names_are_checked_and_case_free(photo):
    assert decode(encode(photo, "PNG"), **{**OPTIONS, "formats": ["png"]}).format == "PNG"
    with pytest.raises(ConfigError, match="JPG"):
        decode(encode(photo, "PNG"), **{**OPTIONS, "formats": ["PNG", "JPG"]})


def test_pillow_globals_are_left_alone(photo):
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    data = encode(photo, "JPEG")
    decode(data, **OPTIONS)
    with pytest.raises(DecodeError):
        decode(data[:1000], **OPTIONS)
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


@pytest.fixture(scope="module")
def small_files() -> list[bytes]:
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (24, 32, 3), np.uint8))
    return [encode(image, fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the damage it skips
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_files_decode_or_raise_decode_error(small_files, data):
    original = data.draw(st.sampled_from(small_files))
    damaged = bytearray(original[: data.draw(st.integers(0, len(original)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if damaged:
            damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    try:
        image = decode_image(bytes(damaged), **OPTIONS)
    except DecodeError as exc:
        assert exc.subject == "<bytes>"
    else:
        assert image.mode == "RGB" and image.width > 0 and image.height > 0
