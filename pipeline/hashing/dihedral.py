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
from functools import lru_cache

import numpy as np

DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270",
                  "mirror", "mirror_rot90", "mirror_rot180", "mirror_rot270")

_Op = Callable[[np.ndarray], np.ndarray]


def _transform(x: np.ndarray, slot: int, flip_rows: _Op, flip_cols: _Op) -> np.ndarray:
    """``x`` transformed as ``slot`` says, built from the three primitives."""
    y = flip_cols(x) if slot >= 4 else x
    for _ in range(slot % 4):
        # counter-clockwise quarter turn = transpose, then flip rows (np.rot90)
        y = flip_rows(np.swapaxes(y, -1, -2))
    return y


def _variants(x: np.ndarray, flip_rows: _Op, flip_cols: _Op) -> list[np.ndarray]:
    """The 8 forms of ``x`` in slot order."""
    return [_transform(x, slot, flip_rows, flip_cols) for slot in range(8)]


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


def _dct_ops(k: int, dtype) -> tuple[_Op, _Op]:
    sign = np.where(np.arange(k) % 2 == 0, 1, -1).astype(dtype)
    return (lambda a: a * sign[:, None]), (lambda a: a * sign)


@lru_cache(maxsize=16)
def _dct_signs(k: int) -> np.ndarray:
    """``(8, k, k)`` ±1: slot ``s`` of a block is ``signs[s] * F`` (even slots) or ``signs[s] * F.T`` (odd).

    Each slot's transform is a transpose or none, and sign flips; composed once
    here, it is applied in one multiplication, which leaves every value as exact
    as the flips one at a time (a product with ±1 rounds nothing).
    """
    ones = np.ones((k, k))
    signs = np.stack([_transform(ones, slot, *_dct_ops(k, ones.dtype)) for slot in range(8)])
    signs.setflags(write=False)
    return signs


def _turned(coeffs: np.ndarray, slot: int, out: np.ndarray) -> None:
    """Write DCT block(s) ``coeffs`` ``(..., k, k)`` turned as ``slot`` says into ``out``."""
    k = coeffs.shape[-1]
    np.multiply(np.swapaxes(coeffs, -1, -2) if slot % 2 else coeffs, _dct_signs(k)[slot], out=out)


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
    out = np.empty((coeffs.shape[0], 8) + coeffs.shape[1:], dtype=coeffs.dtype)
    for slot in range(8):
        _turned(coeffs, slot, out[:, slot])
    return out


def dct_turn_each(coeffs: np.ndarray) -> np.ndarray:
    """Turn slot ``s`` of a stack of DCT blocks by dihedral transform ``s``.

    For planes whose content itself depends on the slot (LBP codes relabelled for
    each form) before they are turned.

    Parameters
    ----------
    coeffs : ndarray, shape (B, 8, k, k)

    Returns
    -------
    ndarray, shape (B, 8, k, k)
        ``out[:, s]`` is the DCT corner of the plane of ``coeffs[:, s]`` transformed as slot ``s`` says.
    """
    out = np.empty_like(coeffs)
    for slot in range(8):
        _turned(coeffs[:, slot], slot, out[:, slot])
    return out
