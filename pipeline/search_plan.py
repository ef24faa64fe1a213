"""The plan rule: a multi-index-hashing plan exact at t, and whether it beats a scan of every row.

mih mode (:mod:`imgdedup.pipeline.index.substrings`) cuts each ``nbits``-bit
fingerprint into ``m = nbits // b`` substrings of ``b`` bits, and every form of
a query probes, at each position, the buckets of the substrings within ``r``
bits of its own. By the pigeonhole principle a row within ``m (r + 1) - 1``
bits of a form differs from it by at most ``r`` bits in at least one substring,
so a plan with ``m (r + 1) > t`` finds every row within ``t`` of any form:
recall 1.0 by construction (:func:`exact_up_to`).

Among the exact plans the rule takes the cheapest by a cost model of one query
in nanoseconds (:func:`mih_cost_ns`), on near-random codes (photo fingerprints
are, to one another); a lookup (ingest, ``get --like``) and a row of the bulk
job's join have their own constants, the join's probes being sorted by bucket:

- probes: ``F m V(b, r)`` bucket look-ups, ``V(b, r) = sum_{i <= r} C(b, i)``,
  each a random read of the bucket starts (:data:`PROBE_NS`);
- candidates: ``n / 2^b`` rows per probed bucket, each a random read of the row
  and its "seen" stamp and a comparison with the query's F forms
  (:data:`CANDIDATE_NS`);
- the table's memory, ``4 m (2^b + 1 + n)`` bytes: ``m n`` rows in bucket
  order (:data:`TABLE_ROW_NS` each to build) and ``m 2^b`` bucket starts
  (:data:`TABLE_BUCKET_NS`), rebuilt whenever the index re-lays out its members
  (every ``n / 16`` adds) and spread over the queries in between: this is what
  keeps ``2^b`` from outgrowing ``n``.

Exact mode's cost is a compiled scan of every row with every form, shared
among the index's scan threads (:func:`scan_cost_ns`): on photo fingerprints at the t the t rule gives (20-64
bits) the triangle inequality rules out almost no class, so that is what it
costs. :func:`cheaper_mode` compares the two. The constants were measured on
10^6 random codes on one core of the development machine (docs/index.md);
only their ratios matter to the choice, and ``scripts/bench_ingest.py`` times
a few plans beside the one chosen to check it.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

#: Substring widths the table supports (its bucket starts take ``2^b + 1`` entries per position).
SUBSTRING_BITS = range(8, 23)
#: Probe radii supported (the probes per substring grow as ``b^r``).
RADII = (0, 1, 2)
#: ns per bucket probed by a lookup (a random read of two bucket starts).
PROBE_NS = 20.0
#: ns per candidate row a lookup verifies against a query's forms (random reads of the row and its stamp).
CANDIDATE_NS = 180.0
#: ns per bucket probed by the join (its probes come sorted by bucket: nearly sequential reads).
JOIN_PROBE_NS = 14.0
#: ns per candidate row the join compares with a probing form (the bucket's rows are read in order).
JOIN_CANDIDATE_NS = 5.0
#: ns per row and form of a compiled scan of every row (exact mode on codes it cannot prune).
SCAN_NS = 0.65
#: ns per row and substring position to build the table (extract the substring, sort the rows by it).
TABLE_ROW_NS = 110.0
#: ns per bucket start to build the table (count, cumulative sum).
TABLE_BUCKET_NS = 10.0
#: The index rebuilds its table each time its tail of added rows passes this share of the rows.
REBUILD_SHARE = 1 / 16


class MihPlan(NamedTuple):
    """A mih search's substring width ``b`` and probe radius ``r`` (every form probes within ``r`` bits)."""

    substring_bits: int
    probe_radius: int


def exact_up_to(plan: MihPlan, nbits: int) -> int:
    """Largest distance, in bits, at which ``plan`` finds every row: ``nbits // b * (r + 1) - 1`` (pigeonhole)."""
    return nbits // plan.substring_bits * (plan.probe_radius + 1) - 1


def probes_per_form(plan: MihPlan, nbits: int) -> int:
    """Buckets one query form probes: ``m * sum_{i <= r} C(b, i)``."""
    b = plan.substring_bits
    return nbits // b * sum(math.comb(b, i) for i in range(plan.probe_radius + 1))


def table_bytes(plan: MihPlan, nbits: int, n: int) -> int:
    """Bytes of the substring table over ``n`` rows: ``4 m (2^b + 1 + n)`` (int32 bucket starts and row order)."""
    return 4 * (nbits // plan.substring_bits) * (2 ** plan.substring_bits + 1 + n)


def mih_cost_ns(plan: MihPlan, nbits: int, n: int, forms: int, *, join: bool = False) -> float:
    """Modelled nanoseconds of one query of ``forms`` forms against ``n`` near-random rows (module docstring).

    ``join``: the query is one row of the near-duplicate join, which probes
    sorted by bucket (:func:`imgdedup.pipeline.index.substrings.substring_pairs`)
    and builds each position's table once for all ``n`` rows; otherwise a
    lookup (ingest, ``get --like``) in a table rebuilt every ``n / 16`` adds.
    """
    probes = forms * probes_per_form(plan, nbits)
    candidates = probes * n / 2 ** plan.substring_bits
    m = nbits // plan.substring_bits
    build = m * (n * TABLE_ROW_NS + 2 ** plan.substring_bits * TABLE_BUCKET_NS)
    if join:
        return probes * JOIN_PROBE_NS + candidates * JOIN_CANDIDATE_NS + build / max(1, n)
    return probes * PROBE_NS + candidates * CANDIDATE_NS + build / max(1.0, n * REBUILD_SHARE)


def scan_cost_ns(nbits: int, n: int, forms: int, threads: int = 1) -> float:
    """Modelled wall nanoseconds of one query of ``forms`` forms scanned against every one of ``n`` rows,
    the scan shared among ``threads`` (as exact mode shares it; a mih query runs on one thread)."""
    return SCAN_NS * n * forms * max(1, nbits // 256) / max(1, threads)


def plans(nbits: int):
    """Every supported plan for ``nbits``-bit fingerprints."""
    return [MihPlan(b, r) for b in SUBSTRING_BITS if b <= nbits for r in RADII]


def model_rows(n: int) -> int:
    """``n`` rounded to one of 8 steps per doubling (within 4.5 %): the model needs no more, and a growing
    index then meets the same few values, whose choices :func:`choose_plan` and :func:`cheaper_mode` cache."""
    return 0 if n < 1 else round(2 ** (round(math.log2(n) * 8) / 8))


@functools.lru_cache(maxsize=4096)
def choose_plan(t: int, nbits: int, n: int, forms: int, *, substring_bits: int | None = None,
                probe_radius: int | None = None, join: bool = False) -> MihPlan:
    """The cheapest plan exact at ``t``, among those with the given width and radius (None: any).

    Parameters
    ----------
    t : int
        Largest distance of a match, in bits.
    nbits : int
        Bits per fingerprint.
    n : int
        Rows searched.
    forms : int
        Forms per query (8 with dihedral matching).
    substring_bits, probe_radius : int, optional
        Fixed by the caller; the rule chooses what is None.
    join : bool
        Costed for the near-duplicate join rather than a lookup (:func:`mih_cost_ns`).

    Returns
    -------
    MihPlan
        The cheapest by :func:`mih_cost_ns` of the plans with ``exact_up_to >= t``; when none is
        (``t`` beyond what the fixed values or the supported plans reach), the one exact up to the
        largest distance (then the cheapest): approximate, see :func:`exact_up_to`.
    """
    allowed = [p for p in plans(nbits) if substring_bits in (None, p.substring_bits)
               and probe_radius in (None, p.probe_radius)]
    if not allowed:
        raise ValueError(f"no mih plan with substring_bits={substring_bits}, probe_radius={probe_radius} "
                         f"for {nbits}-bit fingerprints")
    exact = [p for p in allowed if exact_up_to(p, nbits) >= t]
    if exact:
        return min(exact, key=lambda p: mih_cost_ns(p, nbits, n, forms, join=join))
    return min(allowed, key=lambda p: (-exact_up_to(p, nbits), mih_cost_ns(p, nbits, n, forms, join=join)))


@functools.lru_cache(maxsize=4096)
def cheaper_mode(plan: MihPlan, nbits: int, n: int, forms: int, threads: int = 1, *, join: bool = False) -> str:
    """``"mih"`` when ``plan`` is modelled cheaper than a scan of every row on ``threads``, else ``"exact"``.

    For the join (``join``) both sides are per row of the join, and both split among the workers alike.
    """
    mih = mih_cost_ns(plan, nbits, n, forms, join=join)
    return "mih" if mih < scan_cost_ns(nbits, n, forms, 1 if join else threads) else "exact"
