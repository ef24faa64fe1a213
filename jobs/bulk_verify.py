"""The bulk job's verification stage: grey-zone pairs checked on their pixels, as Dask tasks near the data.

The dedup rule (:func:`imgdedup.pipeline.dedup.dedup_decisions`) hands over
pairs of images whose fingerprints lie in the verified zone (and, in a second
round, members against their canonical). The client cuts them into batches of
:data:`PAIRS_PER_TASK` (pairs of one first image together,
:func:`imgdedup.pipeline.pair_check.pair_batches`) and sends each batch to a
worker with where its pictures are:

- a new image of the run: its source URL, read as the fingerprint task read it
  (the bytes go from the source to the worker, never through the client);
- an image the store already holds: its blob, fetched from the store and
  decrypted with the job's key (as ``imgdedup get`` does), in the worker's memory only.

The task decodes each picture once, takes its local features once
(:func:`imgdedup.pipeline.pair_check.pair_inliers`) and sends back an inlier
count per pair (8 bytes) and an error row per picture that failed to load, with
stage ``verify``: such a pair is not accepted.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import fsspec
import numpy as np
from distributed import Client

from imgdedup.jobs.bulk_task import PartitionSpec
from imgdedup.jobs.upload import read_blob_plaintext
from imgdedup.pipeline.hashing.decode import decode_image
from imgdedup.pipeline.pair_check import pair_batches, pair_inliers
from imgdedup.pipeline.store import Store

#: Pairs per verification task: enough that pictures shared by pairs are loaded once
#: (a zone pair's first image often has several), few enough that the tasks spread over
#: the workers and one task's pictures and features (~0.2 MB each) stay small.
PAIRS_PER_TASK = 32


@dataclass(frozen=True)
class PictureAt:
    """Where a verification task finds one image's picture.

    Attributes
    ----------
    name : str
        What an error row calls it: the file's ``source``.
    url : str or None
        Its source URL (a new image of the run); None: read its blob.
    blob_id : str or None
        The store's blob holding it (an image already stored), when ``url`` is None.
    """

    name: str
    url: str | None = None
    blob_id: str | None = None


def verify_pairs_task(pairs: np.ndarray, pictures: Mapping[int, PictureAt],
                      spec: PartitionSpec) -> tuple[np.ndarray, list[dict]]:
    """Inlier counts of ``pairs`` (m, 2) of images, loading each picture once: a task on a worker.

    Returns
    -------
    inliers : ndarray of int64, shape (m,)
        :data:`imgdedup.pipeline.pair_check.UNVERIFIED` where a picture failed to load.
    errors : list of dict
        One errors-table row (``source``, ``stage`` = ``verify``, ``error_type``, ``message``) per such picture.
    """
    store = None
    decode = dict(spec.decode)

    def load(row: int):
        nonlocal store
        at = pictures[row]
        if at.url is not None:
            fs, path = fsspec.core.url_to_fs(at.url, **dict(spec.source_options))
            data = fs.cat_file(path)
        else:
            store = store or Store(spec.store_url, spec.storage_options)
            data = read_blob_plaintext(store, spec.key, at.blob_id)
        return decode_image(data, name=at.name, **decode)

    found = pair_inliers(pairs, load)
    errors = [{"source": pictures[row].name, "stage": "verify", "error_type": type(exc).__name__,
               "message": getattr(exc, "reason", str(exc))} for row, exc in sorted(found.failed.items())]
    return found.inliers, errors


def verify_on_cluster(client: Client, pairs: np.ndarray, pictures: Mapping[int, PictureAt],
                      spec: PartitionSpec) -> tuple[np.ndarray, list[dict]]:
    """Inlier counts of ``pairs`` (m, 2), verified by tasks of :data:`PAIRS_PER_TASK` pairs on ``client``.

    Parameters
    ----------
    client : distributed.Client
    pairs : ndarray of int, shape (m, 2)
        Image indices (the dedup rule's).
    pictures : mapping of int to PictureAt
        Where each image named by a pair is.
    spec : PartitionSpec
        The run's spec: the store, the key, the source options, the decoding limits.

    Returns
    -------
    inliers : ndarray of int64, shape (m,)
    errors : list of dict
        Error rows, one per picture that failed (a picture failing in two tasks is listed once).
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    inliers = np.zeros(len(pairs), np.int64)
    if len(pairs) == 0:
        return inliers, []
    [spec_future] = client.scatter([spec], broadcast=True, hash=False)
    batches = pair_batches(pairs, PAIRS_PER_TASK)
    tasks = []
    for batch in batches:
        rows = np.unique(pairs[batch])
        tasks.append(client.submit(verify_pairs_task, pairs[batch], {int(r): pictures[int(r)] for r in rows},
                                   spec_future, pure=False))
    errors: dict[str, dict] = {}
    for batch, task in zip(batches, tasks):
        counts, failed = task.result()
        inliers[batch] = counts
        errors.update((e["source"], e) for e in failed)
    return inliers, list(errors.values())
