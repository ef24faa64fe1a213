import numpy as np
import pytest
from skimage.feature import local_binary_pattern as skimage_lbp

from imgdedup.pipeline.hashing.dihedral import spatial_variants
from imgdedup.pipeline.hashing.lbp import LBP_METHODS, dihedral_code_tables, local_binary_pattern, ring_bits


@pytest.mark.parametrize("method", LBP_METHODS)
def test_codes_equal_skimage_inside_the_border(method):
    planes = np.random.default_rng(6).integers(0, 256, (3, 24, 24)).astype(np.float32)
    ours = local_binary_pattern(planes, 1, 8, method)
    theirs = np.stack([skimage_lbp(p.astype(np.uint8), 8, 1, method) for p in planes])
    # skimage treats outside pixels as 0; we replicate the border, so compare the interior
    np.testing.assert_array_equal(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1])


def test_ring_point_order_is_counter_clockwise_from_the_right():
    plane = np.zeros((1, 3, 3), np.float32)
    plane[0, 1, 1] = 5   # centre
    plane[0, 1, 2] = 10  # right of centre: point 0
    plane[0, 0, 1] = 10  # above centre: point 2 (eq. 2: y = y0 - R sin)
    # point 1 (up-right) interpolates to 0.09·5 + 0.21·10 + 0.21·10 + 0.5·0 ≈ 4.6 < 5
    assert ring_bits(plane)[0, 1, 1] == 0b0000_0101


def test_flat_plane_sets_every_bit_despite_interpolation_rounding():
    assert (ring_bits(np.full((1, 8, 8), 77.7, np.float32)) == 255).all()


def test_code_tables_give_the_codes_of_each_turned_plane():
    planes = np.random.default_rng(7).normal(size=(2, 16, 16)).astype(np.float32)
    codes = ring_bits(planes)
    tables = dihedral_code_tables(8)
    for slot, turned in enumerate(spatial_variants(planes)):
        expected = ring_bits(np.ascontiguousarray(turned))
        relabelled = spatial_variants(tables[slot][codes])[slot]
        np.testing.assert_array_equal(relabelled, expected)


def test_riu2_plane_turns_with_the_picture():
    planes = np.random.default_rng(8).normal(size=(2, 16, 16)).astype(np.float32)
    plain = local_binary_pattern(planes, method="uniform")
    for turned_plane, turned_codes in zip(spatial_variants(planes), spatial_variants(plain)):
        np.testing.assert_array_equal(local_binary_pattern(np.ascontiguousarray(turned_plane), method="uniform"),
                                      turned_codes)


def test_dihedral_tables_need_a_ring_a_quarter_turn_maps_onto_itself():
    with pytest.raises(ValueError):
        dihedral_code_tables(6)
