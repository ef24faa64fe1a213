"""`imgdedup demo`: the sample set is labelled right and its duplicates are found."""
from __future__ import annotations

import csv
import re

import pytest
from PIL import Image

from imgdedup.jobs.cli import main
from imgdedup.jobs.demo import VARIANTS, build_sample_set, group_pairs, pair_scores

SOME = ("astronaut", "camera", "coffee", "rocket")


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, build_sample_set(out, SOME)


def test_sample_set_files_and_truth_agree(sample_dir):
    out, samples = sample_dir
    assert len(samples) == len(SOME) * (len(VARIANTS) + 1)
    with open(out / "truth.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["group"], r["variant"]) for r in rows] == [(s.file, s.group, s.variant) for s in samples]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(s.file for s in samples)
    original = Image.open(out / "images" / "coffee.jpg")
    assert Image.open(out / "images" / "coffee-half.png").size == (original.width // 2, original.height // 2)
    assert Image.open(out / "images" / "coffee-rot90.png").size == original.size[::-1]


def test_demo_finds_every_group_without_false_pairs(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    precision, recall = map(float, re.search(r"precision ([\d.]+), recall ([\d.]+)", out).groups())
    assert precision == 1.0
    assert recall >= 0.9
    assert "false pair" not in out
    groups = int(re.search(r"duplicate groups found: (\d+)", out).group(1))
    originals = {row["group"] for row in csv.DictReader(open(tmp_path / "truth.csv"))}
    assert groups == len(originals)


def test_group_pairs_and_scores_on_known_groups():
    names = ["a1", "a2", "b1", "c1", "a3"]
    pairs = group_pairs([["a1", "a2"], ["b1", "c1"]], names)
    assert pairs.tolist() == [[0, 1], [2, 3]]
    precision, recall = pair_scores(pairs, ["a", "a", "b", "c", "a"])
    assert precision == 0.5 and recall == pytest.approx(1 / 3)
    assert group_pairs([], names).shape == (0, 2)
