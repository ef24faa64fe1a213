"""The bulk job's key join as Dask tasks: pairs of images sharing feature keys, to be verified.

Feature keys (:mod:`imgdedup.pipeline.hashing.feature_keys`) find copies whose
fingerprints lie beyond the verified zone: crops above all. The join is the
map-reduce of :mod:`imgdedup.pipeline.index.key_join`, with every step a task:

- one task per source of keys deals its postings into ``buckets`` parts by
  key: each new partition's keys (computed by its fingerprint task, so they
  never leave the workers), and the stored rows' keys, read from the store's
  ``fingerprints`` table and opened by a task on a worker;
- one task per key bucket counts the keys each pair of rows shares there and
  deals the counts into ``buckets`` parts by pair;
- one task per pair bucket sums a pair's counts and keeps the pairs sharing at
  least ``min_shared`` keys.

The client receives only those pairs. A worker holds at most one source's
postings plus one bucket's, so memory follows the partition size and the
bucket count, not the collection.
"""
from __future__ import annotations

import numpy as np
from distributed import Client, Future

from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import open_feature_keys
from imgdedup.pipeline.errors import IntegrityError
from imgdedup.pipeline.index.key_join import key_postings, pairs_sharing, shared_key_pairs, split_by_bucket
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import FINGERPRINTS


def stored_feature_keys(store_url: str, storage_options: dict, key: GroupKey, version: int,
                        image_ids: list[str]) -> tuple[list[np.ndarray], list[dict]]:
    """The feature keys of the stored images ``image_ids``, in that order, as of store ``version``.

    Rows written without keys (before keys existed, or with
    ``hash.feature_keypoints = 0``) give none; so does a row whose sealed keys
    fail to open (edited, or moved to another image id), which is also
    returned as an errors-table row of stage ``decrypt``.

    Returns
    -------
    keys : list of ndarray of uint64, one per image id
    errors : list of dict
        ``source`` (the image id), ``stage``, ``error_type``, ``message``.
    """
    table = Store(store_url, storage_options).read_table(FINGERPRINTS, version, columns=["image_id", "feature_keys"])
    sealed = dict(zip(table.column("image_id").to_pylist(), table.column("feature_keys").to_pylist()))
    keys, errors = [], []
    for image_id in image_ids:
        try:
            keys.extend(open_feature_keys(key, [image_id], [sealed.get(image_id)]))
        except IntegrityError as exc:
            keys.append(np.zeros(0, np.uint64))
            errors.append({"source": image_id, "stage": exc.stage, "error_type": type(exc).__name__,
                           "message": exc.reason})
    return keys, errors


def _bucketed(keys: list[np.ndarray] | None, first_row: int, buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
    flat, rows = key_postings(keys or [], first_row)
    return split_by_bucket(flat, buckets, rows)


def _bucket_counts(bucket: int, buckets: int, max_posting: int, new_from: int,
                   *sources: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    keys = np.concatenate([s[bucket][0] for s in sources])
    rows = np.concatenate([s[bucket][1] for s in sources])
    pairs, counts = shared_key_pairs(keys, rows, max_posting=max_posting, new_from=new_from)
    numbers = (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)
    return [(p, c) for _, p, c in split_by_bucket(numbers, buckets, pairs, counts)]


def _pair_totals(bucket: int, min_shared: int, *counted: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return pairs_sharing([c[bucket] for c in counted], min_shared)[0]


def key_candidates(client: Client, sources: list[Future | list[np.ndarray] | None], first_rows: list[int], *,
                   new_from: int, min_shared: int, max_posting: int, buckets: int) -> np.ndarray:
    """Pairs of rows sharing at least ``min_shared`` feature keys, at least one row at or after ``new_from``.

    Parameters
    ----------
    client : distributed.Client
    sources : list
        Each a Future of (or) a list of uint64 key arrays, one per row of a
        block of rows; None for a block without keys.
    first_rows : list of int
        Row number of each block's first row (rows are numbered through all blocks).
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
    mapped = [client.submit(_bucketed, source, first, buckets, pure=False)
              for source, first in zip(sources, first_rows)]
    counted = [client.submit(_bucket_counts, b, buckets, max_posting, new_from, *mapped, pure=False)
               for b in range(buckets)]
    totals = [client.submit(_pair_totals, b, min_shared, *counted, pure=False) for b in range(buckets)]
    pairs = client.gather(totals)
    for future in (*mapped, *counted, *totals):
        future.release()
    found = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return found[np.lexsort((found[:, 1], found[:, 0]))]
