"""imgdedup: secure near-duplicate image deduplication over large image sets.

The front door for Python callers. A quick in-memory run needs no store, no key
and no Dask::

    import imgdedup
    groups = imgdedup.find_duplicates("photos/")   # [[best copy, duplicate, ...], ...]

The store, the group key and the jobs are one import away::

    key = imgdedup.load_key("group.key")
    summary = imgdedup.run_bulk("photos/", "s3://bucket/dedup", key)    # the bulk job on Dask
    ingestor = imgdedup.Ingestor(imgdedup.Store("s3://bucket/dedup"), key)
    decision = ingestor.submit("new.jpg")                                # stored or duplicate

Every name below is loaded on first use, so ``import imgdedup`` stays cheap and
a caller of :func:`find_duplicates` never imports Dask. Each has a docstring
with an example that runs (the test suite runs them).
"""
from __future__ import annotations

import importlib

#: Public name -> (module, attribute) it is loaded from on first use.
_EXPORTS: dict[str, tuple[str, str]] = {
    "find_duplicates": ("imgdedup.jobs.in_memory", "find_duplicates"),
    "hash_files": ("imgdedup.jobs.in_memory", "hash_files"),
    "build_sample_set": ("imgdedup.jobs.demo", "build_sample_set"),
    "Store": ("imgdedup.pipeline.store", "Store"),
    "Ingestor": ("imgdedup.jobs.ingestor", "Ingestor"),
    "run_bulk": ("imgdedup.jobs.bulk", "run_bulk"),
    "GroupKey": ("imgdedup.pipeline.crypto.group_key", "GroupKey"),
    "load_key": ("imgdedup.pipeline.crypto.group_key", "load_key_file"),
    "write_key": ("imgdedup.pipeline.crypto.group_key", "write_key_file"),
    "load_config": ("imgdedup.pipeline.config", "load_config"),
    "Config": ("imgdedup.pipeline.config", "Config"),
    "ImgdedupError": ("imgdedup.pipeline.errors", "ImgdedupError"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    try:
        module, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'imgdedup' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
