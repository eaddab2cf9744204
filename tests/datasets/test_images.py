import numpy as np
import pytest

from subspacelab.datasets import DataNotAvailableError, load_digits, load_mnist_5k
from subspacelab.datasets._images import package_data_dir


def test_digits_shapes_and_scale():
    X, y = load_digits()
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    images, _ = load_digits(return_images=True)
    np.testing.assert_array_equal(images.reshape(1797, 64), X)


@pytest.mark.data
def test_mnist_5k_balanced():
    try:
        X, y = load_mnist_5k()
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))
    assert X.shape == (5000, 784) and X.dtype == np.float64
    assert 0.0 <= X.min() and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    images, _ = load_mnist_5k(return_images=True)
    assert images.shape == (5000, 28, 28)


def test_missing_package_is_a_clear_error():
    with pytest.raises(DataNotAvailableError, match="no_such_package_xyz"):
        package_data_dir("no_such_package_xyz", "data", install_hint="pip install it")
