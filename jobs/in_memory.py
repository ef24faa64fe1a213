"""Fingerprints and duplicate groups of files in memory: no store, no key, no Dask.

The quick path of the Python API (:func:`imgdedup.find_duplicates`,
:func:`imgdedup.hash_files`): the same decoding, fingerprints and dedup rule as
the bulk job, run in this process over files a caller names, for collections
that fit in memory (about 300 bytes per image with the dihedral forms).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable

import numpy as np

from imgdedup.jobs.hash import configured_algorithm, fingerprint_in_batches, list_image_files
from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import class_count, hamming_kmeans
from imgdedup.pipeline.config import Config, load_config
from imgdedup.pipeline.dedup import dedup_decisions
from imgdedup.pipeline.errors import DecodeError
from imgdedup.pipeline.hashing.algorithms import HashAlgorithm
from imgdedup.pipeline.hashing.decode import decode_image, known_formats
from imgdedup.pipeline.hashing.fingerprint import FingerprintBatch, fingerprint_batch
from imgdedup.pipeline.index.key_join import key_candidate_pairs
from imgdedup.pipeline.keep import keep_rank
from imgdedup.pipeline.pair_check import pair_batches, pair_inliers

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _files(paths_or_dir: PathLike | Iterable[PathLike], config: Config) -> list[str]:
    """The image files named, and those under each folder named (walked in a deterministic order)."""
    paths = [paths_or_dir] if isinstance(paths_or_dir, str | os.PathLike) else list(paths_or_dir)
    return list_image_files([os.fspath(p) for p in paths], known_formats(config.decode.formats))


def hash_files(paths_or_dir: PathLike | Iterable[PathLike], *, algo: str | None = None,
               dihedral: bool | None = None, config: Config | None = None) -> FingerprintBatch:
    """Fingerprint image files (folders are walked), as ``imgdedup hash`` does.

    Parameters
    ----------
    paths_or_dir : path or iterable of paths
        Image files and folders of images.
    algo : {"lbph", "lbph-paper", "phash", "ahash", "dhash"}, optional
        Hash algorithm; ``hash.algo`` of the configuration by default.
    dihedral : bool, optional
        Also compute the hashes of the 8 rotations by 90 degrees and mirror
        images; ``hash.dihedral`` of the configuration by default.
    config : Config, optional
        Decoding limits, hash length and thumbnail size; the packaged defaults
        (:func:`imgdedup.load_config`) by default.

    Returns
    -------
    FingerprintBatch
        ``names`` (the paths that decoded, in walk order), ``hashes`` ``(n, bits // 8)``
        packed uint8, ``dihedral`` ``(n, 8, bits // 8)`` or None, ``quality``,
        ``width``, ``height``; a file that did not decode is an entry of ``errors``
        (a :class:`~imgdedup.pipeline.errors.DecodeError` naming it) and the rest go on.

    Examples
    --------
    >>> import tempfile, numpy as np, imgdedup
    >>> folder = tempfile.mkdtemp()
    >>> samples = imgdedup.build_sample_set(folder, originals=("coffee",))
    >>> batch = imgdedup.hash_files([folder + "/images/coffee.jpg", folder + "/images/coffee-half.png"])
    >>> batch.hashes.shape, batch.dihedral.shape, batch.errors
    ((2, 32), (2, 8, 32), [])
    >>> int(np.bitwise_count(batch.hashes[0] ^ batch.hashes[1]).sum()) <= 64   # within t: near duplicates
    True
    """
    config = config or load_config()
    algorithm = configured_algorithm(config, algo)
    dihedral = config.hash.dihedral if dihedral is None else dihedral
    # Thumbnails are held one partition at a time; only the hashes of all files are kept.
    batches = list(fingerprint_in_batches(_files(paths_or_dir, config), algorithm, config, dihedral=dihedral,
                                          print_errors=False))
    return _joined(batches, config.dask.partition_size, algorithm.nbytes, dihedral)


def _joined(batches: list[FingerprintBatch], size: int, nbytes: int, dihedral: bool) -> FingerprintBatch:
    """One batch holding ``batches`` in order (batch ``b`` fingerprinted files ``b * size`` onwards)."""
    if not batches:
        return FingerprintBatch([], np.zeros(0, np.int64), np.zeros((0, nbytes), np.uint8),
                                np.zeros((0, 8, nbytes), np.uint8) if dihedral else None,
                                np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), [], [])
    return FingerprintBatch(
        names=[name for b in batches for name in b.names],
        indices=np.concatenate([b.indices + i * size for i, b in enumerate(batches)]),
        hashes=np.concatenate([b.hashes for b in batches]),
        dihedral=np.concatenate([b.dihedral for b in batches]) if dihedral else None,
        quality=np.concatenate([b.quality for b in batches]),
        width=np.concatenate([b.width for b in batches]),
        height=np.concatenate([b.height for b in batches]),
        encodings=[encoding for b in batches for encoding in b.encodings],
        errors=[error for b in batches for error in b.errors],
        feature_keys=None if batches[0].feature_keys is None else [k for b in batches for k in b.feature_keys],
    )


def find_duplicates(paths_or_dir: PathLike | Iterable[PathLike], *, algo: str | None = None,
                    t: int | None = None, config: Config | None = None) -> list[list[str]]:
    """Groups of near-duplicate image files, each with the copy to keep first.

    The bulk job's dedup rule (:func:`imgdedup.pipeline.dedup.dedup_decisions`)
    in this process: fingerprints with their 8 dihedral forms, Hamming K-means
    classes, pairs within ``t`` bits and byte-identical files (whatever their
    quality) joined, pairs in the verified zone above ``t``
    (``dedup.verify_up_to``), and pairs sharing enough feature keys
    (``hash.feature_keypoints``, ``dedup.key_min_shared``) at any distance,
    joined when their pictures share enough local features
    (``dedup.verify_min_inliers``), the best copy (``dedup.keep``:
    more pixels, then the less lossy encoding, then EXIF, then the first in
    walk order) kept as each group's canonical, and groups cut into stars so
    every duplicate lies within ``t`` of its canonical or passed verification
    against it (no chains). Each file is read once to fingerprint it (and once
    more if a zone pair needs its picture); files that do not decode are
    logged and left out.

    Parameters
    ----------
    paths_or_dir : path or iterable of paths
        Image files and folders of images.
    algo : str, optional
        Hash algorithm (see :func:`hash_files`); ``hash.algo`` by default.
    t : int, optional
        Largest Hamming distance, in bits, between near duplicates merged on
        their fingerprints alone; by default the bulk job's t rule:
        ``dedup.threshold_t`` (64 of lbph's 256 bits), lowered for collections
        large enough to exceed ``dedup.max_false_merge_rate``. The verified
        zone above it follows the rule for the collection's size either way.
    config : Config, optional
        The packaged defaults (:func:`imgdedup.load_config`) by default.

    Returns
    -------
    list of list of str
        One list per group of two or more files: its canonical's path first, then
        the duplicates' paths in walk order. Groups are ordered by their first
        file in walk order; a file in no group is in no list.

    Examples
    --------
    >>> import tempfile, imgdedup
    >>> folder = tempfile.mkdtemp()
    >>> samples = imgdedup.build_sample_set(folder, originals=("astronaut", "coffee"))
    >>> groups = imgdedup.find_duplicates(folder)
    >>> [len(group) for group in groups]
    [8, 8]
    >>> [{path.rsplit("/", 1)[-1].split("-")[0].split(".")[0] for path in group} for group in groups]
    [{'astronaut'}, {'coffee'}]
    """
    config = config or load_config()
    algorithm = configured_algorithm(config, algo)
    batch, digests, file_bytes = _fingerprint_once(_files(paths_or_dir, config), algorithm, config)
    for error in batch.errors:
        log.warning("find_duplicates: %s", error)
    n = len(batch)
    if n == 0:
        return []
    threshold_t = max(config.dedup.threshold_for(n), 0) if t is None else int(t)
    verify_t = config.dedup.verify_threshold_for(n, threshold_t)
    clusters = hamming_kmeans(batch.hashes, class_count(config.dedup.clusters, n),
                              **dataclasses.asdict(config.cluster))
    labels, to_centre = assign(batch.hashes, clusters.centres)
    facts = batch.image_columns()
    rank = keep_rank(config.dedup.keep, pixels=batch.width * batch.height, lossless=facts["lossless"],
                     jpeg_quality=facts["jpeg_quality"], exif=facts["exif"], file_bytes=file_bytes)
    decode = dataclasses.asdict(config.decode)

    def verify(pairs: np.ndarray) -> np.ndarray:
        inliers = np.zeros(len(pairs), np.int64)
        for positions in pair_batches(pairs, VERIFY_BATCH):
            found = pair_inliers(pairs[positions], lambda i: decode_image(batch.names[i], **decode))
            inliers[positions] = found.inliers
            for exc in found.failed.values():
                log.warning("find_duplicates: verify: %s", exc)
        return inliers

    key_pairs = None
    if verify_t > threshold_t and batch.feature_keys is not None:
        key_pairs, _ = key_candidate_pairs(batch.feature_keys, min_shared=config.dedup.key_min_shared_for(n),
                                           max_posting=config.dedup.key_max_posting)
    decided = dedup_decisions(batch.hashes, batch.dihedral, labels, to_centre, clusters.centres,
                              batch.quality.astype(np.int64), digests, rank,
                              np.zeros(n, dtype=bool), threshold_t=threshold_t,
                              min_quality=config.hash.min_quality, batch=config.index.query_batch,
                              threads=config.index.scan_threads, verify_t=verify_t, verify=verify,
                              min_inliers=config.dedup.verify_min_inliers, key_pairs=key_pairs)
    canonical = np.where(decided.plan.is_pointer, decided.plan.duplicate_of, np.arange(n))
    members: dict[int, list[int]] = {}
    for image, owner in enumerate(canonical):
        members.setdefault(int(owner), []).append(image)
    groups = [[owner, *(m for m in group if m != owner)] for owner, group in members.items() if len(group) > 1]
    groups.sort(key=min)
    return [[batch.names[i] for i in group] for group in groups]


#: Zone pairs whose pictures are held (as local features) at once by :func:`find_duplicates`.
VERIFY_BATCH = 256


def _fingerprint_once(files: list[str], algorithm: HashAlgorithm,
                      config: Config) -> tuple[FingerprintBatch, np.ndarray, np.ndarray]:
    """Fingerprints with dihedral forms, SHA-256 digests and sizes of ``files``, each file read once.

    Returns
    -------
    batch : FingerprintBatch
        Of the files that were read and decoded (``names`` are their paths).
    digests : ndarray of uint8, shape (n, 32)
        SHA-256 of each decoded file's bytes: byte-identical files are one image's copies.
    file_bytes : ndarray of int64, shape (n,)
    """
    size = config.dask.partition_size
    batches, digests, sizes = [], [], []
    for start in range(0, len(files), size):
        read, positions, unreadable = [], [], []
        for position, name in enumerate(files[start:start + size]):
            try:
                with open(name, "rb") as file:
                    read.append((name, file.read()))
                positions.append(position)
            except OSError as exc:
                unreadable.append(DecodeError(name, f"cannot read the file ({exc.strerror or exc})"))
        part = fingerprint_batch([data for _, data in read], algorithm, names=[name for name, _ in read],
                                 dihedral=config.hash.dihedral,
                                 feature_keypoints=config.key_keypoints,
                                 **dataclasses.asdict(config.decode))
        kept = [read[i][1] for i in part.indices]
        digests += [hashlib.sha256(data).digest() for data in kept]
        sizes += [len(data) for data in kept]
        batches.append(dataclasses.replace(part, indices=np.array(positions, np.int64)[part.indices],
                                           errors=unreadable + list(part.errors)))
    joined = _joined(batches, size, algorithm.nbytes, config.hash.dihedral)
    return (joined, np.frombuffer(b"".join(digests), np.uint8).reshape(-1, 32),
            np.array(sizes, np.int64))
