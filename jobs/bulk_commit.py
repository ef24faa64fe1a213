"""The bulk job's commit: its tables, its blob list, its report metrics and the printed summary.

One run commits, at once: one ``fingerprints`` part per partition (cluster,
blob and pointer columns filled in), the ``clusters`` table (replacing the
previous one), the ``errors`` rows, and the ``reports`` metrics under
``reports/<run_id>/``. The blobs listed are the new canonicals' and, for the
``dedup.pointer_blob_grace_days`` grace period recorded in the commit meta,
those of near-duplicate pointers (so a wrong merge can be undone); a
byte-for-byte copy's blob is never listed (nothing to undo: its canonical holds
the same bytes), and gc removes it. Each run's commit also releases the pointer
blobs of earlier bulk runs whose grace period has passed and that are still
pointers (an unmerged image is canonical again and keeps its blob); gc then
removes them.
"""
from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from imgdedup.jobs.bulk_dedup import DedupOutcome
from imgdedup.jobs.bulk_task import ERROR_COLUMNS, PartitionResult, PartitionSpec
from imgdedup.jobs.source import printable
from imgdedup.jobs.upload import with_decisions
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import centre_ids, fingerprint_width, seal_hashes
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.schemas import CLUSTERS, ERRORS, FINGERPRINTS, REPORTS, clusters_schema, errors_schema, \
    reports_schema

#: Stages timed on the client, in order (``seconds_<stage>`` metrics).
STAGES = ("list", "fingerprint", "cluster", "dedup", "commit")
#: Stages timed on the workers, summed over tasks (``worker_seconds_<stage>`` metrics).
WORKER_STAGES = ("read", "decode_hash", "encrypt_write")


@dataclass(frozen=True)
class BulkSummary:
    """What a bulk run did; its :attr:`metrics` are the rows of the run's ``reports`` table.

    Attributes
    ----------
    run_id : str
    version : int
        Store version the run was committed at.
    metrics : dict of str to (float, str)
        ``{name: (value, unit)}``.
    errors : list of dict
        The run's error rows (``source``, ``stage``, ``error_type``, ``message``).
    """

    run_id: str
    version: int
    metrics: dict[str, tuple[float, str]]
    errors: list[dict] = field(default_factory=list)

    def __getitem__(self, name: str) -> float:
        return self.metrics[name][0]


def _new_rows(results: list[PartitionResult], outcome: DedupOutcome, key: GroupKey) -> list[pa.Table]:
    """Each partition's rows with the cluster, blob and pointer columns filled in."""
    tables, start = [], 0
    for result in results:
        stop = start + result.rows.num_rows
        pointer_of = outcome.duplicate_of[start:stop]
        distance = [int(d) if p is not None else None for d, p in zip(outcome.distance[start:stop], pointer_of)]
        tables.append(with_decisions(key, result.rows, outcome.cluster_id[start:stop], pointer_of, distance))
        start = stop
    return tables


def _clusters_table(outcome: DedupOutcome, spec: PartitionSpec, version: int) -> pa.Table:
    k, nbytes = len(outcome.centres), spec.bits // 8
    centroids = outcome.centres if spec.mode == "tokens" else seal_hashes(spec.key, centre_ids(k), outcome.centres)
    schema = clusters_schema(fingerprint_width(spec.mode, nbytes), algo=spec.algo, bits=spec.bits,
                             key_id=spec.key.index_key_id_hex, mode=spec.mode)
    return pa.table({
        "cluster_id": pa.array(np.arange(k), pa.int32()),
        "centroid": pa.array([bytes(c) for c in centroids], schema.field("centroid").type),
        "size": pa.array(outcome.sizes, pa.int64()),
        "radius": pa.array(outcome.radii, pa.int16()),
        "version": pa.array(np.full(k, version), pa.int64()),
    }, schema=schema)


def expired_pointer_blobs(store: Store, now: dt.datetime) -> tuple[list[str], int]:
    """Pointer blobs of earlier bulk runs kept until ``now`` or before, live, and still pointers.

    Parameters
    ----------
    store : Store
    now : datetime
        Aware; a run's ``pointer_blobs`` expire when its ``pointer_blobs_kept_until`` <= ``now``.

    Returns
    -------
    blob_ids : list of str
        Sorted blob ids to release: listed in the latest ``fingerprints`` only
        by pointer rows (an image unmerged since is canonical and keeps its blob).
    version : int
        The store version this was read at (``Store.commit``'s ``releases_read_at``:
        a blob that a later commit lists again, as an unmerge does, is kept).
    """
    latest = store.latest_version()
    candidates = set()
    for version in range(1, latest + 1):
        meta = store.commit_record(version)["meta"]
        until = meta.get("pointer_blobs_kept_until")
        if until is not None and dt.datetime.fromisoformat(until) <= now:
            candidates.update(meta.get("pointer_blobs", []))
    candidates &= set(store.iter_blob_ids())
    if not candidates:
        return [], latest
    rows = store.read_table(FINGERPRINTS, latest, columns=["image_id", "duplicate_of"]).to_pydict()
    pointers, canonicals = set(), set()
    for image_id, duplicate_of in zip(rows["image_id"], rows["duplicate_of"]):
        (canonicals if duplicate_of is None else pointers).add(image_id)
    return sorted(candidates & (pointers - canonicals)), latest


def commit_run(store: Store, run_id: str, source: str, results: list[PartitionResult], outcome: DedupOutcome,
               spec: PartitionSpec, config: Config, config_digest: str,
               seconds: dict[str, float], unchanged_by_stat: int) -> BulkSummary:
    """Write the run's tables and commit them with its blobs; ``seconds["commit"]`` is set here."""
    clock = dt.datetime.now(dt.timezone.utc)
    files: dict[str, list[str]] = {FINGERPRINTS: [], CLUSTERS: [], ERRORS: [], REPORTS: []}
    tables = _new_rows(results, outcome, spec.key)
    for result, table in zip(results, tables):
        if table.num_rows:
            files[FINGERPRINTS].append(store.write_table_part(FINGERPRINTS, run_id, result.index, table))
    fresh = sum(t.num_rows for t in tables)
    replace = []
    if fresh:  # the classes changed (new members, or a first clustering)
        files[CLUSTERS].append(store.write_table_part(
            CLUSTERS, run_id, "classes", _clusters_table(outcome, spec, store.latest_version() + 1)))
        replace.append(CLUSTERS)
    errors = [row for r in results for row in r.errors]
    if errors:
        columns = {c: [e[c] for e in errors] for c in ERROR_COLUMNS}
        files[ERRORS].append(store.write_table_part(
            ERRORS, run_id, "errors", pa.table({**columns, "run_id": [run_id] * len(errors)},
                                               schema=errors_schema())))

    rows = pa.concat_tables(tables) if tables else None
    is_pointer = np.array([p is not None for p in outcome.duplicate_of], dtype=bool)
    written = np.concatenate([r.blob_written for r in results]) if results else np.zeros(0, bool)
    ids = np.array(rows.column("image_id").to_pylist() if rows is not None else [], dtype=object)
    sizes = rows.column("bytes").to_numpy() if rows is not None else np.zeros(0, np.int64)
    kept_pointers = is_pointer & ~outcome.exact & written
    blobs = list(ids[~is_pointer]) + list(ids[kept_pointers])
    grace = config.dedup.pointer_blob_grace_days
    metrics = {
        "images": (float(fresh), "images"),
        "stored": (float((~is_pointer).sum()), "images"),
        "duplicates": (float(is_pointer.sum()), "images"),
        "exact_duplicates": (float(outcome.exact.sum()), "images"),
        "bytes_stored": (float(sizes[~is_pointer].sum()), "bytes"),
        "bytes_saved": (float(sizes[is_pointer].sum()), "bytes"),
        "errors": (float(len(errors)), "files"),
        "skipped": (float(sum(r.skipped for r in results)), "files"),
        "unchanged": (float(sum(r.unchanged for r in results) + unchanged_by_stat), "files"),
        "bytes_read": (float(sum(r.bytes_read for r in results)), "bytes"),
        "clusters": (float(len(outcome.centres)), "classes"),
        "threshold_t": (float(config.dedup.threshold_t), "bits"),
    }
    for stage in WORKER_STAGES:
        metrics[f"worker_seconds_{stage}"] = (float(sum(r.seconds.get(stage, 0.0) for r in results)), "seconds")
    seconds["commit"] = (dt.datetime.now(dt.timezone.utc) - clock).total_seconds()
    for stage in STAGES:
        metrics[f"seconds_{stage}"] = (float(seconds.get(stage, 0.0)), "seconds")
    metrics["seconds_total"] = (float(sum(seconds.get(s, 0.0) for s in STAGES)), "seconds")
    report = pa.table({
        "run_id": [run_id] * len(metrics), "name": list(metrics),
        "value": [v for v, _ in metrics.values()], "unit": [u for _, u in metrics.values()],
    }, schema=reports_schema())
    files[REPORTS].append(store.write_table_part(REPORTS, run_id, "summary", report))
    meta = {
        "job": "bulk", "source": source, "config_digest": config_digest,
        "algo": spec.algo, "bits": spec.bits, "mode": spec.mode, "key_id": spec.key.index_key_id_hex,
        "threshold_t": config.dedup.threshold_t,
        "counts": {name: value for name, (value, _) in metrics.items() if not name.startswith(("seconds", "worker"))},
        "pointer_blobs": sorted(ids[kept_pointers]),
        "pointer_blobs_kept_until": (clock + dt.timedelta(days=grace)).isoformat(timespec="seconds"),
    }
    # Computed last, from the latest fingerprints, so an unmerge committed during the run is
    # seen; one committed after this read lists its blob again, and the store then keeps it.
    released, read_at = expired_pointer_blobs(store, clock)
    meta["released_pointer_blobs"] = len(released)
    version = store.commit(run_id, {t: keys for t, keys in files.items() if keys}, blobs, meta, replace=replace,
                           release_blobs=released, releases_read_at=read_at)
    return BulkSummary(run_id, version, metrics, errors)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_summary(summary: BulkSummary, file=None) -> None:
    """The run's headline numbers, stage times and errors, for a person at a terminal (stdout by default)."""
    s, file = summary, file or sys.stdout
    print(f"run {s.run_id}: committed as store version {s.version}", file=file)
    print(f"  images {s['images']:.0f}, stored {s['stored']:.0f}, duplicates {s['duplicates']:.0f} "
          f"({s['exact_duplicates']:.0f} byte-for-byte), errors {s['errors']:.0f}, "
          f"unchanged {s['unchanged']:.0f}, not images {s['skipped']:.0f}", file=file)
    print(f"  bytes stored {_size(s['bytes_stored'])}, saved {_size(s['bytes_saved'])}, "
          f"classes {s['clusters']:.0f}", file=file)
    print("  seconds: " + ", ".join(f"{stage} {s[f'seconds_{stage}']:.2f}" for stage in STAGES)
          + f" (total {s['seconds_total']:.2f})", file=file)
    for error in s.errors:
        print(f"  error: {printable(error['source'])}: {error['stage']}: {error['error_type']}: "
              f"{printable(error['message'])}", file=file)
