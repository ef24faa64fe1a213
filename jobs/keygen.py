"""Group key commands: ``imgdedup keygen`` and ``imgdedup rotate-key``."""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field

from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.blob import parse_header, rewrap_header, verify_header
from imgdedup.pipeline.crypto.group_key import GroupKey, load_key_file, resolve_key_path, write_key_file
from imgdedup.pipeline.crypto.index_keys import key_for_store, wrap_index_keys
from imgdedup.pipeline.errors import ImgdedupError, KeyFileError
from imgdedup.pipeline.store import Store, schemas

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        description="Write a fresh 256-bit group key with its key id to a file only its owner "
                    "can read. Share it with the group over a channel you trust; anyone holding "
                    "it can decrypt every blob.",
    )
    keygen.add_argument("--out", metavar="FILE", default=None,
                        help="key file to create (default: $IMGDEDUP_KEY_FILE, else crypto.key_file)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    keygen.set_defaults(run=run_keygen)

    rotate = subparsers.add_parser(
        "rotate-key",
        description="Re-wrap each blob's data key, and the store's index keys (those of its "
                    "tokens, sealed hashes and content digests), under NEW by rewriting only small "
                    "objects; image ciphertext and tables are never rewritten. Resumable: blobs "
                    "already under NEW are skipped, so re-running after an interruption completes "
                    "the rotation. Every blob stays readable throughout, with whichever key wraps "
                    "it at that moment. Once every blob is under NEW the old keys are retired: "
                    "every command then needs NEW and refuses the old keys.",
    )
    rotate.add_argument("--store", metavar="URL", default=None,
                        help="store URL (default: store.url)")
    rotate.add_argument("--old", metavar="FILE", action="append", required=True,
                        help="key file of the key being retired (repeatable)")
    rotate.add_argument("--new", metavar="FILE", required=True, help="key file of the new key")
    rotate.add_argument("--progress-every", metavar="N", type=int, default=1000,
                        help="log progress every N blobs (default: 1000)")
    rotate.set_defaults(run=run_rotate)


def run_keygen(args: argparse.Namespace, config: Config) -> int:
    path = args.out or resolve_key_path(config.crypto.key_file)
    key = GroupKey.generate()
    write_key_file(path, key, overwrite=args.force)
    print(f"wrote group key {key.key_id_hex} to {path} (mode 0600)")
    return 0


@dataclass
class RotationSummary:
    """What one pass of :func:`rotate_store` did."""

    rotated: int = 0
    already_new: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return self.rotated + self.already_new + len(self.failed)


def rotate_store(store: Store, old: list[GroupKey], new: GroupKey, *,
                 progress_every: int = 1000) -> RotationSummary:
    """Re-wrap the data key of every blob in ``store`` under ``new``.

    Every blob whose header and body are both present is visited, committed or
    not, so a run committed after the rotation does not bring old-key blobs back.
    Each header is verified under ``old`` and replaced atomically; a header that
    already names ``new`` is verified under it and left alone. Bodies are never
    opened. A blob that fails is logged and counted, and the pass goes on.
    """
    summary = RotationSummary()
    for blob_id in store.iter_blob_ids(committed_only=False):
        try:
            header = store.read_blob_header(blob_id)
            # The header names the image it was sealed for; its MAC proves that
            # name, so rotation needs no mapping from blob ids to image ids.
            parsed = parse_header(header, blob_id)
            if parsed.wrap_key_id == new.key_id:
                # Verified, not trusted: a damaged or forged header that merely
                # names the new key must not be counted as done.
                verify_header(new, parsed.image_id, header)
                summary.already_new += 1
            else:
                store.replace_blob_header(blob_id, rewrap_header(header, parsed.image_id, old, new))
                summary.rotated += 1
        except ImgdedupError as exc:
            log.error("blob %s not re-wrapped: %s", blob_id, exc)
            summary.failed.append(blob_id)
        if summary.seen % progress_every == 0:
            log.info("rotate-key: %d blobs visited, %d re-wrapped", summary.seen, summary.rotated)
    return summary


def store_index_key(store: Store, old: list[GroupKey], new: GroupKey) -> GroupKey:
    """The store's index keys, opened with one of ``old`` or ``new`` (:mod:`~imgdedup.pipeline.crypto.index_keys`).

    A store never rotated has no ``_keys/`` record: its index keys are those of
    the old key its fingerprints name (the first old key for a store without
    fingerprints), and that key's own record is written first, so it keeps
    working until the rotation completes.

    Raises
    ------
    KeyFileError
        None of the keys opens the store's index keys, or (never rotated) none
        of ``old`` is the key its fingerprints were made under.
    """
    records = store.key_records()
    if records:
        holder = next((k for k in [new, *old] if k.key_id_hex in records), None)
        if holder is None:
            raise KeyFileError(", ".join(k.key_id_hex for k in old), "none of the old keys is a current key of "
                               f"this store (its keys: {', '.join(sorted(records))})")
        return key_for_store(holder, records)
    present = store.read_table(schemas.FINGERPRINTS, columns=["image_id"])
    made_under = schemas.schema_metadata(present.schema).get("key_id") if present.num_rows else old[0].key_id_hex
    origin = next((k for k in old if k.key_id_hex == made_under), None)
    if origin is None:
        raise KeyFileError(", ".join(k.key_id_hex for k in old), f"the store's fingerprints were made under key "
                           f"{made_under}, which is not among the old keys given")
    store.write_key_record(origin.key_id_hex, wrap_index_keys(origin, origin))
    return origin


def run_rotate(args: argparse.Namespace, config: Config) -> int:
    old = [load_key_file(path) for path in args.old]
    new = load_key_file(args.new)
    if new in old:
        log.error("rotate-key: the new key %s is also given as an old key", new.key_id_hex)
        return 2
    store = Store(args.store or config.store.url)
    store.check_writable()
    # Order makes every step resumable and every moment readable: the new key's
    # record before any blob is re-wrapped under it, the old keys' records
    # removed only once no blob needs them.
    index = store_index_key(store, old, new)
    store.write_key_record(new.key_id_hex, wrap_index_keys(index, new))
    summary = rotate_store(store, old, new, progress_every=max(1, args.progress_every))
    if not summary.failed:
        for retired in set(store.key_records()) - {new.key_id_hex}:
            store.remove_key_record(retired)
    print(f"rotate-key {store.url}: {summary.seen} blobs, {summary.rotated} re-wrapped, "
          f"{summary.already_new} already under key {new.key_id_hex}, "
          f"{len(summary.failed)} failed"
          + ("; the old keys are retired" if not summary.failed else "; re-run to finish, the old keys still work"))
    return 1 if summary.failed else 0
