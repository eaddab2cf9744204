"""make_union_of_subspaces: the points lie where the generator says."""

import numpy as np
import pytest

from subspacelab.datasets import make_union_of_subspaces


def _principal_cosines(U, V):
    return np.linalg.svd(U.T @ V, compute_uv=False)


def test_noiseless_flat_points_lie_on_their_subspace():
    X, y, bases = make_union_of_subspaces([5, 7, 9], (2, 3, 1), 6, noise=0.0, random_state=0)
    assert X.shape == (21, 6) and y.tolist() == [0] * 5 + [1] * 7 + [2] * 9 and bases.shape == (3, 6, 3)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0)
    for k, dk in enumerate((2, 3, 1)):
        U = bases[k, :, :dk]
        np.testing.assert_allclose(U.T @ U, np.eye(dk), atol=1e-12)
        assert np.all(bases[k, :, dk:] == 0)
        Xk = X[y == k]
        np.testing.assert_allclose(Xk - Xk @ U @ U.T, 0.0, atol=1e-12)


def test_warp_bends_the_pieces_and_noise_has_its_scale():
    X0, y, b = make_union_of_subspaces(200, (2, 2), 10, noise=0.0, random_state=1)
    Xw, _, _ = make_union_of_subspaces(200, (2, 2), 10, noise=0.0, warp=1.0, random_state=1)
    np.testing.assert_allclose(np.linalg.norm(Xw, axis=1), 1.0)
    U = b[0, :, :2]
    residual = np.linalg.norm(Xw[y == 0] - Xw[y == 0] @ U @ U.T, axis=1)
    assert residual.mean() > 0.1  # no longer flat
    Xn, _, _ = make_union_of_subspaces(200, (2, 2), 10, noise=0.1, random_state=1)
    assert np.std(Xn - X0) == pytest.approx(0.1, rel=0.05)


def test_overlap_shrinks_principal_angles():
    cos = []
    for rho in (0.0, 0.9):
        _, _, b = make_union_of_subspaces(5, (3, 3), 30, overlap=rho, random_state=2)
        cos.append(_principal_cosines(b[0], b[1]).max())
    assert cos[1] > cos[0] and cos[1] > 0.8


def test_reproducible_and_shuffled():
    a = make_union_of_subspaces(10, (2, 2), 4, shuffle=True, random_state=3)
    b = make_union_of_subspaces(10, (2, 2), 4, shuffle=True, random_state=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.sort(a[1]).tolist() == [0] * 10 + [1] * 10 and a[1].tolist() != np.sort(a[1]).tolist()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"subspace_dims": (4,), "ambient_dim": 3}, "ambient_dim"),
        ({"subspace_dims": ()}, "at least one"),
        ({"subspace_dims": (0,)}, "subspace_dims"),
        ({"n_samples_per_subspace": [3, 4], "subspace_dims": (1,)}, "entries"),
        ({"overlap": 1.0}, "overlap"),
        ({"noise": -1.0}, "noise"),
        ({"warp": -0.5}, "warp"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_union_of_subspaces(**kwargs)
