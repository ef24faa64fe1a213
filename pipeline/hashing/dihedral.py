"""The 8 dihedral forms of a picture (rotations by 90° and mirror images).

Slot order, used by every dihedral set in imgdedup (slot 0 is the plain hash):

====  ==============================================
slot  transform applied to the picture
====  ==============================================
0     identity
1     rotate 90° counter-clockwise (PIL ``ROTATE_90``)
2     rotate 180°
3     rotate 270° counter-clockwise
4     mirror left-right (PIL ``FLIP_LEFT_RIGHT``)
5     mirror, then rotate 90°
6     mirror, then rotate 180° (= flip top-bottom)
7     mirror, then rotate 270°
====  ==============================================

The same transforms act on DCT coefficients without touching pixels: mirroring
the columns of an ``N × N`` plane multiplies ``F[u, v]`` by ``(-1)**v``, mirroring
its rows by ``(-1)**u``, and transposing the plane transposes ``F``. So the 8
variants of a DCT hash come from the one low-frequency block already computed.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270",
                  "mirror", "mirror_rot90", "mirror_rot180", "mirror_rot270")

_Op = Callable[[np.ndarray], np.ndarray]


def _variants(x: np.ndarray, flip_rows: _Op, flip_cols: _Op) -> list[np.ndarray]:
    """The 8 forms of ``x`` in slot order, built from the three primitives."""
    out = []
    for mirrored in (False, True):
        y = flip_cols(x) if mirrored else x
        for _ in range(4):
            out.append(y)
            # counter-clockwise quarter turn = transpose, then flip rows (np.rot90)
            y = flip_rows(np.swapaxes(y, -1, -2))
    return out


def spatial_variants(planes: np.ndarray) -> list[np.ndarray]:
    """The 8 dihedral forms of pictures stored as ``(..., H, W)`` arrays (``H != W`` allowed).

    Returns
    -------
    list of 8 ndarray
        Slot order of the module docstring; odd slots have shape ``(..., W, H)``.
    """
    return _variants(planes, lambda a: a[..., ::-1, :], lambda a: a[..., :, ::-1])


def spatial_stack(planes: np.ndarray) -> np.ndarray:
    """``(B, N, N)`` square planes → ``(B, 8, N, N)`` dihedral forms in slot order."""
    return np.stack(spatial_variants(planes), axis=1)


def dct_stack(coeffs: np.ndarray) -> np.ndarray:
    """DCT blocks of the 8 dihedral forms of a plane, from the plane's own block.

    Parameters
    ----------
    coeffs : ndarray, shape (B, k, k)
        Low-frequency corner ``F[u, v]`` of each plane's 2-D DCT-II (any length ``N >= k``).

    Returns
    -------
    ndarray, shape (B, 8, k, k)
        Slot ``s`` holds the corner of the DCT of the plane transformed as slot ``s``
        says — exactly, up to floating-point rounding.
    """
    k = coeffs.shape[-1]
    sign = np.where(np.arange(k) % 2 == 0, 1, -1).astype(coeffs.dtype)
    return np.stack(_variants(coeffs, lambda a: a * sign[:, None], lambda a: a * sign), axis=1)
