"""Which copy a duplicate group keeps (dedup.keep), and re-electing committed canonicals (bulk --re-elect)."""
from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from PIL import Image

from imgdedup.jobs.bulk import run_bulk
from imgdedup.jobs.cli import main as cli_main
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.crypto.group_key import GroupKey, write_key_file
from imgdedup.pipeline.store import Store
from tests.jobs.bulk_sets import write_files

REPO = Path(__file__).resolve().parents[2]
KEY = GroupKey(bytes(range(7, 39)))
SMALL = ["dedup.clusters=2", "dask.partition_size=4"]


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pairs(test_data) -> dict[str, bytes]:
    """Each of six dev photos at q=50 and at q=90, the same size; the q=50 copy comes first by name."""
    files = {}
    for photo in sorted((test_data / "dev").glob("*.jpg"))[:6]:
        image = Image.open(photo).convert("RGB")
        image.thumbnail((640, 640))
        files[f"{photo.stem}/a-q50.jpg"] = _jpeg(image, 50)
        files[f"{photo.stem}/b-q90.jpg"] = _jpeg(image, 90)
    return files


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        yield c


def _canonicals(store: Store) -> dict[str, str]:
    """``{group folder: file name of its canonical}``, checking every group is a star around one canonical."""
    rows = store.read_table("fingerprints").to_pylist()
    by_id = {r["image_id"]: r for r in rows}
    kept: dict[str, str] = {}
    for row in rows:
        canonical = by_id[row["duplicate_of"] or row["image_id"]]
        assert canonical["duplicate_of"] is None  # no chains
        group, name = canonical["source"].rsplit("/", 2)[-2:]
        assert kept.setdefault(group, name) == name
        assert row["source"].rsplit("/", 2)[-2] == group
    return kept


def test_the_best_copy_is_kept_where_sizes_are_equal(client, pairs, tmp_path):
    write_files(str(tmp_path / "src"), pairs)
    kept = {}
    for keep in ("best", "largest"):
        url = str(tmp_path / keep)
        run_bulk(str(tmp_path / "src"), url, KEY, load_config(overrides=[*SMALL, f"dedup.keep={keep}"]), client=client)
        kept[keep] = _canonicals(Store(url))
    assert len(kept["best"]) == 6 and set(kept["best"].values()) == {"b-q90.jpg"}
    # The pixel count alone ties, and the earlier name, the q=50 copy, would win.
    assert set(kept["largest"].values()) == {"a-q50.jpg"}
    rows = Store(str(tmp_path / "best")).read_table("fingerprints").to_pylist()
    quality = {r["source"].rsplit("/", 1)[-1]: r["jpeg_quality"] for r in rows}
    assert quality == {"a-q50.jpg": 50, "b-q90.jpg": 90}
    assert {(r["format"], r["lossless"]) for r in rows} == {("JPEG", False)}


def test_committed_canonicals_stay_unless_re_elected_and_the_swap_is_one_commit(client, pairs, tmp_path):
    source, url = str(tmp_path / "src"), str(tmp_path / "store")
    write_files(source, pairs)
    run_bulk(source, url, KEY, load_config(overrides=[*SMALL, "dedup.keep=largest"]), client=client)
    store = Store(url)
    assert set(_canonicals(store).values()) == {"a-q50.jpg"}
    old = {r["source"]: r["image_id"] for r in store.read_table("fingerprints").to_pylist()}

    best = load_config(overrides=SMALL)
    plain = run_bulk(source, url, KEY, best, client=client)
    assert not plain.committed and set(_canonicals(store).values()) == {"a-q50.jpg"}

    summary = run_bulk(source, url, KEY, best, client=client, re_elect=True)
    assert summary.committed and summary.version == 2 and summary["re_elected"] == 12
    assert set(_canonicals(store).values()) == {"b-q90.jpg"}
    record = store.commit_record(2)
    assert record["replace"] == ["clusters", "fingerprints"]
    demoted = {image_id for s, image_id in old.items() if s.endswith("a-q50.jpg")}
    assert set(record["meta"]["pointer_blobs"]) == demoted
    assert set(store.iter_blob_ids()) == set(old.values())  # the old canonicals' blobs are kept
    # Version 1 still reads the old canonicals; the q=50 copy's id now downloads the q=90 bytes.
    assert {r["duplicate_of"] is None for r in store.read_table("fingerprints", 1).to_pylist()
            if r["source"].endswith("a-q50.jpg")} == {True}
    key_file = write_key_file(tmp_path / "group.key", KEY)
    name = next(n for n in pairs if n.endswith("a-q50.jpg"))
    out = tmp_path / "got.jpg"
    assert cli_main(["get", old[source + "/" + name], "--out", str(out), "--store", url,
                     "--key", str(key_file)]) == 0
    assert out.read_bytes() == pairs[name.replace("a-q50", "b-q90")]
    again = run_bulk(source, url, KEY, best, client=client, re_elect=True)
    assert not again.committed and store.latest_version() == 2


def test_a_better_copy_arriving_later_takes_over_only_when_re_elected(client, pairs, tmp_path):
    q50 = {n: d for n, d in pairs.items() if n.endswith("a-q50.jpg")}
    q90 = {n: d for n, d in pairs.items() if n.endswith("b-q90.jpg")}
    config = load_config(overrides=SMALL)
    for re_elect in (False, True):
        source, url = str(tmp_path / f"src-{re_elect}"), str(tmp_path / f"store-{re_elect}")
        write_files(source, q50)
        run_bulk(source, url, KEY, config, client=client)
        write_files(source, q90)
        summary = run_bulk(source, url, KEY, config, client=client, re_elect=re_elect)
        store = Store(url)
        assert summary["images"] == 6 and summary["re_elected"] == (6 if re_elect else 0)
        assert set(_canonicals(store).values()) == {"b-q90.jpg" if re_elect else "a-q50.jpg"}
        rows = store.read_table("fingerprints").to_pylist()
        assert len(rows) == 12 and store.latest_version() == 2
        # Every image's blob is live: the canonicals', and the pointers' through the grace period.
        assert set(store.iter_blob_ids()) == {r["image_id"] for r in rows}
        if re_elect:
            demoted = {r["image_id"] for r in rows if r["source"].endswith("a-q50.jpg")}
            assert demoted <= set(store.commit_record(2)["meta"]["pointer_blobs"])


def _bulk(folder: Path, store_dir: Path, key_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "imgdedup.jobs.cli", *(a for s in SMALL for a in ("--set", s)),
            "--set", "dask.workers=1", *extra, "bulk", str(folder), "--store", str(store_dir), "--key", str(key_file)]


#: ``imgdedup ARGS...`` that SIGKILLs itself when the bulk run asks for its commit record, once every part is written.
KILLED_AT_THE_RECORD = """
import os, signal, sys
from imgdedup.pipeline.store import Store
commit = Store.commit
def killed(self, run_id, *args, **kwargs):
    if run_id.startswith("bulk-"):
        os.kill(os.getpid(), signal.SIGKILL)
    return commit(self, run_id, *args, **kwargs)
Store.commit = killed
from imgdedup.jobs.cli import main
main(sys.argv[1:])
"""


def test_a_re_election_killed_with_sigkill_leaves_the_old_canonicals_then_completes(pairs, tmp_path):
    folder, key_file = tmp_path / "src", write_key_file(tmp_path / "group.key", KEY)
    write_files(str(folder), pairs)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base = tmp_path / "base"
    done = subprocess.run(_bulk(folder, base, key_file, "--set", "dedup.keep=largest"), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    rng = random.Random(13)
    for trial in range(3):
        store_dir = tmp_path / f"store{trial}"
        subprocess.run(["cp", "-a", str(base), str(store_dir)], check=True)
        parts_before = set((store_dir / "fingerprints").rglob("*.parquet"))
        # Trial 0: killed once the replacement table is written, just before the commit record;
        # the others at a random moment.
        command = [*_bulk(folder, store_dir, key_file), "--re-elect"]
        if trial == 0:
            command = [sys.executable, "-c", KILLED_AT_THE_RECORD, *command[3:]]
        with open(tmp_path / "killed.log", "wb") as log:
            job = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + (120 if trial == 0 else rng.uniform(1.0, 8.0))
            while job.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        store = Store(str(store_dir))
        canonicals = set(_canonicals(store).values())
        if trial == 0:
            assert job.returncode == -signal.SIGKILL and store.latest_version() == 1
            assert set((store_dir / "fingerprints").rglob("*.parquet")) - parts_before  # the replacement was written
        assert canonicals in ({"a-q50.jpg"}, {"b-q90.jpg"})  # all old or all new, never a mix
        assert canonicals == ({"a-q50.jpg"} if store.latest_version() == 1 else {"b-q90.jpg"})
        rerun = subprocess.run([*_bulk(folder, store_dir, key_file), "--re-elect"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert set(_canonicals(Store(str(store_dir))).values()) == {"b-q90.jpg"}
        assert Store(str(store_dir)).latest_version() == 2
        assert set(Store(str(store_dir)).iter_blob_ids()) == set(Store(str(base)).iter_blob_ids())
