"""Store maintenance commands: ``imgdedup gc``."""
from __future__ import annotations

import argparse
import logging

from imgdedup.pipeline.config import Config
from imgdedup.pipeline.store import Store

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gc",
        description=(
            "Remove files (Parquet parts, blobs, leftovers of crashed writes) that no commit "
            "record refers to and that are older than the grace period. Committed files are "
            "never removed."
        ),
    )
    parser.add_argument(
        "--grace", type=int, metavar="SECONDS", default=None,
        help="minimum age of a removed file (default: store.gc_grace_seconds)",
    )
    parser.add_argument("--store", metavar="URL", default=None, help="store URL (default: store.url)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    grace = config.store.gc_grace_seconds if args.grace is None else args.grace
    store = Store(args.store or config.store.url)
    removed = store.gc(grace)
    for key in removed:
        log.debug("removed %s", key)
    log.info("gc of %s: removed %d unreferenced file(s) older than %d s", store.url, len(removed), grace)
    return 0
