"""Key-holding steps of ingest for one image at a time: read and derive ids, key dihedral forms.

Client side: everything here needs the group key. The bulk job reads files on
Dask workers and seals every blob up front (``jobs/partition.py``); ingest also
takes bytes handed in by a service and decides before it seals, so it reads
through :func:`read_source`, then seals blobs and builds rows with the bulk
job's own functions.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import fsspec
import numpy as np

from imgdedup.pipeline.crypto.digest import content_digest, image_id
from imgdedup.pipeline.crypto.fingerprint import tokens
from imgdedup.pipeline.crypto.keys import GroupKey


@dataclass(frozen=True)
class SourceImage:
    """One input file read into memory, with the ids the store knows it by.

    Attributes
    ----------
    source : str
        Where it came from: the path or URL as given, or ``upload:<digest prefix>``
        for bytes handed in without a name.
    data : bytes
        The file's bytes.
    digest : bytes
        Keyed content digest (32 bytes), the exact-duplicate and idempotency key.
    image_id : str
        32 hex characters: keyed HMAC of digest and source.
    """

    source: str
    data: bytes
    digest: bytes
    image_id: str


def read_source(key: GroupKey, image: bytes | str | os.PathLike, source: str | None = None) -> SourceImage:
    """Read an image given as bytes, a local path or an fsspec URL, and derive its ids.

    Parameters
    ----------
    key : GroupKey
    image : bytes, str or path-like
        The content itself, or where to read it from.
    source : str, optional
        Name recorded for the image; the path or URL by default, and for bytes
        ``upload:`` and the first 32 hex digits of the keyed digest.

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
        name = os.fspath(image) if source is None else source
        with fsspec.open(os.fspath(image), "rb") as reader:
            data = reader.read()
        digest = content_digest(key, io.BytesIO(data))
    return SourceImage(name, data, digest, image_id(key, digest, name))


def dihedral_tokens(key: GroupKey, dihedral: np.ndarray) -> np.ndarray:
    """Keyed tokens of each image's 8 dihedral hashes: (B, 8, nbytes) uint8 → same shape."""
    b, forms, nbytes = dihedral.shape
    return tokens(key, dihedral.reshape(b * forms, nbytes)).reshape(b, forms, nbytes)

