"""boundary_mismatch: the inpainting seam measure."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.metrics import boundary_mismatch


def _box(h=6, w=7):
    m = np.ones((h, w))
    m[2:4, 2:5] = 0
    return m


def test_zero_for_the_reference_and_for_constant_shifts(backend, rng):
    ref = rng.random((3, 6, 7))
    m = _box()
    out = boundary_mismatch(backend.asarray(ref), backend.asarray(ref), backend.asarray(m))
    assert tuple(out.shape) == (3,)
    np.testing.assert_allclose(backend.to_numpy(out), 0.0, atol=1e-12)
    shifted = boundary_mismatch(backend.asarray(ref + 2.5), backend.asarray(ref), backend.asarray(m))
    np.testing.assert_allclose(backend.to_numpy(shifted), 0.0, atol=1e-6)


def test_seam_value_and_matches_loop(rng):
    ref = rng.random((6, 7))
    m = _box()
    est = ref + (1 - m) * 0.3  # a constant offset inside the box: a seam of 0.3 on every border pair
    assert float(boundary_mismatch(est, ref, m)) == pytest.approx(0.3)
    est = rng.random((6, 7))
    total, count = 0.0, 0
    for i in range(6):
        for j in range(7):
            for di, dj in ((0, 1), (1, 0)):
                k, l = i + di, j + dj
                if k < 6 and l < 7 and m[i, j] != m[k, l]:
                    total += abs((est[k, l] - est[i, j]) - (ref[k, l] - ref[i, j]))
                    count += 1
    assert count == 2 * (2 + 3)
    assert float(boundary_mismatch(est, ref, m)) == pytest.approx(total / count)


@given(st.floats(0.1, 5.0), st.integers(0, 3))
def test_scales_with_the_error(c, seed):
    rng = np.random.default_rng(seed)
    ref, est = rng.random((5, 5)), rng.random((5, 5))
    m = np.ones((5, 5))
    m[1:3, 1:4] = 0
    base = float(boundary_mismatch(est, ref, m))
    assert float(boundary_mismatch(ref + c * (est - ref), ref, m)) == pytest.approx(c * base)


def test_per_image_masks_and_bad_input(rng):
    ref = rng.random((2, 6, 7))
    masks = np.stack([_box(), np.flipud(_box())])
    out = boundary_mismatch(ref + (1 - masks), ref, masks)
    np.testing.assert_allclose(out, 1.0)
    with pytest.raises(ValueError, match="border"):
        boundary_mismatch(ref, ref, np.ones((6, 7)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        boundary_mismatch(ref, ref, np.full((6, 7), 0.5))
    with pytest.raises(ValueError, match="mask must have shape"):
        boundary_mismatch(ref, ref, np.ones((5, 7)))
    with pytest.raises(ValueError, match="one shape"):
        boundary_mismatch(ref, ref[:, :5], _box())
