"""``imgdedup bulk``: deduplicate an image source of any size into a store, on Dask.

    imgdedup bulk SOURCE [--store URL] [--key FILE] [--scheduler ADDRESS] [--re-elect]

1. **list** the source through fsspec (:mod:`imgdedup.jobs.source`) and cut the listing
   into partitions of ``dask.partition_size`` files;
2. **fingerprint** each partition on a worker (:mod:`imgdedup.jobs.bulk_task`): read,
   keyed digest, decode, hash, key, seal, write the blob; bad files become
   error rows;
3. **cluster** the fingerprints with distributed mini-batch Hamming K-means
   (a store that already has classes keeps them and the new images are assigned);
4. **dedup**: the index's near-duplicate join at ``dedup.threshold_t`` (the t
   rule's, for the collection's size) plus exact byte-duplicates; **verify**:
   the pairs of the zone above it (``dedup.verify_up_to``) checked on their
   pixels by Dask tasks (:mod:`imgdedup.jobs.bulk_verify`), those that pass
   joining groups; duplicate groups (stars), one canonical per group
   by ``dedup.keep`` (:mod:`imgdedup.pipeline.dedup`), pointer rows for the rest;
   committed canonicals stay unless ``--re-elect`` lets each group's best copy
   whose blob is still kept take over;
5. **commit** the run's fingerprints, clusters, errors and reports tables and
   its blobs with one commit record (:mod:`imgdedup.jobs.bulk_commit`), then print a summary.

Re-running over a grown source fingerprints only new files (``bulk.incremental``)
and dedups them against what the store holds; a run with nothing new commits
nothing; a run killed midway leaves nothing visible, and running it again
commits every file once.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping

import numpy as np
from distributed import Client

from imgdedup.jobs.bulk_dedup import StoredRows, cluster_and_dedup, read_stored_rows
from imgdedup.jobs.bulk_commit import BulkSummary, commit_run, print_summary
from imgdedup.jobs.dask_runtime import dask_client, wait_for, workers_share_host
from imgdedup.jobs.bulk_task import PartitionResult, PartitionSpec, fingerprint_partition
from imgdedup.jobs.source import SourceFile, image_extensions, list_source
from imgdedup.pipeline.config import Config, as_dict, load_config
from imgdedup.pipeline.cores import usable_cores
from imgdedup.pipeline.crypto.group_key import GroupKey, load_group_key
from imgdedup.pipeline.crypto.index_keys import key_for_store
from imgdedup.pipeline.errors import ImgdedupError
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import FINGERPRINTS, check_comparable

log = logging.getLogger(__name__)


class BulkError(ImgdedupError):
    """The bulk job could not finish; nothing of the run was committed."""

    stage = "bulk"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bulk",
        description="List SOURCE (a folder or any fsspec URL), fingerprint, encrypt and store every image on "
                    "Dask workers, cluster the fingerprints, keep one canonical image per duplicate group and "
                    "commit the run atomically. Re-runs only process new files.",
    )
    parser.add_argument("source", metavar="SOURCE", help="folder, file or fsspec URL of the images")
    parser.add_argument("--store", metavar="URL", default=None, help="store URL (default: store.url)")
    parser.add_argument("--key", metavar="FILE", default=None,
                        help="group key file (default: $IMGDEDUP_KEY_FILE or crypto.key_file)")
    parser.add_argument("--scheduler", metavar="ADDRESS", default=None,
                        help="Dask scheduler to run on (default: dask.scheduler, else a local cluster)")
    parser.add_argument("--re-elect", action="store_true",
                        help="let each duplicate group's best copy (dedup.keep) whose blob is still kept replace "
                             "its committed canonical; the swap is one commit and the old canonical's blob is "
                             "kept through dedup.pointer_blob_grace_days")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    key = load_group_key(args.key, config.crypto.key_file)
    store_url = args.store or config.store.url
    # A store that cannot be opened or written is refused before Dask starts.
    Store(store_url).check_writable()
    summary = run_bulk(args.source, store_url, key, config,
                       scheduler=args.scheduler if args.scheduler is not None else config.dask.scheduler,
                       re_elect=args.re_elect)
    print_summary(summary)
    return 1 if summary.errors else 0


def run_bulk(source: str, store_url: str, key: GroupKey, config: Config | None = None, *, scheduler: str = "",
             client: Client | None = None, storage_options: Mapping[str, object] | None = None,
             source_options: Mapping[str, object] | None = None, re_elect: bool = False) -> BulkSummary:
    """Run the bulk job once and return its summary.

    Parameters
    ----------
    source : str
        Folder, file or fsspec URL of the images.
    store_url : str
        The store.
    key : GroupKey
    config : Config, optional
        The packaged defaults (:func:`~imgdedup.pipeline.config.load_config`) when omitted.
    scheduler : str
        Dask scheduler address; empty for a local cluster sized by ``dask.workers``.
    client : distributed.Client, optional
        Run on this client instead (``scheduler`` is then ignored).
    storage_options, source_options : mapping, optional
        fsspec options of the store and of the source.
    re_elect : bool
        Let committed canonicals lose their place to a better copy (``dedup.keep``)
        of their group whose blob is still kept.

    Returns
    -------
    BulkSummary

    Raises
    ------
    BulkError
        A partition task kept failing; nothing was committed.

    Examples
    --------
    >>> import tempfile, imgdedup
    >>> folder = tempfile.mkdtemp()
    >>> samples = imgdedup.build_sample_set(folder, originals=("coffee", "rocket"))
    >>> config = imgdedup.load_config(overrides=["dask.workers=1", "bulk.progress=log"])
    >>> summary = imgdedup.run_bulk(folder + "/images", folder + "/store", imgdedup.GroupKey.generate(), config)
    >>> summary["images"], summary["stored"], summary["duplicates"]
    (16.0, 2.0, 14.0)
    """
    config = config or load_config()
    clock = time.perf_counter()
    listed = list_source(source, include=config.bulk.include, exclude=config.bulk.exclude,
                         storage_options=source_options)
    listing_seconds = time.perf_counter() - clock
    if client is not None:
        summary = _run(client, source, listed, listing_seconds, store_url, key, config, storage_options,
                       source_options, re_elect)
    else:
        in_process = any(url.startswith("memory://") for url in (source, store_url))
        processes = local_processes(config.dask.local_workers, len(listed), config, in_process)
        with dask_client(scheduler, config.dask.workers, processes=processes) as own:
            summary = _run(own, source, listed, listing_seconds, store_url, key, config, storage_options,
                           source_options, re_elect)
    return dataclasses.replace(summary, wall_seconds=time.perf_counter() - clock)


def local_processes(kind: str, files: int, config: Config, in_process: bool) -> bool:
    """Whether a local cluster's workers are processes (else threads of this process).

    ``kind`` is ``dask.local_workers``: ``"processes"``, ``"threads"``, or
    ``"auto"``: threads when the source lists at most one partition per worker
    (starting worker processes and importing the kernels in each costs more than
    the GIL takes from so little work), processes otherwise. A ``memory://``
    source or store exists in this process only, so its workers are threads.
    """
    if in_process or kind == "threads":
        return False
    if kind == "processes":
        return True
    workers = config.dask.workers or usable_cores()
    return files > workers * config.dask.partition_size


def _run(client: Client, source: str, listed: list[SourceFile], listing_seconds: float, store_url: str,
         key: GroupKey, config: Config, storage_options: Mapping[str, object] | None,
         source_options: Mapping[str, object] | None, re_elect: bool) -> BulkSummary:
    """The bulk job's stages on ``client`` over the files ``listed`` from ``source``."""
    started = dt.datetime.now(dt.timezone.utc)
    run_id = f"bulk-{started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    store = Store(store_url, storage_options)
    key = key_for_store(key, store.key_records())
    seconds: dict[str, float] = {}

    spec = PartitionSpec(
        store_url=store_url, storage_options=dict(storage_options or {}), source_options=dict(source_options or {}),
        key=key, algo=config.hash.algo, size=config.hash.size, bits=config.hash.bits,
        trim_borders=config.hash.trim_borders, dihedral=config.hash.dihedral, mode=config.crypto.mode,
        segment_bytes=config.crypto.segment_bytes,
        decode=dataclasses.asdict(config.decode), extensions=image_extensions(config.decode.formats),
        ingested_at=np.datetime64(started.replace(tzinfo=None), "us"),
        deferred_sync=workers_share_host(client),
        # Taken before the rows are read: a commit landing in between is then seen twice, never missed.
        based_on=store.latest_version(),
        feature_keypoints=config.key_keypoints,
    )
    present = store.read_table(FINGERPRINTS, columns=["image_id"])
    if present.num_rows:
        check_comparable(present.schema, spec.schema())

    clock = time.perf_counter()
    stored = read_stored_rows(store, key, config.crypto.mode, config.hash.bits // 8)
    files, known, unchanged_by_stat = _new_files(listed, stored, config.bulk.incremental)
    seconds["list"] = listing_seconds + time.perf_counter() - clock
    log.info("%s: %d files to read from %s (%d unchanged by path, size and time)", run_id, len(files), source,
             unchanged_by_stat)

    clock = time.perf_counter()
    futures = _submit_partitions(client, files, known, spec, config, run_id)
    wait_for(futures, "fingerprint", config.bulk.progress)
    results = _gather(client, futures, config.bulk.retries)
    seconds["fingerprint"] = time.perf_counter() - clock

    live = frozenset(store.iter_blob_ids()) if re_elect else frozenset()
    outcome = cluster_and_dedup(client, futures, results, stored, spec, config, seconds,
                                urls={f.source: f.url for f in files}, re_elect=re_elect, live_blobs=live)
    clock = time.perf_counter()
    summary = commit_run(store, run_id, source, results, outcome, spec, config,
                         _config_digest(config), seconds, unchanged_by_stat, stored.version)
    if summary.committed:
        log.info("%s: committed as store version %d in %.1f s", run_id, summary.version,
                 time.perf_counter() - clock)
    else:
        log.info("%s: nothing new; committed nothing", run_id)
    return summary


def _new_files(files: list[SourceFile], stored: StoredRows,
               incremental: str) -> tuple[list[SourceFile], dict[str, str], int]:
    """Files to read, ``{source name: stored image id}`` for them, and how many ``stat`` skipped unread."""
    latest = stored.latest_by_source()
    if incremental == "stat":
        kept = [f for f in files
                if not (f.source in latest and latest[f.source].bytes == f.size
                        and f.mtime <= latest[f.source].ingested_at)]
        skipped = len(files) - len(kept)
        files = kept
    else:
        skipped = 0
    return files, {f.source: latest[f.source].image_id for f in files if f.source in latest}, skipped


def _submit_partitions(client: Client, files: list[SourceFile], known: dict[str, str], spec: PartitionSpec,
                       config: Config, run_id: str) -> list:
    """One fingerprint task per partition of files; the spec travels to the workers once."""
    size = config.dask.partition_size
    [spec_future] = client.scatter([spec], broadcast=True, hash=False)
    futures = []
    for index, start in enumerate(range(0, len(files), size)):
        part = files[start:start + size]
        futures.append(client.submit(
            fingerprint_partition, index, part, {f.source: known[f.source] for f in part if f.source in known},
            spec_future, key=f"fingerprint-{run_id}-{index}", retries=config.bulk.retries, pure=False,
        ))
    return futures


def _gather(client: Client, futures: list, retries: int) -> list[PartitionResult]:
    """The partition results in order; the first task that failed for good fails the run."""
    results = []
    for index, future in enumerate(futures):
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - any failure of a task, after Dask's retries, ends the run
            for other in futures:
                other.cancel()
            raise BulkError(f"partition {index}", f"fingerprint task failed after {retries + 1} attempts "
                            f"({type(exc).__name__}: {exc}); nothing was committed") from exc
    return results


def _config_digest(config: Config) -> str:
    """SHA-256 of the run's configuration (which holds no key material), for the commit record."""
    return hashlib.sha256(json.dumps(as_dict(config), sort_keys=True, default=list).encode()).hexdigest()
