import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from hypothesis import strategies as st
from PIL import Image

from imgdedup.pipeline.hashing.dct import dct2_lowfreq, dct_matrix
from imgdedup.pipeline.hashing.dihedral import DIHEDRAL_NAMES, dct_stack, spatial_stack, spatial_variants

T = Image.Transpose
# The PIL transform each slot stands for.
PIL_FORMS = [(), (T.ROTATE_90,), (T.ROTATE_180,), (T.ROTATE_270,), (T.FLIP_LEFT_RIGHT,),
             (T.FLIP_LEFT_RIGHT, T.ROTATE_90), (T.FLIP_LEFT_RIGHT, T.ROTATE_180),
             (T.FLIP_LEFT_RIGHT, T.ROTATE_270)]


def test_slots_are_the_pil_transforms_they_name():
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)  # not square: catches swapped axes
    forms = spatial_variants(pixels)
    assert len(forms) == len(DIHEDRAL_NAMES) == 8
    for slot, ops in enumerate(PIL_FORMS):
        image = Image.fromarray(pixels)
        for op in ops:
            image = image.transpose(op)
        np.testing.assert_array_equal(forms[slot], np.asarray(image), err_msg=DIHEDRAL_NAMES[slot])


def test_the_eight_forms_of_a_generic_plane_are_distinct():
    plane = np.arange(16.0).reshape(1, 4, 4)
    forms = spatial_stack(plane).reshape(8, -1)
    assert len({f.tobytes() for f in forms}) == 8


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([8, 16, 32]).flatmap(
    lambda n: arrays(np.float64, (2, n, n), elements=st.floats(0, 255))),
    st.sampled_from([None, "ortho"]))
def test_dct_of_each_form_is_the_form_of_the_dct(planes, norm):
    k = min(8, planes.shape[-1])
    from_block = dct_stack(dct2_lowfreq(planes, k, norm))
    from_pixels = dct2_lowfreq(spatial_stack(planes), k, norm)
    np.testing.assert_allclose(from_block, from_pixels, atol=1e-6 * max(1.0, np.abs(from_pixels).max()))


def test_dct_matrix_matches_scipy_dct():
    from scipy.fft import dct
    x = np.random.default_rng(4).normal(size=(32,))
    np.testing.assert_allclose(dct_matrix(32, "ortho") @ x, dct(x, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(dct_matrix(32, None) @ x, dct(x), atol=1e-12)
    with pytest.raises(ValueError):
        dct_matrix(8, "forward")
