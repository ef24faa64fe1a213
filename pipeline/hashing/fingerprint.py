"""Fingerprint a batch of image files: decode, thumbnail, hash, quality.

This is the unit of work the jobs map over partitions of a file listing. The
per-file steps (decode, resize to thumbnails) run one file at a time; the maths
(hash, dihedral variants, quality) runs once over the stacked thumbnails. A file
that fails to decode becomes an entry in :attr:`FingerprintBatch.errors` and the
rest of the batch goes on.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from imgdedup.pipeline.errors import DecodeError
from imgdedup.pipeline.hashing.algorithms import HashAlgorithm
from imgdedup.pipeline.hashing.decode import Source, decode
from imgdedup.pipeline.hashing.encoding import Encoding
from imgdedup.pipeline.hashing.quality import quality_batch, quality_thumbnail


@dataclass(frozen=True)
class FingerprintBatch:
    """Fingerprints of the files of one batch that decoded, and the errors of those that did not.

    Attributes
    ----------
    names : list of str
        Name of each fingerprinted file (B entries), in input order.
    indices : ndarray of int64, shape (B,)
        Position of each fingerprinted file in the input sequence.
    hashes : ndarray of uint8, shape (B, bits // 8)
        Packed hashes.
    dihedral : ndarray of uint8, shape (B, 8, bits // 8), or None
        Hashes of the 8 rotations by 90° and mirror images, plain hash in slot 0;
        None when not asked for.
    quality : ndarray of uint8, shape (B,)
        Quality score 0..100 (:mod:`imgdedup.pipeline.hashing.quality`).
    width, height : ndarray of int64, shape (B,)
        Size of each original image in pixels, upright.
    encodings : list of Encoding
        How each file is encoded (format, lossless, JPEG quality, EXIF), B entries.
    errors : list of DecodeError
        One per file that failed, in input order; ``error.subject`` is its name.
    feature_keys : list of ndarray of uint64, or None
        Each fingerprinted file's feature keys
        (:func:`imgdedup.pipeline.hashing.feature_keys.feature_keys`), B arrays;
        None when not asked for.
    """

    names: list[str]
    indices: np.ndarray
    hashes: np.ndarray
    dihedral: np.ndarray | None
    quality: np.ndarray
    width: np.ndarray
    height: np.ndarray
    encodings: list[Encoding]
    errors: list[DecodeError]
    feature_keys: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def image_columns(self) -> dict[str, np.ndarray]:
        """What the batch learnt of each image, as arrays of B values each.

        ``width``, ``height`` (int64, pixels), ``quality`` (uint8, 0-100),
        ``format`` (object, Pillow's names), ``lossless`` (bool),
        ``jpeg_quality`` (uint8, 1-100; 0 for other encodings), ``exif`` (bool):
        the columns :func:`imgdedup.jobs.upload.fingerprint_rows` takes.
        """
        return {
            "width": self.width, "height": self.height, "quality": self.quality,
            "format": np.array([e.format for e in self.encodings], dtype=object),
            "lossless": np.array([e.lossless for e in self.encodings], dtype=bool),
            "jpeg_quality": np.array([e.jpeg_quality for e in self.encodings], dtype=np.uint8),
            "exif": np.array([e.exif for e in self.encodings], dtype=bool),
        }


def fingerprint_batch(
    sources: Sequence[Source],
    algorithm: HashAlgorithm,
    *,
    names: Sequence[str] | None = None,
    dihedral: bool,
    max_pixels: int,
    formats: Iterable[str],
    draft_min_side: int,
    feature_keypoints: int = 0,
) -> FingerprintBatch:
    """Decode and fingerprint a batch of image files.

    Parameters
    ----------
    sources : sequence of path-like or bytes
        The files, or their contents.
    algorithm : HashAlgorithm
        From :func:`imgdedup.pipeline.hashing.algorithms.get_algorithm`.
    names : sequence of str, optional
        What results and errors call each source; paths (or ``"<bytes>"``) by default.
    dihedral : bool
        Also compute the 8 dihedral variants of every hash.
    max_pixels, formats, draft_min_side
        Decoding limits, see :func:`imgdedup.pipeline.hashing.decode.decode`.
    feature_keypoints : int
        Also compute each picture's feature keys from at most this many ORB
        keypoints (``hash.feature_keypoints``); 0: none.

    Returns
    -------
    FingerprintBatch
    """
    if names is None:
        names = ["<bytes>" if isinstance(s, bytes | bytearray) else os.fspath(s) for s in sources]
    if len(names) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(names)} names")
    formats = tuple(formats)
    kept_names, indices, thumbs, quality_thumbs, widths, heights, errors = [], [], [], [], [], [], []
    encodings = []
    keys = [] if feature_keypoints else None
    if keys is not None:
        # OpenCV and the compiled Hamming kernels load only when keys are asked for.
        from imgdedup.pipeline.hashing.feature_keys import feature_keys
    for index, (source, name) in enumerate(zip(sources, names)):
        try:
            decoded = decode(source, name=name, max_pixels=max_pixels, formats=formats,
                             draft_min_side=draft_min_side)
        except DecodeError as exc:
            errors.append(exc)
            continue
        kept_names.append(name)
        indices.append(index)
        thumbs.append(algorithm.thumbnail(decoded.image))
        quality_thumbs.append(quality_thumbnail(decoded.image))
        widths.append(decoded.width)
        heights.append(decoded.height)
        encodings.append(decoded.encoding)
        if keys is not None:
            keys.append(feature_keys(decoded.image, feature_keypoints))

    width = np.array(widths, dtype=np.int64)
    height = np.array(heights, dtype=np.int64)
    if thumbs:
        stacked = np.stack(thumbs)
        if dihedral:
            variants = algorithm.dihedral_batch(stacked)
            hashes = np.ascontiguousarray(variants[:, 0])
        else:
            variants, hashes = None, algorithm.hash_batch(stacked)
        quality = quality_batch(np.stack(quality_thumbs), width * height)
    else:
        hashes = np.zeros((0, algorithm.nbytes), dtype=np.uint8)
        variants = np.zeros((0, 8, algorithm.nbytes), dtype=np.uint8) if dihedral else None
        quality = np.zeros(0, dtype=np.uint8)
    return FingerprintBatch(kept_names, np.array(indices, dtype=np.int64), hashes, variants,
                            quality, width, height, encodings, errors, keys)
