"""Garbage collection: remove what no commit refers to, once it is older than a grace period."""
from __future__ import annotations

import datetime as dt
import time

from fsspec import AbstractFileSystem

from imgdedup.pipeline.errors import StoreError
from imgdedup.pipeline.store import object_paths, schemas
from imgdedup.pipeline.store.backend import list_keys
from imgdedup.pipeline.store.commitlog import CommitLog


def collect_garbage(
    fs: AbstractFileSystem,
    root: str,
    log: CommitLog,
    grace_seconds: float,
    now: float | dt.datetime | None = None,
) -> list[str]:
    """Remove files under ``root`` that ``log`` does not refer to and that are old enough.

    Only names the store itself makes are candidates (:func:`object_paths.is_store_key`):
    other files under ``root`` are left alone, whatever their age.

    Files are listed *before* the commit log is read, so a file committed
    between the two is seen as referenced. A run that takes longer than the
    grace period between writing a file and committing it may lose that file
    (its commit then fails, see ``docs/store.md``): choose the grace period
    longer than the longest run. Commit records and everything they list are
    never removed.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    root : str
        Store root on ``fs``.
    log : CommitLog
        The store's commit log.
    grace_seconds : float
        Minimum age, in seconds since last modification, of a removed file.
    now : float or datetime, optional
        The current time (POSIX seconds or an aware datetime); the clock when omitted.

    Returns
    -------
    list of str
        Store-relative keys removed, sorted.

    Raises
    ------
    StoreError
        A negative grace period; or ``root`` is not a store: no commit record,
        and something besides the store's own folders at its top (a mistyped
        ``--store`` naming some other folder); nothing is deleted there. A
        store whose first run never committed holds only its own folders, and
        is collected.
    """
    if grace_seconds < 0:
        raise StoreError(str(grace_seconds), "the gc grace period must be >= 0 seconds")
    if log.latest_version() == 0:
        own = set(object_paths.RESERVED_TOP_LEVEL) | set(schemas.TABLES)
        foreign = sorted({key.split("/", 1)[0] for key in list_keys(fs, root)} - own)
        if foreign:
            raise StoreError(root, f"not a store (no commit record, and {foreign[:3]} at its top are not the "
                             "store's); gc deletes only inside a store's own layout: check --store / store.url")
    if now is None:
        now = time.time()
    elif isinstance(now, dt.datetime):
        now = now.timestamp()
    present = list_keys(fs, root)
    referenced = log.referenced_keys()
    removed = []
    for key in present:
        if key in referenced or not object_paths.is_store_key(key):
            continue  # committed, or a name the store could not have made: not ours to delete
        path = f"{root}/{object_paths.check_key(key)}"
        try:
            if fs.modified(path).timestamp() <= now - grace_seconds:
                fs.rm_file(path)
                removed.append(key)
        except FileNotFoundError:
            continue  # removed meanwhile, by a concurrent gc
    return removed
