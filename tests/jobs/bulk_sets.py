"""Small labelled image sets and store readers shared by the bulk-job tests."""
from __future__ import annotations

import io
import math
from collections.abc import Mapping
from pathlib import Path

import fsspec
from PIL import Image, ImageEnhance, ImageOps

from imgdedup.pipeline.store import Store

# name -> (transform, format): the copies every original gets in a labelled set.
VARIANTS = {
    "jpeg40": (lambda im: im, "JPEG"),
    "half": (lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), "PNG"),
    "brighter": (lambda im: ImageEnhance.Brightness(im).enhance(1.2), "JPEG"),
    "rot90": (lambda im: im.transpose(Image.Transpose.ROTATE_90), "PNG"),
    "mirror": (lambda im: ImageOps.mirror(im), "JPEG"),
}


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 40} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def labelled_set(dev: Path, count: int) -> dict[str, tuple[bytes, str]]:
    """``{relative name: (file bytes, group)}``: ``count`` dev photos, each with :data:`VARIANTS`."""
    files = {}
    for photo in sorted(dev.glob("*.jpg"))[:count]:
        original = Image.open(photo).convert("RGB")
        group = photo.stem
        files[f"{group}/original.jpg"] = (photo.read_bytes(), group)
        for variant, (transform, fmt) in VARIANTS.items():
            suffix = ".jpg" if fmt == "JPEG" else ".png"
            files[f"{group}/{variant}{suffix}"] = (encode(transform(original), fmt), group)
    return files


def write_files(url: str, files: Mapping[str, bytes], options: Mapping[str, object] | None = None) -> None:
    """Write ``{relative name: bytes}`` under the fsspec folder ``url``."""
    fs, root = fsspec.core.url_to_fs(url, **dict(options or {}))
    for name, data in files.items():
        fs.makedirs(f"{root}/{name.rsplit('/', 1)[0]}" if "/" in name else root, exist_ok=True)
        fs.pipe_file(f"{root}/{name}", data)


def groups_by_name(store: Store, root: str) -> set[frozenset[str]]:
    """Duplicate groups of a store as sets of names below ``root`` (groups of one included)."""
    rows = store.read_table("fingerprints", columns=["image_id", "source", "duplicate_of"]).to_pylist()
    name = {r["image_id"]: r["source"].split(root.rstrip("/") + "/", 1)[-1] for r in rows}
    members: dict[str, set[str]] = {}
    for r in rows:
        members.setdefault(r["duplicate_of"] or r["image_id"], set()).add(name[r["image_id"]])
    return {frozenset(m) for m in members.values()}


def pair_precision_recall(groups: set[frozenset[str]], truth: Mapping[str, str]) -> tuple[float, float]:
    """Pairwise precision and recall of found groups against the true group of each name."""
    found = {(a, b) for g in groups for a in g for b in g if a < b}
    by_group: dict[str, list[str]] = {}
    for name, group in truth.items():
        by_group.setdefault(group, []).append(name)
    true = {(a, b) for g in by_group.values() for a in g for b in g if a < b}
    correct = len(found & true)
    return (correct / len(found) if found else 1.0), (correct / len(true) if true else 1.0)


#: Distinct dev photos a grey-zone set holds beside its copied photo.
ZONE_OTHERS = ("perception_image3.jpg", "ukbench00120.jpg", "ukbench09380.jpg")
#: The photo whose 20 % centre crop lies in the verified zone above t = 64 (76 bits, its 8° turn 92).
ZONE_PHOTO = "ukbench09040.jpg"


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    """``image`` with ``fraction`` of its width and of its height cut off, half on each side."""
    dx, dy = int(image.width * fraction / 2), int(image.height * fraction / 2)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def turned(image: Image.Image, degrees: float) -> Image.Image:
    """``image`` turned by ``degrees`` and cropped to no corner wedges (a margin of sin(degrees) of its long side)."""
    margin = int(math.sin(math.radians(degrees)) * max(image.size) / 1.5)
    rotated = image.rotate(degrees, resample=Image.Resampling.BICUBIC)
    return rotated.crop((margin, margin, image.width - margin, image.height - margin))


def zone_set(dev: Path) -> dict[str, bytes]:
    """``{name: bytes}``: :data:`ZONE_PHOTO`, its 20 % centre crop (JPEG q90) and :data:`ZONE_OTHERS`."""
    original = Image.open(dev / ZONE_PHOTO).convert("RGB")
    buffer = io.BytesIO()
    centre_crop(original, 0.2).save(buffer, "JPEG", quality=90)
    return {"photo.jpg": (dev / ZONE_PHOTO).read_bytes(), "photo-crop20.jpg": buffer.getvalue(),
            **{name: (dev / name).read_bytes() for name in ZONE_OTHERS}}


#: Dev photos whose off-centre crop (:func:`off_centre_crop`) lies beyond the verified zone of them (96-128 bits)
#: but shares many feature keys with them (24-47).
KEYED_PHOTOS = ("ukbench08996.jpg", "perception_image9.jpg", "ukbench09040.jpg")


def off_centre_crop(data: bytes) -> bytes:
    """JPEG (q90) of a picture with 30 % of its width cut off the left and 25 % of its height off the top."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    buffer = io.BytesIO()
    image.crop((int(0.3 * image.width), int(0.25 * image.height), image.width, image.height)).save(
        buffer, "JPEG", quality=90)
    return buffer.getvalue()


def keyed_set(dev: Path) -> dict[str, bytes]:
    """``{name: bytes}``: :data:`KEYED_PHOTOS`, each with its off-centre crop (``crop-NAME``), and
    :data:`ZONE_OTHERS`."""
    files = {name: (dev / name).read_bytes() for name in (*KEYED_PHOTOS, *ZONE_OTHERS)}
    return files | {f"crop-{name}": off_centre_crop(files[name]) for name in KEYED_PHOTOS}
