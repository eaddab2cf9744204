"""Hot loops of subspacelab, one public function per kernel module.

Each function accepts arrays of any array-API library and returns its result in the caller's
namespace and device; see :mod:`subspacelab.kernels._dispatch` for how an implementation
(generic array-API, Numba CPU, CUDA) is chosen.
"""

from ._dispatch import available_backends, kernel_backend
from .sinkhorn import SinkhornResult, sinkhorn
from .soft_threshold import soft_threshold
from .weighted_logdet import WeightedLogdetResult, weighted_logdet

__all__ = [
    "SinkhornResult",
    "WeightedLogdetResult",
    "available_backends",
    "kernel_backend",
    "sinkhorn",
    "soft_threshold",
    "weighted_logdet",
]
