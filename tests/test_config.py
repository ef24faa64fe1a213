import dataclasses
import inspect
from pathlib import Path

import pytest

from imgdedup.pipeline.cluster.kmeans import hamming_kmeans
from imgdedup.pipeline.config import Config, default_config_text, load_config
from imgdedup.pipeline.errors import ConfigError


def test_default_file_matches_dataclass_defaults():
    # conf/default.toml documents every knob; the dataclass defaults must agree with it.
    assert load_config() == Config()


def test_kernel_defaults_match_the_default_file():
    # Kernels take their settings as parameters (pipeline/ reads no config); the defaults
    # in their signatures are the [cluster] knobs of conf/default.toml.
    signature = inspect.signature(hamming_kmeans)
    defaults = {name: p.default for name, p in signature.parameters.items() if p.default is not p.empty}
    assert defaults == dataclasses.asdict(load_config().cluster)


def test_the_config_accepts_every_keep_policy_the_dedup_rule_knows():
    from imgdedup.pipeline.keep import KEEP_POLICIES

    assert [load_config(overrides=[f"dedup.keep={keep}"]).dedup.keep for keep in KEEP_POLICIES] == \
        list(KEEP_POLICIES)


def test_no_pipeline_module_imports_the_config_module():
    for path in sorted((Path(__file__).resolve().parents[1] / "pipeline").rglob("*.py")):
        if path.name != "config.py":
            assert "imgdedup.pipeline.config" not in path.read_text(), path


def test_override_parses_toml_values_and_bare_strings():
    config = load_config(overrides=["hash.bits=128", "hash.algo=phash", "hash.dihedral=false",
                                    'decode.formats=["PNG"]'])
    assert config.hash.bits == 128
    assert config.hash.algo == "phash"
    assert config.hash.dihedral is False
    assert config.decode.formats == ("PNG",)


@pytest.mark.parametrize("override, subject", [
    ("hash.bitz=64", "hash.bitz"),
    ("nosuch.key=1", "nosuch"),
    ("hash.bits=100", "hash.bits"),
    ("hash.bits=abc", "hash.bits"),
    ("crypto.mode=open", "crypto.mode"),
    ("dedup.keep=newest", "dedup.keep"),
    ("hash.dihedral=1", "hash.dihedral"),
    ("no-dot=1", "no-dot=1"),
])
def test_bad_override_names_the_key(override, subject):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert info.value.subject == subject


def test_missing_and_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[hash\nalgo=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_packaged_defaults_are_the_repository_conf_file():
    # The build ships conf/default.toml inside the package; the two must be one file's text.
    repo_conf = Path(__file__).resolve().parents[1] / "conf" / "default.toml"
    assert default_config_text() == repo_conf.read_text(encoding="utf-8")
