"""The one error hierarchy of imgdedup.

Every error names the object it is about (a file path, a blob id, a config key)
and the stage that failed, so a job can turn it into an errors-table row.
"""
from __future__ import annotations


class ImgdedupError(Exception):
    """Base of every error imgdedup raises on purpose.

    Parameters
    ----------
    subject : str
        What the error is about: a file path, an image or blob id, a config key.
    reason : str
        What went wrong, in words a user can act on.
    stage : str
        The pipeline stage that failed (``decode``, ``hash``, ``encrypt``, ...).
    """

    stage = "imgdedup"

    def __init__(self, subject: str, reason: str, *, stage: str | None = None):
        self.subject = str(subject)
        self.reason = reason
        if stage is not None:
            self.stage = stage
        super().__init__(f"{self.subject}: {self.stage}: {reason}")


class ConfigError(ImgdedupError):
    """A config file or override is malformed or names an unknown key."""

    stage = "config"


class IncompatibleStoreError(ConfigError):
    """The store's fingerprints were made with another hash, length, key or mode than this run's."""


class DecodeError(ImgdedupError):
    """A file is not an image we accept: corrupt, truncated, empty, too large, wrong format."""

    stage = "decode"


class KeyFileError(ImgdedupError):
    """A group key file is missing, malformed or readable by others."""

    stage = "key"


class UsageError(ImgdedupError):
    """A path given on the command line cannot be used: a missing folder, a file that
    is not a regular file, a query image that is not there."""

    stage = "usage"


class IntegrityError(ImgdedupError):
    """Ciphertext failed authentication: wrong key, tampered, truncated or moved blob."""

    stage = "decrypt"


class StoreError(ImgdedupError):
    """The store refused an operation: unsafe object key, lost commit race, missing object."""

    stage = "store"


class CommitConflict(StoreError):
    """A commit's guard found that a commit landed meanwhile conflicts with it; nothing was committed."""


class MergeError(ImgdedupError):
    """A merge cannot be undone: the image is not a pointer of that group, or its blob is gone."""

    stage = "unmerge"
