"""The store: ciphertext blobs and Parquet tables on one fsspec URL, published by commits.

A run writes immutable files (Parquet parts under ``<table>/<run_id>/``, blobs
under ``blobs/``), then publishes them all at once with one commit record
``_commits/<version:020d>.json``, created with a create-exclusive write. Readers
list ``_commits/`` and read only files a record names, so they never see half a
run; a crash before the record leaves nothing visible; a crash after it leaves
the run whole. The protocol, its guarantees per backend and gc are written down
in ``docs/store.md``.

Server side: nothing here needs, or imports, the group key.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import uuid
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import object_paths, schemas
from imgdedup.pipeline.store.backend import check_root, flush_filesystem, list_keys, open_flush_handle, write_atomic
from imgdedup.pipeline.store.commitlog import CommitLog
from imgdedup.pipeline.store.gc import collect_garbage

#: Bytes handed to the filesystem per write call when a Parquet part is stored.
PART_CHUNK_BYTES = 8 * 2**20
#: Existence checks a commit has in flight at once (each a request on an object store; fsspec
#: filesystems are safe to call from several threads).
PARALLEL_CHECKS = 32


def _conform(part: pa.Table, schema: pa.Schema, key: str) -> pa.Table:
    """Cast a part to ``schema``; a nullable column the part predates is filled with nulls."""
    columns = []
    for field in schema:
        if field.name in part.column_names:
            columns.append(part.column(field.name))
        elif field.nullable:
            columns.append(pa.nulls(part.num_rows, field.type))
        else:
            raise StoreError(key, f"part lacks the required column {field.name!r}")
    try:
        return pa.table(columns, names=schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise StoreError(key, f"part does not match the table schema: {exc}") from None


class Store:
    """Blobs and Parquet tables under one fsspec URL, with atomic, idempotent commits.

    Parameters
    ----------
    url : str
        Any fsspec URL: a local folder (default ``./dedup-store``),
        ``memory://name``, ``s3://bucket/prefix`` (through s3fs).
    storage_options : dict, optional
        Passed to the fsspec filesystem (e.g. ``endpoint_url``, credentials).
    on_step : callable, optional
        Called with the name of each step of a write (``"blob.body.chunk"``,
        ``"part.done"``, ``"commit.record.written"``, ... listed in
        ``docs/store.md``) as it completes. For observing progress and for
        crash tests; the store never depends on what it does.
    deferred_sync : bool
        Local disk (Linux): blobs, table parts and run files are written without
        their own fsyncs, and :meth:`commit` flushes the filesystem once before
        its record (``syncfs``, which covers every process of this host). Set it
        False in a process whose writes another host will commit (Dask workers
        on other machines sharing the folder): each write is then fsynced.

    Examples
    --------
    >>> import tempfile, imgdedup
    >>> store = imgdedup.Store(tempfile.mkdtemp() + "/dedup-store")
    >>> store.latest_version()
    0
    >>> blob = store.write_blob("abcd0001", b"header", [b"ciphertext"])
    >>> store.commit("run-1", {}, ["abcd0001"])
    1
    >>> store.read_blob_header("abcd0001"), store.committed_runs()
    (b'header', {'run-1': 1})
    """

    def __init__(
        self,
        url: str = "./dedup-store",
        storage_options: Mapping[str, object] | None = None,
        *,
        on_step: Callable[[str], None] | None = None,
        deferred_sync: bool = True,
    ):
        self.url = url
        if not isinstance(url, str) or not url.strip():
            raise StoreError(repr(url), "the store URL is empty; pass --store URL or set store.url "
                             "(a folder, memory://name or s3://bucket/prefix)")
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ValueError as exc:  # fsspec's "Protocol not known: ..."
            raise StoreError(url, f"cannot open the store: {exc}; use a folder, memory://name or "
                             "s3://bucket/prefix") from None
        except ImportError as exc:
            raise StoreError(url, f"cannot open the store: {exc} (for s3:// install imgdedup's s3 extra)") from None
        self.root = root.rstrip("/")
        check_root(self.fs, self.root, url)
        self._on_step = on_step
        self._deferred_sync = deferred_sync
        self._flush_handle = open_flush_handle(self.fs, self.root) if deferred_sync else None
        if self._flush_handle is not None:
            weakref.finalize(self, os.close, self._flush_handle)
        self._log = CommitLog(self.fs, self.root, self._step)
        self._blobs_written: set[str] = set()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- paths ---------------------------------------------------------------

    def _path(self, key: str) -> str:
        """Full filesystem path of a store-relative key; the key is checked first."""
        return f"{self.root}/{object_paths.check_key(key)}"

    def _step(self, name: str) -> None:
        if self._on_step is not None:
            self._on_step(name)

    # -- blobs ---------------------------------------------------------------

    def write_blob(self, blob_id: str, header: bytes, body_chunks: Iterable[bytes]) -> str:
        """Store one blob: its ciphertext body (streamed) and its small header.

        The blob stays invisible to readers until a commit lists ``blob_id``.
        Writing a blob id that a commit already lists is refused: committed
        bodies are immutable (only :meth:`replace_blob_header` changes a blob).
        So is writing one a commit released (see :meth:`commit`): it is gone for good.

        Parameters
        ----------
        blob_id : str
            Id the keys are built from (see :data:`object_paths.BLOB_ID_PATTERN`).
        header : bytes
            The blob's header (key wrapping, nonces; format owned by the crypto side).
        body_chunks : iterable of bytes
            The ciphertext, streamed: memory is bounded by one chunk (one
            5 MiB multipart part on object stores; ``memory://`` holds whole
            objects anyway).

        Returns
        -------
        str
            The store-relative key of the body, ``blobs/ab/cd/<blob_id>``.
        """
        body_key = object_paths.blob_body_key(blob_id)
        header_key = object_paths.blob_header_key(blob_id)
        body_path = self._path(body_key)
        if blob_id in self._log.released_blob_ids():
            raise StoreError(blob_id, "blob released by a commit; released blobs are gone for good")
        if self.fs.exists(body_path) and blob_id in self._committed_blob_ids():
            raise StoreError(blob_id, "blob already committed; its body is immutable")
        self._step("blob.body.begin")
        # Not durable yet: the commit that lists the blob flushes the filesystem first.
        durable = not self._deferred_sync
        write_atomic(self.fs, body_path, body_chunks, lambda: self._step("blob.body.chunk"), durable=durable)
        self._step("blob.body.done")
        write_atomic(self.fs, self._path(header_key), [bytes(header)], durable=durable)
        self._step("blob.header.done")
        self._blobs_written.add(blob_id)
        return body_key

    def read_blob_header(self, blob_id: str) -> bytes:
        """The header bytes of a blob; StoreError if there is none."""
        path = self._path(object_paths.blob_header_key(blob_id))
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise StoreError(blob_id, "no such blob (header missing)") from None

    def replace_blob_header(self, blob_id: str, header: bytes) -> None:
        """Atomically replace a blob's header; the body is not touched.

        Readers see the old header or the new one, never a mix (local: temporary
        file and ``os.replace``; object stores: one PUT).
        """
        header_path = self._path(object_paths.blob_header_key(blob_id))
        if not self.fs.exists(self._path(object_paths.blob_body_key(blob_id))):
            raise StoreError(blob_id, "no such blob (body missing)")
        write_atomic(self.fs, header_path, [bytes(header)])

    def open_blob_body(self, blob_id: str) -> IO[bytes]:
        """Open a blob's ciphertext body for streaming reads (a binary file object)."""
        path = self._path(object_paths.blob_body_key(blob_id))
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError:
            raise StoreError(blob_id, "no such blob (body missing)") from None

    def blob_exists(self, blob_id: str) -> bool:
        """True if both the body and the header of ``blob_id`` are present (committed or not)."""
        return all(
            self.fs.exists(self._path(key))
            for key in (object_paths.blob_body_key(blob_id), object_paths.blob_header_key(blob_id))
        )

    def iter_blob_ids(self, committed_only: bool = True) -> Iterator[str]:
        """Blob ids in sorted order: those a commit lists, or every blob present.

        Parameters
        ----------
        committed_only : bool
            True (default): the live ids at the latest version, those listed
            by commit records and not released by any. False: every id whose
            body and header are both present, including blobs of runs not
            (yet) committed and released blobs gc has not removed yet.
        """
        if committed_only:
            yield from sorted(self._committed_blob_ids())
            return
        present = Counter(object_paths.blob_id_of(key) for key in list_keys(self.fs, self.root, "blobs"))
        yield from sorted(blob_id for blob_id, count in present.items() if blob_id is not None and count == 2)

    # -- tables --------------------------------------------------------------

    def write_table_part(self, table: str, run_id: str, part: str | int, data: pa.Table) -> str:
        """Write one immutable Parquet part of ``table`` for ``run_id``; not visible until committed.

        Parameters
        ----------
        table : str
            Table name (``fingerprints``, ``clusters``, ``errors``, ``reports``...).
        run_id : str
            The run the part belongs to.
        part : str or int
            Name of the part within the run (a partition index); a unique suffix
            is added, so re-running a run never overwrites a file.
        data : pyarrow.Table
            Written with its schema and schema metadata.

        Returns
        -------
        str
            The store-relative key, to be passed to :meth:`commit`.
        """
        key = object_paths.table_part_key(table, run_id, str(part), uuid.uuid4().hex)
        if not isinstance(data, pa.Table):
            raise StoreError(key, f"expected a pyarrow.Table, got {type(data).__name__}")
        sink = pa.BufferOutputStream()
        pq.write_table(data, sink)
        buffer = memoryview(sink.getvalue())
        chunks = (buffer[i:i + PART_CHUNK_BYTES] for i in range(0, max(len(buffer), 1), PART_CHUNK_BYTES))
        self._step("part.begin")
        write_atomic(self.fs, self._path(key), chunks, lambda: self._step("part.chunk"),
                     durable=not self._deferred_sync)
        self._step("part.done")
        return key

    def write_run_file(self, table: str, run_id: str, name: str, data: bytes) -> str:
        """Write one immutable non-Parquet file of a run (e.g. ``reports``' ``report.html``).

        Like a table part it is invisible until a commit lists it under
        ``table``; :meth:`open_committed_file` reads it back. Returns its key,
        ``<table>/<run_id>/<unique>-<name>``.
        """
        key = object_paths.run_file_key(table, run_id, name, uuid.uuid4().hex)
        write_atomic(self.fs, self._path(key), [bytes(data)], durable=not self._deferred_sync)
        return key

    def open_committed_file(self, key: str) -> IO[bytes]:
        """Open a file that a commit lists (a part or a run file) for binary reading."""
        object_paths.check_key(key)
        listed = (key in table_keys for record in self._log.records_up_to() for table_keys in record["files"].values())
        if not any(listed):
            raise StoreError(key, "no commit lists this file")
        try:
            return self.fs.open(self._path(key), "rb")
        except FileNotFoundError:
            raise StoreError(key, "a committed file is missing from the store") from None

    def read_table(
        self,
        table: str,
        version: int | None = None,
        schema: pa.Schema | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """The committed rows of ``table`` as of ``version``.

        Parameters
        ----------
        table : str
        version : int, optional
            Commit version to read; the latest when omitted. 0 is the empty store.
        schema : pyarrow.Schema, optional
            Schema of the result; every part is cast to it. Defaults to the
            schema of the first part read, or :func:`schemas.default_schema`
            when the table has no committed part. Columns a part lacks are
            filled with nulls if nullable (parts written before a column was
            added; such a column may be named in ``columns`` even when the first
            part lacks it); a part missing a required column, or whose types do not
            cast, raises StoreError naming it.
        columns : list of str, optional
            Read only these columns (only their bytes are fetched), in this order.

        Returns
        -------
        pyarrow.Table
            The union of the parts committed up to ``version`` (after the last
            commit that replaced the table), in commit order; empty but with the
            explicit schema when nothing is committed.
        """
        object_paths.check_table(table)
        parts = [key for key in self._committed_files(table, version) if key.endswith(".parquet")]
        tables = [self._read_part(key, columns) for key in parts]
        if schema is None:
            schema = tables[0].schema if tables else schemas.default_schema(table)
        if columns is not None:
            # A nullable column added to the table after its first part was
            # written reads as nulls in the parts that predate it.
            later = schemas.default_schema(table)
            fields = {f.name: f for f in later if f.nullable}
            fields.update({f.name: f for f in schema})
            missing = [c for c in columns if c not in fields]
            if missing:
                raise StoreError(table, f"no such columns: {missing}")
            schema = pa.schema([fields[c] for c in columns], metadata=schema.metadata)
        conformed = [_conform(t, schema, key) for t, key in zip(tables, parts)]
        return pa.concat_tables(conformed) if conformed else schema.empty_table()

    def _read_part(self, key: str, columns: list[str] | None) -> pa.Table:
        try:
            with self.fs.open(self._path(key), "rb") as f:
                parquet = pq.ParquetFile(f)
                present = parquet.schema_arrow.names
                # Columns a part predates are left to _conform, which fills or refuses them.
                return parquet.read(columns=None if columns is None else [c for c in columns if c in present])
        except FileNotFoundError:
            raise StoreError(key, "a committed file is missing from the store") from None

    def committed_files(self, table: str, version: int | None = None) -> list[str]:
        """Store-relative keys of the files of ``table`` visible at ``version`` (latest by default)."""
        object_paths.check_table(table)
        return self._committed_files(table, version)

    def _committed_files(self, table: str, version: int | None) -> list[str]:
        files: list[str] = []
        for record in self._log.records_up_to(version):
            if table in record["replace"]:
                files = []
            files.extend(record["files"].get(table, []))
        return files

    # -- commits -------------------------------------------------------------

    def commit(
        self,
        run_id: str,
        files: Mapping[str, Iterable[str]],
        blobs: Iterable[str] = (),
        meta: Mapping[str, object] | None = None,
        *,
        replace: Iterable[str] = (),
        release_blobs: Iterable[str] = (),
        releases_read_at: int | None = None,
        guard: Callable[[int], None] | None = None,
    ) -> int:
        """Publish a run's files and blobs with one commit record; return its version.

        Idempotent per ``run_id``: if the run is already committed, its version
        is returned and nothing is written. A writer that loses the race for a
        version reads the new records and tries the next one.

        Parameters
        ----------
        run_id : str
        files : mapping of table name to iterable of str
            Keys returned by :meth:`write_table_part` (each under ``<table>/``).
        blobs : iterable of str
            Blob ids written with :meth:`write_blob`.
        meta : mapping, optional
            JSON-serialisable facts about the run (config digest, counts...).
        replace : iterable of str
            Tables whose earlier parts this commit supersedes (a re-clustering
            replaces ``clusters``; re-keyed tokens replace ``fingerprints``).
            Older versions still read the old parts.
        release_blobs : iterable of str
            Committed blob ids this commit un-lists: from this version on they
            are not live, and :meth:`gc` removes them (once older than its
            grace period), even though older versions still list them. A
            release is final: a later commit listing the id, or a write of
            it, is refused. Releasing an id no commit lists is refused.
        releases_read_at : int, optional
            The version ``release_blobs`` were decided from. A blob that a commit
            after it lists again (an unmerge restoring an image) is not released:
            checked against the log on every attempt, so no commit racing this
            one can slip in between.
        guard : callable, optional
            ``guard(version)`` on every attempt, with the latest version the log
            then holds; it raises (:class:`~imgdedup.pipeline.errors.CommitConflict`)
            to refuse a commit that what landed conflicts with. The record is
            written only at the version after the one the guard passed.

        Returns
        -------
        int
            The version (>= 1) at which the run is committed.

        Raises
        ------
        StoreError
            An unsafe key, a file or blob that is not in the store, meta that is
            not JSON, a commit log that is not contiguous, a listed blob that
            is released (here or earlier), or a released one no commit lists.
        """
        object_paths.check_run_id(run_id)
        file_lists = {
            object_paths.check_table(table): sorted({object_paths.check_table_file(table, k) for k in ks})
            for table, ks in files.items()
        }
        blob_ids = sorted({object_paths.check_blob_id(b) for b in blobs})
        replaced = sorted({object_paths.check_table(t) for t in replace})
        released = sorted({object_paths.check_blob_id(b) for b in release_blobs})
        try:
            meta_json = json.loads(json.dumps(dict(meta or {})))
        except (TypeError, ValueError) as exc:
            raise StoreError(run_id, f"commit meta is not JSON-serialisable: {exc}") from None

        existing = self.committed_runs().get(run_id)
        if existing is not None:
            return existing
        self._check_present(file_lists, blob_ids)
        self._check_releasable(released, blob_ids)
        # Files and blobs are written without their own fsync (by this process or
        # the bulk job's workers); they become durable here, before the record names them.
        try:
            flush_filesystem(self._flush_handle)
        except OSError as exc:
            raise StoreError(self.url, f"flushing the store's filesystem before the commit record failed "
                                       f"({exc}); nothing was committed") from None
        return self._log.append(run_id, file_lists, blob_ids, replaced, meta_json, released, releases_read_at, guard)

    def _check_releasable(self, released: list[str], blob_ids: list[str]) -> None:
        """Refuse to release a blob the same commit lists, or one no commit lists."""
        if not released:
            return
        both = sorted(set(released) & set(blob_ids))
        if both:
            raise StoreError(both[0], "a commit cannot both list and release a blob")
        listed = {blob_id for record in self._log.records_up_to() for blob_id in record["blobs"]}
        unknown = [blob_id for blob_id in released if blob_id not in listed]
        if unknown:
            raise StoreError(unknown[0], "cannot release a blob no commit lists")

    def _check_present(self, file_lists: Mapping[str, list[str]], blob_ids: list[str]) -> None:
        """Refuse to commit a reference to a file or blob that is not in the store.

        The checks (one request each on an object store: two per blob written
        by another process) run :data:`PARALLEL_CHECKS` at a time, not one after
        another.
        """
        files = [key for table_keys in file_lists.values() for key in table_keys]
        blobs = [blob_id for blob_id in blob_ids if blob_id not in self._blobs_written]
        blob_keys = [key for blob_id in blobs
                     for key in (object_paths.blob_body_key(blob_id), object_paths.blob_header_key(blob_id))]
        present = self._exist(files + blob_keys)
        for key, found in zip(files, present):
            if not found:
                raise StoreError(key, "cannot commit a file that is not in the store")
        for k, blob_id in enumerate(blobs):
            if not all(present[len(files) + 2 * k:len(files) + 2 * k + 2]):
                raise StoreError(blob_id, "cannot commit a blob that is not in the store")

    def _exist(self, store_keys: list[str]) -> list[bool]:
        """Whether each key is in the store, checked by up to :data:`PARALLEL_CHECKS` threads."""
        if len(store_keys) < 2:
            return [self.fs.exists(self._path(key)) for key in store_keys]
        with ThreadPoolExecutor(min(PARALLEL_CHECKS, len(store_keys)), thread_name_prefix="imgdedup-check") as pool:
            return list(pool.map(lambda key: self.fs.exists(self._path(key)), store_keys))

    def latest_version(self) -> int:
        """The newest committed version; 0 for an empty store."""
        return self._log.latest_version()

    def commit_record(self, version: int) -> dict:
        """A copy of the commit record of ``version`` (run_id, files, blobs, replace, meta...)."""
        if not isinstance(version, int) or version < 1:
            raise StoreError(repr(version), "a commit version is an integer >= 1")
        return json.loads(json.dumps(self._log.records_up_to(version)[-1]))

    def committed_runs(self) -> dict[str, int]:
        """``{run_id: version}`` for every committed run."""
        return self._log.committed_runs()

    def is_committed(self, run_id: str) -> bool:
        """True if a commit record for ``run_id`` exists."""
        object_paths.check_run_id(run_id)
        return run_id in self.committed_runs()

    def released_blob_ids(self) -> set[str]:
        """Blob ids a commit released (see :meth:`commit`); gc removes them or has removed them."""
        return self._log.released_blob_ids()

    def _committed_blob_ids(self) -> set[str]:
        return self._log.live_blob_ids()

    def check_writable(self) -> None:
        """Refuse, before a job starts, a store it could not write: write and remove one small object.

        The probe (:func:`object_paths.write_probe_key`) is a name gc removes
        should the removal not happen.

        Raises
        ------
        StoreError
            The write was refused (read-only filesystem or bucket, no permission).
        """
        probe = self._path(object_paths.write_probe_key())
        try:
            write_atomic(self.fs, probe, [b""], durable=False)
            self.fs.rm_file(probe)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StoreError(self.url, f"cannot write to the store ({reason}); this command writes blobs and "
                             "tables: use a writable store, or fix its permissions") from None

    # -- wrapped index keys ----------------------------------------------------

    def key_records(self) -> dict[str, bytes]:
        """``{wrap_key_id: record bytes}`` of every ``_keys/`` record (empty for a store never rotated).

        The records are opaque here: the client side wraps and unwraps them
        (``imgdedup.pipeline.crypto.index_keys``). gc never removes them.
        """
        records = {}
        for key in list_keys(self.fs, self.root, "_keys"):
            wrap_key_id = object_paths.key_record_id(key)
            if wrap_key_id is not None:
                records[wrap_key_id] = self.fs.cat_file(self._path(key))
        return records

    def write_key_record(self, wrap_key_id: str, record: bytes) -> None:
        """Atomically write (or replace) the record wrapped under ``wrap_key_id``, durably."""
        write_atomic(self.fs, self._path(object_paths.key_record_key(wrap_key_id)), [bytes(record)])

    def remove_key_record(self, wrap_key_id: str) -> None:
        """Remove the record wrapped under ``wrap_key_id``; a missing one is not an error."""
        path = self._path(object_paths.key_record_key(wrap_key_id))
        if self.fs.exists(path):
            self.fs.rm_file(path)

    # -- garbage collection --------------------------------------------------

    def gc(self, grace_seconds: float, now: float | dt.datetime | None = None) -> list[str]:
        """Remove files no commit refers to that are older than ``grace_seconds``.

        See :func:`imgdedup.pipeline.store.gc.collect_garbage`; returns the removed keys, sorted.
        """
        return collect_garbage(self.fs, self.root, self._log, grace_seconds, now)
