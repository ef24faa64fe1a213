"""Initial centres for Hamming K-means: k-means++ and k-means|| in Hamming space.

Both work on a sample of the fingerprints (the caller draws it; the K-means
drivers draw ``cluster.seed_sample_size`` rows), so seeding costs the same for
10^4 and 10^9 fingerprints. Distances are Hamming distances between packed-bit
rows; candidates are drawn with probability proportional to the squared
distance to the nearest centre chosen so far (D² weighting).

When the sample holds fewer than ``k`` distinct fingerprints the surplus
centres repeat chosen ones; such centres stay empty under assignment (ties go
to the lowest index) and callers treat them as empty classes.
"""
from __future__ import annotations

import numpy as np

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.hamming import as_words, dense_distances, word_columns

SEEDING_METHODS = ("k-means++", "k-means||")


def _weighted_pick(cumulative: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Indices drawn with probability proportional to the increments of ``cumulative``."""
    picks = np.searchsorted(cumulative, rng.random(size) * cumulative[-1], side="right")
    return np.minimum(picks, len(cumulative) - 1)


def _fill(sample: np.ndarray, chosen: list[int], k: int) -> np.ndarray:
    """``k`` centres from the chosen sample rows, cycling through them when fewer than ``k``."""
    chosen = np.asarray(chosen, dtype=np.int64)
    return sample[chosen[np.arange(k) % len(chosen)]].copy()


def kmeans_plusplus(sample: np.ndarray, k: int, rng: np.random.Generator,
                    weights: np.ndarray | None = None, n_trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding in Hamming space.

    Each new centre is the best of ``n_trials`` D²-weighted candidates (the one
    that most lowers the weighted sum of squared distances), as in
    scikit-learn's ``_kmeans_plusplus``.

    Parameters
    ----------
    sample : ndarray of uint8, shape (m, nbytes), m >= 1
    k : int
        Number of centres, >= 1.
    rng : numpy.random.Generator
    weights : ndarray of float, shape (m,), optional
        Multiplicity of each sample row (k-means|| passes its candidates' cluster sizes).
    n_trials : int, optional
        Candidates per pick; ``2 + ln k`` (scikit-learn's choice) when omitted.

    Returns
    -------
    ndarray of uint8, shape (k, nbytes)
        Rows of ``sample``.

    References
    ----------
    Arthur and Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
    """
    words = as_words(sample)
    columns = word_columns(words)
    m = len(words)
    weights = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    n_trials = n_trials or 2 + int(np.log(k))
    chosen = [int(_weighted_pick(np.cumsum(weights), rng, 1)[0])]
    closest = dense_distances(words[chosen][:, None], columns)[0]
    while len(chosen) < k:
        cumulative = np.cumsum(weights * closest.astype(np.float64) ** 2)
        if cumulative[-1] <= 0:
            break  # every sample row already coincides with a centre
        candidates = _weighted_pick(cumulative, rng, n_trials)
        trial = np.minimum(dense_distances(words[candidates][:, None], columns), closest[None, :])
        best = int(np.argmin((trial.astype(np.float64) ** 2) @ weights))
        chosen.append(int(candidates[best]))
        closest = trial[best]
    return _fill(sample, chosen, k)


def kmeans_parallel(sample: np.ndarray, k: int, rng: np.random.Generator, *,
                    rounds: int = 5, oversampling: float = 2.0) -> np.ndarray:
    """k-means|| seeding in Hamming space: a few oversampling rounds, then weighted k-means++.

    Each round keeps every sample row independently with probability
    ``oversampling * k * D² / sum(D²)``, so about ``oversampling * k`` candidates
    join per round in one vectorised pass instead of ``k`` sequential picks.
    The candidates, weighted by how many sample rows they are nearest to, are
    reduced to ``k`` centres by :func:`kmeans_plusplus` with ``2 + 4 ln k`` trials per pick.

    Parameters
    ----------
    sample : ndarray of uint8, shape (m, nbytes), m >= 1
    k : int
    rng : numpy.random.Generator
    rounds : int
        Oversampling rounds (the paper finds 5 enough).
    oversampling : float
        Expected candidates per round, in units of ``k``.

    Returns
    -------
    ndarray of uint8, shape (k, nbytes)

    References
    ----------
    Bahmani et al., "Scalable k-means++", VLDB 2012.
    """
    m = len(sample)
    candidates = [int(rng.integers(m))]
    # Nearest candidate of every sample row, kept up to date round by round.
    nearest, closest = assign(sample, sample[candidates])
    for _ in range(rounds):
        squared = closest.astype(np.float64) ** 2
        cost = squared.sum()
        if cost <= 0:
            break
        picked = np.flatnonzero(rng.random(m) < oversampling * k * squared / cost)
        if picked.size == 0:
            continue
        to_label, to_picked = assign(sample, sample[picked])
        closer = to_picked < closest
        nearest[closer] = to_label[closer] + len(candidates)
        closest[closer] = to_picked[closer]
        candidates.extend(picked.tolist())
    weights = np.bincount(nearest, minlength=len(candidates)).astype(np.float64)
    # The reduction runs on ~rounds * oversampling * k rows, not the sample, so it
    # affords 4x the usual trials per pick; on 1024 planted groups that takes the
    # groups left without a centre from 1-3 to 0-1 (the last picks are the ones a
    # few D² draws miss, and each missed group scatters over many classes).
    return kmeans_plusplus(sample[candidates], k, rng, weights=weights, n_trials=2 + int(4 * np.log(k)))


def seed_centres(sample: np.ndarray, k: int, rng: np.random.Generator, method: str) -> np.ndarray:
    """``k`` initial centres from ``sample`` by ``method`` (one of :data:`SEEDING_METHODS`)."""
    if method == "k-means++":
        return kmeans_plusplus(sample, k, rng)
    if method == "k-means||":
        return kmeans_parallel(sample, k, rng)
    raise ValueError(f"unknown seeding method {method!r}; known: {SEEDING_METHODS}")
