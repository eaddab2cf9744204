"""Loaders for packaged real data and generators of synthetic data.

Loaders read files shipped inside installed wheels (never downloading anything) and raise
:class:`DataNotAvailableError`, an ImportError naming the package to install, when it is absent.
"""

from ._images import DataNotAvailableError, load_digits, load_mnist_5k
from ._medical import (
    load_mni152_t1,
    load_mri_slice,
    load_skimage_image,
    make_mixture_of_low_rank_gaussians,
    resize_image,
    shepp_logan_phantom,
)

__all__ = [
    "DataNotAvailableError",
    "load_digits",
    "load_mni152_t1",
    "load_mnist_5k",
    "load_mri_slice",
    "load_skimage_image",
    "make_mixture_of_low_rank_gaussians",
    "resize_image",
    "shepp_logan_phantom",
]
