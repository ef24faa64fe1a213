"""LBPH, the LBP-based perceptual hash of the paper (§4.1), and its tuned variant.

Pipeline (paper §4.1, steps 1-4): bilinear resize to ``N × N`` → Gaussian
low-pass → grayscale → circular LBP (R = 1, P = 8, bilinear ring sampling,
eq. 2) → 2-D DCT-II (eq. 3) → low-frequency coefficients → one bit per
coefficient against a threshold (eq. 4). The paper leaves open how the LBP
(texture) and DCT (global) features combine, the threshold details and the
length; :class:`LbphParams` spells each choice out, :data:`PAPER` is the literal
recipe (``lbph-paper``) and :data:`DEFAULT` the variant chosen by the ablation in
``docs/lbph.md`` (``lbph``).

The work splits in two: :func:`lbph_thumbnail` per image (grey conversion and
Pillow's antialiased bilinear resize, ``N²`` floats out) and the batch kernels
:func:`lbph_batch` / :func:`lbph_dihedral_batch` over
``(B, N, N)`` float32 stacks (blur, LBP, DCT and thresholds as array operations,
in float64 inside: at ``32 × 32`` it costs nothing and keeps the rounding of a
picture and of its turned copy ~1e-13 apart, far below any LBP comparison).
The paper resizes before the grey conversion; converting first gives the same
thumbnail up to rounding (both steps are linear) for a third of the resize work.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image

from imgdedup.pipeline.hashing.bits import pack_bits
from imgdedup.pipeline.hashing.borders import border_box
from imgdedup.pipeline.hashing.dct import dct2_lowfreq
from imgdedup.pipeline.hashing.dihedral import dct_stack, dct_turn_each
from imgdedup.pipeline.hashing.lbp import LBP_METHODS, dihedral_code_tables, method_table, ring_bits

PLANES = ("lbp", "gray")
SELECTIONS = ("square", "zigzag")
THRESHOLDS = ("mean", "median")


@dataclass(frozen=True)
class LbphParams:
    """Every choice LBPH makes; see ``docs/lbph.md`` for the measured effect of each.

    The defaults are the paper's literal recipe (:data:`PAPER`).

    Attributes
    ----------
    size : int
        N, the thumbnail side in pixels.
    sigma : float
        Standard deviation of the Gaussian low-pass, in thumbnail pixels (0: none).
    radius, points : float, int
        R and P of the circular LBP.
    method : str
        LBP code, one of ``default``, ``ror``, ``uniform`` (riu2), ``nri_uniform``.
    planes : tuple of str
        Which planes the DCT sees, in hash order: ``"lbp"`` (the LBP code plane)
        and/or ``"gray"`` (the blurred grey thumbnail).
    coeffs : tuple of int
        Coefficients (= bits) taken from each plane's DCT, one count per plane.
    selection : str
        ``square``: the ``√c × √c`` low-frequency corner in row-major order, DC
        included (the paper's 8 × 8 block). ``zigzag``: the ``c`` lowest
        frequencies by ``u + v`` (ties: lower ``u`` first), DC left out.
    threshold : str
        ``mean`` (eq. 4: bit = coefficient ≥ mean) or ``median`` (bit = coefficient
        > median), over the plane's selected coefficients; a coefficient within
        1e-6 of the threshold counts as equal to it (rounding, not content).
    """

    size: int = 32
    sigma: float = 1.0
    radius: float = 1.0
    points: int = 8
    method: str = "default"
    planes: tuple[str, ...] = ("lbp",)
    coeffs: tuple[int, ...] = (64,)
    selection: str = "square"
    threshold: str = "mean"

    def __post_init__(self):
        checks = [
            (self.method in LBP_METHODS, f"method must be one of {LBP_METHODS}"),
            (bool(self.planes) and set(self.planes) <= set(PLANES) and len(set(self.planes)) == len(self.planes),
             f"planes must be distinct names from {PLANES}"),
            (self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}"),
            (self.threshold in THRESHOLDS, f"threshold must be one of {THRESHOLDS}"),
            (len(self.coeffs) == len(self.planes) and min(self.coeffs) > 0,
             "coeffs needs one positive count per plane"),
            (self.bits % 8 == 0, "the coefficient counts must add up to a multiple of 8"),
            (self.selection != "square" or all(round(np.sqrt(c)) ** 2 == c for c in self.coeffs),
             "a square selection needs square numbers of coefficients"),
            (self.sigma >= 0 and self.size >= 8, "need sigma >= 0 and size >= 8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; got {self}")
        if self.corner > self.size:
            raise ValueError(f"{self.coeffs} coefficients do not fit a {self.size}-point DCT")

    @property
    def bits(self) -> int:
        """Hash length."""
        return sum(self.coeffs)

    @property
    def corner(self) -> int:
        """Side of the low-frequency DCT corner that holds every selected coefficient."""
        return max(_positions(c, self.selection)[2] for c in self.coeffs)


@lru_cache(maxsize=64)
def _positions(coeffs: int, selection: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Row and column indices of the selected coefficients, and the corner side they need."""
    if selection == "square":
        k = round(np.sqrt(coeffs))
        u, v = np.divmod(np.arange(k * k), k)
        return u, v, k
    k = 1
    while k * (k + 1) // 2 - 1 < coeffs:
        k += 1
    u, v = np.divmod(np.arange(k * k), k)
    order = np.lexsort((u, u + v))
    order = order[1:coeffs + 1]  # order[0] is the DC term
    return u[order], v[order], k


# The paper's literal recipe: DCT of the default-code LBP plane, 8 × 8 corner with DC,
# bit = coefficient ≥ mean; σ = 1 as the paper gives none.
PAPER = LbphParams()
# The variant chosen by the ablation (docs/lbph.md).
DEFAULT = LbphParams(sigma=2.0, method="default", planes=("lbp", "gray"), coeffs=(160, 96),
                     selection="zigzag", threshold="median")


# Coefficients equal in exact arithmetic (every AC term of a flat plane is 0, mirrored
# terms of a symmetric picture are equal) differ only by rounding, ~1e-12 here, and that
# rounding differs between a form hashed from turned pixels and one turned in the DCT
# domain. Comparing with this margin makes such ties fall the same way in both, so the
# dihedral forms stay exact on flat, gradient and symmetric pictures too.
_TIE_TOLERANCE = 1e-6

# Bytes of float64 intermediates per kernel chunk: well inside a core's L2 cache.
_CHUNK_BYTES = 1 << 20


@lru_cache(maxsize=16)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """``n × n`` matrix ``G`` with ``G @ x`` the 1-D Gaussian blur of ``x``, mirrored borders."""
    radius = max(1, int(np.ceil(4 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    g = np.zeros((n, n))
    for offset, weight in zip(range(-radius, radius + 1), taps):
        # half-sample symmetric reflection (d c b a | a b c d), as scipy.ndimage's "reflect"
        j = (np.arange(n) + offset) % (2 * n)
        j = np.where(j < n, j, 2 * n - 1 - j)
        np.add.at(g, (np.arange(n), j), weight)
    g.setflags(write=False)
    return g


def lbph_thumbnail(image: Image.Image, size: int = 32, trim_borders: bool = False) -> np.ndarray:
    """Bilinear ``size × size`` grey thumbnail of an RGB picture (paper §4.1 step 1).

    The grey conversion (BT.601 luma, in floating point) comes first and the
    antialiased bilinear resize runs on the float image: both are linear, so the
    order does not matter, and no rounding between Pillow's horizontal and
    vertical passes means a picture turned by 90° gives the turned thumbnail to
    ~1e-5 — its dihedral hash matches exactly.

    Parameters
    ----------
    image : PIL.Image.Image
        Mode ``"RGB"``, orientation already applied.
    size : int
        N.
    trim_borders : bool
        Resize only the picture inside uniform borders and letterbox bars
        (:func:`imgdedup.pipeline.hashing.borders.border_box`), so a padded copy
        gives the thumbnail of its original.

    Returns
    -------
    ndarray of float32, shape (size, size)
        Grey levels in [0, 255].
    """
    grey = image.convert("F")
    if trim_borders:
        box = border_box(grey)
        if box != (0, 0, grey.width, grey.height):
            # crop, not resize(box=...): Pillow's filter would still read the border beyond the box
            grey = grey.crop(box)
    return np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _blur(thumbs: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return thumbs
    g = _gaussian_matrix(thumbs.shape[-1], float(sigma))
    return g @ thumbs @ g.T


def _hash_bits(blocks: np.ndarray, params: LbphParams) -> np.ndarray:
    """``(..., P, k, k)`` DCT corners of the planes → ``(..., bits)`` bool, plane after plane."""
    k = blocks.shape[-1]
    corners = blocks.reshape(*blocks.shape[:-3], blocks.shape[-3] * k * k)
    out = np.empty(blocks.shape[:-3] + (params.bits,), dtype=bool)
    start = 0
    for plane, count in enumerate(params.coeffs):
        u, v, _ = _positions(count, params.selection)
        chosen = np.take(corners, (plane * k + u) * k + v, axis=-1)
        bits = out[..., start:start + count]
        if params.threshold == "mean":
            np.greater_equal(chosen, chosen.mean(axis=-1, keepdims=True) - _TIE_TOLERANCE, out=bits)
        else:
            # np.median's value; a plain sort of these short rows is faster than its partition
            ordered = np.sort(chosen, axis=-1)
            median = (ordered[..., (count - 1) // 2] + ordered[..., count // 2]) / 2
            np.greater(chosen, median[..., None] + _TIE_TOLERANCE, out=bits)
        start += count
    return out


def _plane_blocks(thumbs: np.ndarray, params: LbphParams, dihedral: bool) -> np.ndarray:
    """DCT corners of the planes the hash reads.

    Returns ``(B, P, k, k)``, or ``(B, 8, P, k, k)`` for the 8 dihedral forms.
    """
    k = params.corner
    gray = _blur(np.asarray(thumbs, dtype=np.float64), params.sigma)
    codes = ring_bits(gray, params.radius, params.points) if "lbp" in params.planes else None
    blocks = []
    for plane in params.planes:
        if plane == "gray":
            block = dct2_lowfreq(gray, k)
            blocks.append(dct_stack(block) if dihedral else block)
        elif not dihedral:
            blocks.append(dct2_lowfreq(method_table(params.method, params.points)[codes], k))
        elif params.method == "uniform":
            # riu2 codes do not see how the ring is turned: the plane turns with the picture
            blocks.append(dct_stack(dct2_lowfreq(method_table("uniform", params.points)[codes], k)))
        else:
            # Other codes change when the picture turns: relabel the ring for each form
            # (its points are permuted), then turn the relabelled plane's DCT.
            blocks.append(dct_turn_each(_relabelled_blocks(codes, params, k)))
    return np.stack(blocks, axis=-3)


def _relabelled_blocks(codes: np.ndarray, params: LbphParams, k: int) -> np.ndarray:
    """DCT corners of the code plane relabelled for each dihedral form, ``(B, 8, k, k)``, unturned."""
    # (8, 2**P): default code of a ring -> method code of the same ring in form s
    table = method_table(params.method, params.points)[dihedral_code_tables(params.points)]
    return dct2_lowfreq(np.moveaxis(np.take(table, codes, axis=1), 0, 1), k)


def _hashes_in_chunks(thumbs: np.ndarray, params: LbphParams, dihedral: bool) -> np.ndarray:
    """Packed hashes of a batch, a few thumbnails at a time.

    Each image's float64 intermediates (eight relabelled code planes and their
    DCTs for the dihedral forms, ~64 kB at N = 32) are visited a dozen times;
    in chunks of ~1 MB they stay in the CPU cache instead of streaming through
    memory on every pass, which takes a third off the time of a large batch.
    Every image is computed alone, so the chunking changes no bit.
    """
    chunk = max(1, _CHUNK_BYTES // (64 * params.size * params.size))
    parts = [pack_bits(_hash_bits(_plane_blocks(thumbs[start:start + chunk], params, dihedral), params))
             for start in range(0, max(len(thumbs), 1), chunk)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def lbph_batch(thumbs: np.ndarray, params: LbphParams = DEFAULT) -> np.ndarray:
    """LBPH of a batch of thumbnails.

    Parameters
    ----------
    thumbs : ndarray of float32, shape (B, N, N)
        From :func:`lbph_thumbnail` with ``N = params.size``.
    params : LbphParams

    Returns
    -------
    ndarray of uint8, shape (B, params.bits // 8)
        Packed bits, plane by plane in ``params.planes`` order.
    """
    return _hashes_in_chunks(thumbs, params, dihedral=False)


def lbph_dihedral_batch(thumbs: np.ndarray, params: LbphParams = DEFAULT) -> np.ndarray:
    """LBPH of the 8 rotations by 90° and mirror images, from one pass over the batch.

    The grey plane's and the riu2 plane's DCT corners are turned in the DCT
    domain (:func:`imgdedup.pipeline.hashing.dihedral.dct_stack`); other LBP codes are
    relabelled by their ring permutation (:func:`imgdedup.pipeline.hashing.lbp.dihedral_code_tables`).
    Each form is thresholded by its own mean or median.

    Returns
    -------
    ndarray of uint8, shape (B, 8, params.bits // 8)
        Slot order of :mod:`imgdedup.pipeline.hashing.dihedral`; slot 0 is :func:`lbph_batch`.
    """
    return _hashes_in_chunks(thumbs, params, dihedral=True)


def lbph(image: Image.Image, *, size: int = 32, radius: float = 1.0, points: int = 8,
         bits: int = 256, trim_borders: bool = True) -> np.ndarray:
    """LBPH of one picture with the default variant (paper §4.1, eqs. 2-4).

    Parameters
    ----------
    image : PIL.Image.Image
        Mode ``"RGB"``, orientation already applied.
    size, radius, points : int, float, int
        N, R and P.
    bits : {64, 128, 256}
        Hash length; the coefficients per plane scale with it.
    trim_borders : bool
        Leave uniform borders and letterbox bars out (see :func:`lbph_thumbnail`).

    Returns
    -------
    ndarray of uint8, shape (bits // 8,)

    Examples
    --------
    >>> from PIL import Image
    >>> lbph(Image.new("RGB", (64, 48), "white")).shape
    (32,)
    """
    params = default_params(size=size, bits=bits, radius=radius, points=points)
    return lbph_batch(lbph_thumbnail(image, size, trim_borders)[None], params)[0]


def default_params(*, size: int = 32, bits: int = 256, **overrides) -> LbphParams:
    """:data:`DEFAULT` at another thumbnail side or length (its planes keep their share of the bits)."""
    coeffs = tuple(c * bits // DEFAULT.bits for c in DEFAULT.coeffs)
    return replace(DEFAULT, size=size, coeffs=coeffs, **overrides)
