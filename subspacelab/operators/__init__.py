"""Linear operators with forward and adjoint (MRI, CT, masks) and the conjugate-gradient solver.

Every operator follows :class:`LinearOperator`: ``forward``, ``adjoint``, ``normal``
(:math:`A^H A`), ``shape``, ``opnorm()``, composition ``A @ B`` and scaling ``c * A``; it works
in the namespace and on the device of the arrays it was built from, batched over leading axes.
"""

from ._base import Identity, LinearOperator, inner, opnorm
from .cg import CGResult, conjugate_gradient
from .ct import ParallelBeamCT, limited_angle_angles, sparse_view_angles
from .inpainting import Inpainting, inpainting_mask
from .mri import MultiCoilMRI, SamplingMask, birdcage_maps, fft2c, ifft2c, sampling_mask

__all__ = [
    "CGResult",
    "Identity",
    "Inpainting",
    "LinearOperator",
    "MultiCoilMRI",
    "ParallelBeamCT",
    "SamplingMask",
    "birdcage_maps",
    "conjugate_gradient",
    "fft2c",
    "ifft2c",
    "inner",
    "inpainting_mask",
    "limited_angle_angles",
    "opnorm",
    "sampling_mask",
    "sparse_view_angles",
]
