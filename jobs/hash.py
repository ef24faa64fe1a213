"""``imgdedup hash``: fingerprint image files and print or save the table.

    imgdedup hash PATH... [--algo NAME] [--dihedral | --no-dihedral] [--out FILE.parquet|FILE.csv]

Directories are walked in sorted order, keeping files whose extension belongs to
an accepted format; files named on the command line are always tried. One row
per image: ``path``, ``hash`` (hex), ``quality``, ``width``, ``height`` and, with
dihedral matching, ``dihedral`` (the 8 variants' hex, comma-separated, plain hash
first). A file that fails prints one line on stderr and the run goes on; the
exit status is 1 if any file failed.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from imgdedup.jobs.source import printable
from imgdedup.pipeline.config import Config
from imgdedup.pipeline.hashing.algorithms import ALGORITHMS, HashAlgorithm, get_algorithm
from imgdedup.pipeline.hashing.bits import to_hex
from imgdedup.pipeline.hashing.decode import known_formats
from imgdedup.pipeline.hashing.fingerprint import FingerprintBatch, fingerprint_batch

log = logging.getLogger(__name__)

COLUMNS = ("path", "hash", "quality", "width", "height")
OUTPUT_SUFFIXES = (".parquet", ".csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hash",
        description="Fingerprint image files (directories are walked) and print or save one row per image.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image file or directory")
    parser.add_argument("--algo", choices=ALGORITHMS, help="hash algorithm (default: config hash.algo)")
    parser.add_argument(
        "--dihedral", action=argparse.BooleanOptionalAction, default=None,
        help="add the 8 rotation/mirror variants as a `dihedral` column (default: config hash.dihedral)",
    )
    parser.add_argument("--out", type=_output_file, metavar="FILE",
                        help="write a .parquet or .csv table instead of printing to stdout")
    parser.set_defaults(run=run)


def configured_algorithm(config: Config, algo: str | None = None) -> HashAlgorithm:
    """The hash algorithm ``[hash]`` configures (``algo`` instead of ``hash.algo`` when given)."""
    return get_algorithm(algo or config.hash.algo, size=config.hash.size, bits=config.hash.bits,
                         trim_borders=config.hash.trim_borders)


def run(args: argparse.Namespace, config: Config) -> int:
    algorithm = configured_algorithm(config, args.algo)
    dihedral = config.hash.dihedral if args.dihedral is None else args.dihedral
    files = list_image_files(args.paths, known_formats(config.decode.formats))
    log.info("hashing %d files with %s (dihedral variants: %s)", len(files), algorithm.name, dihedral)
    columns = COLUMNS + (("dihedral",) if dihedral else ())
    failed = 0
    with _TableWriter(args.out, columns) as write:
        for batch in fingerprint_in_batches(files, algorithm, config, dihedral=dihedral):
            failed += len(batch.errors)
            write(rows(batch))
    log.info("hashed %d files, %d failed", len(files) - failed, failed)
    return 1 if failed else 0


def fingerprint_in_batches(files: Sequence[str | Path], algorithm: HashAlgorithm, config: Config, *,
                           dihedral: bool, names: Sequence[str] | None = None,
                           print_errors: bool = True) -> Iterator[FingerprintBatch]:
    """Fingerprint ``files`` ``dask.partition_size`` at a time (thumbnails held one batch at a time).

    Parameters
    ----------
    files : sequence of path-like
    algorithm : HashAlgorithm
    config : Config
        Supplies the batch size and the decoding limits.
    dihedral : bool
        Also compute the 8 dihedral variants.
    names : sequence of str, optional
        What rows and error lines call each file; the paths by default.
    print_errors : bool
        Print one stderr line per file that failed (the command line); the
        errors are in each batch's ``errors`` either way.

    Yields
    ------
    FingerprintBatch
        One per batch, in order.
    """
    size = config.dask.partition_size
    for start in range(0, len(files), size):
        batch = fingerprint_batch(files[start:start + size], algorithm, dihedral=dihedral,
                                  names=None if names is None else names[start:start + size],
                                  **dataclasses.asdict(config.decode))
        for error in batch.errors if print_errors else ():
            print(f"error: {printable(str(error))}", file=sys.stderr)
        log.info("fingerprinted %d/%d files", min(start + size, len(files)), len(files))
        yield batch


def list_image_files(paths: Iterable[str], formats: Sequence[str]) -> list[str]:
    """Files named, plus the image files under each directory named, in a deterministic order.

    Inside a directory, a file is kept when its extension belongs to one of
    ``formats`` (upper-case Pillow names; Pillow's registered extensions) and no part of its path below
    the directory starts with a dot.
    """
    extensions = {ext for ext, fmt in Image.registered_extensions().items() if fmt in formats}
    files = []
    for path in map(Path, paths):
        if not path.is_dir():
            files.append(str(path))
            continue
        found = [
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in extensions
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ]
        files.extend(str(p) for p in sorted(found, key=lambda p: p.relative_to(path).parts))
    return files


def rows(batch: FingerprintBatch) -> Iterator[dict]:
    """One output row per fingerprinted file of ``batch``."""
    hashes = to_hex(batch.hashes) if len(batch) else []
    for i, name in enumerate(batch.names):
        row = {"path": name, "hash": hashes[i], "quality": int(batch.quality[i]),
               "width": int(batch.width[i]), "height": int(batch.height[i])}
        if batch.dihedral is not None:
            row["dihedral"] = ",".join(to_hex(batch.dihedral[i]))
        yield row


def _output_file(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: the output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    return path


class _TableWriter:
    """Context manager giving ``write(rows)``: streams rows to Parquet, CSV or stdout (tab-separated)."""

    def __init__(self, out: Path | None, columns: Sequence[str]):
        self.out, self.columns = out, tuple(columns)
        self._file = self._csv = self._parquet = None

    def __enter__(self):
        if self.out is None:
            self._csv = csv.DictWriter(sys.stdout, self.columns, delimiter="\t", lineterminator="\n")
            self._csv.writeheader()
        elif self.out.suffix.lower() == ".csv":
            self._file = open(self.out, "w", newline="")
            self._csv = csv.DictWriter(self._file, self.columns)
            self._csv.writeheader()
        else:
            self._parquet = pq.ParquetWriter(self.out, _schema(self.columns))
        return self.write

    def write(self, batch_rows: Iterable[dict]) -> None:
        batch_rows = list(batch_rows)
        if self._parquet is not None:
            if batch_rows:
                self._parquet.write_table(pa.Table.from_pylist(batch_rows, schema=self._parquet.schema))
        else:
            self._csv.writerows(batch_rows)

    def __exit__(self, *exc_info) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.close()


def _schema(columns: Sequence[str]) -> pa.Schema:
    types = {"path": pa.string(), "hash": pa.string(), "quality": pa.uint8(),
             "width": pa.int64(), "height": pa.int64(), "dihedral": pa.string()}
    return pa.schema([(name, types[name]) for name in columns])
