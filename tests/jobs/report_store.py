"""A small committed store for the report tests, written with the store's own API.

Two runs over real photos from the committed test data: real LBPH fingerprints keyed
into tokens, real sealed blobs (pointer members' blobs kept, as the bulk job
keeps them for the unmerge grace period), the dihedral distances of pointers to
their canonical image, clusters, error rows and metric rows.
"""
from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image, ImageOps

from imgdedup.pipeline.config import Config
from imgdedup.pipeline.crypto.blob import seal_bytes
from imgdedup.pipeline.crypto.digest import content_digest, image_id
from imgdedup.pipeline.crypto.keyed_fingerprint import tokens
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.crypto.resolution import resolution_mac
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.bits import dihedral_hamming
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch
from imgdedup.pipeline.store import Store, schemas


def _jpeg(picture: Image.Image, quality: int = 90) -> bytes:
    sink = io.BytesIO()
    picture.convert("RGB").save(sink, "JPEG", quality=quality)
    return sink.getvalue()


def _pictures(dev: Path) -> dict[str, bytes]:
    """Source name -> file bytes: five originals (360 px wide) and three variants of two of them."""
    photos = sorted(dev.glob("*.jpg"))[:5]
    originals = []
    for path in photos:
        picture = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        picture.thumbnail((360, 360))
        originals.append(picture)
    files = {f"photos/{p.stem}.jpg": _jpeg(im) for p, im in zip(photos, originals)}
    first, second = photos[0].stem, photos[1].stem
    w, h = originals[0].size
    files[f"copies/{first}-half.jpg"] = _jpeg(originals[0].resize((w // 2, h // 2)))
    files[f"copies/{first}-gray.jpg"] = _jpeg(ImageOps.grayscale(originals[0]))
    files[f"copies/{second}-q30.jpg"] = _jpeg(originals[1], quality=30)
    return files


@dataclass
class ReportStore:
    """The store and what the tests know about it.

    Attributes
    ----------
    store : Store
    key : GroupKey
    files : dict
        image id -> the file's bytes.
    sources : dict
        image id -> source name.
    groups : dict
        canonical image id -> its pointer image ids.
    runs : list of str
        Run ids in commit order.
    """

    store: Store
    key: GroupKey
    files: dict[str, bytes] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)


def build_report_store(url: str, dev: Path, key: GroupKey, config: Config) -> ReportStore:
    """Commit two runs into a store at ``url`` from the photos in ``dev``.

    Run ``run-1``: originals 0-2, the half-size copy of 0 and the q30 copy of 1
    (pointers), one error row. Run ``run-2``: originals 3-4, the grey copy of 0
    (pointer), two error rows. Clusters: class 0 holds the families of
    originals 0 and 1, class 1 the rest.
    """
    files = _pictures(dev)
    names = list(files)
    algorithm = get_algorithm("lbph", size=32, bits=256)
    batch = fingerprint_batch([files[n] for n in names], algorithm, names=names, dihedral=True,
                              max_pixels=config.decode.max_pixels, formats=config.decode.formats,
                              draft_min_side=config.decode.draft_min_side)
    assert not batch.errors, batch.errors
    digests = [content_digest(key, io.BytesIO(files[n])) for n in names]
    ids = [image_id(key, d, n) for d, n in zip(digests, names)]
    by_name = dict(zip(names, range(len(names))))
    originals = [n for n in names if n.startswith("photos/")]
    canonical_of = {n: originals[0] for n in names if n.startswith(f"copies/{Path(originals[0]).stem}-")}
    canonical_of.update({n: originals[1] for n in names if n.startswith(f"copies/{Path(originals[1]).stem}-")})
    fingerprint_tokens = tokens(key, batch.hashes)

    def rows(run_names: list[str]) -> pa.Table:
        out = {name: [] for name in schemas.fingerprints_schema().names}
        for name in run_names:
            i = by_name[name]
            target = canonical_of.get(name)
            distance = None
            if target is not None:
                j = by_name[target]
                distance = int(dihedral_hamming(batch.dihedral[i:i + 1], batch.hashes[j:j + 1])[0, 0])
            family = canonical_of.get(name, name)
            out["image_id"].append(ids[i])
            out["fingerprint"].append(fingerprint_tokens[i].tobytes())
            out["algo"].append("lbph")
            out["key_id"].append(key.key_id_hex)
            out["cluster_id"].append(0 if family in originals[:2] else 1)
            out["width"].append(int(batch.width[i]))
            out["height"].append(int(batch.height[i]))
            out["bytes"].append(len(files[name]))
            out["blob"].append(None if target else f"blobs/{ids[i][:2]}/{ids[i][2:4]}/{ids[i]}")
            out["duplicate_of"].append(None if target is None else ids[by_name[target]])
            out["distance"].append(distance)
            out["source"].append(name)
            out["ingested_at"].append(dt.datetime(2026, 11, 25, tzinfo=dt.timezone.utc))
            out["hash_sealed"].append(None)
            out["content_digest"].append(digests[i])
            out["quality"].append(int(batch.quality[i]))
            for column, value in batch.image_columns().items():
                if column in ("format", "lossless", "jpeg_quality", "exif"):
                    out[column].append(value[i].item() if hasattr(value[i], "item") else value[i])
            out["upload_id"].append(None)
            out["resolution_mac"].append(resolution_mac(key, ids[i], out["duplicate_of"][-1], out["blob"][-1]))
            out["feature_keys"].append(None)
        schema = schemas.fingerprints_schema(32, algo="lbph", bits=256, key_id=key.key_id_hex, mode="tokens")
        return pa.table(out, schema=schema)

    store = Store(url)
    result = ReportStore(store, key)
    for i, name in enumerate(names):
        result.files[ids[i]] = files[name]
        result.sources[ids[i]] = name
    for name, target in canonical_of.items():
        result.groups.setdefault(ids[by_name[target]], []).append(ids[by_name[name]])

    runs = {
        "run-1": [originals[0], originals[1], originals[2], *[n for n in names if n.endswith(("-half.jpg", "-q30.jpg"))]],
        "run-2": [originals[3], originals[4], *[n for n in names if n.endswith("-gray.jpg")]],
    }
    bad_files = {"run-1": [("junk/notes.txt", "decode", "DecodeError")],
                 "run-2": [("junk/empty.jpg", "decode", "DecodeError"), ("junk/huge.png", "decode", "DecodeError")]}
    for run_index, (run_id, run_names) in enumerate(runs.items()):
        blobs = []
        for name in run_names:
            header, body = seal_bytes(key, ids[by_name[name]], files[name], config.crypto.segment_bytes)
            store.write_blob(ids[by_name[name]], header, [body])
            blobs.append(ids[by_name[name]])
        errors = pa.table({"source": [s for s, _, _ in bad_files[run_id]],
                           "stage": [st for _, st, _ in bad_files[run_id]],
                           "error_type": [t for _, _, t in bad_files[run_id]],
                           "message": ["not an image"] * len(bad_files[run_id]),
                           "run_id": [run_id] * len(bad_files[run_id])}, schema=schemas.errors_schema())
        metrics = pa.table({"run_id": [run_id] * 3, "name": ["images", "seconds_fingerprint", "seconds_dedup"],
                            "value": [float(len(run_names)), 1.5 + run_index, 0.25], "unit": ["images", "s", "s"]},
                           schema=schemas.reports_schema())
        centres = np.stack([fingerprint_tokens[by_name[originals[0]]], fingerprint_tokens[by_name[originals[2]]]])
        clusters = pa.table({"cluster_id": [0, 1], "centroid": [c.tobytes() for c in centres],
                             "size": [3 + run_index, 1 + 2 * run_index], "radius": [40, 90],
                             "version": [run_index + 1] * 2},
                            schema=schemas.clusters_schema(32, key_id=key.key_id_hex))
        files_written = {
            schemas.FINGERPRINTS: [store.write_table_part(schemas.FINGERPRINTS, run_id, 0, rows(run_names))],
            schemas.ERRORS: [store.write_table_part(schemas.ERRORS, run_id, 0, errors)],
            schemas.REPORTS: [store.write_table_part(schemas.REPORTS, run_id, 0, metrics)],
            schemas.CLUSTERS: [store.write_table_part(schemas.CLUSTERS, run_id, 0, clusters)],
        }
        store.commit(run_id, files_written, blobs=blobs, meta={"algo": "lbph"}, replace=[schemas.CLUSTERS])
        result.runs.append(run_id)
    return result
