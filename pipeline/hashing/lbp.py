"""Circular local binary patterns over a batch of planes, and their dihedral symmetry.

The circular operator of Ojala et al. as the paper's §4.1 step 2 describes it:
``P`` points on a circle of radius ``R`` around every pixel, the grey level at
each read by bilinear interpolation (eq. 2), bit ``p`` set when the point is at
least as bright as the centre. Vectorised over a ``(B, N, N)`` stack: each ring
point is four shifted slices of the edge-padded stack, so there is no per-pixel
or per-image Python.

Methods (names as in ``skimage.feature.local_binary_pattern``):

- ``default``: the code ``Σ s_p 2**p`` in ``[0, 2**P)``.
- ``ror``: the smallest value of the code over circular bit rotations
  (rotation invariant).
- ``uniform``: Ojala's riu2 code — the number of set bits when the ring has at
  most two 0/1 transitions, else ``P + 1``; values ``[0, P + 1]``. It depends on
  the ring's bits only up to rotation and reflection of the ring, so for
  ``P % 4 == 0`` the riu2 plane of a picture turned by 90° or mirrored is the
  turned or mirrored plane: LBPH's dihedral forms then come from one DCT.
- ``nri_uniform``: non-rotation-invariant uniform codes, ``P (P - 1) + 3`` labels.

Codes equal skimage's for the same grey levels (checked in the tests).

Whatever the method, turning the picture permutes the ring (a quarter turn
shifts it by ``P / 4`` points, a mirror reverses it), so the codes of all 8
dihedral forms follow from the ``default`` codes of the plain picture by a
lookup table: :func:`dihedral_code_tables`.

References
----------
T. Ojala, M. Pietikäinen, T. Mäenpää, "Multiresolution gray-scale and rotation
invariant texture classification with local binary patterns", IEEE TPAMI 24(7), 2002.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

LBP_METHODS = ("default", "ror", "uniform", "nri_uniform")

# A ring point counts as "at least the centre" within this many grey levels
# (of 255), so bilinear rounding in flat areas (~1e-5) cannot flip bits and
# break the exact symmetry between a picture and its turned copy.
_EQUAL_TOLERANCE = 1e-3


def ring_bits(planes: np.ndarray, radius: float = 1.0, points: int = 8) -> np.ndarray:
    """Default LBP codes of every pixel of every plane.

    Parameters
    ----------
    planes : ndarray of float, shape (B, N, N)
        Grey levels; rows are ``y`` (downwards), columns ``x``.
    radius : float
        R, the ring radius in pixels.
    points : int
        P, the number of ring points (at most 16 so codes fit uint16).

    Returns
    -------
    ndarray of uint16, shape (B, N, N)
        ``Σ_p s_p 2**p``; point ``p`` sits at ``(x + R cos(2πp/P), y - R sin(2πp/P))``
        (eq. 2: counter-clockwise from the right), borders replicated.
    """
    if not 1 <= points <= 16 or radius <= 0:
        raise ValueError(f"need 1 <= points <= 16 and radius > 0, got P={points}, R={radius}")
    b, h, w = planes.shape
    pad = int(np.ceil(radius)) + 1
    padded = _edge_padded(planes, pad)
    codes = np.zeros((b, h, w), dtype=np.uint16)
    value, term = np.empty((b, h, w)), np.empty((b, h, w))
    at_least, bit = np.empty((b, h, w), dtype=bool), np.empty((b, h, w), dtype=np.uint16)

    def window(oy: int, ox: int) -> np.ndarray:
        return padded[:, pad + oy:pad + oy + h, pad + ox:pad + ox + w]

    for p, terms in enumerate(_ring_terms(float(radius), points)):
        # Σ weight · window, left to right; a point on an axis reads one pixel with weight 1
        (weight, oy, ox), *rest = terms
        np.multiply(window(oy, ox), weight, out=value)
        for weight, oy, ox in rest:
            value += np.multiply(window(oy, ox), weight, out=term)
        value -= planes
        np.greater_equal(value, -_EQUAL_TOLERANCE, out=at_least)
        np.copyto(bit, at_least)
        bit <<= p
        codes |= bit
    return codes


@lru_cache(maxsize=16)
def _ring_terms(radius: float, points: int) -> tuple[tuple[tuple[np.float64, int, int], ...], ...]:
    """Bilinear terms ``(weight, dy, dx)`` of each ring point (eq. 2), terms of zero weight left out.

    Weights stay NumPy float64 scalars, so float32 planes are interpolated in float64 as well.
    """
    angles = 2 * np.pi * np.arange(points) / points
    # Offsets within 1e-9 of an integer are snapped so axis points read one pixel.
    dx = np.round(radius * np.cos(angles), 9)
    dy = np.round(-radius * np.sin(angles), 9)
    rings = []
    for p in range(points):
        x0, y0 = int(np.floor(dx[p])), int(np.floor(dy[p]))
        fx, fy = dx[p] - x0, dy[p] - y0
        corners = (((1 - fy) * (1 - fx), y0, x0), ((1 - fy) * fx, y0, x0 + 1),
                   (fy * (1 - fx), y0 + 1, x0), (fy * fx, y0 + 1, x0 + 1))
        rings.append(tuple((weight, oy, ox) for weight, oy, ox in corners if weight > 0))
    return tuple(rings)


def _edge_padded(planes: np.ndarray, pad: int) -> np.ndarray:
    """``planes`` with ``pad`` pixels of replicated border on each side (``np.pad``'s ``edge``, faster)."""
    b, h, w = planes.shape
    out = np.empty((b, h + 2 * pad, w + 2 * pad), dtype=planes.dtype)
    out[:, pad:pad + h, pad:pad + w] = planes
    out[:, :pad, pad:pad + w] = planes[:, :1]
    out[:, pad + h:, pad:pad + w] = planes[:, -1:]
    out[:, :, :pad] = out[:, :, pad:pad + 1]
    out[:, :, pad + w:] = out[:, :, pad + w - 1:pad + w]
    return out


@lru_cache(maxsize=16)
def method_table(method: str, points: int = 8) -> np.ndarray:
    """Lookup table ``default code → method code``, shape ``(2**P,)`` float64."""
    codes = np.arange(2 ** points)
    bits = (codes[:, None] >> np.arange(points)) & 1
    if method == "default":
        out = codes
    elif method == "ror":
        rotations = [((codes >> r) | (codes << (points - r))) & (2 ** points - 1) for r in range(points)]
        out = np.min(rotations, axis=0)
    elif method in ("uniform", "nri_uniform"):
        transitions = (bits != np.roll(bits, 1, axis=1)).sum(axis=1)
        ones = bits.sum(axis=1)
        if method == "uniform":
            out = np.where(transitions <= 2, ones, points + 1)
        else:
            # skimage's labels: 0 all clear, 1 + (ones - 1) P + (P - start) % P for a
            # run of ones starting at ring point `start`, P (P - 1) + 1 all set,
            # P (P - 1) + 2 not uniform.
            start = np.argmax(bits & (1 - np.roll(bits, 1, axis=1)), axis=1)
            out = 1 + (ones - 1) * points + (points - start) % points
            out = np.where(ones == 0, 0, np.where(ones == points, points * (points - 1) + 1, out))
            out = np.where(transitions <= 2, out, points * (points - 1) + 2)
    else:
        raise ValueError(f"LBP method must be one of {LBP_METHODS}, got {method!r}")
    table = out.astype(np.float64)
    table.setflags(write=False)
    return table


def local_binary_pattern(planes: np.ndarray, radius: float = 1.0, points: int = 8,
                         method: str = "uniform") -> np.ndarray:
    """LBP planes of a batch, ``(B, N, N)`` float → ``(B, N, N)`` float64 codes.

    See the module docstring for ``method``.
    """
    return method_table(method, points)[ring_bits(planes, radius, points)]


@lru_cache(maxsize=4)
def dihedral_code_tables(points: int = 8) -> np.ndarray:
    """Ring permutations of the 8 dihedral forms, as code lookup tables.

    Returns
    -------
    ndarray of int64, shape (8, 2**P)
        Row ``s``: the default code a ring takes at the matching pixel of the
        picture transformed as slot ``s`` of :mod:`imgdedup.pipeline.hashing.dihedral` says.
        Requires ``P % 4 == 0`` (a quarter turn maps the ring onto itself).
    """
    if points % 4:
        raise ValueError(f"dihedral forms of an LBP ring need P divisible by 4, got {points}")
    codes = np.arange(2 ** points)
    bits = (codes[:, None] >> np.arange(points)) & 1
    quarter = points // 4
    mirrored = bits[:, (points // 2 - np.arange(points)) % points]  # angle θ → π - θ
    tables = []
    for ring in (bits, mirrored):
        for turn in range(4):
            # a counter-clockwise quarter turn carries point p to p + P/4
            turned = np.roll(ring, turn * quarter, axis=1)
            tables.append((turned << np.arange(points)).sum(axis=1))
    return np.stack(tables)
