"""Group keys: the key file, its checks, and the per-purpose sub-keys.

A group key file is a small JSON document::

    {"format": "imgdedup-group-key", "version": 1,
     "key_id": "<32 hex digits>", "key": "<base64 of 32 random bytes>"}

The key id is derived from the key with HKDF (label ``key-id``), so it names the
key without revealing it, two copies of one key carry one id, and a key file
whose key or id was damaged is caught on loading. The file is created with mode
0600 and refused on loading when its group or others have any access to it.

Every use of the key goes through a sub-key derived with HKDF-SHA256 under a
distinct label (:data:`PURPOSES`), so a token mask can never be reused as a
wrapping key and so on.

A key may carry a store's *index keys* (:meth:`GroupKey.with_index`): the
sub-keys of :data:`INDEX_PURPOSES` and the id they were made under, taken from
the first group key of the store. Blob purposes always come from the key itself.
"""
from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from imgdedup.pipeline.errors import KeyFileError

KEY_FILE_FORMAT = "imgdedup-group-key"
KEY_FILE_VERSION = 1
KEY_BYTES = 32
KEY_ID_BYTES = 16
KEY_FILE_ENV = "IMGDEDUP_KEY_FILE"

# One HKDF label per purpose; adding a purpose means adding a label, never
# reusing one.
PURPOSES = (
    "blob-wrap",            # wraps each blob's data key (AES-256-GCM)
    "blob-derive",          # derives a blob's data key and nonces from its keyed content digest
    "key-commitment",       # MACs blob headers: commits a header to the group key
    "fingerprint-tokens",   # permutation and mask of similarity tokens
    "fingerprint-seal",     # AEAD of raw hashes (sealed fingerprints, sealed hash column)
    "content-digest",       # HMAC of file bytes (exact-duplicate / idempotency keys)
    "index-wrap",           # wraps a store's index keys in its _keys/ records (key rotation)
    "resolution-mac",       # MACs each row's mapping image id -> canonical, blob (what get follows)
)
#: Purposes whose sub-keys key the store's tables rather than its blobs: they
#: outlive a key rotation (the store keeps them wrapped under each current group
#: key, see :mod:`imgdedup.pipeline.crypto.index_keys`), so every token, sealed
#: hash, content digest and image id written under the first key stays valid.
INDEX_PURPOSES = ("fingerprint-tokens", "fingerprint-seal", "content-digest", "resolution-mac")
_LABEL_PREFIX = b"imgdedup/v1/"


def _hkdf(key: bytes, label: str, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=_LABEL_PREFIX + label.encode()).derive(key)


class GroupKey:
    """A group's 256-bit secret key and its id.

    ``repr`` and ``str`` show the key id only; the key bytes are reachable only
    through :meth:`subkey`, which never returns the key itself.

    Parameters
    ----------
    key : bytes
        32 secret bytes.
    """

    __slots__ = ("_key", "_key_id", "_subkeys", "_index_key_id")

    def __init__(self, key: bytes, index: tuple[bytes, Mapping[str, bytes]] | None = None):
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise ValueError(f"a group key is {KEY_BYTES} bytes")
        self._key = key
        self._key_id = _hkdf(key, "key-id", KEY_ID_BYTES)
        self._subkeys: dict[str, bytes] = {}
        self._index_key_id = self._key_id
        if index is not None:
            index_key_id, subkeys = index
            if len(index_key_id) != KEY_ID_BYTES or set(subkeys) != set(INDEX_PURPOSES) \
                    or any(len(v) != 32 for v in subkeys.values()):
                raise ValueError(f"index keys are a {KEY_ID_BYTES}-byte id and one 32-byte sub-key "
                                 f"per purpose of {INDEX_PURPOSES}")
            self._index_key_id = bytes(index_key_id)
            self._subkeys.update(subkeys)

    @classmethod
    def generate(cls) -> GroupKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_BYTES))

    @property
    def key_id(self) -> bytes:
        """16-byte public name of this key (HKDF of the key; reveals nothing about it)."""
        return self._key_id

    @property
    def key_id_hex(self) -> str:
        return self._key_id.hex()

    @property
    def index_key_id(self) -> bytes:
        """16-byte id of the key the store's tables are keyed under: this key's id, or
        that of the store's first key once :meth:`with_index` gave it the store's index keys."""
        return self._index_key_id

    @property
    def index_key_id_hex(self) -> str:
        return self._index_key_id.hex()

    def index_subkeys(self) -> dict[str, bytes]:
        """The 32-byte sub-keys of :data:`INDEX_PURPOSES` this key uses (for wrapping them)."""
        return {purpose: self.subkey(purpose) for purpose in INDEX_PURPOSES}

    def with_index(self, index_key_id: bytes, subkeys: Mapping[str, bytes]) -> GroupKey:
        """This key with a store's index keys: ``subkeys`` (one per :data:`INDEX_PURPOSES`) under ``index_key_id``."""
        return GroupKey(self._key, (index_key_id, dict(subkeys)))

    def subkey(self, purpose: str) -> bytes:
        """The 32-byte sub-key for one of :data:`PURPOSES`."""
        if purpose not in PURPOSES:
            raise ValueError(f"unknown key purpose {purpose!r}; known: {PURPOSES}")
        if purpose not in self._subkeys:
            self._subkeys[purpose] = _hkdf(self._key, purpose, 32)
        return self._subkeys[purpose]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupKey) and other._key_id == self._key_id

    def __hash__(self) -> int:
        return hash(self._key_id)

    def __repr__(self) -> str:
        return f"GroupKey(key_id={self.key_id_hex})"

    __str__ = __repr__

    def __getstate__(self):
        # Keys travel to Dask workers by pickling; the cache is rebuilt there.
        if self._index_key_id == self._key_id:
            return self._key, None
        return self._key, (self._index_key_id, self.index_subkeys())

    def __setstate__(self, state: tuple[bytes, tuple[bytes, dict[str, bytes]] | None]):
        self.__init__(*state)


def resolve_key_path(configured: str, environ: Mapping[str, str] = os.environ) -> Path:
    """The key file to use: ``$IMGDEDUP_KEY_FILE`` when set, else the configured path."""
    return Path(environ.get(KEY_FILE_ENV) or configured).expanduser()


def load_group_key(path: str | Path | None, configured: str) -> GroupKey:
    """The group key of a command: from ``path`` when given (its ``--key``), else from :func:`resolve_key_path`."""
    return load_key_file(path or resolve_key_path(configured))


def write_key_file(path: str | Path, key: GroupKey, *, overwrite: bool = False) -> Path:
    """Write ``key`` to ``path`` with mode 0600.

    The file is created exclusively; with ``overwrite`` a temporary file beside it
    is created the same way and renamed over the old one, so the key is never
    readable by others even for an instant.

    Raises
    ------
    KeyFileError
        The file exists and ``overwrite`` is false, or it cannot be created or
        written (nothing is left behind then).
    """
    path = Path(path)
    document = json.dumps({
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "key_id": key.key_id_hex,
        "key": base64.b64encode(key._key).decode(),
    }, indent=1).encode() + b"\n"
    target = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp") if overwrite else path
    try:
        # Created with mode 0600 (or stricter, under the umask) in the one call:
        # there is no moment between creating and restricting the file.
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(str(path), "already exists; refusing to overwrite a key "
                           "(pass --force to replace it)") from None
    except OSError as exc:
        raise KeyFileError(str(path), f"cannot create: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            if os.name == "posix":
                # A strict umask (0o277, 0o777) would leave the owner unable to
                # read the key back; setting the mode on the open descriptor
                # only ever adds owner bits, never group or other ones.
                os.fchmod(out.fileno(), 0o600)
            out.write(document)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(target, path)
    except BaseException as exc:
        target.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise KeyFileError(str(path), f"cannot write: {exc.strerror}") from None
        raise
    return path


def load_key_file(path: str | Path) -> GroupKey:
    """Read and check a group key file.

    Raises
    ------
    KeyFileError
        Missing or unreadable, not a regular file, open to group or others (any permission bit),
        not a key file, an unknown format version, a key that is not base64 or
        of the wrong length, or a key id that does not match the key.

    Examples
    --------
    >>> import tempfile, imgdedup
    >>> path = imgdedup.write_key(tempfile.mkdtemp() + "/group.key", imgdedup.GroupKey.generate())
    >>> key = imgdedup.load_key(path)
    >>> len(key.key_id_hex), oct(path.stat().st_mode & 0o777)
    (32, '0o600')
    """
    path = Path(path)
    subject = str(path)
    try:
        # One descriptor for the permission check and the read, so the bytes read
        # are those of the file whose mode was checked (no swap in between).
        # Opened non-blocking: a FIFO or a device given as the key file is
        # refused by its type instead of blocking the open or the read.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with os.fdopen(fd, "rb") as reader:
            mode = os.fstat(reader.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(subject, "not a regular file (a FIFO, device or folder cannot be a key file)")
            if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KeyFileError(subject, f"permissions {stat.filemode(mode)} give group or "
                                   f"others access to it; run `chmod 600 {path}`")
            content = reader.read()
    except FileNotFoundError:
        raise KeyFileError(subject, "key file not found (create one with `imgdedup keygen "
                           f"--out {path}` or point {KEY_FILE_ENV} at it)") from None
    except OSError as exc:
        raise KeyFileError(subject, f"cannot read: {exc.strerror}") from None
    try:
        document = json.loads(content)
    except ValueError:
        raise KeyFileError(subject, "not an imgdedup key file (not JSON)") from None
    if not isinstance(document, dict) or document.get("format") != KEY_FILE_FORMAT:
        raise KeyFileError(subject, f"not an imgdedup key file (format is not {KEY_FILE_FORMAT!r})")
    if document.get("version") != KEY_FILE_VERSION:
        raise KeyFileError(subject, f"key file version {document.get('version')!r} is not "
                           f"supported (this imgdedup reads version {KEY_FILE_VERSION})")
    try:
        raw = base64.b64decode(document.get("key", ""), validate=True)
    except (ValueError, TypeError):  # binascii.Error, and non-ASCII text, are ValueErrors
        raise KeyFileError(subject, "the key is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyFileError(subject, f"the key is {len(raw)} bytes; a group key is {KEY_BYTES}")
    key = GroupKey(raw)
    if document.get("key_id") != key.key_id_hex:
        raise KeyFileError(subject, "the key id does not match the key (damaged or edited file)")
    return key
