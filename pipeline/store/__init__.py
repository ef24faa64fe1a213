"""The store: Parquet tables and ciphertext blobs on any fsspec URL, with atomic commits.

Server side: runs with no key in reach.
"""
