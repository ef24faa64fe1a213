"""Config values a job cannot run with are refused when the config is read: one line, exit status 2."""
from __future__ import annotations

import pytest

from tests.faults.conftest import cli


@pytest.mark.parametrize("override, says", [
    ("dask.partition_size=0", "dask.partition_size: config: must be >= 1, got 0"),
    ("crypto.segment_bytes=0", "crypto.segment_bytes: config: must be in 1..268435456, got 0"),
    ("crypto.segment_bytes=1000000000", "crypto.segment_bytes: config: must be in 1..268435456"),
    ("ingest.batch_size=-1", "ingest.batch_size: config: must be >= 1, got -1"),
    ("hash.min_quality=101", "hash.min_quality: config: must be in 0..100, got 101"),
])
@pytest.mark.parametrize("command", ["bulk", "ingest"])
def test_out_of_range_values_are_config_errors(override, says, command, photos, key_file, tmp_path, capsys):
    key = key_file("group.key")
    assert cli("--set", override, command, photos, "--store", tmp_path / "store", "--key", key) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "store").exists()


def test_every_ranged_key_has_its_default_inside_the_range():
    from imgdedup.pipeline.config import _RANGES, load_config
    from imgdedup.pipeline.crypto.blob import MAX_SEGMENT_BYTES

    config = load_config()
    for (section, name), (low, high) in _RANGES.items():
        value = getattr(getattr(config, section), name)
        if isinstance(value, int | float):
            assert (low is None or value >= low) and (high is None or value <= high), (section, name)
    assert _RANGES[("crypto", "segment_bytes")] == (1, MAX_SEGMENT_BYTES)
