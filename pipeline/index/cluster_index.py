"""The cluster index: class centres, radii and members stored by class.

Server side, no key: it holds fingerprints in one space (keyed tokens, or raw
hashes inside a key-holding job) and answers "which stored fingerprints lie
within Hamming distance t of this one".

Layout (:class:`imgdedup.pipeline.index.layout.Layout`). Members are stored contiguously
sorted by class and, inside a class, by their distance to the class centre, so a
class is a slice and the members at a given distance from the centre are a
sub-slice. Members added since the last layout sit in a short tail that is
scanned in full; the layout is rebuilt when the tail grows past a fraction of
the index.

Search modes.

``exact``
    By the triangle inequality ``d(q, m) >= |d(q, c) - d(m, c)|`` for any member
    ``m`` of class ``c``, so only members with ``d(m, c)`` in
    ``[d(q, c) - t, d(q, c) + t]`` can match; a class whose radius is below
    ``d(q, c) - t`` is skipped whole. The answer equals a brute-force scan.
``paper``
    The nearest class only, and only when it lies within ``centre_threshold``
    (Chen et al. §5); it misses duplicates held by neighbouring classes, which is
    what the paper's figure 8 measures. A dihedral query searches the nearest
    class of each of its forms.
``mih``
    Multi-index hashing (:mod:`imgdedup.pipeline.index.substrings`): rows that
    share a ``substring_bits``-bit substring with a form of the query (within
    ``probe_radius`` bits) are verified exactly; classes play no part. It never
    returns a row beyond ``t`` and finds every row within ``m * (probe_radius +
    1) - 1`` bits of a form (pigeonhole), so a plan with that bound at or above
    ``t`` (:func:`imgdedup.pipeline.search_plan.choose_plan`) gives the exact
    answer; with a smaller one it may miss rows between the bound and ``t``.
    Its cost grows with the rows in the probed buckets, not with the whole index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgdedup.pipeline.cluster.kmeans import ClusterStats, majority, member_stats
from imgdedup.pipeline.hamming import as_words, dense_distances, word_columns
from imgdedup.pipeline.index.layout import Layout, Tail

MODES = ("exact", "paper", "mih")


@dataclass(frozen=True)
class Matches:
    """Stored fingerprints within the threshold of one query, nearest first.

    Attributes
    ----------
    ids : ndarray, shape (r,)
        Ids of the matches, as given to :meth:`ClusterIndex.build` (its dtype when
        a 1-D array was given) or :meth:`ClusterIndex.add`.
    distances : ndarray of int32, shape (r,)
        Hamming distance in bits (smallest over the query's dihedral forms).
    """

    ids: np.ndarray
    distances: np.ndarray


@dataclass(frozen=True)
class Drift:
    """How far the index has moved from the clustering it was built from.

    Attributes
    ----------
    centre_shift : ndarray of int32, shape (k_built,)
        Hamming distance, in bits, from each built centre to its current centre.
    new_classes : int
        Classes opened by :meth:`ClusterIndex.add` since the build.
    added : int
        Members added since the build.
    """

    centre_shift: np.ndarray
    new_classes: int
    added: int

    @property
    def max_shift(self) -> int:
        """Largest centre movement in bits (0 for an index built with no classes)."""
        return int(self.centre_shift.max()) if len(self.centre_shift) else 0


class ClusterIndex:
    """Fingerprints grouped by class, searchable within a Hamming distance.

    Build with :meth:`build` (or :meth:`empty`, :meth:`from_cluster_columns`);
    the constructor is internal.

    Attributes
    ----------
    centres : ndarray of uint8, shape (k, nbytes)
        Current class centres: as built, and the bitwise majority of the members
        (ties keep the previous bit) for a class that gained members.
    radii : ndarray of int32, shape (k,)
        Largest member distance to its current centre, in bits (0 for an empty class).
    sizes : ndarray of int64, shape (k,)
        Members per class.
    """

    # The tail is re-laid into the sorted layout once it exceeds this share of the index.
    _TAIL_FRACTION = 1 / 16
    _TAIL_MIN = 1024

    def __init__(self, nbytes: int, centres: np.ndarray, bit_counts: np.ndarray, sizes: np.ndarray):
        self.nbytes = nbytes
        # Centres and bit counts live in buffers that double as classes open (an upload far from every
        # centre opens one): copying all k rows per new class cost ~0.3 ms per add at k = 10^3, and
        # ms-long page faults on the fresh allocations. ``centres`` is a view of the first k rows.
        self._centre_buffer, self._bit_count_buffer = centres, bit_counts
        self.centres = centres
        self._bit_counts = bit_counts
        self.sizes = sizes
        self._built_centres = centres.copy()
        self._added = 0
        self._tail = Tail(nbytes)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, fingerprints: np.ndarray, ids, centres: np.ndarray, labels: np.ndarray) -> "ClusterIndex":
        """Index fingerprints already assigned to classes.

        Parameters
        ----------
        fingerprints : ndarray of uint8, shape (n, nbytes)
        ids : ndarray or sequence, shape (n,)
            One id per fingerprint (str, int or any object); a 1-D array is kept as is.
        centres : ndarray of uint8, shape (k, nbytes)
            The clustering's centres; kept as given (members need not be nearest to
            their own centre: radii are measured, so exact search stays exact).
        labels : ndarray of int, shape (n,)
            Class of each fingerprint, in ``0..k-1``.

        Raises
        ------
        ValueError
            Shapes disagree or a label is out of range.
        """
        fingerprints = np.asarray(fingerprints, dtype=np.uint8)
        centres = np.asarray(centres, dtype=np.uint8).reshape(-1, fingerprints.shape[1])
        labels = np.asarray(labels, dtype=np.int64)
        ids = _id_array(ids)
        n, nbytes = fingerprints.shape
        k = centres.shape[0]
        if labels.shape != (n,) or ids.shape != (n,):
            raise ValueError(f"expected {n} labels and ids, got {labels.shape} and {ids.shape}")
        if n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must lie in 0..{k - 1}")
        stats = member_stats(fingerprints, labels, k)
        index = cls(nbytes, centres.copy(), stats.bit_counts, stats.sizes)
        index._lay_out(fingerprints, ids, labels)
        return index

    @classmethod
    def empty(cls, nbytes: int) -> "ClusterIndex":
        """An index with no class and no member; the first :meth:`add` opens class 0."""
        return cls.build(np.zeros((0, nbytes), np.uint8), [], np.zeros((0, nbytes), np.uint8), np.zeros(0, np.int64))

    def _lay_out(self, fingerprints: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> None:
        """Sort members against the current centres; the tail is emptied."""
        self._layout = Layout(fingerprints, ids, labels, self.centres)
        self.radii = self._layout.radii.copy()
        self._tail = Tail(self.nbytes)

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._layout) + len(self._tail)

    def route(self, queries: np.ndarray) -> np.ndarray:
        """Distances from each query to every current centre.

        Parameters
        ----------
        queries : ndarray of uint8, shape (m, nbytes) or (m, F, nbytes)
            Plain hashes, or F forms per query (the dihedral set).

        Returns
        -------
        ndarray of int32, shape (m, k)
            Hamming distance in bits, smallest over the query's forms.
        """
        return dense_distances(self._query_words(queries), self._centre_columns()).astype(np.int32)

    def search(self, queries: np.ndarray, t: int, *, mode: str = "exact", centre_threshold: int | None = None,
               batch: int = 1024, threads: int = 1, substring_bits: int = 16, probe_radius: int = 1) -> list[Matches]:
        """Every stored fingerprint within Hamming distance ``t`` of each query.

        Parameters
        ----------
        queries : ndarray of uint8, shape (m, nbytes) or (m, F, nbytes)
            Plain hashes, or F forms per query (the 8 dihedral forms); a stored
            fingerprint matches when any form lies within ``t``.
        t : int
            Largest distance that is a match, in bits.
        mode : {"exact", "paper", "mih"}
            See the module docstring.
        centre_threshold : int, optional
            N, paper mode only: the nearest class is searched only when its
            centre lies within N bits of the query. None searches it always.
            With F forms per query, the nearest class of each form is searched
            (with every form).
        batch : int
            Queries processed together (bounds the temporaries).
        threads : int
            Threads the scans of each batch are shared among (exact and paper mode).
        substring_bits, probe_radius : int
            ``mih`` mode only: the substrings' width ``b`` (rows are bucketed by
            each of their ``8 * nbytes // b`` substrings) and how many bits a
            probed substring may differ from a query form's (the plan:
            ``IndexConfig.mih_plan`` in the config).

        Returns
        -------
        list of Matches, one per query, sorted by distance (ties in storage order).
        """
        query, ids, distance = self.search_flat(queries, t, mode=mode, centre_threshold=centre_threshold, batch=batch,
                                                 threads=threads, substring_bits=substring_bits,
                                                 probe_radius=probe_radius)
        order = np.argsort(query * (min(int(t), 8 * self.nbytes) + 1) + distance, kind="stable")
        query, ids, distance = query[order], ids[order], distance[order]
        bounds = np.searchsorted(query, np.arange(len(queries) + 1))
        return [Matches(ids[a:b], distance[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def search_flat(self, queries: np.ndarray, t: int, *, mode: str = "exact", centre_threshold: int | None = None,
                    batch: int = 1024, threads: int = 1, substring_bits: int = 16,
                    probe_radius: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search` as three flat arrays, for callers that handle many queries.

        The same matches, grouped by query but not sorted by distance: each
        query's come in storage order (class, distance to its centre, then the
        members added since the layout; in ``mih`` mode the layout's in the
        order its buckets found them), which spares a sort callers such as the
        near-duplicate join do not need.

        Returns
        -------
        query : ndarray of int64, shape (R,)
            Index of the query of each match, ascending.
        ids : ndarray, shape (R,)
            Id of the matched stored fingerprint.
        distances : ndarray of int32, shape (R,)
            Hamming distance in bits.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        words = self._query_words(queries)
        tail_words, tail_labels, tail_ids = as_words(self._tail.fingerprints), self._tail.labels, self._tail.ids
        parts = []
        for start in range(0, len(words), batch):
            block = words[start:start + batch]
            if mode != "paper":
                if mode == "exact":
                    query_index, row_index, distance = self._layout.scan_exact(block, t, threads)
                else:
                    query_index, row_index, distance = self._layout.substring_table(substring_bits).search(
                        block, t, probe_radius)
                tail_hit = self._scan_tail(block, tail_words, t, np.ones((len(block), len(tail_labels)), bool))
            else:
                query_index, row_index, distance, nearest = self._scan_nearest(block, t, centre_threshold, threads)
                same_class = (nearest[:, :, None] == tail_labels[None, None, :]).any(axis=1)
                tail_hit = self._scan_tail(block, tail_words, t, same_class)
            if len(tail_hit[0]):
                # Group the tail's matches with their query's, after the layout's.
                query_index = np.concatenate([query_index, tail_hit[0]])
                order = np.argsort(query_index, kind="stable")
                query_index = query_index[order]
                row_index = np.concatenate([row_index, tail_hit[1] + len(self._layout)])[order]
                distance = np.concatenate([distance, tail_hit[2]])[order]
            parts.append((query_index + start if start else query_index,
                          _ids_of(row_index, self._layout.ids, tail_ids), distance))
        if not parts:
            return np.zeros(0, np.int64), self._layout.ids[:0], np.zeros(0, np.int32)
        if len(parts) == 1:
            return parts[0]
        query, ids, distance = (np.concatenate(part) for part in zip(*parts))
        return query, ids, distance

    def _centre_columns(self) -> np.ndarray:
        """The current centres word-major, as the scans read them (they change as members are added)."""
        return word_columns(as_words(self.centres))

    def _query_words(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries, dtype=np.uint8)
        if queries.ndim == 2:
            queries = queries[:, None, :]
        if queries.ndim != 3 or queries.shape[2] != self.nbytes:
            raise ValueError(f"expected (m, {self.nbytes}) or (m, F, {self.nbytes}) queries, got {queries.shape}")
        return as_words(queries)

    def _scan_nearest(self, block: np.ndarray, t: int, centre_threshold: int | None, threads: int):
        if len(self.centres) == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, np.int32), np.full(block.shape[:2], -1)
        m, forms, words = block.shape
        per_form = dense_distances(block.reshape(m * forms, 1, words), self._centre_columns()).reshape(m, forms, -1)
        nearest = per_form.argmin(axis=2)
        if centre_threshold is not None:
            within = np.take_along_axis(per_form, nearest[..., None], axis=2)[..., 0] <= centre_threshold
            nearest = np.where(within, nearest, -1)
        pairs = np.unique(np.stack([np.repeat(np.arange(m), forms), nearest.ravel()], axis=1), axis=0)
        query, cls = pairs[(pairs[:, 1] >= 0) & (pairs[:, 1] < self._layout.n_classes)].T
        found = self._layout.scan_whole_classes(block, query, cls, t, threads)
        return (*found, nearest)

    @staticmethod
    def _scan_tail(block: np.ndarray, tail_words: np.ndarray, t: int, allowed: np.ndarray):
        if len(tail_words) == 0:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0, np.int32)
        low = dense_distances(block, word_columns(tail_words))
        query, row = np.nonzero((low <= t) & allowed)
        return query, row, low[query, row].astype(np.int32)

    # ------------------------------------------------------------------ updates
    def add(self, fingerprint: np.ndarray, id, *, centre_threshold: int) -> tuple[int, bool]:
        """Add one stored fingerprint: join the nearest class or open a new one.

        The fingerprint joins its nearest class when that centre lies within
        ``centre_threshold`` (N) bits; the class centre becomes the bitwise
        majority of its members and its radius is re-measured. Otherwise it opens
        a new class with itself as centre (also when the index has no class).

        Parameters
        ----------
        fingerprint : ndarray of uint8, shape (nbytes,)
        id : the fingerprint's id (returned by later searches)
        centre_threshold : int
            N, in bits.

        Returns
        -------
        cluster_id : int
        opened_new_class : bool
        """
        fingerprint = np.asarray(fingerprint, dtype=np.uint8).reshape(self.nbytes)
        bits = np.unpackbits(fingerprint).astype(np.int64)
        distances = self.route(fingerprint[None])[0]
        opened = len(distances) == 0 or int(distances.min()) > centre_threshold
        if opened:
            cls = len(self.centres)
            if cls == len(self._centre_buffer):
                self._centre_buffer = _doubled(self._centre_buffer)
                self._bit_count_buffer = _doubled(self._bit_count_buffer)
            self._centre_buffer[cls], self._bit_count_buffer[cls] = fingerprint, bits
            self.centres, self._bit_counts = self._centre_buffer[:cls + 1], self._bit_count_buffer[:cls + 1]
            self.sizes = np.append(self.sizes, 1)
            self.radii = np.append(self.radii, 0).astype(np.int32)
        else:
            cls = int(distances.argmin())
            self._bit_counts[cls] += bits
            self.sizes[cls] += 1
            stats = ClusterStats(self._bit_counts[cls:cls + 1], self.sizes[cls:cls + 1])
            self.centres[cls] = majority(stats, self.centres[cls:cls + 1])[0]
        self._tail.append(fingerprint, id, cls)
        self._added += 1
        if not opened:
            self.radii[cls] = self._measure_radius(cls)
        if len(self._tail) > max(self._TAIL_MIN, len(self._layout) * self._TAIL_FRACTION):
            self._relayout()
        return cls, opened

    def _measure_radius(self, cls: int) -> int:
        members = [self._layout.class_members(cls), self._tail.fingerprints[self._tail.labels == cls]]
        rows = word_columns(as_words(np.concatenate(members)))
        distances = dense_distances(as_words(self.centres[cls])[None, None], rows)
        return int(distances.max())

    def _relayout(self) -> None:
        ids, fingerprints, labels = self.members()
        self._lay_out(fingerprints, ids, labels)

    def drift(self) -> Drift:
        """How far centres moved and how many classes opened since the build."""
        built = len(self._built_centres)
        moved = np.bitwise_count(as_words(self._built_centres) ^ as_words(self.centres[:built]))
        return Drift(moved.sum(axis=1, dtype=np.int32), len(self.centres) - built, self._added)

    # ------------------------------------------------------------------ storage
    def members(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All members: ``(ids (n,) object, fingerprints (n, nbytes) uint8, labels (n,) int64)``."""
        layout, tail = self._layout, self._tail
        return (np.concatenate([layout.ids, tail.ids]), np.concatenate([layout.fingerprints, tail.fingerprints]),
                np.concatenate([layout.labels, tail.labels]))

    def to_cluster_columns(self) -> dict:
        """Columns of the store's ``clusters`` table (without ``version``).

        Returns
        -------
        dict
            ``cluster_id`` (k,) int32, ``centroid`` list of k ``bytes``,
            ``size`` (k,) int64, ``radius`` (k,) int16.
        """
        return {
            "cluster_id": np.arange(len(self.centres), dtype=np.int32),
            "centroid": [row.tobytes() for row in self.centres],
            "size": self.sizes.astype(np.int64),
            "radius": self.radii.astype(np.int16),
        }

    @classmethod
    def from_cluster_columns(cls, columns: dict, fingerprints: np.ndarray, ids, labels: np.ndarray) -> "ClusterIndex":
        """Rebuild from ``clusters`` table columns and the members' rows.

        Only ``cluster_id`` and ``centroid`` are read; sizes and radii are measured
        again from the members, so a stale row cannot make exact search inexact.

        Parameters
        ----------
        columns : mapping with ``cluster_id`` (k,) ints ``0..k-1`` in any order and
            ``centroid`` (k,) bytes of ``nbytes`` each
        fingerprints, ids, labels
            As in :meth:`build`; ``labels`` are cluster ids.
        """
        fingerprints = np.asarray(fingerprints, dtype=np.uint8)
        cluster_id = np.asarray(columns["cluster_id"], dtype=np.int64)
        if not np.array_equal(np.sort(cluster_id), np.arange(len(cluster_id))):
            raise ValueError("cluster ids must be 0..k-1")
        raw = b"".join(bytes(c) for c in columns["centroid"])
        centres = np.frombuffer(raw, dtype=np.uint8).reshape(len(cluster_id), fingerprints.shape[1])
        ordered = np.empty_like(centres)
        ordered[cluster_id] = centres
        return cls.build(fingerprints, ids, ordered, labels)


def _doubled(buffer: np.ndarray) -> np.ndarray:
    """``buffer`` (r, ...) copied into one of 2r rows (16 at least), the new rows zero."""
    grown = np.zeros((max(16, 2 * len(buffer)), *buffer.shape[1:]), buffer.dtype)
    grown[:len(buffer)] = buffer
    return grown


def _id_array(values) -> np.ndarray:
    """Ids as a 1-D array: a 1-D NumPy array as given, anything else as objects."""
    if isinstance(values, np.ndarray) and values.ndim == 1:
        return values
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _ids_of(row: np.ndarray, laid_out_ids: np.ndarray, tail_ids: np.ndarray) -> np.ndarray:
    """Ids of rows numbered through the layout, then the tail."""
    if len(tail_ids) == 0:
        return laid_out_ids[row]
    n = len(laid_out_ids)
    ids = np.empty(len(row), dtype=object)
    in_tail = row >= n
    ids[~in_tail] = laid_out_ids[row[~in_tail]]
    ids[in_tail] = tail_ids[row[in_tail] - n]
    return ids
