"""A picture checked against a stored image's picture: the verified zone's test in ingest and ``get --like``.

A match farther than the direct-accept t but within t_verify counts only when
the local-feature verifier (:func:`imgdedup.pipeline.pair_check.pair_inliers`)
passes the new picture (an upload, a query) against the picture of the match's
canonical image with at least ``dedup.verify_min_inliers`` inliers. The
canonical's blob is read and decrypted in the calling process, which holds the
group key; both pictures are decoded with the configured limits
(``[decode]``). What the caller does with a picture that could not be had
differs: ingest records an error row and stores the upload, ``get --like``
refuses (:meth:`ZoneCheck.raise_failure`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from imgdedup.jobs.upload import read_blob_plaintext
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.errors import ImgdedupError
from imgdedup.pipeline.hashing.decode import decode_image
from imgdedup.pipeline.pair_check import pair_inliers
from imgdedup.pipeline.store import Store

#: The stage an error of a picture that could not be had for verification is reported under.
STAGE = "verify"


@dataclass(frozen=True)
class ZoneCheck:
    """What :func:`verify_against_canonical` found.

    Attributes
    ----------
    passed : bool
        The verifier found at least ``dedup.verify_min_inliers`` inliers (never when a picture failed).
    failed : dict of str to Exception
        The pictures that could not be had (read, decrypted or decoded), by name: the new
        picture's name or the canonical's image id, with the error raised.
    """

    passed: bool
    failed: dict[str, Exception]

    def raise_failure(self) -> None:
        """Raise the first failure as an error of stage ``verify`` naming its picture; nothing if none failed.

        An :class:`~imgdedup.pipeline.errors.ImgdedupError` keeps its type (an
        ``IntegrityError`` stays one); an ``OSError`` is raised as it is.
        """
        for name, exc in self.failed.items():
            if isinstance(exc, ImgdedupError):
                raise type(exc)(name, exc.reason, stage=STAGE) from exc
            raise exc


def verify_against_canonical(store: Store, key: GroupKey, config: Config, data: bytes, name: str,
                             canonical: str, canonical_data: bytes | None = None) -> ZoneCheck:
    """Whether the verifier passes the picture ``data`` against the picture of the stored image ``canonical``.

    Parameters
    ----------
    store : Store
    key : GroupKey
        Opens ``canonical``'s blob.
    config : Config
        ``[decode]`` limits and ``dedup.verify_min_inliers``.
    data : bytes
        The new picture's file bytes (an upload, a query).
    name : str
        What a failure calls the new picture (its source).
    canonical : str
        Image id of a stored image (the id of its blob).
    canonical_data : bytes, optional
        ``canonical``'s file bytes when the caller holds them (stored earlier in
        the same micro-batch); else its blob is read and decrypted.
    """
    decode = dataclasses.asdict(config.decode)

    def load(which: int):
        if which == 0:
            return decode_image(data, name=name, **decode)
        stored = canonical_data if canonical_data is not None else read_blob_plaintext(store, key, canonical)
        return decode_image(stored, name=canonical, **decode)

    found = pair_inliers(np.array([[0, 1]]), load)
    failed = {(canonical if which == 1 else name): exc for which, exc in found.failed.items()}
    return ZoneCheck(int(found.inliers[0]) >= config.dedup.verify_min_inliers, failed)
