import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imgdedup.pipeline.hashing import bits as bits_mod
from imgdedup.pipeline.hashing.bits import dihedral_hamming, from_hex, hamming, pack_bits, paired_distances, to_hex


def _packed(n, nbytes):
    return arrays(np.uint8, (n, nbytes))


def test_pack_bits_puts_first_bit_in_the_top_of_the_first_byte():
    bits = np.zeros(16, bool)
    bits[0] = bits[15] = True
    assert to_hex(pack_bits(bits)) == "8001"


def test_hex_round_trip_single_and_rows():
    rows = np.array([[0x00, 0xff, 0x1a], [0xba, 0x8c, 0x84]], np.uint8)
    assert to_hex(rows) == ["00ff1a", "ba8c84"]
    assert to_hex(rows[1]) == "ba8c84"
    np.testing.assert_array_equal(from_hex(to_hex(rows)), rows)
    np.testing.assert_array_equal(from_hex("ba8c84"), rows[1])


def test_from_hex_refuses_ragged_rows():
    with pytest.raises(ValueError):
        from_hex(["00ff", "00"])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6).flatmap(lambda nb: st.tuples(_packed(7, nb), _packed(5, nb))))
def test_hamming_equals_unpacked_bit_count(ab):
    a, b = ab
    expected = (np.unpackbits(a)[None].reshape(len(a), 1, -1)
                != np.unpackbits(b).reshape(1, len(b), -1)).sum(axis=2)
    d = hamming(a, b)
    assert d.dtype == np.int32
    np.testing.assert_array_equal(d, expected)


def test_hamming_is_chunked_without_changing_results(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (50, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    whole = hamming(a, b)
    monkeypatch.setattr(bits_mod, "_CHUNK_BYTES", 32 * 40 * 3)  # three rows per chunk
    np.testing.assert_array_equal(hamming(a, b), whole)


def test_dihedral_hamming_is_min_over_variants_on_either_side():
    rng = np.random.default_rng(1)
    plain = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    sets = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    expected = np.min([hamming(plain, sets[:, v]) for v in range(8)], axis=0)
    np.testing.assert_array_equal(dihedral_hamming(plain, sets), expected)
    np.testing.assert_array_equal(dihedral_hamming(sets, plain), expected.T)
    with pytest.raises(ValueError):
        dihedral_hamming(plain, plain)


@settings(max_examples=50, deadline=None)
@given(_packed(7 * 3, 4), _packed(7, 4))
def test_paired_distances_is_the_smallest_over_each_rows_forms(flat_forms, targets):
    forms = flat_forms.reshape(7, 3, 4)
    expected = [min(int(hamming(forms[i, f][None], targets[i][None])[0, 0]) for f in range(3)) for i in range(7)]
    assert paired_distances(forms, targets).tolist() == expected
    # One row of forms against every target.
    assert paired_distances(forms[:1], targets).tolist() == dihedral_hamming(forms[:1], targets)[0].tolist()
    assert paired_distances(forms[:0], targets[:0]).shape == (0,)
