"""``imgdedup unmerge``: undo a wrong merge.

    imgdedup unmerge GROUP_ID IMAGE_ID [--store URL] [--key FILE]

Makes a pointer image its own canonical image again, by a commit that
replaces the fingerprints table with the image's row changed (``duplicate_of``
and ``distance`` null, ``blob`` its own blob, a new ``resolution_mac``). Possible
only while the image's blob is kept (``dedup.pointer_blob_grace_days``). It
needs the key: the changed mapping is MACed, as every mapping ``get`` follows.
"""
from __future__ import annotations

import argparse
import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from imgdedup.jobs.report_tables import canonical_of
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import GroupKey, load_group_key
from imgdedup.pipeline.crypto.index_keys import key_for_store
from imgdedup.pipeline.crypto.resolution import resolution_mac
from imgdedup.pipeline.errors import MergeError, StoreError
from imgdedup.pipeline.store import Store, object_paths, schemas

#: Tries of unmerge's read-modify-commit when another commit lands in between.
UNMERGE_ATTEMPTS = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "unmerge",
        description="Undo a wrong merge: IMAGE_ID, a pointer in the duplicate group GROUP_ID (the id of "
                    "the group's canonical image), becomes its own canonical image again. Possible only "
                    "while its blob is kept (dedup.pointer_blob_grace_days).",
    )
    parser.add_argument("group_id", metavar="GROUP_ID")
    parser.add_argument("image_id", metavar="IMAGE_ID")
    parser.add_argument("--store", metavar="URL", default=None, help="store URL (default: store.url)")
    parser.add_argument("--key", metavar="FILE", default=None,
                        help="group key file (default: $IMGDEDUP_KEY_FILE, else crypto.key_file)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    store = Store(args.store or config.store.url)
    store.check_writable()
    key = key_for_store(load_group_key(args.key, config.crypto.key_file), store.key_records())
    version = unmerge(store, key, args.group_id, args.image_id)
    print(f"{args.image_id} is its own canonical image again (store version {version})")
    return 0


def unmerged_table(key: GroupKey, fingerprints: pa.Table, group_id: str, image_id: str) -> pa.Table:
    """``fingerprints`` with ``image_id`` made its own canonical (row order kept), its mapping MACed under ``key``.

    Raises
    ------
    MergeError
        ``image_id`` is not in the table, is a canonical image, or belongs to
        another group than ``group_id``.
    """
    ids = fingerprints.column("image_id").to_pylist()
    duplicate_of = fingerprints.column("duplicate_of").to_pylist()
    if image_id not in ids:
        raise MergeError(image_id, "no such image in the fingerprints table")
    row = ids.index(image_id)
    if duplicate_of[row] is None:
        raise MergeError(image_id, "is a canonical image already; there is no merge to undo")
    group = canonical_of(ids, duplicate_of)[row]
    if group != group_id:
        raise MergeError(image_id, f"belongs to duplicate group {group}, not {group_id}")
    if "resolution_mac" not in fingerprints.column_names:  # a table written before mappings were MACed
        mac_field = schemas.fingerprints_schema().field("resolution_mac")
        fingerprints = fingerprints.append_column(mac_field, pa.nulls(fingerprints.num_rows, mac_field.type))
    is_row = pc.equal(fingerprints.column("image_id"), image_id)
    blob = object_paths.blob_body_key(image_id)
    mac_type = fingerprints.schema.field("resolution_mac").type
    changed = {
        "duplicate_of": pc.if_else(is_row, pa.scalar(None, pa.string()), fingerprints.column("duplicate_of")),
        "distance": pc.if_else(is_row, pa.scalar(None, pa.int16()), fingerprints.column("distance")),
        "blob": pc.if_else(is_row, pa.scalar(blob), fingerprints.column("blob")),
        "resolution_mac": pc.if_else(is_row, pa.scalar(resolution_mac(key, image_id, None, blob), mac_type),
                                     fingerprints.column("resolution_mac")),
    }
    for name, column in changed.items():
        index = fingerprints.schema.get_field_index(name)
        fingerprints = fingerprints.set_column(index, fingerprints.schema.field(name), column)
    return fingerprints


def unmerge(store: Store, key: GroupKey, group_id: str, image_id: str) -> int:
    """Make pointer ``image_id`` of group ``group_id`` its own canonical image again; return the commit version.

    The fingerprints table is read, changed in one row and committed whole
    with ``replace``. If another commit lands between the read and the commit,
    the read is redone (up to :data:`UNMERGE_ATTEMPTS` times); if one lands in
    the instant between the last check and the commit (the commit then gets a
    later version and its replacement hides that run's rows), a follow-up
    commit lists that run's fingerprints parts again, so no run's rows are lost.

    Raises
    ------
    MergeError
        See :func:`unmerged_table`; or the image's blob is no longer kept.
    StoreError
        The store kept changing under every attempt, or a commit that replaced
        the fingerprints table itself overtook the unmerge.
    """
    object_paths.check_blob_id(image_id)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    run_id = f"unmerge-{image_id}-{stamp}"
    for _ in range(UNMERGE_ATTEMPTS):
        version = store.latest_version()
        fingerprints = store.read_table(schemas.FINGERPRINTS, version)
        table = unmerged_table(key, fingerprints, group_id, image_id)
        if not store.blob_exists(image_id) or image_id in store.released_blob_ids():
            if _same_bytes(fingerprints, image_id, group_id):
                raise MergeError(image_id, f"is a byte-for-byte copy of {group_id}: no blob of its own was "
                                 "kept, and there is no merge to undo (the images are the same file)")
            raise MergeError(image_id, "its blob is no longer kept (the grace period for undoing merges, "
                             "dedup.pointer_blob_grace_days, has passed); add the file again instead")
        part = store.write_table_part(schemas.FINGERPRINTS, run_id, 0, table)
        if store.latest_version() != version:
            continue  # another run committed meanwhile: its rows must be in the replacement
        committed = store.commit(run_id, {schemas.FINGERPRINTS: [part]}, blobs=[image_id],
                                 meta={"unmerge": {"group_id": group_id, "image_id": image_id}},
                                 replace=[schemas.FINGERPRINTS])
        restore_overtaken_rows(store, run_id, version, committed)
        return committed
    raise StoreError(store.url, f"the store changed during each of {UNMERGE_ATTEMPTS} attempts to unmerge "
                     f"{image_id}; try again")


def _same_bytes(fingerprints: pa.Table, image_id: str, group_id: str) -> bool:
    """True if the rows of ``image_id`` and ``group_id`` carry one keyed content digest (the same file)."""
    ids = fingerprints.column("image_id").to_pylist()
    digests = dict(zip(ids, fingerprints.column("content_digest").to_pylist()))
    return digests.get(image_id) is not None and digests.get(image_id) == digests.get(group_id)


def restore_overtaken_rows(store: Store, run_id: str, read_version: int, committed: int) -> None:
    """List again the fingerprints parts of commits that landed between a table replacement's read and its commit.

    An unmerge and a re-electing bulk run both replace the fingerprints table
    with one they read at ``read_version``; a run that committed in between
    would otherwise lose its rows.
    """
    overtaking = [store.commit_record(v) for v in range(read_version + 1, committed)]
    if not overtaking:
        return
    replaced = [r["run_id"] for r in overtaking if schemas.FINGERPRINTS in r["replace"]]
    if replaced:
        raise StoreError(run_id, f"committed as version {committed}, but {replaced} replaced the fingerprints "
                         f"table in between; its changes are hidden by the unmerge: re-run {replaced}")
    parts = [part for r in overtaking for part in r["files"].get(schemas.FINGERPRINTS, [])]
    if parts:
        store.commit(f"{run_id}-restore", {schemas.FINGERPRINTS: parts},
                     meta={"restores": [r["run_id"] for r in overtaking]})
