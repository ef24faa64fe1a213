"""``imgdedup ingest``: decide new uploads one micro-batch at a time (the paper's upload, §5(2)).

    imgdedup ingest SOURCE... [--store URL] [--key FILE] [--watch]

Each SOURCE is a file, a folder or an fsspec URL, listed like the bulk job
lists its source (``bulk.include``/``bulk.exclude``; files recognised as images
by name or first bytes). Files are decided ``ingest.batch_size`` at a time by
:class:`imgdedup.jobs.ingestor.Ingestor`, each micro-batch published by one commit; one
line per file is printed, naming the file given (``stored``, ``duplicate``,
``exact_duplicate``, ``error``, or ``replayed`` and the decision repeated),
and a closing summary counts each outcome. With
``--watch`` the sources are listed again every ``ingest.poll_interval_ms``
until the process is stopped (Ctrl-C or SIGTERM), and a new file is taken once
its size has stayed the same for ``ingest.stable_size_ms`` (a file still being
copied in waits for the next poll). Running it again over the same files adds
nothing: each upload (content and file URL) is decided once; the same bytes at
another URL are an ``exact_duplicate`` row of their own.

The Python API (:class:`Ingestor`, :class:`Decision`) is re-exported here.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Sequence

import fsspec

from imgdedup.jobs.ingestor import Decision, Ingestor
from imgdedup.jobs.source import NOT_REGULAR, SIGNATURE_BYTES, SourceError, SourceFile, image_extensions, \
    list_source, looks_like_image, printable
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.group_key import load_group_key
from imgdedup.pipeline.store import Store

log = logging.getLogger(__name__)

__all__ = ["OUTCOMES", "Decision", "Ingestor", "register", "run", "stable_files", "summary_line"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        description="Fingerprint each new image, search its class, and store its sealed blob or "
                    "record a pointer to the stored duplicate; one commit per micro-batch.",
    )
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder or fsspec URL")
    parser.add_argument("--store", metavar="URL", default=None, help="store URL (default: store.url)")
    parser.add_argument("--key", metavar="FILE", default=None,
                        help="group key file (default: $IMGDEDUP_KEY_FILE, else crypto.key_file)")
    parser.add_argument("--watch", action="store_true",
                        help="keep polling the sources for new files until stopped")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    key = load_group_key(args.key, config.crypto.key_file)
    store = Store(args.store or config.store.url)
    store.check_writable()
    ingestor = Ingestor(store, key, config)
    counts = dict.fromkeys(OUTCOMES, 0)
    failed = False
    files = stable_files(args.sources, config) if args.watch else iter(_images(args.sources, config))
    stop = _StopBetweenBatches()
    if args.watch:
        signal.signal(signal.SIGTERM, stop)
    try:
        for batch in _batches(files, config.ingest.batch_size):
            with stop.deferred():
                for file in (f for f in batch if not f.regular):
                    counts["error"] += 1
                    failed = True
                    print(f"error {printable(file.source)}: {NOT_REGULAR}", flush=True)
                regular = [f for f in batch if f.regular]
                for decision in ingestor.submit_batch([f.url for f in regular], sources=[f.source for f in regular]):
                    counts[decision.outcome] += 1
                    failed |= decision.kind == "error"
                    print(_describe(decision), flush=True)
    except KeyboardInterrupt:
        log.info("stopped")
    log.info("ingest: %s", summary_line(counts))
    return 1 if failed else 0


#: What each upload given counts as, in summary order.
OUTCOMES = ("stored", "duplicate", "exact_duplicate", "replayed", "error")


def summary_line(counts: dict[str, int]) -> str:
    """``"N uploads: N stored, N duplicate, N exact_duplicate, N replayed, N error"``; the parts add up."""
    return f"{sum(counts.values())} uploads: " + ", ".join(f"{counts[name]} {name}" for name in OUTCOMES)


class _StopBetweenBatches:
    """SIGTERM handler: stops the watch like Ctrl-C does, but never inside a micro-batch.

    A micro-batch's decisions are committed and then printed; a stop that
    arrives in between waits until the batch is reported, so everything
    committed is also reported.
    """

    def __init__(self):
        self._busy = False
        self._requested = False

    def __call__(self, signum, frame) -> None:
        self._requested = True
        if not self._busy:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._busy = True
        try:
            yield
        finally:
            self._busy = False
        if self._requested:
            raise KeyboardInterrupt


def _describe(decision: Decision) -> str:
    """One line per upload; names are escaped, so one line is one decision."""
    replay = "replayed " if decision.replayed else ""
    source = printable(decision.source)
    if decision.kind in ("duplicate", "exact_duplicate"):
        return (f"{replay}{decision.kind} {decision.image_id} of {decision.duplicate_of} "
                f"distance {decision.distance} {source}")
    if decision.kind == "stored":
        return f"{replay}stored {decision.image_id} class {decision.cluster_id} {source}"
    return f"{replay}error {source}: {printable(decision.message)}"


def _images(sources: Sequence[str], config: Config) -> list[SourceFile]:
    """The image files of ``sources`` (by name or first bytes), in listing order.

    A file named on its own is kept whatever it holds (not an image: its
    decision is an error); in a folder, files that are not images are counted
    and logged, and links and special files kept to be reported as errors.
    """
    extensions = image_extensions(config.decode.formats)
    found = []
    for source in sources:
        listing = list_source(source, include=config.bulk.include, exclude=config.bulk.exclude)
        named = len(listing) == 1 and _is_file(source)
        kept = [f for f in listing if named or not f.regular or _is_image(f, extensions)]
        if len(kept) < len(listing):
            log.info("%s: skipped %d files that are not images", printable(source), len(listing) - len(kept))
        found += kept
    return found


def _is_file(source: str) -> bool:
    fs, path = fsspec.core.url_to_fs(source)
    return fs.isfile(path)


def _is_image(file: SourceFile, extensions: frozenset[str]) -> bool:
    try:
        with fsspec.open(file.url, "rb") as reader:
            prefix = reader.read(SIGNATURE_BYTES)
    except OSError:
        return True  # left to the ingest step, which records the read error
    return looks_like_image(file.name, prefix, extensions)


def stable_files(sources: Sequence[str], config: Config, *, clock=time.monotonic,
                 sleep=time.sleep) -> Iterator[SourceFile | None]:
    """Poll ``sources`` forever; yield each new image file once its size is stable.

    A file is yielded when the same size was seen for at least
    ``ingest.stable_size_ms``; it is yielded again only if its size changes
    later (the ingest step then decides the new bytes, or finds them known).
    ``None`` is yielded after every poll, so a consumer can flush a partial batch.
    """
    seen: dict[str, tuple[int, float]] = {}   # url -> (size, when that size was first seen)
    done: dict[str, int] = {}                 # url -> size yielded
    stable_for = config.ingest.stable_size_ms / 1000
    while True:
        now = clock()
        for file in _images_or_nothing(sources, config):
            size, since = seen.get(file.url, (None, now))
            if size != file.size:
                seen[file.url] = (file.size, now)
            elif now - since >= stable_for and done.get(file.url) != file.size:
                done[file.url] = file.size
                yield file
        yield None
        sleep(config.ingest.poll_interval_ms / 1000)


def _images_or_nothing(sources: Sequence[str], config: Config) -> list[SourceFile]:
    """Like :func:`_images`, but a source that vanished or is not there yet lists as empty."""
    try:
        return _images(sources, config)
    except SourceError as exc:
        log.warning("%s", exc)
        return []


def _batches(files: Iterator[SourceFile | None], size: int) -> Iterator[list[SourceFile]]:
    """Group ``files`` into lists of ``size``; a ``None`` (end of a poll) flushes a partial list."""
    batch: list[SourceFile] = []
    for file in files:
        if file is not None:
            batch.append(file)
        if batch and (len(batch) >= size or file is None):
            yield batch
            batch = []
    if batch:
        yield batch
