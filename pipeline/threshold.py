"""The t rule: the largest duplicate threshold a collection's size and false-merge budget allow.

A collection of ``n`` images has ``n (n - 1) / 2`` pairs. If a pair of
*different* photos falls within ``t`` bits with probability ``p(t)`` (the
false-pair rate), the expected number of false pairs is ``p(t) n (n - 1) / 2``.
With star groups (:mod:`imgdedup.pipeline.groups`) a false pair turns at most
one image into a pointer to a photo that is not its own, so the expected
number of false merges is at most that many. The budget is a share of the
collection, ``dedup.max_false_merge_rate`` (``1e-5``: at most one wrong merge per
100 000 images, on average), and the rule is

    t(n) = the largest t <= dedup.threshold_t with p(t) n (n - 1) / 2 <= rate n,

that is ``p(t) <= 2 rate / (n - 1)``. ``p`` is the lower tail of the distance
between different photos, modelled as :class:`FalsePairTail`, ``log10 p(t) =
intercept + slope t``, fitted by ``scripts/bench_false_merges.py`` to the
upper 95 % confidence bounds of the observed tail (so it errs towards more
false pairs, not fewer) and recorded in ``conf/default.toml``
(``dedup.false_pair_tail``) for the default fingerprint.

Above ``t`` a verified zone ``(t, t_verify]`` (:func:`verify_threshold_for`)
takes pairs that a second opinion on the pixels
(:mod:`imgdedup.pipeline.hashing.verify`) passes: its false merges are the
zone's different-photo pairs times the verifier's false-accept rate, so the
zone can reach far above ``t`` within the same budget; a run's expected false
merges are the direct part (:func:`expected_false_merges` at ``t``) plus the
verified part (:func:`expected_verified_false_merges`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FalsePairTail:
    """Lower tail of the distance between different photos: ``log10 p(d <= t) = intercept + slope * t``.

    Attributes
    ----------
    intercept : float
        log10 of the modelled false-pair rate at ``t = 0``.
    slope : float
        Decades of false-pair rate per bit of ``t``; positive.
    """

    intercept: float
    slope: float

    def __post_init__(self):
        if not self.slope > 0:
            raise ValueError(f"a false-pair tail must rise with t (slope > 0), got slope {self.slope}")

    def rate(self, t: float) -> float:
        """Modelled probability that two different photos lie within ``t`` bits (at most 1)."""
        return 10.0 ** min(0.0, self.intercept + self.slope * t)


def expected_false_merges(n: int, t: int, tail: FalsePairTail) -> float:
    """Expected false pairs within ``t`` among ``n`` images of different photos: an upper bound on false merges.

    Parameters
    ----------
    n : int
        Images in the collection.
    t : int
        Duplicate threshold in bits.
    tail : FalsePairTail

    Returns
    -------
    float
        ``p(t) n (n - 1) / 2``; 0 for ``t < 0`` (nothing merges).
    """
    if t < 0 or n < 2:
        return 0.0
    return tail.rate(t) * n * (n - 1) / 2


def threshold_for(n: int, max_false_merge_rate: float, tail: FalsePairTail, ceiling: int) -> int:
    """The largest t whose expected false merges stay within the budget (the t rule).

    Parameters
    ----------
    n : int
        Images in the collection (after the run: stored plus new).
    max_false_merge_rate : float
        Budget of expected false merges per image (``dedup.max_false_merge_rate``).
    tail : FalsePairTail
        The false-pair tail of the fingerprint (``dedup.false_pair_tail``).
    ceiling : int
        The largest t the rule may return (``dedup.threshold_t``): below the
        size where the budget binds, the configured t is kept.

    Returns
    -------
    int
        In ``-1 .. ceiling``: the largest t with ``expected_false_merges(n, t) <=
        max_false_merge_rate * n``; -1 when even identical fingerprints would
        exceed the budget (no pair merges on its fingerprint alone).

    Raises
    ------
    ValueError
        A negative collection size or a budget that is not positive.
    """
    if n < 0 or not max_false_merge_rate > 0:
        raise ValueError(f"need n >= 0 and max_false_merge_rate > 0; got n={n}, rate={max_false_merge_rate}")
    if n < 2:
        return ceiling
    return _largest_t(n, max_false_merge_rate, tail, ceiling)


def _largest_t(n: int, pairs_per_image: float, tail: FalsePairTail, ceiling: int) -> int:
    """The largest t <= ``ceiling`` with ``p(t) n (n - 1) / 2 <= pairs_per_image * n``; -1 if none (``n >= 2``)."""
    if 2 * pairs_per_image / (n - 1) >= 1:  # met even where p(t) reaches 1
        return ceiling
    # p(t) <= 2 pairs_per_image / (n - 1)  <=>  t <= (log10(2 pairs_per_image / (n - 1)) - intercept) / slope
    bound = (math.log10(2 * pairs_per_image / (n - 1)) - tail.intercept) / tail.slope
    return max(min(ceiling, math.floor(bound + 1e-9)), -1)


def verify_threshold_for(n: int, t_direct: int, *, ceiling: int, max_false_merge_rate: float, false_accept: float,
                         max_verifications_per_image: float, tail: FalsePairTail) -> int:
    """The top of the verified zone ``(t_direct, t_verify]``: pairs there merge only once the verifier passes them.

    A pair of different photos lands in the zone with probability at most
    ``p(t_verify) - p(t_direct)`` and passes the verifier with probability at
    most ``false_accept``, so the zone adds at most ``zone(t) false_accept``
    expected false merges, ``zone(t) = (p(t) - p(t_direct)) n (n - 1) / 2`` the
    zone's expected pairs of different photos; and every such pair costs a
    verification. The direct part and the zone share one budget:

        t_verify(n) = the largest t <= ceiling with
                      direct + zone(t) false_accept <= max_false_merge_rate n   (false merges), and
                      zone(t) <= max_verifications_per_image n                  (cost),

    ``direct = p(t_direct) n (n - 1) / 2`` (:func:`expected_false_merges`),
    never below ``t_direct`` (an empty zone).

    Parameters
    ----------
    n : int
        Images in the collection.
    t_direct : int
        The direct-accept t (:func:`threshold_for`), in bits.
    ceiling : int
        ``dedup.verify_up_to``: the largest t_verify, in bits; at or below
        ``t_direct`` (0 included) there is no zone.
    max_false_merge_rate : float
        Budget of expected false merges per image, for the direct part and the
        zone together; 0 leaves out the false-merge condition (the t rule is off).
    false_accept : float
        The verifier's false-accept rate on pairs of different pictures (an upper bound); 0 leaves
        out the false-merge condition.
    max_verifications_per_image : float
        Budget of verified different-photo pairs per image; positive.
    tail : FalsePairTail

    Returns
    -------
    int
        In ``t_direct .. max(ceiling, t_direct)``; ``t_direct`` means no zone.

    Raises
    ------
    ValueError
        A negative collection size, rate or false-accept rate, or a verification budget that is not positive.
    """
    if n < 0 or max_false_merge_rate < 0 or false_accept < 0 or not max_verifications_per_image > 0:
        raise ValueError(f"need n >= 0, max_false_merge_rate >= 0, false_accept >= 0 and "
                         f"max_verifications_per_image > 0; got n={n}, rate={max_false_merge_rate}, "
                         f"false_accept={false_accept}, verifications={max_verifications_per_image}")
    if ceiling <= t_direct:
        return t_direct
    if n < 2:
        return ceiling
    direct = expected_false_merges(n, t_direct, tail)
    zone_pairs = max_verifications_per_image * n
    if max_false_merge_rate > 0 and false_accept > 0:
        zone_pairs = min(zone_pairs, max(max_false_merge_rate * n - direct, 0.0) / false_accept)
    if zone_pairs <= 0:  # the direct part spends the whole budget
        return t_direct
    # p(t) n (n - 1) / 2 <= direct + zone_pairs: the different-photo pairs within t_verify
    return max(t_direct, _largest_t(n, (direct + zone_pairs) / n, tail, ceiling))


def expected_verified_false_merges(n: int, t_direct: int, t_verify: int, tail: FalsePairTail,
                                   false_accept: float) -> float:
    """Expected false merges through the verified zone ``(t_direct, t_verify]``: an upper bound.

    Returns
    -------
    float
        ``false_accept (p(t_verify) - p(t_direct)) n (n - 1) / 2``: the zone's
        expected different-photo pairs (:func:`expected_zone_pairs`) times the
        verifier's false-accept rate; 0 for an empty zone.
    """
    return false_accept * expected_zone_pairs(n, t_direct, t_verify, tail)


def expected_zone_pairs(n: int, t_direct: int, t_verify: int, tail: FalsePairTail) -> float:
    """Expected pairs of different photos in the zone ``(t_direct, t_verify]``: the verifications they cost."""
    if t_verify <= t_direct:
        return 0.0
    return expected_false_merges(n, t_verify, tail) - expected_false_merges(n, t_direct, tail)


@dataclass(frozen=True)
class KeyShareTail:
    """How often two different photos share feature keys: ``log10 p(shared >= m) = intercept - slope * m``.

    Fitted by ``scripts/crop_candidates.py`` on the tune half of the labelled
    set (pairs of different photos, ``hash.feature_keypoints = 200``).

    Attributes
    ----------
    intercept : float
        log10 of the modelled rate at ``m = 0``.
    slope : float
        Decades of rate per key shared; positive.
    """

    intercept: float
    slope: float

    def __post_init__(self):
        if not self.slope > 0:
            raise ValueError(f"a key-share tail must fall with m (slope > 0), got slope {self.slope}")

    def rate(self, m: int) -> float:
        """Modelled probability that two different photos share at least ``m`` feature keys (at most 1)."""
        return 10.0 ** min(0.0, self.intercept - self.slope * m)


def expected_key_pairs(n: int, m: int, tail: KeyShareTail) -> float:
    """Expected pairs of different photos among ``n`` images sharing at least ``m`` feature keys."""
    return tail.rate(m) * n * (n - 1) / 2


def key_min_shared_for(n: int, *, floor: int, tail: KeyShareTail, max_verifications_per_image: float,
                       false_accept: float = 0.0, false_merge_room: float | None = None) -> int:
    """The keys a pair must share to be verified, for ``n`` images: the key rule.

    The smallest ``m >= floor`` whose expected pairs of different photos
    sharing ``m`` keys stay within the verifier's cost budget,
    ``expected_key_pairs(n, m) <= max_verifications_per_image n`` (the same
    budget that bounds the zone), and whose false merges, that many pairs times
    ``false_accept``, fit in ``false_merge_room`` (what the false-merge budget
    leaves after the direct part and the zone; None: no such condition).
    """
    m = max(1, floor)
    while (expected_key_pairs(n, m, tail) > max_verifications_per_image * max(n, 1)
           or (false_merge_room is not None
               and expected_key_pairs(n, m, tail) * false_accept > max(false_merge_room, 0.0))):
        if tail.rate(m) == 0.0:
            break
        m += 1
    return m
