"""``imgdedup report``: what a run did.

    imgdedup report --out DIR [--store URL] [--run RUN_ID] [--key FILE] [--review]

``report`` reads the store's committed tables only, as they stand now (the
whole store: every run, one summary row each) or, with ``--run``, as they stood
when that run was committed, and writes the report tables
(``docs/reports.md``) as Parquet files and an HTML page into DIR. Thumbnails are
decrypted locally and only with ``--key``; without it the page holds no image
pixels and says so. ``--review`` shows only the groups with a member within
``report.review_margin`` bits of t, for a person to confirm before pointer
blobs are deleted (``imgdedup unmerge``, :mod:`imgdedup.jobs.unmerge`, undoes a
wrong merge).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from imgdedup.jobs import report_tables as rt
from imgdedup.jobs.report_html import ReportPage, write_html_report
from imgdedup.jobs.source import printable
from imgdedup.jobs.upload import read_blob_plaintext
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.keyed_fingerprint import open_hashes
from imgdedup.pipeline.crypto.group_key import GroupKey, load_key_file
from imgdedup.pipeline.crypto.index_keys import key_for_store
from imgdedup.pipeline.errors import DecodeError, StoreError
from imgdedup.pipeline.hashing.decode import decode
from imgdedup.pipeline.store import Store, schemas

log = logging.getLogger(__name__)

def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        description="Write Parquet report tables (summary, timings, errors_by_type, groups, classes, "
                    "nearest; docs/reports.md) and report.html for a committed run into --out.",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="folder for the tables and report.html")
    parser.add_argument("--store", metavar="URL", default=None, help="store URL (default: store.url)")
    parser.add_argument("--run", dest="run_id", metavar="RUN_ID", default=None,
                        help="report the store as this committed run left it (default: the whole store as it is now)")
    parser.add_argument("--key", metavar="FILE", default=None,
                        help="group key file: decrypts thumbnails locally (without it the page has no pixels)")
    parser.add_argument("--review", action="store_true",
                        help="show only the groups with a member within report.review_margin bits of t")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    store = Store(args.store or config.store.url)
    key = key_for_store(load_key_file(args.key), store.key_records()) if args.key else None
    out = Path(args.out)
    headline = write_report(store, out, config, run_id=args.run_id, key=key, review=args.review)
    scope = (f"run {headline['run_id']}" if headline["run_id"] is not None
             else f"the whole store ({headline['runs']} runs)")
    log.info("report of %s (version %d) written to %s", scope, headline["version"], out)
    print(f"{scope}, store version {headline['version']}: images {headline['images']}  stored {headline['stored']}  "
          f"duplicates {headline['duplicates']}  "
          f"bytes saved {headline['bytes_saved']}  errors {headline['errors']}  groups {headline['groups']}  "
          f"to review {headline['review_groups']}")
    if args.review:
        print_review(pq.read_table(out / f"{rt.GROUPS}.parquet"), config.dedup.threshold_t,
                     config.report.review_margin)
    print(out / "report.html")
    return 0


def print_review(groups: pa.Table, threshold_t: int, review_margin: int) -> None:
    """One line per pointer at or beyond ``t - margin`` bits from its canonical image, with the command that undoes it.

    Widest groups first. Members joined through a chain of near pairs can lie beyond t.
    """
    marked = groups.filter(pc.greater_equal(pc.fill_null(groups.column("distance"), -1), threshold_t - review_margin))
    for member in sorted(marked.to_pylist(), key=lambda m: (-m["spread"], m["group_rank"], -m["distance"])):
        print(f"review group {member['group_id']} (spread {member['spread']} of t = {threshold_t}): "
              f"{member['image_id']} at {member['distance']} bits, {printable(member['source'])} -- if wrong: "
              f"imgdedup unmerge {member['group_id']} {member['image_id']}")


# -- reading the store -------------------------------------------------------

def select_run(store: Store, run_id: str | None) -> tuple[str | None, int]:
    """``(run_id, version)`` to report: ``run_id`` as committed, or (None, the latest version) for the whole store."""
    runs = store.committed_runs()
    if not runs:
        raise StoreError(store.url, "the store has no committed run to report")
    if run_id is None:
        return None, max(runs.values())
    if run_id not in runs:
        raise StoreError(run_id, "no committed run has this id")
    return run_id, runs[run_id]


def run_summaries(store: Store, version: int, errors: pa.Table) -> list[dict]:
    """One summary row per committed run up to ``version``: the store's counts right after it.

    Each commit's fingerprints parts are counted once and the counts added up,
    starting afresh where a commit replaced the table, so the cost is one read
    of two columns per part, whatever the number of runs.
    """
    per_run = errors.group_by("run_id").aggregate([("source", "count")]).to_pydict()
    errors_per_run = dict(zip(per_run["run_id"], per_run["source_count"]))
    part_counts: dict[str, dict[str, int]] = {}
    current: list[str] = []
    rows = []
    for v in range(1, version + 1):
        record = store.commit_record(v)
        if schemas.FINGERPRINTS in record["replace"]:
            current = []
        for part in record["files"].get(schemas.FINGERPRINTS, []):
            if part.endswith(".parquet"):
                with store.open_committed_file(part) as f:
                    part_counts[part] = rt.fingerprint_counts(pq.read_table(f, columns=["duplicate_of", "bytes"]))
                current.append(part)
        totals = {name: sum(part_counts[p][name] for p in current) for name in
                  ("images", "stored", "duplicates", "bytes_total", "bytes_stored", "bytes_saved")}
        rows.append({"run_id": record["run_id"], "version": v,
                     "committed_at": dt.datetime.fromisoformat(record["committed_at"]),
                     "errors": errors_per_run.get(record["run_id"], 0), **totals})
    return rows


def comparable_hashes(fingerprints: pa.Table, key: GroupKey | None) -> np.ndarray | None:
    """The rows' hashes in a form whose Hamming distances are the hashes' own, if readable.

    Tokens are such a form already; sealed values are opened with ``key``; in
    sealed mode without a key there is none (None).
    """
    mode = schemas.schema_metadata(fingerprints.schema).get("fingerprint_mode", "tokens")
    values = schemas.binary_matrix(fingerprints.column("fingerprint"))
    if mode == "tokens":
        return values
    if key is None:
        return None
    return open_hashes(key, fingerprints.column("image_id").to_pylist(), values)


def thumbnail_jpeg(store: Store, key: GroupKey, image_id: str, px: int, config: Config) -> bytes | None:
    """A JPEG thumbnail (longest side ``px``) of blob ``image_id``, decrypted here; None if the blob is gone.

    Raises
    ------
    IntegrityError
        The blob does not decrypt under ``key`` (wrong key or tampered blob).
    """
    try:
        plaintext = read_blob_plaintext(store, key, image_id)
    except StoreError:
        return None
    try:
        picture = decode(plaintext, name=image_id, max_pixels=config.decode.max_pixels,
                         formats=config.decode.formats, draft_min_side=px).image
    except DecodeError as exc:
        log.warning("no thumbnail: %s", exc)
        return None
    picture.thumbnail((px, px), Image.Resampling.LANCZOS)
    sink = io.BytesIO()
    picture.save(sink, "JPEG", quality=80)
    return sink.getvalue()


# -- the report --------------------------------------------------------------

def build_report_tables(store: Store, version: int, config: Config,
                        key: GroupKey | None) -> tuple[dict[str, pa.Table], int]:
    """Every report table for the store as of ``version`` (see ``docs/reports.md``), and the hash length in bits."""
    # Every column but the sealed feature keys (~6 kB a row, which no report reads).
    columns = [name for name in schemas.default_schema(schemas.FINGERPRINTS).names if name != "feature_keys"]
    fingerprints = store.read_table(schemas.FINGERPRINTS, version, columns=columns)
    errors = store.read_table(schemas.ERRORS, version)
    metrics = store.read_table(schemas.REPORTS, version)
    hash_bits = int(schemas.schema_metadata(fingerprints.schema).get("hash_bits", config.hash.bits))
    return {
        rt.SUMMARY: rt.summary_table(run_summaries(store, version, errors)),
        rt.TIMINGS: rt.timings_table(metrics),
        rt.DEDUP_RULE: rt.dedup_rule_table(metrics),
        rt.ERRORS_BY_TYPE: rt.errors_by_type_table(errors),
        rt.GROUPS: rt.groups_table(fingerprints, config.dedup.threshold_t, config.report.review_margin),
        rt.CLASSES: rt.classes_table(store.read_table(schemas.CLUSTERS, version), fingerprints),
        rt.NEAREST: rt.nearest_table(fingerprints, comparable_hashes(fingerprints, key)),
    }, hash_bits


def write_report(store: Store, out: Path, config: Config, *, run_id: str | None = None,
                 key: GroupKey | None = None, review: bool = False) -> dict:
    """Write the report tables (``<name>.parquet``) and ``report.html`` into ``out``.

    The whole store as it is now when ``run_id`` is None, else the store as
    that run left it.

    Returns
    -------
    dict
        The headline numbers shown at the top of the page: ``run_id`` (None
        for the whole store), ``version``, ``runs`` (committed runs up to it),
        ``images``, ``stored``, ``duplicates``, ``bytes_saved``, ``errors``
        (of this run; of every run for the whole store), ``classes``,
        ``groups``, ``review_groups``.
    """
    run_id, version = select_run(store, run_id)
    tables, hash_bits = build_report_tables(store, version, config, key)
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet")
    runs = tables[rt.SUMMARY].to_pylist()
    summary = runs[-1]
    groups = tables[rt.GROUPS]
    headline = {
        "run_id": run_id, "version": version, "runs": len(runs),
        **{name: summary[name] for name in ("images", "stored", "duplicates", "bytes_saved")},
        "errors": summary["errors"] if run_id is not None else sum(r["errors"] for r in runs),
        "classes": tables[rt.CLASSES].num_rows,
        "groups": len(pc.unique(groups.column("group_id"))),
        "review_groups": len(pc.unique(groups.filter(groups.column("review")).column("group_id"))),
    }
    if key is None:
        thumbnails = None
    else:
        def thumbnails(image_id: str) -> bytes | None:
            return thumbnail_jpeg(store, key, image_id, config.report.thumbnail_px, config)
    write_html_report(ReportPage(
        headline=headline, tables=tables, threshold_t=config.dedup.threshold_t,
        hash_bits=hash_bits,
        review_only=review, page_size=config.report.page_size, members_shown=config.report.members_shown,
        review_margin=config.report.review_margin,
    ), out, thumbnails)
    return headline
