"""Where Numba keeps the compiled scans: beside the package, else a writable per-user folder, else nowhere.

Numba caches a compiled function in ``__pycache__`` beside its source, or else
in the user's cache folder (``~/.cache/numba``). A wheel installed read-only
and a user with no writable home (a container, a service account) have
neither, and ``cache=True`` then fails at import. :func:`compile_cache_enabled`
runs before Numba is imported: when neither place is writable it points
``NUMBA_CACHE_DIR`` at a private folder in the system temporary folder, and
when even that is not possible it tells the caller to compile uncached (each
process then compiles the scans once, a few seconds) with a warning.
"""
from __future__ import annotations

import os
import stat
import tempfile
import warnings
from collections.abc import MutableMapping
from pathlib import Path


def _writable_folder(folder: Path) -> bool:
    """True if ``folder`` exists or can be created, and this process can create files in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _private_folder(folder: Path) -> bool:
    """Create ``folder`` mode 0700, or accept it if it is already ours, a real folder, and private."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return False
    # In a shared temporary folder another user could have made the name first
    # (or a link to elsewhere): compiled code loaded from there would run as us.
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK | os.X_OK)


def compile_cache_enabled(source: str | os.PathLike, environ: MutableMapping[str, str] = os.environ) -> bool:
    """Choose Numba's cache folder for the compiled functions of ``source``; False: compile uncached.

    Parameters
    ----------
    source : path
        The module whose functions are compiled with ``cache=True``.
    environ : mutable mapping
        The process environment; ``NUMBA_CACHE_DIR`` is set here when the
        fallback folder is used. A ``NUMBA_CACHE_DIR`` already set is the
        user's choice and is left alone. ``NUMBA_CACHE_DIR`` or ``XDG_CACHE_HOME``
        set to the empty string is removed (unset, as the XDG convention reads it).
    """
    for name in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        if environ.get(name) == "":  # set but empty, Numba would put its cache folders in the working folder
            del environ[name]
    if environ.get("NUMBA_CACHE_DIR"):
        return True
    if _writable_folder(Path(source).resolve().parent / "__pycache__"):
        return True
    user_cache = Path(environ.get("XDG_CACHE_HOME") or Path(environ.get("HOME", "~")) / ".cache")
    if _writable_folder(user_cache.expanduser() / "numba"):
        return True
    fallback = Path(tempfile.gettempdir()) / f"imgdedup-numba-{os.geteuid()}"
    if _private_folder(fallback):
        environ["NUMBA_CACHE_DIR"] = str(fallback)
        return True
    warnings.warn(f"no writable folder for Numba's cache (beside {source}, in the user's cache folder or "
                  f"{fallback}): the Hamming scans are compiled again in each process; set NUMBA_CACHE_DIR "
                  "to a writable folder to keep them", RuntimeWarning, stacklevel=2)
    return False
