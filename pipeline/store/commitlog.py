"""The commit log: ``_commits/<version:020d>.json``, one create-exclusive record per run.

Versions are contiguous from 1. A writer appends version ``n + 1`` only after it
has read records ``1..n``, and creates it with a create-exclusive write, so
exactly one writer wins each version and a run id is committed at most once
(the argument is in ``docs/store.md``). Records are immutable once created, so
each is read once and kept.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence

from fsspec import AbstractFileSystem

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import object_paths
from imgdedup.pipeline.store.backend import list_keys, write_exclusive

#: Version of the commit-record layout.
COMMIT_FORMAT = 1

COMMITS_DIR = "_commits"


class CommitLog:
    """Reader and appender of one store's ``_commits/`` folder.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    root : str
        Path of the store root on ``fs``.
    step : callable
        Told ``"commit.begin"``, ``"commit.record.written"``, ``"commit.done"``.
    """

    def __init__(self, fs: AbstractFileSystem, root: str, step: Callable[[str], None]):
        self.fs = fs
        self.root = root
        self._step = step
        self._records: dict[int, dict] = {}

    def _path(self, key: str) -> str:
        return f"{self.root}/{object_paths.check_key(key)}"

    def latest_version(self) -> int:
        """The newest committed version; 0 for an empty log."""
        self.refresh()
        return max(self._records, default=0)

    def records_up_to(self, version: int | None = None) -> list[dict]:
        """Records ``1..version`` (the latest when None), oldest first."""
        latest = self.latest_version()
        if version is None:
            version = latest
        if not 0 <= version <= latest:
            raise StoreError(str(version), f"no such version; the store is at version {latest}")
        return [self._records[v] for v in range(1, version + 1)]

    def committed_runs(self) -> dict[str, int]:
        """``{run_id: version}`` for every committed run."""
        return {record["run_id"]: record["version"] for record in self.records_up_to()}

    def live_blob_ids(self, version: int | None = None) -> set[str]:
        """Blob ids listed by records ``1..version`` minus those released by them (latest when None)."""
        records = self.records_up_to(version)
        return _listed(records) - _released(records)

    def released_blob_ids(self) -> set[str]:
        """Blob ids some record released: gone for good, never listed or written again."""
        return _released(self.records_up_to())

    def referenced_keys(self) -> set[str]:
        """Every key the log refers to: its records, their files, the live blobs' bodies and headers.

        A released blob is not referenced even though older records list it.
        """
        referenced = set()
        for record in self.records_up_to():
            referenced.add(object_paths.commit_key(record["version"]))
            for table_keys in record["files"].values():
                referenced.update(table_keys)
        for blob_id in self.live_blob_ids():
            referenced.add(object_paths.blob_body_key(blob_id))
            referenced.add(object_paths.blob_header_key(blob_id))
        return referenced

    def append(
        self,
        run_id: str,
        files: Mapping[str, list[str]],
        blobs: list[str],
        replace: list[str],
        meta: Mapping[str, object],
        release: Sequence[str] = (),
        release_read_at: int | None = None,
        guard: Callable[[int], None] | None = None,
    ) -> int:
        """Commit ``run_id`` at the next free version, or return the version it already has.

        Arguments are trusted (checked by the caller). Each attempt lists the
        log once. A lost race re-reads the log and tries the next version; a
        version lost to a record that the listing then does not show raises
        StoreError instead of retrying forever. Listing a blob that a record
        read by then released raises StoreError (checked on every attempt, so a
        release that wins the race is seen). A blob in ``release`` that a record
        after ``release_read_at`` lists is left out of the release, likewise
        re-checked on every attempt. ``guard(version)``, called on every attempt
        with the latest version the log then holds, may raise (a
        :class:`~imgdedup.pipeline.errors.CommitConflict`) to refuse the commit
        over what landed; the record is written only at the version after it.
        """
        lost = 0  # the last version this call lost to another writer
        while True:
            runs = self.committed_runs()
            if run_id in runs:
                return runs[run_id]
            version = max(self._records, default=0)
            revived = sorted(set(blobs) & _released(self._records.values()))
            if revived:
                raise StoreError(revived[0], f"blob released by an earlier commit; released blobs are gone "
                                 f"for good ({len(revived)} such)")
            if version < lost:
                raise StoreError(object_paths.commit_key(lost), "record exists but is not listed by the store")
            if guard is not None:
                guard(version)
            record = {
                "format": COMMIT_FORMAT,
                "version": version + 1,
                "run_id": run_id,
                "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                "files": {table: list(table_keys) for table, table_keys in files.items()},
                "blobs": list(blobs),
                "replace": list(replace),
                "meta": dict(meta),
            }
            releasing = list(release)
            if release_read_at is not None:
                relisted = _listed(r for v, r in self._records.items() if v > release_read_at)
                releasing = [blob_id for blob_id in releasing if blob_id not in relisted]
            if releasing:  # absent from records that release nothing (and from those written before releases)
                record["release"] = releasing
            data = json.dumps(record, sort_keys=True).encode()
            self._step("commit.begin")
            key = object_paths.commit_key(version + 1)
            if write_exclusive(self.fs, self._path(key), data, lambda: self._step("commit.record.written")):
                self._records[version + 1] = record
                self._step("commit.done")
                return version + 1
            lost = version + 1

    def refresh(self) -> None:
        """Read the records not seen yet; check the log has no gaps."""
        listed = sorted(v for v in map(object_paths.commit_version, list_keys(self.fs, self.root, COMMITS_DIR))
                        if v is not None)
        for version in listed:
            if version not in self._records:
                self._records[version] = self._read(version)
        if listed and listed != list(range(1, listed[-1] + 1)):
            missing = sorted(set(range(1, listed[-1] + 1)) - set(listed))
            raise StoreError(COMMITS_DIR, f"commit log has gaps at versions {missing[:5]}")

    def _read(self, version: int) -> dict:
        """Read and check one record; every key it names must be safe."""
        key = object_paths.commit_key(version)
        try:
            record = json.loads(self.fs.cat_file(self._path(key)))
        except (FileNotFoundError, ValueError) as exc:
            raise StoreError(key, f"unreadable commit record: {exc}") from None
        try:
            if record["version"] != version or record["format"] != COMMIT_FORMAT:
                raise StoreError(key, "commit record has the wrong version or format")
            object_paths.check_run_id(record["run_id"])
            for table, table_keys in record["files"].items():
                object_paths.check_table(table)
                for table_key in table_keys:
                    object_paths.check_table_file(table, table_key)
            for blob_id in record["blobs"]:
                object_paths.check_blob_id(blob_id)
            for table in record["replace"]:
                object_paths.check_table(table)
            for blob_id in record.get("release", []):
                object_paths.check_blob_id(blob_id)
        except (KeyError, TypeError, AttributeError) as exc:
            raise StoreError(key, f"malformed commit record: {exc!r}") from None
        return record


def _listed(records: Iterable[dict]) -> set[str]:
    return {blob_id for record in records for blob_id in record["blobs"]}


def _released(records: Iterable[dict]) -> set[str]:
    return {blob_id for record in records for blob_id in record.get("release", [])}
