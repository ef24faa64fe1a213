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
        return min(1.0, 10.0 ** (self.intercept + self.slope * t))


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
    # p(t) <= 2 rate / (n - 1)  <=>  t <= (log10(2 rate / (n - 1)) - intercept) / slope
    bound = (math.log10(2 * max_false_merge_rate / (n - 1)) - tail.intercept) / tail.slope
    t = min(ceiling, math.floor(bound + 1e-9))
    return max(t, -1)
