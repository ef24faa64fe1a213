"""``crypto.mode=sealed`` end to end from the CLI: ingest, get by id, get --like, re-clustering, bulk after ingest.

The search runs in the key-holding process over the hashes it opens; the store
holds fingerprints and class centres only as AEAD ciphertext.
"""
from __future__ import annotations

import re

from imgdedup.pipeline.store import Store, schemas
from tests.faults.conftest import cli, half_size_copy

SEALED = ["--set", "crypto.mode=sealed"]


def test_sealed_store_ingest_get_and_bulk(photos, key_file, tmp_path, capsys, scheduler):
    key = key_file("group.key")
    url = str(tmp_path / "store")
    # Re-cluster after every new class, so the sealed class table is written by ingest too.
    assert cli(*SEALED, "--set", "ingest.recluster_new_classes=1", "ingest", photos, "--store", url,
               "--key", key) == 0
    store = Store(url)
    assert any(r["job"] == "ingest-recluster" for r in
               (store.commit_record(v)["meta"] for v in range(1, store.latest_version() + 1)) if "job" in r)
    edits = tmp_path / "edits"
    edits.mkdir()
    half_size_copy(photos / "perception_image4.jpg", edits / "half.jpg")
    capsys.readouterr()
    assert cli(*SEALED, "ingest", edits, "--store", url, "--key", key) == 0
    line = capsys.readouterr().out.strip()
    match = re.fullmatch(r"duplicate (\w+) of (\w+) distance \d+ .*half\.jpg", line)
    assert match, line
    pointer, canonical = match.groups()

    out = tmp_path / "got.jpg"
    assert cli(*SEALED, "get", pointer, "--out", out, "--store", url, "--key", key) == 0
    assert out.read_bytes() == (photos / "perception_image4.jpg").read_bytes()
    assert cli(*SEALED, "get", "--like", edits / "half.jpg", "--out", out, "--store", url, "--key", key) == 0
    assert out.read_bytes() == (photos / "perception_image4.jpg").read_bytes()

    # A bulk run over the ingested store reads its sealed rows and centres, and finds the copy.
    half_size_copy(photos / "perception_image5.jpg", edits / "half5.jpg")
    assert cli(*SEALED, "bulk", edits, "--store", url, "--key", key, "--scheduler", scheduler) == 0
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in store.read_table(schemas.FINGERPRINTS).to_pylist()}
    assert rows["half5.jpg"]["duplicate_of"] == rows["perception_image5.jpg"]["image_id"]
    # Nothing in the store compares: every fingerprint and centre is ciphertext of its own length.
    width = len(rows["half5.jpg"]["fingerprint"])
    assert width > 32 and all(len(r["fingerprint"]) == width for r in rows.values())
    centroids = store.read_table(schemas.CLUSTERS).column("centroid").to_pylist()
    assert all(len(c) == width for c in centroids)
