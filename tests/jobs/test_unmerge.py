"""imgdedup unmerge: a wrongly merged image becomes its own canonical image again, while its blob is kept."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgdedup.jobs import report_tables as rt
from imgdedup.jobs.cli import main
from imgdedup.jobs.report import write_report
from imgdedup.jobs.unmerge import unmerge
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.errors import MergeError
from imgdedup.pipeline.store import Store, object_paths, schemas
from tests.jobs.report_store import build_report_store


@pytest.fixture()
def built(tmp_path, test_data):
    return build_report_store(str(tmp_path / "store"), test_data / "dev", GroupKey.generate(), load_config())


def rows_by_id(store, version=None):
    return {row["image_id"]: row for row in store.read_table(schemas.FINGERPRINTS, version).to_pylist()}


def key_file(built, tmp_path):
    path = tmp_path / "group.key"
    if not path.exists():
        write_key_file(path, built.key)
    return path


def get(built, image_id, tmp_path):
    key_file_ = key_file(built, tmp_path)
    out = tmp_path / f"{image_id}.img"
    assert main(["get", image_id, "--out", str(out), "--store", built.store.url, "--key", str(key_file_)]) == 0
    return out.read_bytes()


def test_unmerged_image_is_its_own_canonical_and_get_returns_its_own_picture(built, tmp_path, capsys):
    group_id, pointers = max(built.groups.items(), key=lambda item: len(item[1]))
    image_id = pointers[0]
    assert get(built, image_id, tmp_path) == built.files[group_id]  # merged: get gives the canonical picture
    before = rows_by_id(built.store)

    assert main(["unmerge", group_id, image_id, "--store", built.store.url,
                 "--key", str(key_file(built, tmp_path))]) == 0
    assert "its own canonical image again" in capsys.readouterr().out

    after = rows_by_id(built.store)
    assert after[image_id]["duplicate_of"] is None and after[image_id]["distance"] is None
    assert after[image_id]["blob"] == object_paths.blob_body_key(image_id)
    changed = {"duplicate_of", "distance", "blob", "resolution_mac"}  # the new mapping, MACed anew
    assert {k: v for k, v in after[image_id].items() if k not in changed} == \
        {k: v for k, v in before[image_id].items() if k not in changed}
    assert {i: r for i, r in after.items() if i != image_id} == {i: r for i, r in before.items() if i != image_id}
    assert get(built, image_id, tmp_path) == built.files[image_id]
    assert get(built, pointers[1], tmp_path) == built.files[group_id]  # the other member stays merged

    out = tmp_path / "report"
    headline = write_report(built.store, out, load_config())
    assert (headline["stored"], headline["duplicates"]) == (6, 2)
    groups = pq.read_table(out / f"{rt.GROUPS}.parquet").to_pylist()
    assert image_id not in {m["image_id"] for m in groups}


def test_an_older_version_still_reads_the_merge(built):
    group_id, pointers = next(iter(built.groups.items()))
    version = built.store.latest_version()
    unmerge(built.store, built.key, group_id, pointers[0])
    assert rows_by_id(built.store, version)[pointers[0]]["duplicate_of"] == group_id
    assert built.store.latest_version() == version + 1


def test_unmerge_refuses_a_canonical_image_a_wrong_group_and_an_unknown_image(built):
    (first, first_pointers), (second, _) = built.groups.items()
    version = built.store.latest_version()
    with pytest.raises(MergeError, match="canonical image already"):
        unmerge(built.store, built.key, first, first)
    with pytest.raises(MergeError, match=f"belongs to duplicate group {first}"):
        unmerge(built.store, built.key, second, first_pointers[0])
    with pytest.raises(MergeError, match="no such image"):
        unmerge(built.store, built.key, first, "0" * 32)
    assert built.store.latest_version() == version  # nothing was committed


def test_unmerge_refuses_once_the_blob_is_gone(built, capsys, tmp_path):
    group_id, pointers = next(iter(built.groups.items()))
    store = built.store
    for key in (object_paths.blob_body_key(pointers[0]), object_paths.blob_header_key(pointers[0])):
        store.fs.rm_file(f"{store.root}/{key}")
    version = store.latest_version()
    with pytest.raises(MergeError, match="no longer kept"):
        unmerge(store, built.key, group_id, pointers[0])
    assert main(["unmerge", group_id, pointers[0], "--store", store.url,
                 "--key", str(key_file(built, tmp_path))]) == 2
    assert "no longer kept" in capsys.readouterr().err
    assert store.latest_version() == version


def test_a_run_committed_in_the_instant_before_the_unmerge_keeps_its_rows(built):
    group_id, pointers = next(iter(built.groups.items()))
    other = Store(built.store.url)
    extra = built.store.read_table(schemas.FINGERPRINTS).slice(0, 1).to_pylist()[0]
    extra.update(image_id="f" * 32, source="late/arrival.jpg", duplicate_of=None, distance=None)
    table = pa.Table.from_pylist([extra], schema=built.store.read_table(schemas.FINGERPRINTS).schema)
    late_part = other.write_table_part(schemas.FINGERPRINTS, "late-run", 0, table)

    def commit_first(step):
        if step == "commit.begin" and not other.is_committed("late-run"):
            other.commit("late-run", {schemas.FINGERPRINTS: [late_part]})

    racing = Store(built.store.url, on_step=commit_first)
    version = unmerge(racing, built.key, group_id, pointers[0])
    latest = rows_by_id(built.store)
    assert latest[pointers[0]]["duplicate_of"] is None
    assert latest["f" * 32]["source"] == "late/arrival.jpg"
    assert len(latest) == len(built.files) + 1
    assert built.store.latest_version() == version + 1  # the follow-up commit that lists the late rows again
