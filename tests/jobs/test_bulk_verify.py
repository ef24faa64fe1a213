"""`imgdedup bulk` with its verification stage: a copy in the grey zone merges once its pictures agree.

The pictures come from the source (new images) and from the store's decrypted
blobs (images a first run stored); a blob that fails to decrypt is an error row
of stage ``verify`` and its pair is not accepted.
"""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster

from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs import report_tables as rt
from imgdedup.jobs.cli import main as cli_main
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store
from imgdedup.pipeline.store.object_paths import blob_body_key
from tests.jobs.bulk_sets import groups_by_name, write_files, zone_set

KEY = GroupKey(bytes(range(32)))
SMALL = ["dask.partition_size=2", "dedup.clusters=2"]


@pytest.fixture(scope="module")
def zone_files(test_data):
    return zone_set(test_data / "dev")


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def test_the_cli_merges_the_verified_crop_and_reports_the_zone(zone_files, tmp_path, capsys):
    write_files(str(tmp_path / "src"), zone_files)
    key_file = write_key_file(tmp_path / "group.key", KEY)
    store_dir = tmp_path / "store"

    def bulk(store: str, *overrides: str) -> int:
        settings = [a for s in ["dask.workers=1", *SMALL, *overrides] for a in ("--set", s)]
        return cli_main([*settings, "bulk", str(tmp_path / "src"), "--store", store, "--key", str(key_file)])

    assert bulk(str(store_dir)) == 0
    out = capsys.readouterr().out
    assert ("t 64 bits, verified zone up to 88 bits (with 1 pairs sharing at least 3 feature keys): "
            "1 pairs verified, 1 passed") in out  # the crop's zone pair and key pair are one pair of groups
    assert "expected false merges" in out and "through verification" in out
    store = Store(str(store_dir))
    groups = groups_by_name(store, str(tmp_path / "src"))
    assert frozenset({"photo.jpg", "photo-crop20.jpg"}) in groups and len(groups) == 4
    metrics = {r["name"]: r["value"] for r in store.read_table("reports").to_pylist()}
    assert (metrics["threshold_t"], metrics["verify_t"], metrics["pairs_verified"], metrics["pairs_passed"]) == \
        (64, 88, 1, 1)
    assert metrics["expected_false_merges"] == pytest.approx(
        metrics["expected_false_merges_direct"] + metrics["expected_false_merges_verified"])
    assert metrics["seconds_verify"] > 0
    # The report states the run's rule: its tables and its page.
    assert cli_main(["report", "--out", str(tmp_path / "report"), "--store", str(store_dir)]) == 0
    [rule] = pq.read_table(tmp_path / "report" / f"{rt.DEDUP_RULE}.parquet").to_pylist()
    assert (rule["threshold_t"], rule["verify_t"], rule["pairs_verified"], rule["pairs_passed"]) == (64, 88, 1, 1)
    page = (tmp_path / "report" / "report.html").read_text()
    assert '<table class="dedup-rule">' in page and "<td>64</td><td>88</td><td>1</td><td>1</td>" in page

    # Without the zone the crop stays an image of its own.
    assert bulk(str(tmp_path / "plain"), "dedup.verify_up_to=0") == 0
    assert "no verified zone" in capsys.readouterr().out
    assert frozenset({"photo.jpg", "photo-crop20.jpg"}) not in groups_by_name(Store(str(tmp_path / "plain")),
                                                                             str(tmp_path / "src"))


def test_a_stored_image_is_verified_from_its_blob_and_a_bad_blob_is_an_error_row(client, zone_files, tmp_path):
    config = load_config(overrides=SMALL)
    source = tmp_path / "src"
    first = {name: data for name, data in zone_files.items() if name != "photo-crop20.jpg"}
    write_files(str(source), first)
    for url in (str(tmp_path / "good"), str(tmp_path / "tampered")):
        run_bulk(str(source), url, KEY, config, client=client)
    # Flip a byte of the stored photo's blob in one store: it no longer decrypts.
    tampered = Store(str(tmp_path / "tampered"))
    photo = next(r["image_id"] for r in tampered.read_table("fingerprints").to_pylist()
                 if r["source"].endswith("photo.jpg"))
    body = tmp_path / "tampered" / blob_body_key(photo)
    data = bytearray(body.read_bytes())
    data[len(data) // 2] ^= 1
    body.write_bytes(bytes(data))

    write_files(str(source), {"photo-crop20.jpg": zone_files["photo-crop20.jpg"]})
    good = run_bulk(str(source), str(tmp_path / "good"), KEY, config, client=client)
    assert (good["pairs_verified"], good["pairs_passed"], good["errors"]) == (1, 1, 0)
    assert frozenset({"photo.jpg", "photo-crop20.jpg"}) in groups_by_name(Store(str(tmp_path / "good")), str(source))

    bad = run_bulk(str(source), str(tmp_path / "tampered"), KEY, config, client=client)
    assert (bad["pairs_verified"], bad["pairs_passed"], bad["errors"]) == (1, 0, 1)
    [error] = bad.errors
    assert error["stage"] == "verify" and error["source"].endswith("photo.jpg")
    assert error["error_type"] == "IntegrityError"
    rows = tampered.read_table("errors").to_pylist()
    assert [(r["stage"], r["source"]) for r in rows] == [("verify", error["source"])]
    assert frozenset({"photo.jpg", "photo-crop20.jpg"}) not in groups_by_name(tampered, str(source))
