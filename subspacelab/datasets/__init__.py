"""Loaders for packaged real data and generators of synthetic data.

Loaders read files shipped inside installed wheels (never downloading anything) and raise
:class:`DataNotAvailableError`, an ImportError naming the package to install, when it is absent.
"""

from ._digit_tasks import DIGIT_TASKS, make_digit_tasks
from ._images import DataNotAvailableError, load_digits, load_mnist_5k

__all__ = ["DIGIT_TASKS", "DataNotAvailableError", "load_digits", "load_mnist_5k", "make_digit_tasks"]
