"""The two write primitives the commit protocol rests on, per kind of filesystem.

Everything above this module holds an fsspec filesystem and paths and never asks
which backend it is; only here do the semantics differ:

``write_atomic``
    The object appears whole or not at all. Local: a temporary file beside the
    target, fsync, ``os.replace`` (or, for files that only a later commit makes
    visible, no fsync and ``os.link``: :func:`flush_filesystem` makes them
    durable at once before that commit's record is written). Object stores (S3): one PUT, or a multipart
    upload that becomes visible only when completed. ``memory://``: the value is
    assembled, then assigned at once.
``write_exclusive``
    Create-if-absent, atomically: exactly one of several racing writers creates
    the object. Local: ``os.link`` of a complete temporary file (fails with
    ``EEXIST`` if the target exists). S3: ``PUT`` with ``If-None-Match: *``.
    ``memory://``: a check-and-assign under a process-wide lock (the memory
    filesystem lives in one process). Any other fsspec backend: its
    ``mode="create"`` write followed by a read-back, which is only as exclusive
    as that backend makes it (see ``docs/store.md``).
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO

from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractBufferedFile

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import object_paths

#: Multipart part size for object stores: the S3 minimum, so a streamed blob
#: holds at most one part in memory.
OBJECT_PART_BYTES = 5 * 2**20

#: Tries of a create-exclusive write that meets a concurrent conditional write
#: of the same key, and the first wait between them (doubled each time), seconds.
CONFLICT_ATTEMPTS = 8
CONFLICT_BACKOFF_SECONDS = 0.05

_MEMORY_LOCK = threading.Lock()

# Linux's syncfs(2): flush one filesystem and report its writeback errors since the
# descriptor was opened (sync(2) elsewhere may return before the data is written).
_SYNCFS = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None) if sys.platform.startswith("linux") else None
#: Whether writes can leave their fsync to :func:`flush_filesystem` (otherwise every write fsyncs).
DEFERRED_SYNC = _SYNCFS is not None


def list_keys(fs: AbstractFileSystem, root: str, prefix: str | None = None) -> list[str]:
    """Sorted root-relative keys of every file under ``root/prefix`` (all of ``root`` if None).

    The listing cache is dropped before and after: object-store listings are
    strongly consistent, but fsspec would otherwise answer this listing from an
    older one, and later ``exists``/``info``/``open`` calls from the listings
    this one caches for every folder it found, missing what other processes
    write there afterwards.
    """
    path = root if prefix is None else f"{root}/{prefix}"
    fs.invalidate_cache(path)
    try:
        found = fs.find(path)
    except FileNotFoundError:
        return []
    for folder in {p.rsplit("/", 1)[0] for p in found}:
        fs.invalidate_cache(folder)
    start = len(root) + 1
    return sorted(p[start:] for p in found if p.startswith(root + "/"))


def _fsync_path(path: str) -> None:
    """fsync a file or folder by name (a folder's fsync makes its new entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directories(directory: str, durable: bool) -> None:
    """Create ``directory`` and its missing ancestors, fsyncing the parent of each new one if ``durable``.

    Without that, a power loss could drop a new folder's entry (``errors/<run_id>/``,
    ``blobs/ab/cd/``) while the commit record naming a file inside it survives.
    """
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for folder in reversed(missing):
        os.makedirs(folder, exist_ok=True)
        if durable:
            _fsync_path(os.path.dirname(folder))


def _write_local_temporary(path: str, chunks: Iterable[bytes], on_chunk: Callable[[], None] | None,
                           durable: bool) -> str:
    """Write ``chunks`` to a temporary sibling of ``path`` (fsynced if ``durable``) and return its name."""
    _make_directories(os.path.dirname(path), durable)
    temporary = path + object_paths.temporary_suffix()  # left behind only by a crash; gc removes it
    try:
        with open(temporary, "xb") as f:
            for chunk in chunks:
                f.write(chunk)
                if on_chunk is not None:
                    on_chunk()
            if durable:
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        os.unlink(temporary)
        raise
    return temporary


def write_atomic(
    fs: AbstractFileSystem,
    path: str,
    chunks: Iterable[bytes],
    on_chunk: Callable[[], None] | None = None,
    *,
    durable: bool = True,
) -> None:
    """Write ``chunks`` to ``path`` so readers see the old object or the whole new one.

    If iterating ``chunks`` raises, the exception propagates and nothing new
    is published under ``path`` (local: the temporary file is removed;
    ``memory://``: nothing was assigned; buffered object-store files such as
    S3's: the multipart upload is aborted). A backend whose files write in
    place keeps what was written (see ``docs/store.md``).

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    path : str
        Full path on ``fs`` (already checked by :mod:`imgdedup.pipeline.store.object_paths`).
    chunks : iterable of bytes
        Streamed: at most one chunk (one multipart part on object stores) is
        held, except on ``memory://``, where the object is assembled first.
    on_chunk : callable, optional
        Called after each chunk has been handed to the filesystem; the store uses
        it to report the ``*.chunk`` steps of a write.
    durable : bool
        False for a file only a later commit makes visible: on local disk (Linux)
        it is then not fsynced here (two fsyncs of file and folder cost more than
        the rest of a small blob's write) and :func:`flush_filesystem`, called on
        the same host before the commit record is written, makes it durable. It
        is published with ``os.link``, which fails if a file is already there (a
        committed blob a concurrent writer just published, say): that one is
        only replaced by bytes fsynced first. Ignored elsewhere.
    """
    if isinstance(fs, LocalFileSystem):
        durable = durable or not DEFERRED_SYNC
        temporary = _write_local_temporary(path, chunks, on_chunk, durable)
        if not durable:
            try:
                os.link(temporary, path)
            except OSError:  # a file is there already (or no hard links): replace it durably
                _fsync_path(temporary)
            else:
                os.unlink(temporary)
                return
        os.replace(temporary, path)
        _fsync_path(os.path.dirname(path))
        return
    if isinstance(fs, MemoryFileSystem):
        # A memory file is published the moment it is opened, so it is
        # assembled first and stored with one assignment.
        parts = []
        for chunk in chunks:
            parts.append(bytes(chunk))
            if on_chunk is not None:
                on_chunk()
        fs.pipe_file(path, b"".join(parts))
        return
    f = fs.open(path, "wb", block_size=OBJECT_PART_BYTES)
    try:
        for chunk in chunks:
            f.write(chunk)
            if on_chunk is not None:
                on_chunk()
    except BaseException:
        _abandon(f)
        raise
    f.close()


def check_root(fs: AbstractFileSystem, root: str, url: str) -> None:
    """Refuse a store root that is a file (a local path only: on object stores a key
    and a prefix may share a name, and checking would cost a request per open).

    Raises
    ------
    StoreError
        ``root`` names an existing local file (or device, FIFO...), not a folder.
    """
    if isinstance(fs, LocalFileSystem) and os.path.exists(root) and not os.path.isdir(root):
        raise StoreError(url, "is a file, not a store folder; pass the store's folder (or a new one) as --store")


def open_flush_handle(fs: AbstractFileSystem, path: str) -> int | None:
    """A descriptor for :func:`flush_filesystem` on the local filesystem holding ``path``.

    Opened early (when the store is opened), so the flush reports every
    writeback error the filesystem met since. None where writes do not defer
    their fsync (object stores, ``memory://``, systems without ``syncfs``).
    """
    if not isinstance(fs, LocalFileSystem) or not DEFERRED_SYNC:
        return None
    while not os.path.exists(path) and os.path.dirname(path) != path:  # a store not created yet
        path = os.path.dirname(path)
    return os.open(path or "/", os.O_RDONLY)


def flush_filesystem(handle: int | None) -> None:
    """Make every write to the filesystem of ``handle`` durable, by any process of this host.

    Linux ``syncfs``. Raises OSError when it reports a writeback error (on any
    file of that filesystem since the handle was opened). A None handle: nothing
    to do.
    """
    if handle is not None and _SYNCFS(handle) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs: {os.strerror(error)}")


def _abandon(f: IO[bytes]) -> None:
    """Drop an unfinished write without publishing it.

    A buffered object-store file publishes on ``close()`` whatever it holds, so
    it is discarded (the multipart upload, if any, is aborted) and marked
    closed. Files of other backends write in place: closing them is all there
    is to do, and what they wrote stays uncommitted until gc removes it.
    """
    if isinstance(f, AbstractBufferedFile):
        f.discard()
        f.closed = True
    else:
        f.close()


def write_exclusive(
    fs: AbstractFileSystem,
    path: str,
    data: bytes,
    before_publish: Callable[[], None] | None = None,
) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True if this call created it.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    path : str
        Full path on ``fs``.
    data : bytes
        The whole object (a commit record: a few kilobytes).
    before_publish : callable, optional
        Called when the data is ready but not yet visible under ``path``.

    Returns
    -------
    bool
        True if this call created the object; False if it already existed (the
        caller lost a race and must not assume its data is there).
    """
    if isinstance(fs, LocalFileSystem):
        temporary = _write_local_temporary(path, [data], None, durable=True)
        try:
            if before_publish is not None:
                before_publish()
            os.link(temporary, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(temporary)
        _fsync_path(os.path.dirname(path))
        return True
    if before_publish is not None:
        before_publish()
    if isinstance(fs, MemoryFileSystem):
        with _MEMORY_LOCK:
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
        return True
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            fs.pipe_file(path, data, mode="create")
            break
        except FileExistsError:
            return False
        except OSError as exc:
            # s3fs reports S3's 409 ConditionalRequestConflict (another
            # conditional write of this key in flight) as EBUSY; AWS asks for a
            # retry, which then either creates the key or finds it taken (412).
            if exc.errno != errno.EBUSY or attempt == CONFLICT_ATTEMPTS - 1:
                raise
            time.sleep(CONFLICT_BACKOFF_SECONDS * 2**attempt)
    fs.invalidate_cache(path)
    # A backend whose "create" mode is check-then-write may let a second writer
    # overwrite us; reading back catches the overwrites that land before this read.
    return fs.cat_file(path) == data
