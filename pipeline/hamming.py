"""Compiled Hamming distances between packed fingerprints viewed as 64-bit words.

Fingerprints are compared as ``uint64`` words (4 per 256-bit fingerprint). The
side with many rows is kept word-major (:func:`word_columns`: one word of every
row contiguous), so the inner loop over rows is a straight run of XOR and
popcount that LLVM turns into vector instructions (AVX-512 ``vpopcntq`` where the
CPU has it). The loops are compiled by Numba: a NumPy formulation pays one pass
over memory and one temporary per word and per form, and was 10-40x slower on
the same work (``scripts/bench_index.py``, ``scripts/bench_kmeans.py``).
Queries carry ``F`` forms (1 for a plain hash, 8 for its dihedral set) and a
query's distance to a row is the smallest over its forms.

Words are padded to a multiple of :data:`LANES` with zero words on both sides,
which leaves distances unchanged and lets every width use the 4-word loop.
Distances are uint16: fingerprints up to 65 534 bits. K-means assignment
(:mod:`imgdedup.pipeline.cluster.assign`) uses :func:`nearest_centres`; the cluster
index's compiled loops are here too (:func:`scan_into`,
:func:`candidate_ranges_into`, driven by :mod:`imgdedup.pipeline.index.kernels`;
:func:`substrings_into`, :func:`probe_into` and :func:`bucket_pairs_into`, mih
mode's, driven by :mod:`imgdedup.pipeline.index.substrings`).
"""
from __future__ import annotations

import numpy as np

from imgdedup.pipeline.compile_cache import compile_cache_enabled

# Before Numba is imported: it reads NUMBA_CACHE_DIR once, at import.
_CACHE = compile_cache_enabled(__file__)

from llvmlite import ir  # noqa: E402
from numba import njit, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402

#: Words compared per pass of the inner loop; rows are padded to a multiple of it.
LANES = 4
#: Rows compared per block: the block's per-row distances stay in L1 cache.
BLOCK = 1024
#: Larger than any distance (the fill of a running minimum).
FAR = np.uint16(0xFFFF)


def as_words(packed: np.ndarray) -> np.ndarray:
    """View packed fingerprints of any leading shape as 64-bit words.

    Parameters
    ----------
    packed : ndarray of uint8, shape (..., nbytes)

    Returns
    -------
    ndarray of uint64, shape (..., w)
        ``w = LANES * ceil(nbytes / (8 * LANES))``: zero-padded to whole groups of
        words (padding bits are equal on both sides, so distances are unchanged).
        Word byte order is irrelevant to popcounts of XORs.
    """
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.shape[-1] * 8 >= int(FAR):
        raise ValueError(f"fingerprints of {packed.shape[-1] * 8} bits: distances are kept in 16 bits")
    pad = -packed.shape[-1] % (8 * LANES)
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def word_columns(words: np.ndarray) -> np.ndarray:
    """Stored rows word-major, the layout the scans read.

    Parameters
    ----------
    words : ndarray of uint64, shape (n, w)
        From :func:`as_words`.

    Returns
    -------
    ndarray of uint64, shape (w, n), C-contiguous
    """
    return np.ascontiguousarray(np.asarray(words, dtype=np.uint64).T)


@intrinsic
def _popcount(typingctx, word):
    """LLVM's ``ctpop`` on one 64-bit word (a vector popcount once the loop is vectorised)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):
        function = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(function, args)

    return signature, codegen


@njit(nogil=True, fastmath=True, boundscheck=False, cache=_CACHE)
def block_distances(columns, start, stop, forms, low, high, acc):
    """Smallest and largest distance over ``forms`` of rows ``start:stop``, into ``low``/``high[:stop-start]``."""
    n = stop - start
    n_forms, words = forms.shape
    for i in range(n):
        low[i] = FAR
        high[i] = 0
    for f in range(n_forms):
        for group in range(0, words, LANES):
            # Slices of the block (not row offsets into whole columns) let the loops vectorise.
            c0, c1 = columns[group, start:stop], columns[group + 1, start:stop]
            c2, c3 = columns[group + 2, start:stop], columns[group + 3, start:stop]
            q0, q1, q2, q3 = forms[f, group], forms[f, group + 1], forms[f, group + 2], forms[f, group + 3]
            if group == 0:
                for i in range(n):
                    acc[i] = np.uint16(_popcount(c0[i] ^ q0) + _popcount(c1[i] ^ q1)
                                       + _popcount(c2[i] ^ q2) + _popcount(c3[i] ^ q3))
            else:
                for i in range(n):
                    acc[i] += np.uint16(_popcount(c0[i] ^ q0) + _popcount(c1[i] ^ q1)
                                        + _popcount(c2[i] ^ q2) + _popcount(c3[i] ^ q3))
        for i in range(n):
            low[i] = min(low[i], acc[i])
            high[i] = max(high[i], acc[i])


@njit(nogil=True, cache=_CACHE)
def _dense(queries, columns, low, high):
    """Fill ``low``/``high`` (m, n) with the distances of every query to every row."""
    n = columns.shape[1]
    acc = np.empty(BLOCK, np.uint16)
    for q in range(queries.shape[0]):
        for start in range(0, n, BLOCK):
            stop = min(n, start + BLOCK)
            block_distances(columns, start, stop, queries[q], low[q, start:stop], high[q, start:stop], acc)


@njit(nogil=True, cache=_CACHE)
def _nearest(points, centre_columns, labels, distances):
    k = centre_columns.shape[1]
    low = np.empty(BLOCK, np.uint16)
    high = np.empty(BLOCK, np.uint16)
    acc = np.empty(BLOCK, np.uint16)
    for p in range(points.shape[0]):
        best, best_distance = 0, np.int64(1) << 62
        for start in range(0, k, BLOCK):
            stop = min(k, start + BLOCK)
            block_distances(centre_columns, start, stop, points[p:p + 1], low, high, acc)
            for c in range(stop - start):
                if low[c] < best_distance:  # strict: ties keep the lowest index
                    best, best_distance = start + c, np.int64(low[c])
        labels[p] = best
        distances[p] = best_distance


def _check_widths(query_words: int, columns: np.ndarray) -> None:
    """Refuse queries and rows of different widths (the compiled loops do not check bounds)."""
    if query_words != columns.shape[0]:
        raise ValueError(f"queries of {query_words} words against rows of {columns.shape[0]} words")


def nearest_centres(points: np.ndarray, centre_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every point.

    Parameters
    ----------
    points : ndarray of uint64, shape (n, w)
        From :func:`as_words`.
    centre_columns : ndarray of uint64, shape (w, k), k >= 1
        From :func:`word_columns`.

    Returns
    -------
    labels : ndarray of int32, shape (n,)
        Index of the nearest centre; ties go to the lowest index.
    distances : ndarray of int32, shape (n,)
        Hamming distance to that centre, in bits.
    """
    _check_widths(points.shape[-1], centre_columns)
    if centre_columns.shape[1] == 0:
        raise ValueError("no centres to assign to")
    labels, distances = np.empty(len(points), np.int32), np.empty(len(points), np.int32)
    if len(points):
        _nearest(np.ascontiguousarray(points, dtype=np.uint64), centre_columns, labels, distances)
    return labels, distances


def dense_distances(queries: np.ndarray, columns: np.ndarray, *, high: bool = False):
    """Distances from every query to every row, smallest (and largest) over forms.

    Parameters
    ----------
    queries : ndarray of uint64, shape (m, F, w)
    columns : ndarray of uint64, shape (w, n)
        Rows from :func:`word_columns`.
    high : bool
        Also return the largest distance over the forms.

    Returns
    -------
    low : ndarray of uint16, shape (m, n)
        ``min`` over the ``F`` forms of the Hamming distance in bits.
    high : ndarray of uint16, shape (m, n)
        ``max`` over the forms; only when ``high`` is true.
    """
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    _check_widths(queries.shape[-1], columns)
    m, n = queries.shape[0], columns.shape[1]
    low, largest = np.empty((m, n), np.uint16), np.empty((m, n), np.uint16)
    if m and n:
        _dense(queries, columns, low, largest)
    return (low, largest) if high else low


# The index's compiled loops (pipeline.index.kernels drives them). They live here, beside the
# loop they inline: Numba checks a cached function against its own file only.


@njit(nogil=True, cache=_CACHE)
def scan_into(queries, columns, query, lo, hi, t, p, start, found_q, found_r, found_d):
    """Matches within ``t`` over the ranges ``lo[p]:hi[p]`` of ``query[p]``, from range ``p`` at row ``start``.

    Fills ``found_*`` until fewer than one block of slots is left and returns
    ``(count, p, start)``: where to resume (``p == len(query)`` when done). The
    buffers never grow inside the loop, which keeps the block loops vectorised.
    """
    low = np.empty(BLOCK, np.uint16)
    high = np.empty(BLOCK, np.uint16)
    acc = np.empty(BLOCK, np.uint16)
    count = 0
    while p < len(query):
        forms = queries[query[p]]
        while start < hi[p]:
            if len(found_q) - count < BLOCK:
                return count, p, start
            stop = min(hi[p], start + BLOCK)
            block_distances(columns, start, stop, forms, low, high, acc)
            nearest = FAR
            for i in range(stop - start):
                nearest = min(nearest, low[i])
            if nearest > t:  # most blocks of a scan far from its query
                start = stop
                continue
            for i in range(stop - start):
                # Written always, kept by advancing: no branch to mispredict.
                found_q[count] = query[p]
                found_r[count] = start + i
                found_d[count] = low[i]
                count += low[i] <= t
            start = stop
        p += 1
        if p < len(query):
            start = lo[p]
    return count, p, start


@njit(nogil=True, cache=_CACHE)
def candidate_ranges_into(queries, centre_columns, radii, keys, offsets, stride, t, query, lo, hi):
    """Fill ``query``/``lo``/``hi`` (room for every query and class) and return how many ranges."""
    k = centre_columns.shape[1]
    low = np.empty(k, np.uint16)
    high = np.empty(k, np.uint16)
    acc = np.empty(k, np.uint16)
    count = 0
    for q in range(queries.shape[0]):
        block_distances(centre_columns, 0, k, queries[q], low, high, acc)
        for c in range(k):
            if offsets[c + 1] == offsets[c] or np.int64(low[c]) - radii[c] > t:
                continue
            members = keys[offsets[c]:offsets[c + 1]]
            base = c * stride
            first = offsets[c] + np.searchsorted(members, base + max(np.int64(low[c]) - t, 0), side="left")
            last = offsets[c] + np.searchsorted(members, base + min(np.int64(high[c]) + t, stride - 1), side="right")
            if count and query[count - 1] == q and hi[count - 1] == first:
                hi[count - 1] = last  # continues the previous range (whole neighbouring classes): one range
            else:
                query[count], lo[count], hi[count] = q, first, last
                count += 1
    return count


# Multi-index hashing (pipeline.index.substrings drives these): rows bucketed by b-bit substrings.


@njit(nogil=True, cache=_CACHE, inline="always")
def _substring(row, offset, mask):
    """Bits ``offset .. offset + b`` of one row of words (``mask`` has the low b bits set, b <= 32)."""
    word, shift = offset >> 6, offset & 63
    value = row[word] >> np.uint64(shift)
    if shift and word + 1 < len(row):
        value |= row[word + 1] << np.uint64(64 - shift)
    return np.int64(value & mask)


@njit(nogil=True, cache=_CACHE)
def substrings_into(words, offsets, bits, out):
    """``out[s, i]``: the ``bits``-bit substring of row ``i`` that starts at bit ``offsets[s]``."""
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    for i in range(words.shape[0]):
        for s in range(len(offsets)):
            out[s, i] = _substring(words[i], offsets[s], mask)


@njit(nogil=True, cache=_CACHE)
def probe_into(queries, rows, starts, order, offsets, bits, radius, t, first, stamp, seen,
               found_q, found_r, found_d):
    """Matches within ``t`` among the rows sharing a substring with queries ``first..``.

    Every form probes each substring's bucket and those of the substrings
    within ``radius`` bits of it. Each candidate is verified once per query (``seen[row]`` holds
    the stamp ``stamp + q`` of the last query that verified it) against all the
    query's forms. Returns ``(count, q)``: the matches written and the first
    query not done (``len(queries)`` when all are); a query whose matches do not
    fit is left whole for the next call, which must use stamps above
    ``stamp + len(queries)``.
    """
    n_forms, words = queries.shape[1], queries.shape[2]
    mask = (np.uint64(1) << np.uint64(bits)) - np.uint64(1)
    probes = np.empty(1 + bits + bits * (bits - 1) // 2, np.int64)
    count = 0
    for q in range(first, queries.shape[0]):
        mark = stamp + q
        begun = count
        for f in range(n_forms):
            for s in range(len(offsets)):
                value = _substring(queries[q, f], offsets[s], mask)
                probes[0] = value
                n_probes = 1
                if radius >= 1:
                    for j in range(bits):
                        near = value ^ (np.int64(1) << j)
                        probes[n_probes] = near
                        n_probes += 1
                        if radius >= 2:
                            for k in range(j + 1, bits):
                                probes[n_probes] = near ^ (np.int64(1) << k)
                                n_probes += 1
                for p in range(n_probes):
                    for slot in range(starts[s, probes[p]], starts[s, probes[p] + 1]):
                        row = order[s, slot]
                        if seen[row] == mark:
                            continue
                        seen[row] = mark
                        nearest = np.int64(1) << 62
                        for g in range(n_forms):
                            distance = np.int64(0)
                            for w in range(words):
                                distance += _popcount(queries[q, g, w] ^ rows[row, w])
                            nearest = min(nearest, distance)
                        if nearest <= t:
                            if count == len(found_q):
                                return begun, q
                            found_q[count] = q
                            found_r[count] = row
                            found_d[count] = nearest
                            count += 1
    return count, queries.shape[0]


@njit(nogil=True, cache=_CACHE)
def bucket_pairs_into(entries, values, rows, starts, t, first, found_entry, found_row):
    """Rows within ``t`` of each entry among the rows of the bucket it probes (the join's inner loop).

    ``entries`` (E, w) are query forms as words and ``values`` (E,) the bucket
    each probes (the bucket's rows are ``rows[starts[v]:starts[v+1]]``); with
    values (nearly) ascending the rows are read in one pass. Returns ``(count, e)``: the pairs
    written and the first entry not done (``len(entries)`` when all are); an
    entry is started only when its whole bucket fits in what is left.
    """
    count = 0
    for e in range(first, len(entries)):
        lo, hi = starts[values[e]], starts[values[e] + 1]
        if count + hi - lo > len(found_entry):
            return count, e
        for slot in range(lo, hi):
            distance = np.int64(0)
            for w in range(entries.shape[1]):
                distance += _popcount(entries[e, w] ^ rows[slot, w])
            found_entry[count] = e
            found_row[count] = slot
            count += distance <= t
    return count, len(entries)
