"""The typed configuration object, loaded from ``conf/default.toml``.

The defaults ship inside the installed package as ``imgdedup/conf/default.toml``
(the repository's ``conf/`` folder, mapped there by the build) and are read with
:mod:`importlib.resources`, so a wheel install finds them wherever it lives.

One frozen dataclass per TOML table; :func:`load_config` reads the file, applies
``section.key=value`` overrides (values parsed as TOML, bare strings allowed) and
checks every key and type, so a typo fails at start-up rather than mid-job.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from imgdedup.pipeline.cores import usable_cores
from imgdedup.pipeline.errors import ConfigError
from imgdedup.pipeline.search_plan import (RADII, SUBSTRING_BITS, MihPlan, cheaper_mode, choose_plan, exact_up_to,
                                           model_rows)
from imgdedup.pipeline.threshold import (FalsePairTail, KeyShareTail, expected_false_merges, expected_key_pairs,
                                         expected_verified_false_merges, key_min_shared_for, threshold_for,
                                         verify_threshold_for)

DEFAULT_CONFIG_NAME = "imgdedup.conf/default.toml"


def default_config_text() -> str:
    """The text of the packaged ``default.toml``."""
    return importlib.resources.files("imgdedup.conf").joinpath("default.toml").read_text(encoding="utf-8")


_CORES = usable_cores()


@dataclass(frozen=True)
class HashConfig:
    algo: str = "lbph"
    size: int = 32
    bits: int = 256
    dihedral: bool = True
    min_quality: int = 20
    trim_borders: bool = True
    feature_keypoints: int = 200

    def __post_init__(self):
        if not 0 <= self.feature_keypoints <= 5000:
            raise ConfigError("hash.feature_keypoints", f"must be 0..5000, got {self.feature_keypoints}")


@dataclass(frozen=True)
class DecodeConfig:
    max_pixels: int = 100_000_000
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "JPEG2000")
    draft_min_side: int = 128


@dataclass(frozen=True)
class DedupConfig:
    threshold_t: int = 64
    centre_threshold: int = 96
    clusters: int | str = 16
    pointer_blob_grace_days: int = 30
    keep: str = "best"
    max_false_merge_rate: float = 1e-5
    false_pair_tail_intercept: float = -13.978
    false_pair_tail_slope: float = 0.1108
    verify_up_to: int = 88
    verify_min_inliers: int = 12
    verifier_false_accept: float = 3.0e-6
    max_verifications_per_image: float = 1.0
    key_min_shared: int = 3
    key_max_posting: int = 100
    key_share_tail_intercept: float = -2.45
    key_share_tail_slope: float = 0.7

    def __post_init__(self):
        if not self.max_false_merge_rate >= 0:
            raise ConfigError("dedup.max_false_merge_rate", f"must be >= 0, got {self.max_false_merge_rate}")
        if not self.false_pair_tail_slope > 0:
            raise ConfigError("dedup.false_pair_tail_slope", f"must be > 0, got {self.false_pair_tail_slope}")
        if not self.max_verifications_per_image > 0:
            raise ConfigError("dedup.max_verifications_per_image",
                              f"must be > 0, got {self.max_verifications_per_image}")
        if not self.key_min_shared >= 1:
            raise ConfigError("dedup.key_min_shared", f"must be >= 1, got {self.key_min_shared}")
        if not self.key_max_posting >= 2:
            raise ConfigError("dedup.key_max_posting", f"must be >= 2, got {self.key_max_posting}")
        if not self.key_share_tail_slope > 0:
            raise ConfigError("dedup.key_share_tail_slope", f"must be > 0, got {self.key_share_tail_slope}")

    def threshold_for(self, n: int) -> int:
        """t for a collection of ``n`` images: the t rule (:func:`imgdedup.pipeline.threshold.threshold_for`).

        A budget of 0 switches the rule off: ``threshold_t`` whatever the size.
        """
        if self.max_false_merge_rate == 0:
            return self.threshold_t
        return threshold_for(n, self.max_false_merge_rate, self.false_pair_tail, self.threshold_t)

    def verify_threshold_for(self, n: int, t_direct: int) -> int:
        """t_verify for ``n`` images above the direct-accept ``t_direct``: ``t_direct`` when there is no zone.

        :func:`imgdedup.pipeline.threshold.verify_threshold_for` with this section's knobs.
        """
        return verify_threshold_for(n, t_direct, ceiling=self.verify_up_to,
                                    max_false_merge_rate=self.max_false_merge_rate,
                                    false_accept=self.verifier_false_accept,
                                    max_verifications_per_image=self.max_verifications_per_image,
                                    tail=self.false_pair_tail)

    def key_min_shared_for(self, n: int) -> int:
        """Feature keys a pair must share to be verified, for ``n`` images: the key rule
        (:func:`imgdedup.pipeline.threshold.key_min_shared_for`) with this section's knobs, within the
        false-merge budget the direct t and the zone the rules give ``n`` images leave."""
        room = None
        if self.max_false_merge_rate > 0:
            t = max(self.threshold_for(n), 0)
            room = self.max_false_merge_rate * n - sum(self.expected_false_merges(n, t, self.verify_threshold_for(n, t)))
        return key_min_shared_for(n, floor=self.key_min_shared, tail=self.key_share_tail,
                                  max_verifications_per_image=self.max_verifications_per_image,
                                  false_accept=self.verifier_false_accept, false_merge_room=room)

    def expected_false_merges(self, n: int, t_direct: int, t_verify: int,
                              key_min_shared: int | None = None) -> tuple[float, float]:
        """Expected false merges among ``n`` images: ``(direct part, verified part)``.

        The verified part counts the zone's pairs and, when feature keys find
        candidates (``key_min_shared`` given), the key pairs, each times the
        verifier's false-accept rate. See :mod:`imgdedup.pipeline.threshold`.
        """
        tail = self.false_pair_tail
        verified = expected_verified_false_merges(n, t_direct, t_verify, tail, self.verifier_false_accept)
        if key_min_shared is not None:
            verified += expected_key_pairs(n, key_min_shared, self.key_share_tail) * self.verifier_false_accept
        return expected_false_merges(n, t_direct, tail), verified

    @property
    def key_share_tail(self) -> KeyShareTail:
        """How often different photos share feature keys, for the key rule."""
        return KeyShareTail(self.key_share_tail_intercept, self.key_share_tail_slope)

    @property
    def false_pair_tail(self) -> FalsePairTail:
        """The fingerprint's false-pair tail, for the t rule (:func:`imgdedup.pipeline.threshold.threshold_for`)."""
        return FalsePairTail(self.false_pair_tail_intercept, self.false_pair_tail_slope)


@dataclass(frozen=True)
class ClusterConfig:
    seed: int = 0
    batch_size: int = 8192
    max_batches: int = 200
    tol: float = 0.0
    seed_sample_size: int = 65536
    seeding: str = "k-means||"
    reassign_ratio: float = 0.1


@dataclass(frozen=True)
class CryptoConfig:
    key_file: str = "imgdedup.key"
    mode: str = "tokens"
    segment_bytes: int = 1_048_576


@dataclass(frozen=True)
class StoreConfig:
    url: str = "./dedup-store"
    gc_grace_seconds: int = 86400


@dataclass(frozen=True)
class DaskConfig:
    scheduler: str = ""
    partition_size: int = 256
    workers: int = 0
    local_workers: str = "auto"


@dataclass(frozen=True)
class BulkConfig:
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = (".*", "*/.*")
    incremental: str = "digest"
    retries: int = 2
    progress: str = "auto"


@dataclass(frozen=True)
class DemoConfig:
    out_dir: str = "demo-out"


@dataclass(frozen=True)
class IngestConfig:
    batch_size: int = 32
    poll_interval_ms: int = 1000
    stable_size_ms: int = 2000
    recluster_new_classes: int = 8
    recluster_centre_shift: int = 16


@dataclass(frozen=True)
class ReportConfig:
    page_size: int = 50
    thumbnail_px: int = 128
    members_shown: int = 12
    review_margin: int = 8


@dataclass(frozen=True)
class IndexConfig:
    mode: str = "auto"
    substring_bits: int | str = "auto"
    probe_radius: int | str = "auto"
    query_batch: int = 1024
    threads: int = 0

    def mih_plan(self, t: int, bits: int, n: int, forms: int = 8, *, join: bool = False) -> MihPlan:
        """mih mode's ``(substring_bits, probe_radius)`` for a search within ``t`` of ``n`` rows of ``bits`` bits.

        ``"auto"`` values are chosen by the plan rule
        (:func:`imgdedup.pipeline.search_plan.choose_plan`): the cheapest plan
        exact at ``t`` by the pigeonhole bound, with the configured values kept
        as given. An explicit plan need not be exact: compare ``t`` with
        :func:`imgdedup.pipeline.search_plan.exact_up_to` of the result.

        Parameters
        ----------
        t : int
            Largest distance of a match, in bits.
        bits : int
            Bits per fingerprint.
        n : int
            Rows searched (the index's, or the join's); the model reads it to within 4.5 %
            (:func:`imgdedup.pipeline.search_plan.model_rows`).
        forms : int
            Forms per query: 8 with dihedral matching, else 1.
        join : bool
            For the bulk job's near-duplicate join rather than a lookup (ingest, ``get --like``).
        """
        return choose_plan(max(t, 0), bits, model_rows(n), forms,
                           substring_bits=None if self.substring_bits == "auto" else self.substring_bits,
                           probe_radius=None if self.probe_radius == "auto" else self.probe_radius, join=join)

    def search_mode(self, rows: int, t: int | None = None, bits: int = 256, forms: int = 8, *,
                    join: bool = False) -> str:
        """The mode for an index (or join) of ``rows`` fingerprints searched within ``t``.

        ``mode``, or for ``"auto"`` the cheaper by the plan rule's cost model
        (:func:`imgdedup.pipeline.search_plan.cheaper_mode`) of an exact-mode
        scan on :attr:`scan_threads` and mih mode with :meth:`mih_plan`; mih
        only when that plan is exact at ``t`` or was configured explicitly.
        ``t`` may be left out only when the mode is not ``"auto"`` (a
        :meth:`resolved` config).
        """
        if self.mode != "auto":
            return self.mode
        if t is None:
            raise ValueError("index.mode = \"auto\" chooses by t: pass t, or resolve the config first")
        plan = self.mih_plan(t, bits, rows, forms, join=join)
        configured = "auto" not in (self.substring_bits, self.probe_radius)
        if exact_up_to(plan, bits) < t and not configured:
            return "exact"
        return cheaper_mode(plan, bits, model_rows(rows), forms, self.scan_threads, join=join)

    def resolved(self, rows: int, t: int, bits: int = 256, forms: int = 8, *, join: bool = False) -> "IndexConfig":
        """This config with the mode and the mih plan chosen for ``rows`` fingerprints at ``t``: no "auto" left.

        ``join``: for the bulk job's near-duplicate join (its own cost model), else for lookups.
        """
        plan = self.mih_plan(t, bits, rows, forms, join=join)
        return dataclasses.replace(self, mode=self.search_mode(rows, t, bits, forms, join=join),
                                   substring_bits=plan.substring_bits, probe_radius=plan.probe_radius)

    @property
    def scan_threads(self) -> int:
        """Threads for the index's scans: ``threads``, or one per core when it is 0."""
        return self.threads or _CORES


@dataclass(frozen=True)
class Config:
    hash: HashConfig = field(default_factory=HashConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    crypto: CryptoConfig = field(default_factory=CryptoConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    bulk: BulkConfig = field(default_factory=BulkConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    index: IndexConfig = field(default_factory=IndexConfig)

    @property
    def key_keypoints(self) -> int:
        """Keypoints the jobs take feature keys from: ``hash.feature_keypoints`` when there is a verified zone
        (``dedup.verify_up_to`` > 0) to put key matches to, else 0 (keys would find nothing to verify)."""
        return self.hash.feature_keypoints if self.dedup.verify_up_to > 0 else 0


_CHOICES = {
    ("hash", "algo"): {"lbph", "lbph-paper", "phash", "ahash", "dhash"},
    ("hash", "bits"): {64, 128, 256},
    ("crypto", "mode"): {"tokens", "sealed"},
    ("cluster", "seeding"): {"k-means++", "k-means||"},
    ("bulk", "incremental"): {"digest", "stat"},
    ("bulk", "progress"): {"auto", "bar", "log"},
    ("dask", "local_workers"): {"auto", "processes", "threads"},
    ("index", "mode"): {"auto", "exact", "paper", "mih"},
    ("index", "probe_radius"): {*RADII, "auto"},
    ("index", "substring_bits"): {*SUBSTRING_BITS, "auto"},
    ("dedup", "keep"): {"best", "largest", "earliest"},
}


#: Inclusive bounds of numeric keys (None: unbounded), checked when a config is
#: loaded so a zero batch or segment size is a ConfigError, not a crash later.
_RANGES = {
    ("hash", "size"): (8, 1024),
    ("hash", "min_quality"): (0, 100),
    ("decode", "max_pixels"): (1, None),
    ("decode", "draft_min_side"): (1, None),
    ("dedup", "threshold_t"): (0, None),
    ("dedup", "centre_threshold"): (0, None),
    ("dedup", "clusters"): (1, None),
    ("dedup", "pointer_blob_grace_days"): (0, None),
    ("dedup", "verify_up_to"): (0, None),
    ("dedup", "verify_min_inliers"): (1, None),
    ("dedup", "verifier_false_accept"): (0, 1),
    ("cluster", "batch_size"): (1, None),
    ("cluster", "max_batches"): (1, None),
    ("cluster", "seed_sample_size"): (1, None),
    ("cluster", "tol"): (0, None),
    ("cluster", "reassign_ratio"): (0, 1),
    # The blob format's own limit (pipeline/crypto/blob.py, MAX_SEGMENT_BYTES).
    ("crypto", "segment_bytes"): (1, 1 << 28),
    ("store", "gc_grace_seconds"): (0, None),
    ("dask", "partition_size"): (1, None),
    ("dask", "workers"): (0, None),
    ("bulk", "retries"): (0, None),
    ("ingest", "batch_size"): (1, None),
    ("ingest", "poll_interval_ms"): (0, None),
    ("ingest", "stable_size_ms"): (0, None),
    ("ingest", "recluster_new_classes"): (1, None),
    ("ingest", "recluster_centre_shift"): (0, None),
    ("report", "page_size"): (1, None),
    ("report", "thumbnail_px"): (1, None),
    ("report", "members_shown"): (0, None),
    ("report", "review_margin"): (0, None),
    ("index", "query_batch"): (1, None),
    ("index", "threads"): (0, None),
}


def _parse_override(text: str) -> tuple[str, str, object]:
    """``"hash.bits=256"`` → ``("hash", "bits", 256)``; a value that is not TOML is a string."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(text, "an override must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, name, value


def _coerce(section: str, name: str, value: object, annotation: object) -> object:
    where = f"{section}.{name}"
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"expected true or false, got {value!r}")
    elif annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(where, f"expected an integer, got {value!r}")
    elif annotation == int | str:  # a count, or a word naming a rule ("auto")
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ConfigError(where, f"expected an integer or a string, got {value!r}")
        if isinstance(value, str) and value != "auto":
            raise ConfigError(where, f"expected an integer or \"auto\", got {value!r}")
    elif annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(where, f"expected a number, got {value!r}")
        value = float(value)
    elif annotation is str:
        if not isinstance(value, str):
            raise ConfigError(where, f"expected a string, got {value!r}")
    elif typing.get_origin(annotation) is tuple:
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(where, f"expected a list of strings, got {value!r}")
        value = tuple(value)
    choices = _CHOICES.get((section, name))
    if choices is not None and value not in choices:
        raise ConfigError(where, f"must be one of {sorted(choices, key=str)}, got {value!r}")
    low, high = _RANGES.get((section, name), (None, None))
    if isinstance(value, int | float) and not isinstance(value, bool) and (
            (low is not None and value < low) or (high is not None and value > high)):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ConfigError(where, f"must be {bounds}, got {value!r}")
    return value


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a TOML config file and apply ``section.key=value`` overrides.

    Parameters
    ----------
    path : str or Path, optional
        TOML file; the packaged ``conf/default.toml`` when omitted.
    overrides : iterable of str
        ``--set`` arguments, applied in order after the file.

    Raises
    ------
    ConfigError
        Unreadable file, unknown section or key, wrong type, value out of range.

    Examples
    --------
    >>> import imgdedup
    >>> config = imgdedup.load_config(overrides=["dedup.threshold_t=48", "store.url=s3://bucket/dedup"])
    >>> config.dedup.threshold_t, config.store.url, config.hash.algo
    (48, 's3://bucket/dedup', 'lbph')
    """
    where = str(path) if path is not None else DEFAULT_CONFIG_NAME
    try:
        data = tomllib.loads(Path(path).read_text() if path is not None else default_config_text())
    except FileNotFoundError:
        raise ConfigError(where, "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, f"cannot read the config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(where, f"not valid TOML: {exc}") from None
    for text in overrides:
        section, name, value = _parse_override(text)
        data.setdefault(section, {})[name] = value

    top = typing.get_type_hints(Config)
    sections = {}
    for section, values in data.items():
        if section not in top:
            raise ConfigError(section, f"unknown config section; known: {sorted(top)}")
        if not isinstance(values, dict):
            raise ConfigError(section, "a config section must be a table")
        types = typing.get_type_hints(top[section])
        for name, value in values.items():
            if name not in types:
                raise ConfigError(f"{section}.{name}", f"unknown key; known: {sorted(types)}")
            values[name] = _coerce(section, name, value, types[name])
        sections[section] = top[section](**values)
    return Config(**sections)


def as_dict(config: Config) -> dict:
    """The config as nested plain dicts (for logs and report metadata; holds no key material)."""
    return dataclasses.asdict(config)
