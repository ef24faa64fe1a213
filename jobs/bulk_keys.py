"""The bulk job's key join as Dask tasks: pairs of images sharing feature keys, to be verified.

Feature keys (:mod:`imgdedup.pipeline.hashing.feature_keys`) find copies whose
fingerprints lie beyond the verified zone: crops above all. The join is the
map-reduce of :mod:`imgdedup.pipeline.index.key_join`, with every step a task:

- one task per source of postings deals them into ``buckets`` parts by key:
  each new partition's keys (computed by its fingerprint task, so they never
  leave the workers), and each committed part of the store's ``fingerprints``
  table, whose rows the task reads, keeps those the run holds (a mapping from
  image id to row, sent once to every worker) and opens;
- one task per key bucket counts the keys each pair of rows shares there and
  deals the counts into ``buckets`` parts by pair;
- one task per pair bucket sums a pair's counts and keeps the pairs sharing at
  least ``min_shared`` keys.

The client receives only those pairs. A task holds one source's postings or one
bucket's (:func:`bucket_count` makes buckets of at most
:data:`POSTINGS_PER_BUCKET` postings, ~64 MB), and each worker the id-to-row
mapping of the stored rows the run holds (~100 bytes per row). While the
buckets are counted the cluster holds the run's postings twice, as their
sources made them and bucketed (16 bytes a posting each; ~46 kB of worker
memory per image measured by ``scripts/bench_keys.py``, so ~46 GB over the
workers for 10^6 images in one run; Dask spills to disk past a worker's
memory limit).
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from distributed import Client, Future

from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import open_feature_keys
from imgdedup.pipeline.errors import IntegrityError
from imgdedup.pipeline.index.key_join import key_postings, pairs_sharing, shared_key_pairs, split_by_bucket
from imgdedup.pipeline.store import Store


def stored_postings(store_url: str, storage_options: dict, key: GroupKey, part: str,
                    rows: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The feature-key postings of one committed ``fingerprints`` part, for the rows the run holds.

    Parameters
    ----------
    part : str
        Store-relative key of the part (:meth:`~imgdedup.pipeline.store.Store.committed_files`).
    rows : dict of str to int
        The run's row number of each stored image it holds; the part's other rows are skipped.

    Returns
    -------
    keys : ndarray of uint64, shape (K,)
    rows : ndarray of int64, shape (K,)
    errors : list of dict
        One errors-table row (``source`` the image id, stage ``decrypt``) per row whose sealed keys
        fail to open (edited, or moved to another image id); such a row takes part without keys.
        Rows written without keys (before keys existed, or with ``hash.feature_keypoints = 0``) have none.
    """
    with Store(store_url, storage_options).open_committed_file(part) as reader:
        parquet = pq.ParquetFile(reader)
        if "feature_keys" not in parquet.schema_arrow.names:
            return *key_postings([]), []
        table = parquet.read(columns=["image_id", "feature_keys"])
    held, errors = [], []
    for image_id, sealed in zip(table.column("image_id").to_pylist(), table.column("feature_keys").to_pylist()):
        if image_id not in rows or sealed is None:
            continue
        try:
            held.append((rows[image_id], open_feature_keys(key, [image_id], [sealed])[0]))
        except IntegrityError as exc:
            errors.append({"source": image_id, "stage": exc.stage, "error_type": type(exc).__name__,
                           "message": exc.reason})
    keys = [k for _, k in held]
    lengths = np.array([len(k) for k in keys], dtype=np.int64)
    flat = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    return flat, np.repeat(np.array([r for r, _ in held], dtype=np.int64), lengths), errors


def partition_postings(result, first_row: int) -> tuple[np.ndarray, np.ndarray]:
    """The feature-key postings of a new partition's rows (a fingerprint task's result), numbered from ``first_row``."""
    return key_postings(result.feature_keys or [], first_row)


#: Postings one key bucket should hold at most (16 bytes each in a bucket task: ~64 MB, plus its sort).
POSTINGS_PER_BUCKET = 1 << 22


def bucket_count(postings: int, workers: int) -> int:
    """Buckets for a key join of about ``postings`` postings on ``workers`` workers: two per worker at
    least, more as the postings grow, so a bucket task holds at most :data:`POSTINGS_PER_BUCKET` of them."""
    return max(2 * max(1, workers), -(-int(postings) // POSTINGS_PER_BUCKET))


def _bucketed(postings: tuple[np.ndarray, ...], buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return split_by_bucket(postings[0], buckets, postings[1])


def _bucket_counts(bucket: int, buckets: int, max_posting: int, new_from: int,
                   *sources: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    keys = np.concatenate([s[bucket][0] for s in sources])
    rows = np.concatenate([s[bucket][1] for s in sources])
    pairs, counts = shared_key_pairs(keys, rows, max_posting=max_posting, new_from=new_from)
    numbers = (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)
    return [(p, c) for _, p, c in split_by_bucket(numbers, buckets, pairs, counts)]


def _pair_totals(bucket: int, min_shared: int, *counted: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return pairs_sharing([c[bucket] for c in counted], min_shared)[0]


def key_candidates(client: Client, sources: list[Future], *, new_from: int, min_shared: int, max_posting: int,
                   buckets: int) -> np.ndarray:
    """Pairs of rows sharing at least ``min_shared`` feature keys, at least one row at or after ``new_from``.

    Parameters
    ----------
    client : distributed.Client
    sources : list of Future
        Each resolves to postings ``(keys (K,) uint64, rows (K,) int64, ...)``: :func:`stored_postings`,
        :func:`partition_postings`; rows are numbered through all sources.
    new_from : int
        Rows before it were joined by an earlier run: no pair of two of them is returned.
    min_shared, max_posting : int
        ``dedup.key_min_shared`` (after the rule) and ``dedup.key_max_posting``.
    buckets : int
        Parts the postings and the pair counts are dealt into (tasks per step).

    Returns
    -------
    ndarray of int64, shape (E, 2)
        ``(i, j)``, ``i < j``, sorted.
    """
    if not sources:
        return np.zeros((0, 2), np.int64)
    mapped = [client.submit(_bucketed, source, buckets, pure=False) for source in sources]
    counted = [client.submit(_bucket_counts, b, buckets, max_posting, new_from, *mapped, pure=False)
               for b in range(buckets)]
    totals = [client.submit(_pair_totals, b, min_shared, *counted, pure=False) for b in range(buckets)]
    pairs = client.gather(totals)
    for future in (*mapped, *counted, *totals):
        future.release()
    found = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return found[np.lexsort((found[:, 1], found[:, 0]))]
