"""Hot loops of subspacelab, one public function per kernel module.

Each function accepts arrays of any array-API library and returns its result in the caller's
namespace and device; see :mod:`subspacelab.kernels._dispatch` for how an implementation
(generic array-API, Numba CPU, CUDA) is chosen.
"""

from ._dispatch import available_backends, kernel_backend
from .masked_normal_eq import masked_normal_eq
from .residual import sampled_residual
from .ell_matvec import ell_matvec
from .levenberg_marquardt import LMResult, levenberg_marquardt
from .sinkhorn import SinkhornResult, sinkhorn
from .sketch import countsketch
from .soft_threshold import soft_threshold
from .weighted_logdet import WeightedLogdetResult, weighted_logdet

__all__ = [
    "LMResult",
    "SinkhornResult",
    "WeightedLogdetResult",
    "available_backends",
    "countsketch",
    "ell_matvec",
    "kernel_backend",
    "levenberg_marquardt",
    "masked_normal_eq",
    "sampled_residual",
    "sinkhorn",
    "soft_threshold",
    "weighted_logdet",
]
