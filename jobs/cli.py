"""The ``imgdedup`` command line.

Each command lives in its own module under ``jobs/`` and exposes
``register(subparsers)``, which adds its parser and sets ``run(args, config) -> int``
as the parser's default. Global options (``--config``, ``--set``) are shared by all.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.errors import ImgdedupError

# One line per command module, in the order `imgdedup --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "imgdedup.jobs.hash",
    "imgdedup.jobs.demo",
    "imgdedup.jobs.keygen",
    "imgdedup.jobs.storecmd",
    "imgdedup.jobs.bulk",
    "imgdedup.jobs.ingest",
    "imgdedup.jobs.get",
    "imgdedup.jobs.report",
    "imgdedup.jobs.unmerge",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgdedup",
        description="Secure near-duplicate image deduplication.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: conf/default.toml)")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override one config key, e.g. --set hash.bits=256 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at debug level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config, args.overrides)
        return args.run(args, config)
    except ImgdedupError as exc:
        print(f"imgdedup: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
