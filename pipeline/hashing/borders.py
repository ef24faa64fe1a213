"""Uniform borders and letterbox bars: found so the hash reads only the picture inside them.

A copy padded to a square, framed, or letterboxed shares its picture with the
original but not its thumbnail: at 32 × 32 a white frame is most of the low
frequencies, so padded copies of *different* photos end up closer to each
other (56-66 bits of 256) than to their own originals. :func:`border_box`
finds the frame and LBPH's thumbnail step resizes only what lies inside it.

A side's border is the run of outermost lines (rows for top and bottom,
columns for left and right) that are *flat*: at least :data:`COVERAGE` of a
line's pixels within :data:`TOLERANCE` grey levels of the side's colour, the
median of its outermost line. Each side has its own colour (white padding,
black bars, any flat colour). The rule treats rows and columns alike and reads
nothing but pixel values, so the box of a picture turned by 90° or mirrored is
the turned or mirrored box and dihedral matching stays exact. A picture that
would keep less than :data:`MIN_KEPT` of a side (a flat picture, a tiny
subject on a blank canvas) is left whole.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# Grey levels (of 255) a border pixel may differ from the side's colour: JPEG at
# quality 30-90 keeps a flat area within ~±4, and the ringing next to the
# picture's edge stays within a block, so a frame is found up to a few pixels.
TOLERANCE = 10.0
# Share of a line's pixels that must be within the tolerance: a few noisy or
# ringing pixels (corners of JPEG blocks at the picture's edge) do not end the border.
COVERAGE = 0.97
# Largest share of a side's length one border may take (a 2:1 panorama padded
# to a square has bars of a quarter each), and smallest share of each side
# the picture inside must keep, else nothing is trimmed.
MAX_BORDER = 0.45
MIN_KEPT = 0.2


def border_box(grey: Image.Image) -> tuple[int, int, int, int]:
    """The picture inside uniform borders and letterbox bars.

    Only the strips a border could occupy are read from the picture (Pillow
    crops of one line, then of the side's largest border when that line is
    flat), so a picture without borders costs four lines of reading.

    Parameters
    ----------
    grey : PIL.Image.Image
        The whole decoded picture in mode ``"F"`` (or ``"L"``), grey levels in [0, 255].

    Returns
    -------
    (left, top, right, bottom) : tuple of int
        Pixel box, right and bottom exclusive (Pillow's box order); the whole
        picture ``(0, 0, W, H)`` when it has no border or would keep too little.
    """
    width, height = grey.size
    top = _border_lines(grey, height, lambda k: (0, 0, width, k), rows=True, reverse=False)
    bottom = _border_lines(grey, height, lambda k: (0, height - k, width, height), rows=True, reverse=True)
    left = _border_lines(grey, width, lambda k: (0, 0, k, height), rows=False, reverse=False)
    right = _border_lines(grey, width, lambda k: (width - k, 0, width, height), rows=False, reverse=True)
    kept_h, kept_w = height - top - bottom, width - left - right
    if kept_h < MIN_KEPT * height or kept_w < MIN_KEPT * width or kept_h < 8 or kept_w < 8:
        return 0, 0, width, height
    return left, top, width - right, height - bottom


def _border_lines(grey: Image.Image, length: int, strip, *, rows: bool, reverse: bool) -> int:
    """How many lines from one side are flat in the colour of the outermost one.

    ``strip(k)`` is the box of the ``k`` lines nearest that side; ``rows`` says
    whether its lines are rows, ``reverse`` whether the outermost is the last.
    """
    limit = int(MAX_BORDER * length)
    if limit == 0:
        return 0

    def lines(k: int) -> np.ndarray:
        block = np.asarray(grey.crop(strip(k)), dtype=np.float32)
        block = block if rows else block.T
        return block[::-1] if reverse else block

    outermost = lines(1)[0]
    colour = np.partition(outermost, len(outermost) // 2)[len(outermost) // 2]  # its median
    # Most pictures have no border: their outermost line already fails, and only it is read.
    if not _flat(outermost[None], colour)[0]:
        return 0
    flat = _flat(lines(limit), colour)
    return limit if flat.all() else int(np.argmin(flat))


def _flat(lines: np.ndarray, colour: float) -> np.ndarray:
    """(L,) bool: each line has at least COVERAGE of its pixels within TOLERANCE of ``colour``."""
    close = np.abs(lines - np.float32(colour)) <= TOLERANCE
    return np.count_nonzero(close, axis=1) >= COVERAGE * lines.shape[1]
