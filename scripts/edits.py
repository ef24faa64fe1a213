"""Labelled near-duplicate sets with the edits people make to shared photos, on held-out originals.

The bench's ``../shared/bench/transforms.py`` families (JPEG and JPEG 2000,
scaling, colour, 90° turns, flips, small rotations, centred crops, blur, noise,
a watermark bar) plus the ones a chat app, a social re-post or a screenshot
make, written here:

- ``padding``: padded to a square in white and in black, a white frame, a frame
  in a flat colour;
- ``letterbox``: black bars to 16:9, a landscape photo inside a 9:16 phone
  screenshot with grey bars;
- ``caption``: a white bar of text added above, a black one below;
- ``perspective``: keystone views (corners moved by 4 % and 8 % of the side);
- ``chain``: scale + crop + re-encode, and crop + scale + recolour + re-encode;
- ``rotate_small`` gains ±2° and 8° turns, ``crop`` an off-centre crop and a
  square centre crop, ``overlay`` coloured stickers.

Originals: the photos of ``../shared/data/distinct`` and ``../shared/data/dev``
in one list sorted by file name, split by position: even positions are the
*tune* half (what thresholds and constants may be chosen on), odd positions the
*held-out* half (what results are reported on).

This module is imported by the scripts that build and score such sets
(``scripts/accuracy_families.py``); it is not part of the installed package.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PHOTO_DIRS = (SHARED / "data" / "distinct", SHARED / "data" / "dev")
SUFFIXES = {".jpg", ".jpeg", ".png"}


def bench_module(name: str):
    """``../shared/bench/NAME.py`` loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", SHARED / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def split_originals() -> tuple[list[Path], list[Path]]:
    """(tune, held_out): the photos sorted by file name, even positions and odd positions."""
    photos = sorted((p for d in PHOTO_DIRS for p in d.iterdir() if p.suffix.lower() in SUFFIXES),
                    key=lambda p: p.name)
    return photos[0::2], photos[1::2]


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _pad_to(im: Image.Image, width: int, height: int, colour) -> Image.Image:
    canvas = Image.new("RGB", (width, height), colour)
    canvas.paste(im, ((width - im.width) // 2, (height - im.height) // 2))
    return canvas


def _pad_square(im, colour):
    side = max(im.size)
    return _pad_to(im, side, side, colour)


def _frame(im, fraction, colour):
    return ImageOps.expand(im, border=max(1, int(fraction * max(im.size))), fill=colour)


def _letterbox(im, aspect, colour):
    """``im`` inside the smallest canvas of width/height ``aspect`` that holds it."""
    w, h = im.size
    if w / h < aspect:
        return _pad_to(im, round(h * aspect), h, colour)
    return _pad_to(im, w, round(w / aspect), colour)


def _screenshot(im):
    """A landscape photo shown full-width on a 9:16 phone screen (grey bars above and below)."""
    w = 720
    shown = im.resize((w, max(8, round(im.height * w / im.width))), Image.Resampling.BICUBIC)
    return _pad_to(shown, w, 1280, (24, 24, 24)) if shown.height < 1280 else shown


def _caption(im, top: bool):
    """A caption bar (13 % of the height) with two words of text added above (white) or below (black)."""
    w, h = im.size
    bar = max(12, int(0.13 * h))
    background, ink = ((255, 255, 255), (0, 0, 0)) if top else ((0, 0, 0), (255, 255, 255))
    canvas = Image.new("RGB", (w, h + bar), background)
    canvas.paste(im, (0, bar if top else 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, int(bar * 0.6)))
    draw.text((int(0.05 * w), (0 if top else h) + int(0.15 * bar)), "when the weekend finally arrives",
              fill=ink, font=font)
    return canvas


def _perspective_coeffs(source, target):
    """Coefficients of Pillow's PERSPECTIVE transform mapping ``target`` corners to ``source`` corners."""
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return np.linalg.solve(np.array(rows, float), np.array(source, float).reshape(8))


def _perspective(im, amount):
    """A keystone view: the top edge narrowed by ``amount`` of the width on each side, the rest cropped."""
    w, h = im.size
    dx = amount * w
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    seen = [(dx, amount * h / 2), (w - dx, amount * h / 2), (w, h), (0, h)]
    warped = im.transform(im.size, Image.Transform.PERSPECTIVE, _perspective_coeffs(corners, seen),
                          Image.Resampling.BICUBIC)
    # the view keeps the photo inside its trapezoid; trim the black wedges a phone photo would not show
    return warped.crop((int(dx), int(amount * h / 2), int(w - dx), h))


def _scale(im, f):
    return im.resize((max(8, int(im.width * f)), max(8, int(im.height * f))), Image.Resampling.BICUBIC)


def _crop_box(im, left, top, right, bottom):
    w, h = im.size
    return im.crop((int(left * w), int(top * h), int(w - right * w), int(h - bottom * h)))


def _crop_square(im):
    side = min(im.size)
    return im.crop(((im.width - side) // 2, (im.height - side) // 2,
                    (im.width + side) // 2, (im.height + side) // 2))


def _rotate(im, degrees):
    """Turned by a small angle and cropped to the largest box with no corner wedges."""
    w, h = im.size
    turned = im.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=False)
    a = abs(np.radians(degrees))
    # the axis-aligned box of the same aspect that fits inside the turned picture
    scale = 1 / (np.cos(a) + np.sin(a) * max(w / h, h / w))
    cw, ch = int(w * scale), int(h * scale)
    return turned.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))


def _stickers(im, rng):
    """Three flat-coloured stickers (ellipses and a rectangle) of ~4 % of the area each."""
    im = im.copy()
    draw = ImageDraw.Draw(im)
    w, h = im.size
    r = int(0.12 * min(w, h))
    for k in range(3):
        x, y = int(rng.uniform(0.1, 0.8) * w), int(rng.uniform(0.1, 0.8) * h)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.rectangle if k == 2 else draw.ellipse
        shape((x, y, x + r, y + r), fill=colour)
    return im


def _chain_scale_crop_jpeg(im):
    return _jpeg(_crop_box(_scale(im, 0.5), 0.06, 0.04, 0.04, 0.06), 60)


def _chain_crop_scale_colour_jpeg(im):
    cropped = _crop_box(im, 0.08, 0.0, 0.0, 0.08)
    small = _scale(cropped, 0.4).point(lambda v: int(255 * (v / 255) ** 0.8))
    return _jpeg(small, 45)


EXTRA_FAMILIES = {
    "padding": [("pad_square_white", lambda im, r: _pad_square(im, "white")),
                ("pad_square_black", lambda im, r: _pad_square(im, "black")),
                ("frame_white", lambda im, r: _frame(im, 0.06, "white")),
                ("frame_colour", lambda im, r: _frame(im, 0.1, (203, 170, 120)))],
    "letterbox": [("letterbox_16x9", lambda im, r: _letterbox(im, 16 / 9, "black")),
                  ("portrait_4x5", lambda im, r: _letterbox(im, 4 / 5, "white")),
                  ("screenshot_9x16", lambda im, r: _screenshot(im))],
    "caption": [("caption_top", lambda im, r: _caption(im, top=True)),
                ("caption_bottom", lambda im, r: _caption(im, top=False))],
    "perspective": [("persp4", lambda im, r: _perspective(im, 0.04)),
                    ("persp8", lambda im, r: _perspective(im, 0.08))],
    "chain": [("scale_crop_jpeg", lambda im, r: _chain_scale_crop_jpeg(im)),
              ("crop_scale_gamma_jpeg", lambda im, r: _chain_crop_scale_colour_jpeg(im))],
    "rotate_small": [("rot2", lambda im, r: _rotate(im, 2)), ("rot-2", lambda im, r: _rotate(im, -2)),
                     ("rot8", lambda im, r: _rotate(im, 8))],
    "crop": [("crop_corner15", lambda im, r: _crop_box(im, 0.15, 0.15, 0.0, 0.0)),
             ("crop_square", lambda im, r: _crop_square(im))],
    "overlay": [("stickers", lambda im, r: _stickers(im, r))],
}


def build_set(originals: list[Path], out: Path, seed: int = 7, max_side: int = 1024) -> list[tuple]:
    """Write every original and its variants of every family into ``out``, with ``truth.csv``.

    Rows of ``truth.csv`` are ``file, group, family, variant`` as the bench's
    ``score.py`` reads them; the files are saved as JPEG (q92), PNG or WebP,
    chosen at random with ``seed``.
    """
    transforms = bench_module("transforms")
    families: dict[str, list] = {name: list(items) for name, items in transforms.FAMILIES.items()}
    for name, items in EXTRA_FAMILIES.items():
        families.setdefault(name, []).extend(items)
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for gi, src in enumerate(originals):
        im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        if max(im.size) > max_side:
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        group = f"g{gi:05d}"
        im.save(out / f"{group}_orig.png")
        rows.append((f"{group}_orig.png", group, "orig", "orig"))
        for family, items in families.items():
            for variant, fn in items:
                picture = fn(im, rng).convert("RGB")
                ext = pick.choice(("jpg", "png", "webp"))
                name = f"{group}_{variant}.{ext}"
                picture.save(out / name, **({"quality": 92} if ext == "jpg" else {}))
                rows.append((name, group, family, variant))
    with open(out / "truth.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "group", "family", "variant"])
        writer.writerows(rows)
    return rows
