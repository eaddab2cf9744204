"""Pixel-mask (inpainting) operator, the measurement model of CoPaint and a CG test bed."""

from __future__ import annotations

from .._backend import get_namespace
from ._base import LinearOperator

__all__ = ["Inpainting", "inpainting_mask"]


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


def inpainting_mask(kind, shape, n_samples=None, *, random_state=None):
    """Inpainting masks (1 = revealed, 0 = hidden) as NumPy float arrays.

    Parameters
    ----------
    kind : {"box", "half", "strokes"}
        ``"box"``: the centre square (the middle half of each side) hidden; ``"half"``: the
        right half hidden (CoPaint's ``half``: left half revealed); ``"strokes"``: two random
        polylines of three segments each, ``max(1, min(H, W) // 8)`` pixels thick, hidden
        (a simple free-form mask, drawn per sample).
    shape : (H, W)
    n_samples : int, optional
        With None one ``(H, W)`` mask; else ``(n_samples, H, W)``.
    random_state : int, Generator or None
        For ``"strokes"``.

    Examples
    --------
    >>> from subspacelab.operators import inpainting_mask
    >>> inpainting_mask("box", (4, 4))
    array([[1., 1., 1., 1.],
           [1., 0., 0., 1.],
           [1., 0., 0., 1.],
           [1., 1., 1., 1.]])
    """
    import numpy as np

    from .._backend import check_random_state
    from .._validation import check_param

    check_param("kind", kind, "option", options=("box", "half", "strokes"))
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape}")
    h, w = (check_param("shape", int(s), "int", low=2) for s in shape)
    count = 1 if n_samples is None else check_param("n_samples", n_samples, "int", low=1)
    rng = check_random_state(random_state)
    out = np.ones((count, h, w))
    if kind == "box":
        out[:, h // 4 : h - h // 4, w // 4 : w - w // 4] = 0
    elif kind == "half":
        out[:, :, w // 2 :] = 0
    else:
        width = max(1, min(h, w) // 8)
        yy, xx = np.mgrid[:h, :w]
        hi = np.array([h - 1, w - 1], dtype=float)
        for m in out:
            for _ in range(2):
                p = rng.uniform([0, 0], hi)
                for _ in range(3):
                    q = np.clip(p + rng.normal(scale=min(h, w) / 3, size=2), 0, hi)
                    d = q - p
                    t = np.clip(((yy - p[0]) * d[0] + (xx - p[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
                    m[np.hypot(yy - (p[0] + t * d[0]), xx - (p[1] + t * d[1])) <= width / 2] = 0
                    p = q
    return out[0] if n_samples is None else out
