"""Client-side cryptography: group keys, sealed blobs, keyed fingerprints, keyed digests.

Everything here needs the group key; the server side (store, index, dedup
decisions) must not import it.
"""
