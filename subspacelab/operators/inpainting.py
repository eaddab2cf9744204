"""Pixel-mask (inpainting) operator, the measurement model of CoPaint and a CG test bed."""

from __future__ import annotations

from .._backend import get_namespace
from ._base import LinearOperator

__all__ = ["Inpainting"]


class Inpainting(LinearOperator):
    r"""Diagonal mask operator :math:`A x = m \odot x` with :math:`m \in \{0, 1\}`.

    It is self-adjoint and idempotent (:math:`A^H A = A`). The measurement keeps the image
    shape: unrevealed pixels read 0.

    Parameters
    ----------
    mask : array
        0/1 (or boolean) array of the event shape, e.g. ``(H, W)`` or ``(C, H, W)``.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import Inpainting
    >>> A = Inpainting(np.array([[1.0, 0.0], [0.0, 1.0]]))
    >>> A.forward(np.full((2, 2), 3.0))
    array([[3., 0.],
           [0., 3.]])
    """

    def __init__(self, mask):
        xp, dev = get_namespace(mask, names=["mask"])
        if mask.ndim < 1:
            raise ValueError("mask must have at least one dimension")
        if xp.isdtype(mask.dtype, "bool"):
            mask = xp.astype(mask, xp.float64)
        if not xp.isdtype(mask.dtype, "real floating") or not bool(xp.all((mask == 0) | (mask == 1))):
            raise ValueError("mask must contain only 0 and 1")
        self.xp, self.device = xp, dev
        self.mask = mask
        self.in_shape = self.out_shape = tuple(mask.shape)

    def _m(self, x):
        xp = self.xp
        real = xp.float32 if x.dtype in (xp.float32, xp.complex64) else xp.float64
        return self.mask if self.mask.dtype == real else xp.astype(self.mask, real)

    def _forward(self, x):
        return self._m(x) * x

    _adjoint = _forward
    _normal = _forward
