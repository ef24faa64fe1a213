"""``imgdedup get``: download an image by id or by a query image (the paper's download, §5(3)).

    imgdedup get IMAGE_ID --out PATH [--store URL] [--key FILE]
    imgdedup get --like FILE --out PATH [--store URL] [--key FILE]

By id: the image's row names its blob, or (a pointer) the canonical image whose
blob stands for it. By a query image: the file's keyed content digest is looked
up first (an exact copy); otherwise its fingerprint (with its dihedral forms
when configured) is searched in the class index up to the top of the verified
zone, as ingest searches it, and the nearest stored image is taken, reported
with its distance: as it is within the direct-accept t (``dedup.threshold_t``
under the t rule), and in the zone above t only once the local-feature
verifier passes the query's picture against its canonical's (whose blob is
decrypted for it; ``dedup.verify_up_to = 0`` turns the zone off). A zone match
that fails verification is a miss; a canonical blob that fails to decrypt is an
IntegrityError of stage ``verify`` (exit status 3), never a miss. The
rows that map the id to its canonical are checked against their
``resolution_mac`` first (a forged or edited mapping is an IntegrityError,
exit status 3; a row written before the MAC existed is refused unless
``--allow-unauthenticated``). The blob
is decrypted into a temporary file beside ``--out`` and renamed onto it only
once every segment has verified, so ``--out`` never holds a partial or forged
image. A miss prints ``The image does not exist`` and exits with status 1.
"""
from __future__ import annotations

import argparse
import os
import stat
import tempfile
from pathlib import Path

from imgdedup.jobs.lookup import DecidedImages, lookup_like
from imgdedup.jobs.source import printable
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.blob import open_stream
from imgdedup.pipeline.crypto.group_key import GroupKey, load_group_key
from imgdedup.pipeline.crypto.index_keys import key_for_store
from imgdedup.pipeline.errors import UsageError
from imgdedup.pipeline.store import Store

MISS_MESSAGE = "The image does not exist"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "get",
        description="Write the stored image IMAGE_ID (a pointer resolves to its canonical image), "
                    "or the stored image nearest to FILE (searched up to the verified zone above t, where a "
                    "match counts once verified on both pictures), decrypted, to --out.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("image_id", nargs="?", metavar="IMAGE_ID", help="id of a stored or pointer image")
    target.add_argument("--like", metavar="FILE",
                        help="query image: its exact copy, else its nearest duplicate within t, or in the verified "
                             "zone above t once local features on both pictures agree")
    parser.add_argument("--out", metavar="PATH", required=True,
                        help="where to write the decrypted image: a new file or a regular file it replaces, "
                             "in an existing folder")
    parser.add_argument("--store", metavar="URL", default=None, help="store URL (default: store.url)")
    parser.add_argument("--key", metavar="FILE", default=None,
                        help="group key file (default: $IMGDEDUP_KEY_FILE, else crypto.key_file)")
    parser.add_argument("--allow-unauthenticated", action="store_true",
                        help="follow a row written before mappings were MACed (refused by default)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    out = check_out_path(Path(args.out))
    if args.like is not None:
        check_regular_file(Path(args.like), "--like")
    key = load_group_key(args.key, config.crypto.key_file)
    store = Store(args.store or config.store.url)
    key = key_for_store(key, store.key_records())
    images = DecidedImages.load(store, key, config, searchable=args.like is not None)
    if args.like is not None:
        found = lookup_like(images, key, config, args.like, allow_unauthenticated=args.allow_unauthenticated)
        if found is None:
            print(MISS_MESSAGE)
            return 1
        image_id, distance = found
        match = f" (distance {distance} bits)"
    else:
        image_id, match = args.image_id, ""
    canonical = images.verified_canonical(image_id, allow_unauthenticated=args.allow_unauthenticated)
    if canonical is None:
        print(MISS_MESSAGE)
        return 1
    download(store, key, canonical, out)
    stored_as = "" if canonical == image_id else f" (stored as {canonical})"
    print(f"{image_id}{match} -> {printable(str(out))}{stored_as}")
    return 0


def check_regular_file(path: Path, option: str) -> Path:
    """``path`` if it is an existing regular file (symlinks followed), else UsageError naming ``option``."""
    try:
        mode = path.expanduser().stat().st_mode
    except FileNotFoundError:
        raise UsageError(str(path), f"{option}: no such file") from None
    except OSError as exc:
        raise UsageError(str(path), f"{option}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(str(path), f"{option}: not a regular file")
    return path


def check_out_path(out: Path) -> Path:
    """``out`` (expanded) if an image may be written there: a new name or a regular file, in an existing folder.

    A folder, a device (``/dev/full``), a FIFO or a socket is refused, as is a
    missing folder: :func:`download` writes a temporary file in ``out``'s folder
    and renames it onto ``out``, which would replace such a node.

    Raises
    ------
    UsageError
    """
    out = out.expanduser()
    if out.exists():
        check_regular_file(out, "--out")
    elif not out.parent.is_dir():
        raise UsageError(str(out), f"--out: the folder {out.parent} does not exist")
    return out


def download(store: Store, key: GroupKey, blob_id: str, out: Path) -> None:
    """Decrypt blob ``blob_id`` to ``out``, atomically.

    The plaintext goes to a temporary file in ``out``'s folder, which is renamed
    onto ``out`` only after the last segment authenticated.

    Raises
    ------
    IntegrityError
        The blob does not decrypt under ``key`` (``out`` is left untouched).
    StoreError
        The blob is missing.
    """
    out = out.expanduser()
    header = store.read_blob_header(blob_id)
    fd, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as sink, store.open_blob_body(blob_id) as body:
            for chunk in open_stream(key, blob_id, header, body):
                sink.write(chunk)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
