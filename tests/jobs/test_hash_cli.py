"""`imgdedup hash`: walks directories, writes readable tables, reports bad files and goes on."""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from imgdedup.jobs.cli import main


@pytest.fixture()
def image_dir(test_data, tmp_path):
    """Three good images (one in a subfolder, one PNG), three bad ones, and files the walk skips."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    dev = sorted((test_data / "dev").glob("*.jpg"))
    shutil.copy(dev[0], folder / "a.jpg")
    shutil.copy(dev[1], folder / "sub" / "b.jpg")
    Image.open(dev[2]).save(folder / "c.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "letter.jpg").write_text("Dear store, this is not a picture.")
    png = io.BytesIO()
    Image.open(dev[3]).save(png, "PNG")
    (folder / "half.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    (folder / "notes.txt").write_text("skipped: not an image extension")
    (folder / ".hidden.jpg").write_bytes(b"skipped: hidden")
    return folder


GOOD = ["a.jpg", "c.png", "sub/b.jpg"]
BAD = ["empty.jpg", "half.png", "letter.jpg"]


def run_cli(*args) -> int:
    return main(["--set", "dask.partition_size=2", "hash", *map(str, args)])


def relative(rows, folder):
    return [Path(r["path"]).relative_to(folder).as_posix() for r in rows]


def test_bad_files_give_one_error_line_each_and_exit_status_one(image_dir, capsys):
    assert run_cli(image_dir, "--algo", "phash") == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == len(BAD)
    for name, line in zip(BAD, errors):
        assert str(image_dir / name) in line and ": decode: " in line
    assert "empty file" in errors[0]
    assert "not a recognised image format" in errors[2]


def test_stdout_table_lists_good_files_in_sorted_order(image_dir, capsys):
    run_cli(image_dir, "--algo", "phash", "--no-dihedral")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["path", "hash", "quality", "width", "height"]
    rows = [dict(zip(lines[0].split("\t"), line.split("\t"))) for line in lines[1:]]
    assert relative(rows, image_dir) == GOOD
    assert all(len(r["hash"]) == 16 and 0 <= int(r["quality"]) <= 100 for r in rows)


def test_parquet_and_csv_hold_the_same_rows(image_dir, tmp_path):
    # path, hash hex and the 8 forms plain first: the table the accuracy bench's score.py reads (docs/lbph.md)
    run_cli(image_dir, "--algo", "dhash", "--dihedral", "--out", tmp_path / "h.parquet")
    run_cli(image_dir, "--algo", "dhash", "--dihedral", "--out", tmp_path / "h.csv")
    table = pq.read_table(tmp_path / "h.parquet")
    assert table.column_names == ["path", "hash", "quality", "width", "height", "dihedral"]
    from_parquet = table.to_pylist()
    with open(tmp_path / "h.csv", newline="") as f:
        from_csv = [{**r, "quality": int(r["quality"]), "width": int(r["width"]), "height": int(r["height"])}
                    for r in csv.DictReader(f)]
    assert from_parquet == from_csv
    assert relative(from_parquet, image_dir) == GOOD
    for row in from_parquet:
        variants = row["dihedral"].split(",")
        assert len(variants) == 8 and variants[0] == row["hash"]
    photo = Image.open(image_dir / "a.jpg")
    assert (from_parquet[0]["width"], from_parquet[0]["height"]) == photo.size


def test_batch_size_does_not_change_the_output(image_dir, tmp_path):
    main(["--set", "dask.partition_size=1", "hash", str(image_dir), "--algo", "ahash", "--out", str(tmp_path / "one.csv")])
    main(["hash", str(image_dir), "--algo", "ahash", "--out", str(tmp_path / "all.csv")])
    assert (tmp_path / "one.csv").read_text() == (tmp_path / "all.csv").read_text()


def test_config_chooses_algorithm_and_dihedral_by_default(image_dir, tmp_path):
    out = tmp_path / "h.parquet"
    assert main(["--set", "hash.algo=ahash", "--set", "hash.dihedral=false", "hash",
                 str(image_dir / "a.jpg"), "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert "dihedral" not in table.column_names
    assert len(table.column("hash")[0].as_py()) == 16


def test_a_named_file_is_tried_whatever_its_extension(image_dir, capsys):
    assert run_cli(image_dir / "notes.txt", image_dir / "a.jpg", "--algo", "phash") == 1
    captured = capsys.readouterr()
    assert "notes.txt: decode: not a recognised image format" in captured.err
    assert "a.jpg" in captured.out


def test_missing_path_is_an_error_line(tmp_path, capsys):
    assert run_cli(tmp_path / "nowhere.jpg", "--algo", "phash") == 1
    assert "nowhere.jpg: decode: cannot read file" in capsys.readouterr().err


def test_output_must_be_parquet_or_csv(image_dir, tmp_path):
    with pytest.raises(SystemExit) as info:
        run_cli(image_dir, "--out", tmp_path / "h.json")
    assert info.value.code == 2


def test_an_unknown_format_name_is_a_config_error_before_any_file(image_dir, capsys):
    assert main(["--set", 'decode.formats=["JPEG", "JPG"]', "hash", str(image_dir)]) == 2
    captured = capsys.readouterr()
    assert "JPG" in captured.err and captured.out == ""
