"""Batched two-dimensional DCT-II as matrix products over ``(B, N, N)`` stacks.

Only the low-frequency ``k × k`` corner is ever needed by a hash, so the transform
is ``C[:k] @ X @ C[:k].T`` with the ``N × N`` DCT matrix ``C``: one batched matrix
product, no per-image Python, and ``k / N`` of the work of a full transform.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def dct_matrix(n: int, norm: str | None = "ortho") -> np.ndarray:
    """The ``n × n`` DCT-II matrix ``C`` with ``(C @ x)[u] = Σ_x c(u) x[x] cos(π(2x+1)u / 2n)``.

    Parameters
    ----------
    n : int
        Transform length.
    norm : {"ortho", None}
        ``"ortho"``: ``c(0) = √(1/n)``, ``c(u) = √(2/n)`` — the orthonormal DCT of
        the paper's eq. (3). ``None``: ``c(u) = 2`` for every ``u`` — the unnormalised
        DCT-II of ``scipy.fftpack.dct`` that imagehash's pHash uses.

    Returns
    -------
    ndarray of float64, shape (n, n), read-only
        Row ``u`` is frequency ``u``.
    """
    x = np.arange(n)
    u = np.arange(n)[:, None]
    c = np.cos(np.pi * (2 * x + 1) * u / (2 * n))
    if norm == "ortho":
        c *= np.sqrt(2.0 / n)
        c[0] /= np.sqrt(2.0)
    elif norm is None:
        c *= 2.0
    else:
        raise ValueError(f"norm must be 'ortho' or None, got {norm!r}")
    c.setflags(write=False)
    return c


def dct2_lowfreq(planes: np.ndarray, k: int, norm: str | None = "ortho") -> np.ndarray:
    """Low-frequency corner of the 2-D DCT-II of every plane in a batch.

    Parameters
    ----------
    planes : ndarray of float, shape (..., N, N)
        Rows are the vertical axis ``y``, columns the horizontal axis ``x``.
    k : int
        Side of the kept corner, ``k <= N``.
    norm : {"ortho", None}
        See :func:`dct_matrix`.

    Returns
    -------
    ndarray, shape (..., k, k), dtype of ``planes`` (float32 stays float32)
        ``F[..., u, v]``: ``u`` the vertical, ``v`` the horizontal frequency.
    """
    n = planes.shape[-1]
    if planes.shape[-2] != n or not 0 < k <= n:
        raise ValueError(f"expected square (..., N, N) planes and 0 < k <= N, got {planes.shape}, k={k}")
    c = dct_matrix(n, norm)[:k].astype(planes.dtype, copy=False)
    return c @ planes @ c.T
