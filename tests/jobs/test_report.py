"""imgdedup report: the report tables, their schemas and counts, and the HTML without and with the key."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from imgdedup.jobs import report_tables as rt
from imgdedup.jobs.cli import main
from imgdedup.jobs.report import write_report
from imgdedup.jobs.report_html import ReportPage, write_html_report
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import schemas
from tests.jobs.report_store import build_report_store


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def built(tmp_path_factory, test_data, config):
    return build_report_store(str(tmp_path_factory.mktemp("store")), test_data / "dev", GroupKey.generate(), config)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, built, config):
    out = tmp_path_factory.mktemp("report")
    write_report(built.store, out, config)
    return out


@pytest.fixture(scope="module")
def keyed_report_dir(tmp_path_factory, built, config):
    out = tmp_path_factory.mktemp("keyed-report")
    write_report(built.store, out, config, key=built.key)
    return out


def read(out: Path, name: str) -> pa.Table:
    return pq.read_table(out / f"{name}.parquet")


@pytest.mark.parametrize("name", sorted(rt.SCHEMAS))
def test_each_report_table_has_its_documented_schema(report_dir, name):
    table = read(report_dir, name)
    assert table.schema.remove_metadata().equals(rt.SCHEMAS[name].remove_metadata(), check_metadata=False)
    documented = (Path(__file__).resolve().parents[2] / "docs" / "reports.md").read_text()
    for field in rt.SCHEMAS[name]:
        assert f"`{field.name}`" in documented, f"{name}.{field.name} is not documented"


def test_summary_counts_equal_the_fingerprints_table_after_each_run(report_dir, built):
    summary = read(report_dir, rt.SUMMARY).to_pylist()
    assert [row["run_id"] for row in summary] == built.runs
    for row in summary:
        fingerprints = built.store.read_table(schemas.FINGERPRINTS, row["version"])
        pointer = pc.is_valid(fingerprints.column("duplicate_of"))
        sizes = fingerprints.column("bytes").to_numpy()
        assert row["images"] == fingerprints.num_rows
        assert row["duplicates"] == pc.sum(pointer.cast(pa.int64())).as_py()
        assert row["stored"] == pc.sum(pc.is_valid(fingerprints.column("blob")).cast(pa.int64())).as_py()
        assert row["bytes_saved"] == int(sizes[pointer.to_numpy(zero_copy_only=False)].sum())
        assert row["bytes_total"] == int(sizes.sum()) == row["bytes_stored"] + row["bytes_saved"]
    assert (summary[-1]["images"], summary[-1]["stored"], summary[-1]["duplicates"]) == (8, 5, 3)
    assert [row["errors"] for row in summary] == [1, 2]


def test_groups_list_every_pointer_under_its_canonical_image_largest_first(report_dir, built):
    groups = read(report_dir, rt.GROUPS).to_pylist()
    by_group: dict[str, list[dict]] = {}
    for member in groups:
        by_group.setdefault(member["group_id"], []).append(member)
    assert {g: sorted(m["image_id"] for m in ms[1:]) for g, ms in by_group.items()} == \
        {g: sorted(ms) for g, ms in built.groups.items()}
    ranks = [ms[0]["group_rank"] for ms in by_group.values()]
    sizes = [ms[0]["group_size"] for ms in by_group.values()]
    assert ranks == sorted(ranks) and sizes == sorted(sizes, reverse=True) == [3, 2]
    fingerprints = built.store.read_table(schemas.FINGERPRINTS).to_pylist()
    recorded = {row["image_id"]: row["distance"] for row in fingerprints}
    for group_id, members in by_group.items():
        assert members[0]["image_id"] == group_id and members[0]["is_canonical"] and members[0]["distance"] is None
        assert [m["distance"] for m in members[1:]] == sorted(recorded[m["image_id"]] for m in members[1:])
        assert all(m["spread"] == max(recorded[x["image_id"]] for x in members[1:]) for m in members)
        assert all(m["source"] == built.sources[m["image_id"]] for m in members)


def test_classes_timings_and_errors_come_from_the_latest_committed_rows(report_dir):
    classes = read(report_dir, rt.CLASSES).to_pylist()
    assert [(c["cluster_id"], c["clustering_version"], c["images"], c["duplicates"]) for c in classes] == \
        [(0, 2, 5, 3), (1, 2, 3, 0)]
    timings = read(report_dir, rt.TIMINGS).to_pylist()
    assert {(t["run_id"], t["stage"], t["seconds"]) for t in timings} == {
        ("run-1", "fingerprint", 1.5), ("run-1", "dedup", 0.25), ("run-2", "fingerprint", 2.5), ("run-2", "dedup", 0.25)}
    errors = read(report_dir, rt.ERRORS_BY_TYPE).to_pylist()
    assert [(e["run_id"], e["error_type"], e["count"]) for e in errors] == \
        [("run-1", "DecodeError", 1), ("run-2", "DecodeError", 2)]


def test_nearest_distances_are_within_t_for_pointers_and_name_a_neighbour(report_dir, built, config):
    nearest = {row["image_id"]: row for row in read(report_dir, rt.NEAREST).to_pylist()}
    assert set(nearest) == set(built.files)
    for group_id, pointers in built.groups.items():
        for pointer in pointers:
            assert nearest[pointer]["distance"] <= config.dedup.threshold_t
        assert nearest[group_id]["neighbour_id"] in pointers
    # every image shares its class with another, so every one has a known nearest distance
    assert all(row["distance"] is not None for row in nearest.values())


def test_an_earlier_run_is_reported_as_the_store_stood_then(tmp_path, built, config):
    headline = write_report(built.store, tmp_path, config, run_id="run-1")
    assert (headline["version"], headline["images"], headline["duplicates"], headline["errors"]) == (1, 5, 2, 1)
    assert read(tmp_path, rt.SUMMARY).num_rows == 1


def test_without_run_the_report_covers_the_whole_store_with_a_row_per_run(tmp_path, built, config):
    headline = write_report(built.store, tmp_path, config)
    assert headline["run_id"] is None and headline["runs"] == 2 and headline["version"] == 2
    assert headline["errors"] == 3  # every run's, not the latest run's alone
    page = (tmp_path / "report.html").read_text()
    assert "the whole store (2 runs)" in page and "No stage timings" not in page
    runs_table = page.split('<table id="runs">', 1)[1].split("</table>", 1)[0]
    assert all(run_id in runs_table for run_id in built.runs)
    # The stage table names every run's stages, with the run.
    assert page.count("<td>run-1</td><th>fingerprint</th>") == 1 and page.count("<td>run-2</td><th>dedup</th>") == 1


def test_without_a_key_the_html_holds_no_pixels_and_says_so(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "data:image" not in page and "<img" not in page
    assert 'id="no-key"' in page and "without --key" in page
    assert "<svg" in page  # the plots are drawn as vector graphics, not pictures of images


def test_with_the_key_every_group_member_has_an_inline_thumbnail(keyed_report_dir, built):
    page = (keyed_report_dir / "report.html").read_text()
    members = sum(len(p) + 1 for p in built.groups.values())
    assert len(re.findall(r'<img class="thumb" alt="[0-9a-f]{32}" src="data:image/jpeg;base64,', page)) == members
    assert 'id="no-key"' not in page


def test_sources_and_ids_from_the_store_are_escaped_in_the_html(tmp_path, built, config):
    write_report(built.store, tmp_path, config)
    tables = {name: read(tmp_path, name) for name in rt.SCHEMAS}
    groups = tables[rt.GROUPS]
    for column in ("source", "image_id", "group_id"):
        hostile = pa.array([f'"><script>alert({i})</script>' for i in range(groups.num_rows)])
        groups = groups.set_column(groups.schema.get_field_index(column), column, hostile)
    tables[rt.GROUPS] = groups
    headline = {"run_id": "r", "version": 1, "images": 0, "stored": 0, "duplicates": 0, "bytes_saved": 0,
                "errors": 0, "classes": 0, "groups": 0, "review_groups": 0}
    write_html_report(ReportPage(headline, tables, 64, 256, False, 50, 12, 8), tmp_path, None)
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_review_marks_only_groups_with_a_member_near_t(tmp_path, built, config, report_dir):
    groups = read(report_dir, rt.GROUPS).to_pylist()
    spreads = {m["group_id"]: m["spread"] for m in groups}
    widest = max(spreads, key=spreads.get)
    assert len(set(spreads.values())) == 2, "the two groups need different spreads"
    margin = config.dedup.threshold_t - spreads[widest]
    reviewing = dataclasses.replace(config, report=dataclasses.replace(config.report, review_margin=margin))
    headline = write_report(built.store, tmp_path, reviewing, review=True)
    assert headline["review_groups"] == 1
    marked = {m["group_id"] for m in read(tmp_path, rt.GROUPS).to_pylist() if m["review"]}
    assert marked == {widest}
    page = (tmp_path / "report.html").read_text()
    assert f'id="group-{widest}"' in page
    assert all(f'id="group-{g}"' not in page for g in spreads if g != widest)


def test_groups_are_paged_and_the_pages_link_to_each_other(tmp_path, built, config):
    paged = dataclasses.replace(config, report=dataclasses.replace(config.report, page_size=1))
    write_report(built.store, tmp_path, paged)
    first, second = (tmp_path / "report.html").read_text(), (tmp_path / "groups-0002.html").read_text()
    assert 'data-rank="1"' in first and 'data-rank="2"' not in first and 'href="groups-0002.html"' in first
    assert 'data-rank="2"' in second and 'href="report.html"' in second and 'id="no-key"' in second
    assert not (tmp_path / "groups-0003.html").exists()


def test_the_command_line_writes_the_report_with_the_key(tmp_path, built, capsys):
    key_file = write_key_file(tmp_path / "group.key", built.key)
    out = tmp_path / "out"
    assert main(["report", "--store", built.store.url, "--out", str(out), "--key", str(key_file)]) == 0
    assert "images 8  stored 5  duplicates 3" in capsys.readouterr().out
    assert "data:image/jpeg" in (out / "report.html").read_text()
    assert main(["report", "--store", built.store.url, "--out", str(out), "--run", "no-such-run"]) == 2


READER = """
import sys
sys.modules["pipeline"] = sys.modules["jobs"] = None  # imgdedup itself must not be needed
import dask.dataframe as dd, duckdb, pandas as pd, pyarrow.parquet as pq
out = sys.argv[1]
for name in sys.argv[2:]:
    path = f"{out}/{name}.parquet"
    rows = pq.read_table(path).num_rows
    assert len(pd.read_parquet(path)) == rows, name
    assert duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchall()[0][0] == rows, name
    assert len(dd.read_parquet(path).compute()) == rows, name
    print(name, rows)
# Every read is checked above. Skip interpreter teardown: native thread pools of
# the readers can abort it ("terminate called without an active exception",
# apache/arrow#34314), which says nothing about the tables.
sys.stdout.flush()
import os
os._exit(0)
"""


def test_report_tables_read_in_pyarrow_pandas_duckdb_and_dask_without_imgdedup(report_dir):
    done = subprocess.run([sys.executable, "-c", READER, str(report_dir), *sorted(rt.SCHEMAS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(rt.SCHEMAS)


def test_review_on_the_command_line_lists_each_member_of_a_marked_group_with_its_unmerge(built, tmp_path, capsys):
    out = tmp_path / "out"
    everything = ["--set", "report.review_margin=64"]  # every group is within 64 bits of t = 64
    assert main([*everything, "report", "--store", built.store.url, "--out", str(out), "--review"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("review group")]
    expected = {(g, p) for g, pointers in built.groups.items() for p in pointers}
    assert {(line.split()[2], line.rsplit(" ", 1)[1]) for line in lines} == expected
    assert all(f"imgdedup unmerge {g} {p}" in " ".join(lines) for g, p in expected)


def test_review_lists_only_the_members_at_or_beyond_t_minus_the_margin(built, tmp_path, capsys, config):
    recorded = {r["image_id"]: r["distance"] for r in built.store.read_table(schemas.FINGERPRINTS).to_pylist()
                if r["distance"] is not None}
    farthest = max(recorded.values())
    margin = config.dedup.threshold_t - farthest
    out = tmp_path / "out"
    assert main(["--set", f"report.review_margin={margin}", "report", "--store", built.store.url,
                 "--out", str(out), "--review"]) == 0
    listed = {line.rsplit(" ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("review")}
    assert listed == {i for i, d in recorded.items() if d == farthest}
    assert 'class="member near-t"' in (out / "report.html").read_text()
