"""Listing an image source through fsspec, telling image files from the rest, and reading one input image.

A source is any fsspec URL or local path: a folder (walked recursively), one
file, ``memory://...``, ``s3://bucket/prefix``. The listing holds names, sizes
and modification times only; the files themselves are read later by the workers,
straight from the source, so their bytes never pass through the scheduler.
Ingest and ``get --like`` read one image at a time with :func:`read_source`,
which also derives the keyed ids the store knows it by (client side).
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import io
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import fsspec
from PIL import Image

from imgdedup.pipeline.crypto.digest import content_digest, image_id
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.errors import ImgdedupError
from imgdedup.pipeline.hashing.decode import known_formats

#: Bytes at the start of a file that the image-signature checks look at.
SIGNATURE_BYTES = 16


class SourceError(ImgdedupError):
    """A source URL cannot be listed (missing, unreachable, not allowed)."""

    stage = "list"


@dataclass(frozen=True)
class SourceFile:
    """One file of a source listing.

    Attributes
    ----------
    url : str
        Full fsspec URL a worker opens (``file:///...`` for local files).
    name : str
        Path below the source root, ``/``-separated (what the glob filters match).
    size : int
        Bytes.
    mtime : float
        Last modification, POSIX seconds (0.0 when the filesystem does not say).
    regular : bool
        False for a symbolic link or another special file: listed so the jobs
        report it (an error row), never read (a link could name a file outside
        the source).
    source : str
        The ``source`` column of the file's rows and the name its image id is
        keyed with: the source as the user gave it, joined with ``name`` (the
        file itself when a file was given). A relative folder stays relative,
        so the store does not learn the user's absolute paths. Empty: ``url``.
    """

    url: str
    name: str
    size: int
    mtime: float
    regular: bool = True
    source: str = ""

    def __post_init__(self):
        if not self.source:
            object.__setattr__(self, "source", self.url)

#: Why a :class:`SourceFile` that is not ``regular`` is not read.
NOT_REGULAR = "symbolic link or special file, not followed (it could name a file outside the source)"


def _mtime(info: Mapping[str, object]) -> float:
    """Modification time from an fsspec info dict, whatever key and type the backend uses."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, dt.datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def _selected(name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    return (any(fnmatch.fnmatchcase(name, p) for p in include)
            and not any(fnmatch.fnmatchcase(name, p) for p in exclude))


def list_source(source: str, *, include: Sequence[str] = ("*",), exclude: Sequence[str] = (),
                storage_options: Mapping[str, object] | None = None) -> list[SourceFile]:
    """Every file under ``source`` that the glob filters select, sorted by name.

    Symbolic links and special files are listed too, with ``regular`` False.

    Parameters
    ----------
    source : str
        fsspec URL or local path of a folder or a single file.
    include, exclude : sequence of str
        fnmatch patterns on the name below the root (``bulk.include``/``bulk.exclude``).
    storage_options : mapping, optional
        Passed to the fsspec filesystem.

    Returns
    -------
    list of SourceFile

    Raises
    ------
    SourceError
        The source does not exist or cannot be listed.
    """
    try:
        fs, root = fsspec.core.url_to_fs(source, **dict(storage_options or {}))
        if not fs.exists(root):
            raise SourceError(source, "no such file or folder")
        found = fs.find(root, detail=True)
    except (OSError, ValueError, ImportError) as exc:
        raise SourceError(source, f"cannot list the source ({exc})") from exc
    root = root.rstrip("/")
    given = source.rstrip("/") or source
    files = []
    for path, info in found.items():
        kind = info.get("type", "file")
        if kind == "directory":
            continue
        name = posixpath.basename(path) if path.rstrip("/") == root else posixpath.relpath(path, root)
        if _selected(name, include, exclude):
            regular = kind == "file" and not info.get("islink", False)
            recorded = given if path.rstrip("/") == root else f"{given}/{name}"
            files.append(SourceFile(fs.unstrip_protocol(path), name, int(info.get("size") or 0) if regular else 0,
                                    _mtime(info) if regular else 0.0, regular, recorded))
    return sorted(files, key=lambda f: f.name)


def printable(name: str) -> str:
    """``name`` as the jobs print it: control and format characters and backslashes escaped.

    A file name may hold a newline, a carriage return, a terminal escape or a
    bidirectional override; printed raw it could forge a decision line or hide
    part of one. ``"a\nb.png"`` prints as ``a\\nb.png``.
    """
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")
                   for c in name)


def image_extensions(formats: Sequence[str]) -> frozenset[str]:
    """Lower-case file extensions (with the dot) Pillow registers for ``formats``."""
    formats = known_formats(formats)
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in formats)


def looks_like_image(name: str, prefix: bytes, extensions: frozenset[str]) -> bool:
    """True if a file is named like an image or its first bytes carry any image signature Pillow knows.

    A file this refuses is not an image of any kind and is skipped; a file it
    accepts is decoded, and fails as a ``DecodeError`` row if it is a corrupt
    image, an image in a refused format or a non-image with an image's name.
    """
    if posixpath.splitext(name)[1].lower() in extensions:
        return True
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix[:SIGNATURE_BYTES]) is True:
                return True
        except Exception:  # noqa: BLE001 - a signature check may choke on odd bytes
            continue
    return False


@dataclass(frozen=True)
class SourceImage:
    """One input file read into memory, with the ids the store knows it by.

    Attributes
    ----------
    source : str
        Where it came from: the name given, else the file's fsspec URL
        (``file:///...`` for a local path, as the bulk job's listing names it),
        or ``upload:<digest prefix>`` for bytes handed in without a name.
    data : bytes
        The file's bytes.
    digest : bytes
        Keyed content digest (32 bytes), the exact-duplicate key.
    image_id : str
        32 hex characters: keyed HMAC of the digest and the upload's name (its
        ``upload_id`` when given, else ``source``): the upload's idempotency key.
    upload_id : str or None
        The caller-supplied upload id, if any.
    """

    source: str
    data: bytes
    digest: bytes
    image_id: str
    upload_id: str | None = None


def read_source(key: GroupKey, image: bytes | str | os.PathLike, source: str | None = None,
                upload_id: str | None = None) -> SourceImage:
    """Read an image given as bytes, a local path or an fsspec URL, and derive its ids.

    Parameters
    ----------
    key : GroupKey
    image : bytes, str or path-like
        The content itself, or where to read it from.
    source : str, optional
        Name recorded for the image; by default the path or URL as given (as
        the bulk job names the files it lists), and for bytes ``upload:`` and
        the first 32 hex digits of the keyed digest.
    upload_id : str, optional
        Identifies the upload instead of ``source`` (a caller's request id):
        the same bytes under the same upload id are the same upload.

    Raises
    ------
    OSError
        The file cannot be read.
    """
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        digest = content_digest(key, io.BytesIO(data))
        name = f"upload:{digest.hex()[:32]}" if source is None else source
    else:
        fs, path = fsspec.core.url_to_fs(os.fspath(image))
        name = os.fspath(image) if source is None else source
        with fs.open(path, "rb") as reader:
            data = reader.read()
        digest = content_digest(key, io.BytesIO(data))
    upload = name if upload_id is None else f"upload-id:{upload_id}"
    return SourceImage(name, data, digest, image_id(key, digest, upload), upload_id)
