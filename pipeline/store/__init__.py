"""The store: Parquet tables and ciphertext blobs on any fsspec URL, with atomic commits.

Server side: runs with no key in reach; nothing here imports :mod:`pipeline.crypto`.
"""
from pipeline.store.store import Store

__all__ = ["Store"]
