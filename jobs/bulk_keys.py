"""The bulk job's key join as Dask tasks: pairs of images sharing feature keys, to be verified.

Feature keys (:mod:`imgdedup.pipeline.hashing.feature_keys`) find copies whose
fingerprints lie beyond the verified zone: crops above all. The join is the
map-reduce of :mod:`imgdedup.pipeline.index.key_join`, with every step a task.
Its sources are blocks of rows' keys: each new partition's (computed by its
fingerprint task, so they never leave the workers), and each committed part
of the store's ``fingerprints`` table, whose rows a task reads, keeps those
the run holds (a mapping from image id to row, sent once to every worker)
and opens. Then, in passes over ranges of keys (:func:`join_shape`):

- one task per source deals the postings of its keys in the pass's range
  into ``buckets`` parts by key;
- one task per key bucket counts the keys each pair of rows shares there and
  deals the counts into ``buckets`` parts by pair;
- one task per pair bucket sums a pair's counts;

and a last task per pair bucket sums each pair's counts over the passes and
keeps the pairs sharing at least ``min_shared`` keys. The client receives
only those pairs. The cluster holds the sources' keys (8 bytes a key, ~6 kB
per image, as the fingerprint tasks made them), one pass's postings at a time
(at most :data:`POSTINGS_PER_PASS`) and each pass's pair counts; a task holds
one source's postings or one bucket's (at most :data:`POSTINGS_PER_BUCKET`).
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
from distributed import Client, Future, wait

from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import open_feature_keys
from imgdedup.pipeline.errors import IntegrityError
from imgdedup.pipeline.index.key_join import (bucket_of, key_postings, pair_numbers, pairs_sharing,
                                              shared_key_pairs, split_by_bucket)
from imgdedup.pipeline.store import Store


def stored_keys(store_url: str, storage_options: dict, key: GroupKey, part: str,
                rows: dict[str, int]) -> tuple[np.ndarray, list[np.ndarray], list[dict]]:
    """The feature keys of the stored images the run holds in one committed ``fingerprints`` part.

    Parameters
    ----------
    part : str
        Store-relative key of the part (:meth:`~imgdedup.pipeline.store.Store.committed_files`).
    rows : dict of str to int
        The run's row number of each stored image it holds; the part's other rows are skipped.

    Returns
    -------
    rows : ndarray of int64, shape (r,)
        The run's row number of each held image with sealed keys.
    keys : list of ndarray of uint64, length r
        Their keys (none for a row whose keys fail to open).
    errors : list of dict
        One errors-table row (``source`` the image id, stage ``decrypt``) per row whose sealed keys
        fail to open (edited, or moved to another image id); such a row takes part without keys.
        Rows written without keys (before keys existed, or with ``hash.feature_keypoints = 0``) have none.
    """
    with Store(store_url, storage_options).open_committed_file(part) as reader:
        parquet = pq.ParquetFile(reader)
        if "feature_keys" not in parquet.schema_arrow.names:
            return np.zeros(0, np.int64), [], []
        table = parquet.read(columns=["image_id", "feature_keys"])
    held = [(image_id, sealed) for image_id, sealed in zip(table.column("image_id").to_pylist(),
                                                            table.column("feature_keys").to_pylist())
            if image_id in rows and sealed is not None]
    failed: list[IntegrityError] = []
    keys = open_feature_keys(key, [i for i, _ in held], [s for _, s in held], failed=failed)
    errors = [{"source": exc.subject, "stage": exc.stage, "error_type": type(exc).__name__, "message": exc.reason}
              for exc in failed]
    return np.array([rows[i] for i, _ in held], dtype=np.int64), keys, errors


def block_keys(keys: list[np.ndarray] | None, first_row: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A block of rows' keys as a source of the join: ``(rows (r,) int64 from first_row, keys)``."""
    keys = keys or []
    return np.arange(first_row, first_row + len(keys), dtype=np.int64), keys


def partition_keys(result, first_row: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """A new partition's keys (a fingerprint task's result) as a source of the join, rows from ``first_row``."""
    return block_keys(result.feature_keys, first_row)


#: Postings one key bucket should hold at most (16 bytes each in a bucket task: ~64 MB, plus its sort).
POSTINGS_PER_BUCKET = 1 << 22
#: Postings one pass of the join deals into buckets at most (~0.5 GB over the cluster).
POSTINGS_PER_PASS = 1 << 25


def join_shape(postings: int, workers: int) -> tuple[int, int]:
    """``(passes, buckets)`` for a key join of about ``postings`` postings on ``workers`` workers.

    Passes split the keys into ranges joined one after another, so at most
    :data:`POSTINGS_PER_PASS` postings are dealt at a time; each pass has two
    buckets per worker at least, more so that a bucket task holds at most
    :data:`POSTINGS_PER_BUCKET` postings.
    """
    passes = max(1, -(-int(postings) // POSTINGS_PER_PASS))
    return passes, max(2 * max(1, workers), -(-int(postings) // (passes * POSTINGS_PER_BUCKET)))


def _pass_bucketed(source: tuple, pass_: int, passes: int, buckets: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The postings of ``source`` (``(rows, keys, ...)``) whose keys fall in pass ``pass_``, dealt into buckets."""
    rows, keys = source[0], source[1]
    flat, local = key_postings(keys)  # local: each posting's position in the block
    owners = rows[local]
    # bucket_of over buckets x passes: its value // buckets is the pass, its value % buckets the bucket
    # split_by_bucket deals into (the same hash modulo buckets).
    mine = bucket_of(flat, buckets * passes) // buckets == pass_
    return split_by_bucket(flat[mine], buckets, owners[mine])


def _bucket_counts(bucket: int, buckets: int, max_posting: int, new_from: int,
                   *sources: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    keys = np.concatenate([s[bucket][0] for s in sources])
    rows = np.concatenate([s[bucket][1] for s in sources])
    pairs, counts = shared_key_pairs(keys, rows, max_posting=max_posting, new_from=new_from)
    return [(p, c) for _, p, c in split_by_bucket(pair_numbers(pairs[:, 0], pairs[:, 1]), buckets, pairs, counts)]


def _pair_sums(bucket: int, min_shared: int, *counted: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray]:
    return pairs_sharing([c[bucket] for c in counted], min_shared)


def _pair_totals(min_shared: int, *sums: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return pairs_sharing(list(sums), min_shared)[0]


def key_candidates(client: Client, sources: list[Future], *, new_from: int, min_shared: int, max_posting: int,
                   passes: int = 1, buckets: int) -> np.ndarray:
    """Pairs of rows sharing at least ``min_shared`` feature keys, at least one row at or after ``new_from``.

    Parameters
    ----------
    client : distributed.Client
    sources : list of Future
        Each resolves to a block of rows' keys, ``(rows (r,) int64, keys: r arrays of uint64, ...)``:
        :func:`stored_keys`, :func:`partition_keys`, :func:`block_keys`; rows are numbered through all sources.
    new_from : int
        Rows before it were joined by an earlier run: no pair of two of them is returned.
    min_shared, max_posting : int
        ``dedup.key_min_shared`` (after the rule) and ``dedup.key_max_posting``.
    passes, buckets : int
        Key ranges joined one after another, and the parts each pass deals its postings and pair
        counts into (tasks per step): :func:`join_shape`.

    Returns
    -------
    ndarray of int64, shape (E, 2)
        ``(i, j)``, ``i < j``, sorted.
    """
    if not sources:
        return np.zeros((0, 2), np.int64)
    per_pass = []  # each pass's pair sums per pair bucket (all counts: a pair's keys may span passes)
    for pass_ in range(passes):
        mapped = [client.submit(_pass_bucketed, source, pass_, passes, buckets, pure=False) for source in sources]
        counted = [client.submit(_bucket_counts, b, buckets, max_posting, new_from, *mapped, pure=False)
                   for b in range(buckets)]
        per_pass.append([client.submit(_pair_sums, b, min_shared if passes == 1 else 1, *counted, pure=False)
                         for b in range(buckets)])
        wait(per_pass[-1])  # one pass's postings in the cluster at a time
        for future in (*mapped, *counted):
            future.release()
    totals = [client.submit(_pair_totals, min_shared, *(sums[b] for sums in per_pass), pure=False)
              for b in range(buckets)]
    pairs = client.gather(totals)
    for future in (*totals, *(f for sums in per_pass for f in sums)):
        future.release()
    found = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return found[np.lexsort((found[:, 1], found[:, 0]))]
