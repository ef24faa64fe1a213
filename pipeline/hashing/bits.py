"""Packed-bit helpers: hex conversion and batched Hamming distances.

Every hash in imgdedup is a row of packed bits, ``uint8`` with the first bit in
the most significant position of the first byte (``np.packbits`` order, the order
imagehash prints), so a hash of ``b`` bits is ``b // 8`` bytes. Dihedral sets hold
8 such rows per image, the plain hash in slot 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Pairwise XOR temporaries are (rows, m, nbytes) bytes; this caps them near 32 MiB.
_CHUNK_BYTES = 1 << 25


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack boolean bits along the last axis.

    Parameters
    ----------
    bits : ndarray of bool, shape (..., nbits)
        ``nbits`` a multiple of 8; bit 0 becomes the most significant bit of byte 0.

    Returns
    -------
    ndarray of uint8, shape (..., nbits // 8)
    """
    return np.packbits(np.asarray(bits, dtype=bool), axis=-1)


def to_hex(packed: np.ndarray) -> str | list[str]:
    """Hex of packed hashes: one string for a 1-D row, a list for ``(n, nbytes)`` rows."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if packed.ndim == 1:
        return packed.tobytes().hex()
    if packed.ndim != 2:
        raise ValueError(f"expected (nbytes,) or (n, nbytes) packed bits, got shape {packed.shape}")
    return [row.tobytes().hex() for row in packed]


def from_hex(text: str | Sequence[str]) -> np.ndarray:
    """Packed hashes from hex: ``(nbytes,)`` for one string, ``(n, nbytes)`` for a sequence.

    Raises
    ------
    ValueError
        A string is not hex of whole bytes, or the strings differ in length.
    """
    if isinstance(text, str):
        return np.frombuffer(bytes.fromhex(text), dtype=np.uint8).copy()
    rows = [bytes.fromhex(t) for t in text]
    if len({len(r) for r in rows}) > 1:
        raise ValueError("hex hashes of different lengths")
    if not rows:
        return np.zeros((0, 0), dtype=np.uint8)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), -1).copy()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances between two sets of packed hashes.

    Parameters
    ----------
    a : ndarray of uint8, shape (n, nbytes)
    b : ndarray of uint8, shape (m, nbytes)

    Returns
    -------
    ndarray of int32, shape (n, m)
        Number of differing bits. Work is chunked over ``a`` so the XOR
        temporaries stay near 32 MiB whatever ``n`` and ``m``.
    """
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (n, nbytes) and (m, nbytes) packed bits, got {a.shape} and {b.shape}")
    n, m, nbytes = a.shape[0], b.shape[0], a.shape[1]
    out = np.empty((n, m), dtype=np.int32)
    step = max(1, _CHUNK_BYTES // max(1, m * nbytes))
    for start in range(0, n, step):
        x = np.bitwise_xor(a[start:start + step, None, :], b[None, :, :])
        out[start:start + step] = np.bitwise_count(x).sum(axis=2, dtype=np.int32)
    return out


def paired_distances(forms: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row by row, the smallest Hamming distance over a row's forms to its own target.

    Parameters
    ----------
    forms : ndarray of uint8, shape (m, F, nbytes) or (1, F, nbytes)
        Each row's forms (e.g. its 8 dihedral variants; ``F`` = 1 for the plain
        hash alone); one row of forms is compared with every target.
    targets : ndarray of uint8, shape (m, nbytes)

    Returns
    -------
    ndarray of int64, shape (m,)
        ``min over f of hamming(forms[i, f], targets[i])``.
    """
    targets = np.asarray(targets, dtype=np.uint8)
    if len(targets) == 0:
        return np.zeros(0, np.int64)
    return np.bitwise_count(np.asarray(forms, dtype=np.uint8) ^ targets[:, None, :]).sum(
        axis=-1, dtype=np.int64).min(axis=1)


def dihedral_hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances, minimised over dihedral variants on one side.

    Exactly one of ``a`` and ``b`` carries the variants: either plain query hashes
    against stored dihedral sets, or a query's dihedral set against stored plain
    hashes. Both ask "does some rotation by 90° or mirror image of one match the other".

    Parameters
    ----------
    a : ndarray of uint8, shape (n, nbytes) or (n, k, nbytes)
    b : ndarray of uint8, shape (m, k, nbytes) or (m, nbytes)

    Returns
    -------
    ndarray of int32, shape (n, m)
        ``min over variants v of hamming(a, b[:, v])`` (or of ``a[:, v]`` against ``b``).
    """
    a = np.asarray(a, dtype=np.uint8)
    b = np.asarray(b, dtype=np.uint8)
    if a.ndim == 2 and b.ndim == 3:
        return np.minimum.reduce([hamming(a, b[:, v]) for v in range(b.shape[1])])
    if a.ndim == 3 and b.ndim == 2:
        return np.minimum.reduce([hamming(a[:, v], b) for v in range(a.shape[1])])
    raise ValueError(f"exactly one side must hold dihedral sets (k, nbytes); got {a.shape} and {b.shape}")
