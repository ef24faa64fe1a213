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

A re-election (``imgdedup bulk --re-elect``) that changes committed rows commits
the whole ``fingerprints`` table with those rows changed (``replace``), in the
same one commit as the run's new rows: readers see the old canonical or the new
one, never both or neither. The demoted canonicals' blobs join the run's
``pointer_blobs`` and are kept through the grace period like any pointer's. A
run with no new rows, no errors, nothing re-elected and no blob to release
commits nothing.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from imgdedup.jobs.bulk_dedup import DedupOutcome
from imgdedup.jobs.bulk_task import ERROR_COLUMNS, PartitionResult, PartitionSpec, rows_committed_since
from imgdedup.jobs.source import printable
from imgdedup.jobs.unmerge import restore_overtaken_rows
from imgdedup.jobs.upload import with_decisions
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.keyed_fingerprint import centre_ids, fingerprint_width, seal_hashes
from imgdedup.pipeline.crypto.resolution import resolution_mac
from imgdedup.pipeline.errors import CommitConflict, StoreError
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
from imgdedup.pipeline.store.schemas import CLUSTERS, ERRORS, FINGERPRINTS, REPORTS, clusters_schema, errors_schema, \
    reports_schema

log = logging.getLogger(__name__)

#: Stages timed on the client, in order (``seconds_<stage>`` metrics).
STAGES = ("list", "fingerprint", "cluster", "dedup", "verify", "commit")
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
    committed : bool
        False when the run found nothing to commit (:attr:`version` is then the
        store's version it read).
    wall_seconds : float or None
        The whole run, from its start to its commit record, local cluster
        start and stop included (:func:`imgdedup.jobs.bulk.run_bulk` sets it;
        not in the reports table, which is committed before the run ends).
    """

    run_id: str
    version: int
    metrics: dict[str, tuple[float, str]]
    errors: list[dict] = field(default_factory=list)
    committed: bool = True
    wall_seconds: float | None = None

    def __getitem__(self, name: str) -> float:
        return self.metrics[name][0]


#: Commit attempts of a bulk run whose commit keeps meeting copies of its images committed meanwhile.
COMMIT_ATTEMPTS = 5


def landed_canonicals(store: Store, version: int) -> dict[bytes, str]:
    """Content digest -> image id of the canonical rows that commits after ``version`` added."""
    landed = rows_committed_since(store, version, ("image_id", "duplicate_of", "content_digest"))
    return {digest: image_id for image_id, duplicate_of, digest
            in zip(landed["image_id"], landed["duplicate_of"], landed["content_digest"])
            if duplicate_of is None and digest is not None}


def rebased_on_landed(outcome: DedupOutcome, ids: list[str], digests: list[bytes],
                      held: dict[bytes, str]) -> DedupOutcome:
    """The run's decisions after the commits that landed since it read the store.

    One content digest is never committed as two canonicals: a new canonical
    whose bytes such a commit (an ingest, another bulk run) already holds as a
    canonical (``held``, from :func:`landed_canonicals`) becomes an exact
    pointer to it (distance 0, no blob kept), and the run's pointers to it
    follow. ``ids`` and ``digests`` name the run's new rows, in order.
    """
    if not held:
        return outcome
    duplicate_of, distance, exact = list(outcome.duplicate_of), outcome.distance.copy(), outcome.exact.copy()
    moved: dict[str, str] = {}
    for row, (image_id, digest) in enumerate(zip(ids, digests)):
        if duplicate_of[row] is None and held.get(digest, image_id) != image_id:
            moved[image_id] = duplicate_of[row] = held[digest]
            distance[row], exact[row] = 0, True
    if not moved:
        return outcome
    duplicate_of = [moved.get(p, p) if p is not None else None for p in duplicate_of]
    return dataclasses.replace(outcome, duplicate_of=duplicate_of, distance=distance, exact=exact)


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


def with_re_elected(key: GroupKey, fingerprints: pa.Table,
                    changes: dict[str, tuple[str | None, int | None]]) -> pa.Table:
    """``fingerprints`` with the rows of ``changes`` re-pointed (row order kept).

    ``changes`` maps an image id to its new ``(duplicate_of, distance)``;
    ``(None, None)`` makes it a canonical holding its own blob, and a row
    that becomes a pointer loses its ``blob`` (the blob itself stays listed
    through the grace period). A changed row's ``resolution_mac`` is made anew
    under ``key``; every other row keeps the MAC it had (a bad one stays bad).
    """
    ids = fingerprints.column("image_id").to_pylist()
    columns = {name: fingerprints.column(name).to_pylist()
               for name in ("duplicate_of", "distance", "blob", "resolution_mac")}
    for row, image_id in enumerate(ids):
        if image_id in changes:
            duplicate_of, distance = changes[image_id]
            blob = blob_body_key(image_id) if duplicate_of is None else None
            columns["duplicate_of"][row], columns["distance"][row], columns["blob"][row] = duplicate_of, distance, blob
            columns["resolution_mac"][row] = resolution_mac(key, image_id, duplicate_of, blob)
    for name, values in columns.items():
        index = fingerprints.schema.get_field_index(name)
        field_ = fingerprints.schema.field(name)
        fingerprints = fingerprints.set_column(index, field_, pa.array(values, field_.type))
    return fingerprints


def commit_run(store: Store, run_id: str, source: str, results: list[PartitionResult], outcome: DedupOutcome,
               spec: PartitionSpec, config: Config, config_digest: str, seconds: dict[str, float],
               unchanged_by_stat: int, read_at: int) -> BulkSummary:
    """Write the run's tables and commit them with its blobs; ``seconds["commit"]`` is set here.

    ``read_at`` is the store version the run's committed rows were read at; a
    re-election that changes rows is refused with a StoreError when another
    commit landed since (its rows would be re-pointed from a stale table).
    """
    clock = dt.datetime.now(dt.timezone.utc)
    ids = [i for r in results for i in r.rows.column("image_id").to_pylist()]
    digests = [bytes(d) for r in results for d in r.digests]
    checked = spec.based_on
    for _ in range(COMMIT_ATTEMPTS):
        latest = store.latest_version()
        outcome = rebased_on_landed(outcome, ids, digests, landed_canonicals(store, checked))
        checked = latest
        ours = {digest for digest, duplicate_of in zip(digests, outcome.duplicate_of) if duplicate_of is None}
        try:
            return _stage_and_commit(store, run_id, source, results, outcome, spec, config, config_digest, seconds,
                                     unchanged_by_stat, read_at, clock, _no_second_canonical(store, ours, latest))
        except CommitConflict as exc:
            log.info("%s: %s; deciding again", run_id, exc)
    raise StoreError(store.url, f"{run_id}: other writers kept committing copies of this run's images "
                     f"({COMMIT_ATTEMPTS} attempts); nothing was committed, run it again")


def _no_second_canonical(store: Store, ours: set[bytes], checked: int) -> Callable[[int], None]:
    """The commit guard: refuses the commit if a commit after ``checked`` holds the bytes of a canonical in ``ours``."""
    def guard(version: int) -> None:
        if version > checked and not ours.isdisjoint(landed_canonicals(store, checked)):
            raise CommitConflict(store.url, f"a commit after version {checked} holds the bytes of a canonical "
                                            "of this run")
    return guard


def _stage_and_commit(store: Store, run_id: str, source: str, results: list[PartitionResult],
                      outcome: DedupOutcome, spec: PartitionSpec, config: Config, config_digest: str,
                      seconds: dict[str, float], unchanged_by_stat: int, read_at: int, clock: dt.datetime,
                      guard: Callable[[int], None]) -> BulkSummary:
    """Write the run's parts for ``outcome`` and commit them under ``guard``; ``seconds["commit"]`` is set here."""
    files: dict[str, list[str]] = {FINGERPRINTS: [], CLUSTERS: [], ERRORS: [], REPORTS: []}
    tables = _new_rows(results, outcome, spec.key)
    fresh = sum(t.num_rows for t in tables)
    errors = [row for r in results for row in r.errors] + outcome.errors
    if not (fresh or errors or outcome.re_elected or expired_pointer_blobs(store, clock)[0]):
        return _nothing_to_commit(store, run_id, results, outcome, config, seconds, unchanged_by_stat, clock)
    replace = []
    if outcome.re_elected:
        if store.latest_version() != read_at:
            raise StoreError(store.url, f"{run_id}: the store changed while the run re-elected canonicals "
                             "(another run committed); nothing was committed, run it again")
        table = with_re_elected(spec.key, store.read_table(FINGERPRINTS, read_at), outcome.re_elected)
        files[FINGERPRINTS].append(store.write_table_part(FINGERPRINTS, run_id, "re-elected", table))
        replace.append(FINGERPRINTS)
    for result, table in zip(results, tables):
        if table.num_rows:
            files[FINGERPRINTS].append(store.write_table_part(FINGERPRINTS, run_id, result.index, table))
    if fresh or outcome.re_elected:  # the classes changed (new members, new canonicals, or a first clustering)
        files[CLUSTERS].append(store.write_table_part(
            CLUSTERS, run_id, "classes", _clusters_table(outcome, spec, store.latest_version() + 1)))
        replace.append(CLUSTERS)
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
    metrics = _metrics(results, outcome, config, is_pointer, sizes, len(errors), unchanged_by_stat)
    seconds["commit"] = (dt.datetime.now(dt.timezone.utc) - clock).total_seconds()
    _add_seconds(metrics, results, seconds)
    files[REPORTS].append(store.write_table_part(REPORTS, run_id, "summary", _report_table(run_id, metrics)))
    meta = {
        "job": "bulk", "source": source, "config_digest": config_digest,
        "algo": spec.algo, "bits": spec.bits, "mode": spec.mode, "key_id": spec.key.index_key_id_hex,
        "threshold_t": outcome.threshold_t, "verify_t": outcome.verify_t, "keep": config.dedup.keep,
        "split_for_review": sorted(outcome.review),
        "counts": {name: value for name, (value, _) in metrics.items() if not name.startswith(("seconds", "worker"))},
        "pointer_blobs": sorted([*ids[kept_pointers], *outcome.demoted]),
        "pointer_blobs_kept_until": (clock + dt.timedelta(days=grace)).isoformat(timespec="seconds"),
    }
    # Computed last, from the latest fingerprints, so an unmerge committed during the run is
    # seen; one committed after this read lists its blob again, and the store then keeps it.
    released, read_version = expired_pointer_blobs(store, clock)
    released = sorted(set(released) - {i for i, (p, _) in outcome.re_elected.items() if p is None})
    meta["released_pointer_blobs"] = len(released)
    version = store.commit(run_id, {t: keys for t, keys in files.items() if keys}, blobs, meta, replace=replace,
                           release_blobs=released, releases_read_at=read_version, guard=guard)
    if outcome.re_elected:
        restore_overtaken_rows(store, run_id, read_at, version)
    return BulkSummary(run_id, version, metrics, errors)


def _metrics(results: list[PartitionResult], outcome: DedupOutcome, config: Config, is_pointer: np.ndarray,
             sizes: np.ndarray, errors: int, unchanged_by_stat: int) -> dict[str, tuple[float, str]]:
    """The run's count metrics ``{name: (value, unit)}`` (stage times are added by :func:`_add_seconds`)."""
    return {
        "images": (float(len(is_pointer)), "images"),
        "stored": (float((~is_pointer).sum()), "images"),
        "duplicates": (float(is_pointer.sum()), "images"),
        "exact_duplicates": (float(outcome.exact.sum()), "images"),
        "re_elected": (float(len(outcome.re_elected)), "images"),
        "bytes_stored": (float(sizes[~is_pointer].sum()), "bytes"),
        "bytes_saved": (float(sizes[is_pointer].sum()), "bytes"),
        "errors": (float(errors), "files"),
        "skipped": (float(sum(r.skipped for r in results)), "files"),
        "unchanged": (float(sum(r.unchanged for r in results) + unchanged_by_stat), "files"),
        "bytes_read": (float(sum(r.bytes_read for r in results)), "bytes"),
        "clusters": (float(len(outcome.centres)), "classes"),
        "threshold_t": (float(outcome.threshold_t), "bits"),
        "verify_t": (float(outcome.verify_t), "bits"),
        "pairs_verified": (float(outcome.verified), "pairs"),
        "pairs_passed": (float(outcome.verified_passed), "pairs"),
        "key_min_shared": (float(outcome.key_min_shared), "keys"),
        "key_pairs": (float(outcome.key_pairs), "pairs"),
        "expected_false_merges": (float(sum(outcome.expected_false_merges)), "images"),
        "expected_false_merges_direct": (float(outcome.expected_false_merges[0]), "images"),
        "expected_false_merges_verified": (float(outcome.expected_false_merges[1]), "images"),
        "split_for_review": (float(len(outcome.review)), "images"),
    }


def _add_seconds(metrics: dict[str, tuple[float, str]], results: list[PartitionResult],
                 seconds: dict[str, float]) -> None:
    """Add the worker and client stage times to ``metrics``."""
    for stage in WORKER_STAGES:
        metrics[f"worker_seconds_{stage}"] = (float(sum(r.seconds.get(stage, 0.0) for r in results)), "seconds")
    for stage in STAGES:
        metrics[f"seconds_{stage}"] = (float(seconds.get(stage, 0.0)), "seconds")
    metrics["seconds_total"] = (float(sum(seconds.get(s, 0.0) for s in STAGES)), "seconds")


def _report_table(run_id: str, metrics: dict[str, tuple[float, str]]) -> pa.Table:
    return pa.table({
        "run_id": [run_id] * len(metrics), "name": list(metrics),
        "value": [v for v, _ in metrics.values()], "unit": [u for _, u in metrics.values()],
    }, schema=reports_schema())


def _nothing_to_commit(store: Store, run_id: str, results: list[PartitionResult], outcome: DedupOutcome,
                       config: Config, seconds: dict[str, float], unchanged_by_stat: int,
                       clock: dt.datetime) -> BulkSummary:
    """The summary of a run that found nothing new: no commit, the store's version as it was."""
    metrics = _metrics(results, outcome, config, np.zeros(0, bool), np.zeros(0, np.int64), 0, unchanged_by_stat)
    seconds["commit"] = (dt.datetime.now(dt.timezone.utc) - clock).total_seconds()
    _add_seconds(metrics, results, seconds)
    return BulkSummary(run_id, store.latest_version(), metrics, [], committed=False)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_summary(summary: BulkSummary, file=None) -> None:
    """The run's headline numbers, stage times and errors, for a person at a terminal (stdout by default)."""
    s, file = summary, file or sys.stdout
    if s.committed:
        print(f"run {s.run_id}: committed as store version {s.version}", file=file)
    else:
        print(f"run {s.run_id}: nothing new, committed nothing (the store stays at version {s.version})",
              file=file)
    print(f"  images {s['images']:.0f}, stored {s['stored']:.0f}, duplicates {s['duplicates']:.0f} "
          f"({s['exact_duplicates']:.0f} byte-for-byte), errors {s['errors']:.0f}, "
          f"unchanged {s['unchanged']:.0f}, not images {s['skipped']:.0f}"
          + (f", re-elected {s['re_elected']:.0f}" if s['re_elected'] else ""), file=file)
    print(f"  bytes stored {_size(s['bytes_stored'])}, saved {_size(s['bytes_saved'])}, "
          f"classes {s['clusters']:.0f}", file=file)
    keys = (f" (with {s['key_pairs']:.0f} pairs sharing at least {s['key_min_shared']:.0f} feature keys)"
            if s['key_min_shared'] else "")
    zone = (f", verified zone up to {s['verify_t']:.0f} bits{keys}: {s['pairs_verified']:.0f} pairs verified, "
            f"{s['pairs_passed']:.0f} passed" if s['verify_t'] > s['threshold_t'] else ", no verified zone")
    print(f"  t {s['threshold_t']:.0f} bits{zone}", file=file)
    print(f"  expected false merges {s['expected_false_merges']:.2g} ({s['expected_false_merges_direct']:.2g} "
          f"within t, {s['expected_false_merges_verified']:.2g} through verification), "
          f"split off chained groups for review {s['split_for_review']:.0f}", file=file)
    outside = "" if s.wall_seconds is None else (
        f"; wall {s.wall_seconds:.2f}, of which {s.wall_seconds - s['seconds_total']:.2f} outside the stages: "
        "the local cluster's start and stop, the store's first reads, the commit record")
    print("  seconds: " + ", ".join(f"{stage} {s[f'seconds_{stage}']:.2f}" for stage in STAGES)
          + f" (total {s['seconds_total']:.2f}{outside})", file=file)
    for error in s.errors:
        print(f"  error: {printable(error['source'])}: {error['stage']}: {error['error_type']}: "
              f"{printable(error['message'])}", file=file)
