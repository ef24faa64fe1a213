"""Object paths: every key (path) the store touches is built here from checked ids.

The store never turns a user path into an object key. Ids (blob ids, run ids,
table names, part names) are matched against a closed alphabet, and every
store-relative key — including keys read back from a commit record, which may
have been tampered with — passes :func:`check_key` before any filesystem call.
A key with ``..``, an absolute path, a backslash, a NUL or an empty component is
refused with :class:`~imgdedup.pipeline.errors.StoreError`, whatever the backend.
"""
from __future__ import annotations

import re
import uuid

from imgdedup.pipeline.errors import StoreError

#: Blob ids: letters, digits, ``_`` and ``-``, 4 to 128 characters. At least four
#: characters, because the first four name the two shard folders.
BLOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{4,128}")
#: Run ids and part names: one path component without dots at either end.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_-])?")
#: Table names: lower-case identifiers.
TABLE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")

#: Top-level folders that belong to the store itself, never to a table.
RESERVED_TOP_LEVEL = frozenset({"blobs", "_commits", "_keys"})

#: The unique part of a data file's or temporary file's name: ``uuid4().hex``.
_UNIQUE = r"[0-9a-f]{32}"
_TEMPORARY_PATTERN = re.compile(rf"(.+)\.tmp-{_UNIQUE}")
_PART_NAME_PATTERN = re.compile(rf"part-(.+)-{_UNIQUE}\.parquet")
_RUN_FILE_NAME_PATTERN = re.compile(rf"{_UNIQUE}-(.+)")


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a safe store-relative object key.

    Parameters
    ----------
    key : str
        A ``/``-separated key relative to the store root.

    Raises
    ------
    StoreError
        The key is not a string, is empty, absolute, contains a backslash, a
        NUL, a ``.`` or ``..`` component, or an empty component.
    """
    if not isinstance(key, str) or not key:
        raise StoreError(repr(key), "an object key must be a non-empty string")
    if "\x00" in key:
        raise StoreError(repr(key), "an object key must not contain NUL")
    if "\\" in key:
        raise StoreError(repr(key), "an object key must not contain a backslash")
    if key.startswith("/") or re.match(r"[A-Za-z]:", key) or "://" in key:
        raise StoreError(repr(key), "an object key must be relative to the store root")
    for component in key.split("/"):
        if component in ("", ".", ".."):
            raise StoreError(repr(key), "an object key must not have empty, '.' or '..' components")
        if ".." in component:
            raise StoreError(repr(key), "an object key must not contain '..'")
    return key


def _check_pattern(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or "\x00" in value or pattern.fullmatch(value) is None:
        raise StoreError(repr(value), f"not a valid {what} (allowed: {pattern.pattern})")
    return value


def check_blob_id(blob_id: str) -> str:
    """Return ``blob_id`` if it matches :data:`BLOB_ID_PATTERN`, else raise StoreError."""
    return _check_pattern(blob_id, BLOB_ID_PATTERN, "blob id")


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it matches :data:`RUN_ID_PATTERN`, else raise StoreError."""
    value = _check_pattern(run_id, RUN_ID_PATTERN, "run id")
    if ".." in value:
        raise StoreError(repr(run_id), "a run id must not contain '..'")
    return value


def check_table(table: str) -> str:
    """Return ``table`` if it is a table name (not a reserved folder), else raise StoreError."""
    value = _check_pattern(table, TABLE_PATTERN, "table name")
    if value in RESERVED_TOP_LEVEL:
        raise StoreError(value, "this name is reserved by the store")
    return value


def blob_body_key(blob_id: str) -> str:
    """``"abcdef01"`` → ``"blobs/ab/cd/abcdef01"``: the ciphertext body's key."""
    check_blob_id(blob_id)
    return f"blobs/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"


def blob_header_key(blob_id: str) -> str:
    """``"abcdef01"`` → ``"blobs/ab/cd/abcdef01.hdr"``: the small, replaceable header's key."""
    return blob_body_key(blob_id) + ".hdr"


def table_part_key(table: str, run_id: str, part: str, unique: str) -> str:
    """Key of one immutable Parquet part: ``<table>/<run_id>/part-<part>-<unique>.parquet``."""
    check_table(table)
    check_run_id(run_id)
    check_run_id(part)
    check_run_id(unique)
    return f"{table}/{run_id}/part-{part}-{unique}.parquet"


def check_table_file(table: str, key: str) -> str:
    """Return ``key`` if it is a safe key under ``<table>/`` (``table`` already checked), else raise StoreError.

    Every file a commit lists for ``table`` must be one, in :meth:`Store.commit`
    and in records read back, so a tampered record cannot make a reader parse a
    blob or a commit record as a Parquet part.
    """
    check_key(key)
    if not key.startswith(f"{table}/"):
        raise StoreError(key, f"not a file of table {table!r}")
    return key


def run_file_key(table: str, run_id: str, name: str, unique: str) -> str:
    """Key of one immutable non-Parquet file of a run: ``<table>/<run_id>/<unique>-<name>``."""
    check_table(table)
    check_run_id(run_id)
    check_run_id(name)
    check_run_id(unique)
    if name.endswith(".parquet"):
        raise StoreError(name, "Parquet files are written as table parts")
    return f"{table}/{run_id}/{unique}-{name}"


def temporary_suffix() -> str:
    """A fresh ``.tmp-<uuid>`` suffix: the name of an interrupted write, which gc removes."""
    return f".tmp-{uuid.uuid4().hex}"


def blob_id_of(key: str) -> str | None:
    """The id of the blob whose body or header ``key`` is, or None for any other key."""
    blob_id = key.rsplit("/", 1)[-1].removesuffix(".hdr")
    if BLOB_ID_PATTERN.fullmatch(blob_id) and key in (blob_body_key(blob_id), blob_header_key(blob_id)):
        return blob_id
    return None


def _is_valid(check, value: str) -> bool:
    try:
        check(value)
    except StoreError:
        return False
    return True


def is_store_key(key: str) -> bool:
    """True if ``key`` is shaped like a key the store writes, or like the temporary of one.

    Commit records, blob bodies and headers, table parts and run files, each
    optionally with a :func:`temporary_suffix`. Garbage collection removes only
    such keys, so files that merely share the store's folder (a bucket used for
    other things, a mistyped ``--store``) are never deleted.
    """
    temporary = _TEMPORARY_PATTERN.fullmatch(key)
    if temporary is not None:
        key = temporary.group(1)
    if commit_version(key) is not None or blob_id_of(key) is not None:
        return True
    components = key.split("/")
    if len(components) != 3:
        return False
    table, run_id, name = components
    if not (_is_valid(check_table, table) and _is_valid(check_run_id, run_id)):
        return False
    part = _PART_NAME_PATTERN.fullmatch(name)
    if part is not None:
        return _is_valid(check_run_id, part.group(1))
    run_file = _RUN_FILE_NAME_PATTERN.fullmatch(name)
    return run_file is not None and _is_valid(check_run_id, run_file.group(1)) and not name.endswith(".parquet")


def key_record_key(wrap_key_id: str) -> str:
    """Key of the store's index keys wrapped under one group key: ``_keys/<wrap_key_id>.json`` (32 hex digits)."""
    if not isinstance(wrap_key_id, str) or re.fullmatch(r"[0-9a-f]{32}", wrap_key_id) is None:
        raise StoreError(repr(wrap_key_id), "a key id is 32 lower-case hex digits")
    return f"_keys/{wrap_key_id}.json"


def key_record_id(key: str) -> str | None:
    """The group key id a ``_keys/`` record is wrapped under, or None for any other key."""
    match = re.fullmatch(r"_keys/([0-9a-f]{32})\.json", key)
    return match.group(1) if match else None


def commit_key(version: int) -> str:
    """Key of the commit record of ``version``: ``_commits/<version:020d>.json``."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(repr(version), "a commit version is an integer >= 1")
    return f"_commits/{version:020d}.json"


def write_probe_key() -> str:
    """A fresh key to test that the store is writable: the temporary of commit record 0.

    No commit has version 0, so no reader takes it for a record; it is shaped
    like a store key, so gc removes one that was left behind.
    """
    return f"_commits/{0:020d}.json{temporary_suffix()}"


def commit_version(key: str) -> int | None:
    """The version a commit-record key names, or None for anything else in ``_commits/``."""
    match = re.fullmatch(r"_commits/(\d{20})\.json", key)
    return int(match.group(1)) if match else None
