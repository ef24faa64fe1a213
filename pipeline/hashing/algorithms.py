"""The hash algorithms behind one interface, looked up by name.

Every algorithm is split in two so batches run fast: :meth:`HashAlgorithm.thumbnail`
does the little per-image work (Pillow resize of an already-decoded RGB image to
a small float array) and the batch kernels do the maths over a stack of
thumbnails at once, returning packed bits (:mod:`imgdedup.pipeline.hashing.bits`).

>>> algo = get_algorithm("phash")
>>> thumbs = np.stack([algo.thumbnail(im) for im in images])   # doctest: +SKIP
>>> algo.hash_batch(thumbs)            # (B, 8) uint8             # doctest: +SKIP
>>> algo.dihedral_batch(thumbs)        # (B, 8, 8) uint8, slot 0 plain   # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
from PIL import Image

from imgdedup.pipeline.errors import ConfigError
from imgdedup.pipeline.hashing import baselines
from imgdedup.pipeline.hashing.lbph import (PAPER, LbphParams, default_params, lbph_batch, lbph_dihedral_batch,
                                            lbph_thumbnail)

ALGORITHMS = ("lbph", "lbph-paper", "phash", "ahash", "dhash")
LBPH_BITS = (64, 128, 256)


@dataclass(frozen=True)
class HashAlgorithm:
    """A perceptual hash as a thumbnail step and two batch kernels.

    Attributes
    ----------
    name : str
        One of :data:`ALGORITHMS`.
    bits : int
        Hash length; packed hashes are ``bits // 8`` bytes.
    thumb_shape : tuple of int
        Shape of one :meth:`thumbnail` array; batches are ``(B, *thumb_shape)``.
    """

    name: str
    bits: int
    thumb_shape: tuple[int, ...]
    _thumbnail: Callable[[Image.Image], np.ndarray] = field(repr=False, compare=False)
    _hash: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)
    _dihedral: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        """Bytes per packed hash."""
        return self.bits // 8

    def thumbnail(self, image: Image.Image) -> np.ndarray:
        """Per-image input of the batch kernels.

        Parameters
        ----------
        image : PIL.Image.Image
            Decoded picture, EXIF orientation applied, mode ``"RGB"``.

        Returns
        -------
        ndarray of float32, shape ``thumb_shape``
            Gray levels in [0, 255].
        """
        return self._thumbnail(image)

    def hash_batch(self, thumbs: np.ndarray) -> np.ndarray:
        """Packed hashes, ``(B, *thumb_shape)`` float32 → ``(B, bits // 8)`` uint8."""
        return self._hash(np.asarray(thumbs, dtype=np.float32))

    def dihedral_batch(self, thumbs: np.ndarray) -> np.ndarray:
        """Hashes of the 8 rotations by 90° and mirror images, ``(B, 8, bits // 8)`` uint8.

        Slot order is that of :mod:`imgdedup.pipeline.hashing.dihedral`; slot 0 equals
        :meth:`hash_batch`.
        """
        return self._dihedral(np.asarray(thumbs, dtype=np.float32))

    def hash_image(self, image: Image.Image) -> np.ndarray:
        """Packed hash of one RGB image, shape ``(bits // 8,)`` uint8."""
        return self.hash_batch(self.thumbnail(image)[None])[0]


def _baseline(name: str) -> HashAlgorithm:
    if name == "ahash":
        return HashAlgorithm(name, 64, (8, 8), baselines.ahash_thumbnail,
                             baselines.ahash_batch, baselines.ahash_dihedral_batch)
    if name == "phash":
        return HashAlgorithm(name, 64, (32, 32), baselines.phash_thumbnail,
                             baselines.phash_batch, baselines.phash_dihedral_batch)
    return HashAlgorithm(name, 64, (2, 8, 9), baselines.dhash_thumbnail,
                         baselines.dhash_batch, baselines.dhash_dihedral_batch)


def lbph_algorithm(name: str, params: LbphParams, *, trim_borders: bool = False) -> HashAlgorithm:
    """An LBPH variant behind the common interface (the ablation builds its grid with it).

    ``trim_borders``: the thumbnail step leaves out uniform borders and letterbox
    bars (:mod:`imgdedup.pipeline.hashing.borders`).
    """
    return HashAlgorithm(name, params.bits, (params.size, params.size),
                         partial(lbph_thumbnail, size=params.size, trim_borders=trim_borders),
                         partial(lbph_batch, params=params), partial(lbph_dihedral_batch, params=params))


def get_algorithm(name: str, *, size: int = 32, bits: int = 256, trim_borders: bool = True) -> HashAlgorithm:
    """The hash algorithm called ``name``.

    Parameters
    ----------
    name : {"lbph", "lbph-paper", "phash", "ahash", "dhash"}
    size : int
        N, the LBPH thumbnail side (paper §4.1 step 1). The baselines use
        imagehash's fixed sizes and ignore it.
    bits : int
        Hash length of ``lbph``: 64, 128 or 256. ``lbph-paper`` and the baselines
        have a fixed length of 64 bits by definition and ignore it, as
        ``conf/default.toml`` documents, so switching ``hash.algo`` alone works.
    trim_borders : bool
        ``lbph`` and ``lbph-paper`` hash only the picture inside uniform borders
        and letterbox bars (``hash.trim_borders``). The baselines reproduce
        ``imagehash`` and ignore it.

    Raises
    ------
    ConfigError
        Unknown name, a length the algorithm does not produce, or a thumbnail
        side too small for the DCT corner LBPH reads.
    """
    if name in ("ahash", "phash", "dhash"):
        return _baseline(name)
    if name == "lbph" and bits not in LBPH_BITS:
        raise ConfigError(f"hash.bits={bits}", f"lbph produces {', '.join(map(str, LBPH_BITS))} bits")
    if name in ("lbph", "lbph-paper"):
        try:
            params = replace(PAPER, size=size) if name == "lbph-paper" else default_params(size=size, bits=bits)
        except ValueError as exc:  # e.g. a thumbnail too small for the DCT corner the hash reads
            raise ConfigError(f"hash.size={size}", str(exc)) from None
        return lbph_algorithm(name, params, trim_borders=trim_borders)
    raise ConfigError(f"hash.algo={name}", f"unknown hash algorithm; known: {', '.join(ALGORITHMS)}")
