"""The report tables: what the store holds after a run, as plain Parquet tables.

Every function here takes Arrow tables read from the store's committed tables
(``fingerprints``, ``clusters``, ``errors``, ``reports``) and returns one report
table with an explicit schema of plain Arrow types (strings, integers, floats,
booleans, timestamps), so pyarrow, pandas, DuckDB and Dask read them without
imgdedup installed. ``docs/reports.md`` documents every column.

Distances are Hamming distances in bits of the store's hash (``imgdedup.hash_bits``
in the fingerprints schema metadata); byte counts are sizes of the source files.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from imgdedup.pipeline.hashing.bits import hamming

SUMMARY = "summary"
TIMINGS = "timings"
ERRORS_BY_TYPE = "errors_by_type"
GROUPS = "groups"
CLASSES = "classes"
NEAREST = "nearest"
DEDUP_RULE = "dedup_rule"

#: Distance-matrix cells (int32) computed at once when searching nearest neighbours within a class.
NEAREST_BLOCK_CELLS = 1 << 22

#: Metric rows of the ``reports`` table whose name starts with this hold a stage's wall time.
STAGE_SECONDS_PREFIX = "seconds_"

SUMMARY_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("version", pa.int64(), nullable=False),
    pa.field("committed_at", pa.timestamp("us", tz="UTC")),
    pa.field("images", pa.int64(), nullable=False),
    pa.field("stored", pa.int64(), nullable=False),
    pa.field("duplicates", pa.int64(), nullable=False),
    pa.field("errors", pa.int64(), nullable=False),
    pa.field("bytes_total", pa.int64(), nullable=False),
    pa.field("bytes_stored", pa.int64(), nullable=False),
    pa.field("bytes_saved", pa.int64(), nullable=False),
])

TIMINGS_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("seconds", pa.float64(), nullable=False),
])

ERRORS_BY_TYPE_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error_type", pa.string(), nullable=False),
    pa.field("count", pa.int64(), nullable=False),
])

GROUPS_SCHEMA = pa.schema([
    pa.field("group_id", pa.string(), nullable=False),
    pa.field("group_rank", pa.int32(), nullable=False),
    pa.field("group_size", pa.int32(), nullable=False),
    pa.field("spread", pa.int16(), nullable=False),
    pa.field("review", pa.bool_(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("is_canonical", pa.bool_(), nullable=False),
    pa.field("distance", pa.int16()),
    pa.field("cluster_id", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("source", pa.string()),
])

CLASSES_SCHEMA = pa.schema([
    pa.field("cluster_id", pa.int32(), nullable=False),
    pa.field("size", pa.int64(), nullable=False),
    pa.field("radius", pa.int16(), nullable=False),
    pa.field("clustering_version", pa.int64(), nullable=False),
    pa.field("images", pa.int64(), nullable=False),
    pa.field("duplicates", pa.int64(), nullable=False),
])

NEAREST_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("cluster_id", pa.int32()),
    pa.field("neighbour_id", pa.string()),
    pa.field("distance", pa.int16()),
])

DEDUP_RULE_SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("threshold_t", pa.int16(), nullable=False),
    pa.field("verify_t", pa.int16(), nullable=False),
    pa.field("pairs_verified", pa.int64(), nullable=False),
    pa.field("pairs_passed", pa.int64(), nullable=False),
    pa.field("expected_false_merges_direct", pa.float64(), nullable=False),
    pa.field("expected_false_merges_verified", pa.float64(), nullable=False),
])

SCHEMAS = {
    SUMMARY: SUMMARY_SCHEMA, TIMINGS: TIMINGS_SCHEMA, ERRORS_BY_TYPE: ERRORS_BY_TYPE_SCHEMA,
    GROUPS: GROUPS_SCHEMA, CLASSES: CLASSES_SCHEMA, NEAREST: NEAREST_SCHEMA, DEDUP_RULE: DEDUP_RULE_SCHEMA,
}


def fingerprint_counts(fingerprints: pa.Table) -> dict[str, int]:
    """Image and byte counts of (a part of) the fingerprints table.

    Parameters
    ----------
    fingerprints : pyarrow.Table
        Needs the ``duplicate_of`` and ``bytes`` columns; a null ``bytes`` counts as 0.

    Returns
    -------
    dict
        ``images`` (rows), ``stored`` (rows without ``duplicate_of``: canonical
        images, one blob each), ``duplicates`` (pointer rows), ``bytes_total``,
        ``bytes_stored`` (file bytes of canonical rows), ``bytes_saved`` (file
        bytes of pointer rows: what dedup did not store). Additive over parts.
    """
    pointer = pc.is_valid(fingerprints.column("duplicate_of"))
    sizes = pc.fill_null(fingerprints.column("bytes"), 0)
    saved = pc.sum(pc.if_else(pointer, sizes, 0)).as_py() or 0
    total = pc.sum(sizes).as_py() or 0
    duplicates = pc.sum(pointer.cast(pa.int64())).as_py() or 0
    return {
        "images": fingerprints.num_rows, "stored": fingerprints.num_rows - duplicates, "duplicates": duplicates,
        "bytes_total": total, "bytes_stored": total - saved, "bytes_saved": saved,
    }


def summary_table(rows: Iterable[Mapping[str, object]]) -> pa.Table:
    """The ``summary`` table from one mapping per run (keys: the schema's columns)."""
    return pa.Table.from_pylist(list(rows), schema=SUMMARY_SCHEMA)


def timings_table(metrics: pa.Table) -> pa.Table:
    """The ``timings`` table: the ``seconds_<stage>`` metric rows of the ``reports`` table."""
    is_timing = pc.starts_with(metrics.column("name"), STAGE_SECONDS_PREFIX)
    timing = metrics.filter(is_timing)
    stages = pc.utf8_slice_codeunits(timing.column("name"), len(STAGE_SECONDS_PREFIX))
    return pa.table([timing.column("run_id"), stages, timing.column("value")], schema=TIMINGS_SCHEMA)


def dedup_rule_table(metrics: pa.Table) -> pa.Table:
    """The ``dedup_rule`` table: per bulk run, its direct t, verified zone, verifications and expected false merges.

    Built from the run's metric rows in the ``reports`` table; a run that
    recorded no ``verify_t`` (an ingest batch, a bulk run from before the
    verified zone) has no row.
    """
    columns = DEDUP_RULE_SCHEMA.names[1:]
    values: dict[str, dict[str, float]] = {}
    for run_id, name, value in zip(*(metrics.column(c).to_pylist() for c in ("run_id", "name", "value"))):
        if name in columns:
            values.setdefault(run_id, {})[name] = value
    rows = [{"run_id": run_id, **{c: (int(v[c]) if DEDUP_RULE_SCHEMA.field(c).type != pa.float64() else v[c])
                                  for c in columns}}
            for run_id, v in values.items() if set(columns) <= set(v)]
    return pa.Table.from_pylist(rows, schema=DEDUP_RULE_SCHEMA)


def errors_by_type_table(errors: pa.Table) -> pa.Table:
    """The ``errors_by_type`` table: error rows counted per run, stage and error type."""
    counts = errors.group_by(["run_id", "stage", "error_type"]).aggregate([("source", "count")])
    counts = counts.rename_columns({"source_count": "count"}).select(ERRORS_BY_TYPE_SCHEMA.names)
    counts = counts.cast(ERRORS_BY_TYPE_SCHEMA)
    return counts.sort_by([("run_id", "ascending"), ("count", "descending"), ("error_type", "ascending")])


def canonical_of(image_ids: list[str], duplicate_of: list[str | None]) -> list[str]:
    """The canonical image of every row: ``duplicate_of`` followed until a row without one.

    A pointer whose target is missing from the table, or a cycle, ends at the
    last image reached, so every row belongs to exactly one group.
    """
    target = {i: d for i, d in zip(image_ids, duplicate_of) if d is not None}
    roots = []
    for image_id in image_ids:
        seen = {image_id}
        node = image_id
        while node in target and target[node] not in seen:
            node = target[node]
            seen.add(node)
        roots.append(node)
    return roots


def groups_table(fingerprints: pa.Table, threshold_t: int, review_margin: int) -> pa.Table:
    """The ``groups`` table: every member of every duplicate group, largest groups first.

    Parameters
    ----------
    fingerprints : pyarrow.Table
        The fingerprints table (any subset of rows).
    threshold_t : int
        The dedup threshold t, in bits.
    review_margin : int
        A group is marked ``review`` when a member's distance to the canonical
        image is at least ``threshold_t - review_margin`` bits.

    Returns
    -------
    pyarrow.Table
        One row per image of a group with two or more members; the canonical
        image first in its group, then the members by distance. ``group_id`` is
        the canonical image's id; ``group_rank`` 1 is the largest group (ties by id).
    """
    columns = ["image_id", "duplicate_of", "distance", "cluster_id", "width", "height", "bytes", "source"]
    rows = fingerprints.select(columns).to_pydict()
    roots = canonical_of(rows["image_id"], rows["duplicate_of"])
    members: dict[str, list[int]] = {}
    for row, root in enumerate(roots):
        members.setdefault(root, []).append(row)
    grouped = {root: rows_ for root, rows_ in members.items() if len(rows_) > 1}
    order = sorted(grouped, key=lambda root: (-len(grouped[root]), root))
    out: dict[str, list] = {name: [] for name in GROUPS_SCHEMA.names}
    for rank, root in enumerate(order, start=1):
        group = grouped[root]
        is_canonical = [rows["image_id"][r] == root for r in group]
        distances = [rows["distance"][r] for r, c in zip(group, is_canonical) if not c]
        spread = max((d for d in distances if d is not None), default=0)
        group = sorted(group, key=lambda r: (rows["image_id"][r] != root, rows["distance"][r] or 0,
                                             rows["image_id"][r]))
        for r in group:
            canonical = rows["image_id"][r] == root
            out["group_id"].append(root)
            out["group_rank"].append(rank)
            out["group_size"].append(len(group))
            out["spread"].append(spread)
            out["review"].append(spread >= threshold_t - review_margin)
            out["is_canonical"].append(canonical)
            out["distance"].append(None if canonical else rows["distance"][r])
            for name in ("image_id", "cluster_id", "width", "height", "bytes", "source"):
                out[name].append(rows[name][r])
    return pa.table(out, schema=GROUPS_SCHEMA)


def classes_table(clusters: pa.Table, fingerprints: pa.Table) -> pa.Table:
    """The ``classes`` table: the latest clustering's classes with their current membership.

    ``size`` and ``radius`` are as the clustering recorded them; ``images`` and
    ``duplicates`` count the fingerprints rows that name the class now.
    """
    if clusters.num_rows:
        latest = pc.max(clusters.column("version")).as_py()
        clusters = clusters.filter(pc.equal(clusters.column("version"), latest)).sort_by("cluster_id")
    per_class = fingerprints.select(["cluster_id", "duplicate_of"]).to_pydict()
    images: dict[int, int] = {}
    duplicates: dict[int, int] = {}
    for cluster_id, duplicate_of in zip(per_class["cluster_id"], per_class["duplicate_of"]):
        images[cluster_id] = images.get(cluster_id, 0) + 1
        duplicates[cluster_id] = duplicates.get(cluster_id, 0) + (duplicate_of is not None)
    ids = clusters.column("cluster_id").to_pylist()
    return pa.table({
        "cluster_id": ids,
        "size": clusters.column("size"),
        "radius": clusters.column("radius"),
        "clustering_version": clusters.column("version"),
        "images": [images.get(c, 0) for c in ids],
        "duplicates": [duplicates.get(c, 0) for c in ids],
    }, schema=CLASSES_SCHEMA)


def nearest_in_class(fingerprints: np.ndarray, cluster_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each fingerprint's nearest other fingerprint within its own class.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
        Packed hashes, or distance-preserving tokens of them.
    cluster_ids : ndarray of int, shape (n,)
        Class of each row; rows of one value are compared with each other only
        (as the index searches), so the work is the sum of squared class sizes.

    Returns
    -------
    neighbour : ndarray of int64, shape (n,)
        Row of the nearest other member, -1 for a class of one.
    distance : ndarray of int32, shape (n,)
        Its Hamming distance in bits, -1 for a class of one.
    """
    n = len(cluster_ids)
    neighbour = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int32)
    for cluster_id in np.unique(cluster_ids):
        rows = np.flatnonzero(cluster_ids == cluster_id)
        if len(rows) < 2:
            continue
        members = fingerprints[rows]
        # Blocks of queries keep the distance matrix near NEAREST_BLOCK_CELLS whatever the class size.
        step = max(1, NEAREST_BLOCK_CELLS // len(rows))
        for start in range(0, len(rows), step):
            d = hamming(members[start:start + step], members)
            block = np.arange(d.shape[0])
            d[block, start + block] = np.iinfo(np.int32).max
            nearest = d.argmin(axis=1)
            neighbour[rows[start:start + step]] = rows[nearest]
            distance[rows[start:start + step]] = d[block, nearest]
    return neighbour, distance


def nearest_table(fingerprints: pa.Table, hashes: np.ndarray | None) -> pa.Table:
    """The ``nearest`` table: every image's nearest neighbour as far as the store can tell.

    Parameters
    ----------
    fingerprints : pyarrow.Table
        The fingerprints table.
    hashes : ndarray of uint8, shape (n, nbytes), or None
        The rows' hashes in a distance-preserving form (the tokens, or the
        opened sealed values); None when they cannot be read (sealed mode
        without the key): then only pointers have a neighbour, their canonical.

    Returns
    -------
    pyarrow.Table
        ``distance`` is the smaller of the nearest distance within the class
        (plain form) and, for a pointer, its recorded distance to its canonical
        image (smallest over the dihedral forms); null when neither is known.
    """
    ids = fingerprints.column("image_id").to_pylist()
    cluster_ids = fingerprints.column("cluster_id").to_pylist()
    duplicate_of = fingerprints.column("duplicate_of").to_pylist()
    recorded = fingerprints.column("distance").to_pylist()
    neighbour_ids: list[str | None] = [None] * len(ids)
    distances: list[int | None] = [None] * len(ids)
    if hashes is not None and len(ids):
        classes = np.array([-1 if c is None else c for c in cluster_ids], dtype=np.int64)
        rows, within = nearest_in_class(hashes, classes)
        for i in np.flatnonzero(rows >= 0):
            neighbour_ids[i], distances[i] = ids[rows[i]], int(within[i])
    for i, (target, d) in enumerate(zip(duplicate_of, recorded)):
        if target is not None and d is not None and (distances[i] is None or d <= distances[i]):
            neighbour_ids[i], distances[i] = target, d
    return pa.table({"image_id": ids, "cluster_id": cluster_ids, "neighbour_id": neighbour_ids,
                     "distance": distances}, schema=NEAREST_SCHEMA)
