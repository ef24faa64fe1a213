"""Local-feature keys: what a crop still shares with its original, to find the verifier's candidates.

A crop, a small turn or a chain of edits moves a picture's low frequencies, so
its whole-picture fingerprint can lie beyond the verified zone and no pair is
ever put to the verifier. Local features survive those edits: the corners ORB
finds in the part a crop keeps are found again, with nearly the same rBRIEF
descriptor. A picture's **feature keys** are words cut from its descriptors:
the first :data:`WORDS` 32-bit words of each of its strongest keypoints'
256-bit descriptors, each tagged with its place in the descriptor (bits 32-33
of the uint64 key). A descriptor found again with a few of its 256 bits flipped
keeps some of its words whole, so copies share keys: on the held-out half of
``scripts/edits.py``'s set, 0.99 of crops share at least 3 with their original,
while 125 of 3.3 million pairs of different photos do
(``scripts/crop_candidates.py``; docs/lbph.md, "Crops").

Keys are a candidate generator, never a verdict: a pair that shares
``dedup.key_min_shared`` keys is put to the verifier
(:mod:`imgdedup.pipeline.hashing.verify`), as a pair in the verified zone is.
Keys read pixels, so they are computed in the key-holding jobs, and stored only
sealed (:func:`imgdedup.pipeline.crypto.keyed_fingerprint.seal_feature_keys`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from imgdedup.pipeline.hashing.verify import orb_features

#: Long side, in pixels, of the grey picture the keys' features are taken from.
SIDE = 256
#: ORB pyramid levels (1.2 apart): a crop keeping 60 % of each side is 1.67 times the
#: scale of its original once both are resized to ``SIDE``, within 1.2 ** 3.
LEVELS = 4
#: 32-bit words kept of each 256-bit descriptor.
WORDS = 4


def feature_keys(picture: Image.Image, keypoints: int) -> np.ndarray:
    """The feature keys of one decoded picture.

    Parameters
    ----------
    picture : PIL.Image.Image
        Decoded picture, mode ``"RGB"``, orientation applied.
    keypoints : int
        Most ORB keypoints the keys come from (the strongest).

    Returns
    -------
    ndarray of uint64, shape (k,)
        Sorted, unique; ``k <= WORDS * keypoints`` (none for a flat picture).
        Key = word (bits 0-31) | place of the word in the descriptor (bits 32-33).
    """
    descriptors = orb_features(picture, keypoints=keypoints, side=SIDE, levels=LEVELS).descriptors
    words = descriptors.view(">u4")[:, :WORDS].astype(np.uint64)
    return np.unique(words | (np.arange(WORDS, dtype=np.uint64) << np.uint64(32)))
