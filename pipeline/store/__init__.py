"""The store: Parquet tables and ciphertext blobs on any fsspec URL, with atomic commits.

Server side: runs with no key in reach; nothing here imports :mod:`imgdedup.pipeline.crypto`.
"""
from imgdedup.pipeline.store.store import Store

__all__ = ["Store"]
