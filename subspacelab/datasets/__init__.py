"""Loaders for packaged real data and generators of synthetic data.

Loaders read files shipped inside installed wheels (never downloading anything) and raise
:class:`DataNotAvailableError`, an ImportError naming the package to install, when it is absent.
"""

from ._completion import make_low_rank_matrix_completion, oversampling_to_probability
from ._dask_completion import make_dask_low_rank_completion
from ._digit_tasks import DIGIT_TASKS, make_digit_tasks
from ._harmonization import (
    SCANNERS,
    SHIFT_KINDS,
    DomainShift,
    load_mni152_axial_slices,
    make_spin_echo_phantoms,
)
from ._images import DataNotAvailableError, load_digits, load_mnist_5k
from ._medical import (
    load_mni152_t1,
    load_mri_slice,
    load_skimage_image,
    make_mixture_of_low_rank_gaussians,
    resize_image,
    shepp_logan_phantom,
)
from ._movielens import load_movielens_100k, movielens_100k_path
from ._subspaces import make_union_of_subspaces
from .fabry_perot import (
    IMSPOC_PROTOTYPES,
    load_earthlib_spectra,
    load_imspoc,
    make_fabry_perot_acquisition,
    simulate_interferograms,
)

__all__ = [
    "DIGIT_TASKS",
    "IMSPOC_PROTOTYPES",
    "SCANNERS",
    "SHIFT_KINDS",
    "DataNotAvailableError",
    "DomainShift",
    "load_digits",
    "load_earthlib_spectra",
    "load_imspoc",
    "load_mni152_axial_slices",
    "load_mni152_t1",
    "load_mnist_5k",
    "load_movielens_100k",
    "load_mri_slice",
    "load_skimage_image",
    "make_dask_low_rank_completion",
    "make_digit_tasks",
    "make_fabry_perot_acquisition",
    "make_low_rank_matrix_completion",
    "make_mixture_of_low_rank_gaussians",
    "make_spin_echo_phantoms",
    "make_union_of_subspaces",
    "movielens_100k_path",
    "oversampling_to_probability",
    "resize_image",
    "shepp_logan_phantom",
    "simulate_interferograms",
]
