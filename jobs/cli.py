"""The ``imgdedup`` command line.

Each command lives in a module under ``jobs/`` that exposes
``register(subparsers)``, which adds its parser and sets ``run(args, config) -> int``
as the parser's default. Global options (``--config``, ``--set``, ``-v``) are shared
by all.

Start-up imports only what the chosen command needs: :data:`COMMANDS` names each
command's module and one-line help, ``imgdedup --help`` lists them without
importing any, and ``imgdedup COMMAND ...`` imports that command's module alone
(Dask, Numba and Matplotlib load only for the commands that use them).

Exit statuses, the same for every command (README lists them):

- 0: done;
- 1: some inputs failed or were not found (error rows, "The image does not exist");
- 2: usage, configuration, key or store error (a storage backend's own included, such as no
  credentials for s3://): nothing was committed, one line on stderr says why;
- 3: integrity error: the store's data failed authentication (tampered, forged or
  made under another key); nothing was written.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.errors import ImgdedupError, IntegrityError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTEGRITY = 0, 1, 2, 3
log = logging.getLogger("imgdedup")

#: Command name -> (module that registers it, one-line help), in the order ``--help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "hash": ("imgdedup.jobs.hash", "fingerprint image files and print or save the hashes"),
    "demo": ("imgdedup.jobs.demo", "build a labelled sample set and deduplicate it with the bulk job"),
    "keygen": ("imgdedup.jobs.keygen", "create a new group key file (mode 0600)"),
    "rotate-key": ("imgdedup.jobs.keygen", "re-wrap every blob's data key under a new group key"),
    "gc": ("imgdedup.jobs.storecmd", "remove store files no commit refers to"),
    "bulk": ("imgdedup.jobs.bulk", "deduplicate an image folder or bucket into the store (Dask job)"),
    "ingest": ("imgdedup.jobs.ingest", "decide new images one micro-batch at a time (stored, duplicate or error)"),
    "get": ("imgdedup.jobs.get", "decrypt a stored image by id or by a similar image"),
    "report": ("imgdedup.jobs.report", "write the report tables and the HTML report of a run"),
    "unmerge": ("imgdedup.jobs.unmerge", "make a merged image its own canonical image again"),
}


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: the packaged conf/default.toml)")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override one config key, e.g. --set hash.bits=256 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at debug level")


def chosen_command(argv: list[str]) -> str | None:
    """The command word in ``argv`` (the first argument after the global options), if any."""
    pre = argparse.ArgumentParser(add_help=False)
    _global_options(pre)
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(argv)
    return known.command if known.command in COMMANDS else None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser, with ``command``'s module registered and every other command listed by name only."""
    parser = argparse.ArgumentParser(prog="imgdedup", description="Secure near-duplicate image deduplication.")
    _global_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command:
        importlib.import_module(COMMANDS[command][0]).register(subparsers)
    registered = set(subparsers.choices)
    for name, (_, help_text) in COMMANDS.items():
        if name not in registered:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(argv)).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config, args.overrides)
        return args.run(args, config)
    except ImgdedupError as exc:
        print(f"imgdedup: error: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY if isinstance(exc, IntegrityError) else EXIT_USAGE
    except OSError as exc:
        # What the operating system refused (a read-only store, a missing
        # folder...) and no stage turned into a typed error: one line, the
        # trace only with -v.
        log.debug("%s failed", args.command, exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"imgdedup: error: {args.command}: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        # What a storage backend raises of its own (no credentials for s3://, an
        # endpoint that does not answer) and is no OSError: one line, the trace only with -v.
        log.debug("%s failed", args.command, exc_info=True)
        print(f"imgdedup: error: {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run_and_exit() -> None:
    """The console entry point: :func:`main`, then the process ends with its status at once.

    Everything a command does is finished, committed and logged when
    :func:`main` returns; the streams are flushed and the process leaves with
    ``os._exit``, so no native thread pool's teardown at interpreter exit
    (pyarrow's can abort the process with SIGABRT after all work is done,
    apache/arrow#34314) turns a documented exit status into a crash.
    """
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    run_and_exit()
