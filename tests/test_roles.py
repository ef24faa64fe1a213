"""Role separation: the server side runs with no key in reach and never imports pipeline.crypto.

The store, the packed-bit kernels and (where present) the index, clustering and
dedup-decision modules are the server side, with the store's upkeep commands
(``imgdedup gc``, ``imgdedup unmerge``). They must work in a process where
``pipeline.crypto`` cannot be imported and no key file exists.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PIPELINE = REPO / "pipeline"

#: Server-side code (under the repository): files, or folders whose every module is server side.
#: Not unmerge: the mapping it rewrites is MACed under the group key, so the store cannot redirect it.
SERVER_SIDE = ["pipeline/store", "pipeline/hashing/bits.py", "pipeline/index", "pipeline/cluster",
               "pipeline/dedup.py", "pipeline/keep.py", "pipeline/cores.py", "jobs/storecmd.py",
               "jobs/report_tables.py"]


def server_side_modules() -> list[Path]:
    found = []
    for entry in SERVER_SIDE:
        path = REPO / entry
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    return found


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    package = ".".join(("imgdedup", *path.relative_to(REPO).with_suffix("").parts[:-1]))
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_server_side_modules_import_nothing_from_crypto():
    modules = server_side_modules()
    assert all((REPO / entry).exists() for entry in SERVER_SIDE)
    assert PIPELINE / "store" / "store.py" in modules and PIPELINE / "hashing" / "bits.py" in modules
    for path in modules:
        crypto = {n for n in imported_modules(path)
                  if n == "imgdedup.pipeline.crypto" or n.startswith("imgdedup.pipeline.crypto.")}
        assert not crypto, f"{path.relative_to(REPO)} imports {sorted(crypto)}"


SERVER_SCRIPT = r"""
import importlib, sys
sys.modules["imgdedup.pipeline.crypto"] = None  # any import of it now raises ImportError
try:
    import imgdedup.pipeline.crypto.group_key
except ImportError:
    pass
else:
    raise SystemExit("imgdedup.pipeline.crypto is still importable")

import numpy as np
import pyarrow as pa
from imgdedup.pipeline.hashing.bits import hamming
from imgdedup.pipeline.store import Store, schemas

for name in sys.argv[2:]:
    importlib.import_module(name)

rng = np.random.default_rng(7)
tokens = rng.integers(0, 256, size=(50, 32), dtype=np.uint8)
query = tokens[17].copy()
query[:2] ^= 0b101  # 4 bits away from row 17
n = len(tokens)
table = pa.table({
    "image_id": [f"img{i:05d}" for i in range(n)],
    "fingerprint": [t.tobytes() for t in tokens],
    "algo": ["lbph"] * n, "key_id": ["k"] * n, "cluster_id": [0] * n,
    "width": [1] * n, "height": [1] * n, "bytes": [1] * n, "blob": [None] * n,
    "duplicate_of": [None] * n, "distance": [None] * n, "source": ["s"] * n,
    "ingested_at": [None] * n, "hash_sealed": [b"opaque"] * n,
    "content_digest": [bytes(32)] * n, "quality": [50] * n, "format": ["PNG"] * n, "lossless": [True] * n,
    "jpeg_quality": [None] * n, "exif": [False] * n, "upload_id": [None] * n, "resolution_mac": [None] * n,
    "feature_keys": [None] * n,
}, schema=schemas.fingerprints_schema(32))
store = Store(sys.argv[1])
store.commit("run-1", {"fingerprints": [store.write_table_part("fingerprints", "run-1", 0, table)]})

stored = store.read_table("fingerprints")
matrix = np.frombuffer(b"".join(stored.column("fingerprint").to_pylist()), dtype=np.uint8).reshape(n, 32)
distances = hamming(query[None, :], matrix)[0]
assert distances.argmin() == 17 and distances.min() == 4, distances

# Blob upkeep is server side too: headers are replaced (key rotation hands the
# store new wrapped keys), and `imgdedup gc` removes what no commit lists.
import argparse
from imgdedup.jobs import storecmd
from imgdedup.pipeline.config import load_config
store.write_blob("abcd0001", b"wrapped key v1", [b"ciphertext"])
store.write_blob("dead0001", b"abandoned", [b"ciphertext"])
store.commit("run-2", {}, ["abcd0001"])
store.replace_blob_header("abcd0001", b"wrapped key v2")
assert storecmd.run(argparse.Namespace(grace=0, store=sys.argv[1]), load_config()) == 0
assert list(store.iter_blob_ids(committed_only=False)) == ["abcd0001"]
assert store.read_blob_header("abcd0001") == b"wrapped key v2"
assert [m for m in sys.modules if m.startswith("imgdedup.pipeline.crypto") and sys.modules[m] is not None] == []
print("server side ran without pipeline.crypto", flush=True)
import os
os._exit(0)  # every check passed; skip teardown, which pyarrow's thread pools can abort (apache/arrow#34314)
"""


def test_server_side_runs_with_crypto_unimportable_and_no_key(tmp_path):
    modules = [
        ".".join(("imgdedup", *p.relative_to(REPO).with_suffix("").parts)).removesuffix(".__init__")
        for p in server_side_modules()
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGDEDUP_")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", SERVER_SCRIPT, str(tmp_path / "store"), *modules],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "without pipeline.crypto" in result.stdout
    assert not any(tmp_path.rglob("*.key"))
