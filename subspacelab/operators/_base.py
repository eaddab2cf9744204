"""The linear-operator protocol: forward, adjoint, normal, composition, scaling, power iteration.

An operator maps arrays of shape ``(*batch, *in_shape)`` to ``(*batch, *out_shape)``; the
leading batch axes are free, so one operator applies to a stack of images or slices at once.
Every operator works in the namespace and on the device of the arrays it was built from.
"""

from __future__ import annotations

import math
import numbers

from .._backend import as_float, check_random_state, get_namespace, move_to

__all__ = ["Identity", "LinearOperator", "inner", "opnorm"]


def inner(a, b, xp, event_ndim):
    """Inner products ``<a, b> = sum conj(a) * b`` over the last ``event_ndim`` axes.

    Returns an array of shape ``a.shape[:-event_ndim]`` (complex for complex input).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import inner
    >>> inner(np.ones((2, 3)), np.arange(6.0).reshape(2, 3), np, 1)
    array([ 3., 12.])
    >>> inner(np.array([1j, 1.0]), np.array([1j, 1.0]), np, 1)  # conjugates its first argument
    np.complex128(2+0j)
    """
    batch = a.shape[: a.ndim - event_ndim]
    a2 = xp.reshape(a, (*batch, -1))
    b2 = xp.reshape(b, (*batch, -1))
    return xp.vecdot(a2, b2, axis=-1)


class LinearOperator:
    """A linear map with its adjoint.

    Subclasses set ``in_shape``, ``out_shape``, ``complex_input`` (whether complex input is
    accepted), ``xp`` and ``device`` and implement ``_forward`` and ``_adjoint``; they may
    override ``_normal`` with a cheaper Gram product.

    Operators compose with ``@`` (``A @ B`` applies ``B`` first) and scale with ``c * A``;
    ``A.H`` is the adjoint operator.

    Attributes
    ----------
    in_shape, out_shape : tuple of int
        Trailing (event) shapes of the input and output.
    shape : tuple of int
        ``(prod(out_shape), prod(in_shape))``, the size of the equivalent matrix.
    complex_input : bool
        Whether the operator accepts complex input. Real operators (CT) reject it.

    Examples
    --------
    A diagonal operator needs only its shapes, ``_forward`` and ``_adjoint``:

    >>> import numpy as np
    >>> from subspacelab.operators import LinearOperator, opnorm
    >>> class Diagonal(LinearOperator):
    ...     def __init__(self, d):
    ...         self.d = d
    ...         self.in_shape = self.out_shape = d.shape
    ...     def _forward(self, x):
    ...         return self.d * x
    ...     def _adjoint(self, y):
    ...         return np.conj(self.d) * y
    >>> A = Diagonal(np.array([1.0, -3.0, 2.0]))
    >>> A.forward(np.ones(3)), A.shape
    (array([ 1., -3.,  2.]), (3, 3))
    >>> (2 * A).H.forward(np.ones(3))
    array([ 2., -6.,  4.])
    >>> round(opnorm(A), 6)
    3.0
    """

    in_shape: tuple = ()
    out_shape: tuple = ()
    complex_input: bool = True
    xp = None
    device = None

    @property
    def shape(self):
        return (math.prod(self.out_shape), math.prod(self.in_shape))

    def forward(self, x):
        """Apply the operator: ``A x``."""
        self._check(x, self.in_shape, "x")
        return self._forward(x)

    def adjoint(self, y):
        """Apply the adjoint: ``A^H y``."""
        self._check(y, self.out_shape, "y")
        return self._adjoint(y)

    def normal(self, x):
        """Apply the Gram (normal) operator ``A^H A x``."""
        self._check(x, self.in_shape, "x")
        return self._normal(x)

    __call__ = forward

    def _normal(self, x):
        return self._adjoint(self._forward(x))

    def _check(self, x, shape, name):
        xp, dev = get_namespace(x, names=[name])
        if self.xp is not None and (xp is not self.xp or (self.device is not None and dev != self.device)):
            raise TypeError(
                f"{name} must be an array of the operator's namespace {self.xp.__name__!r} on device "
                f"{self.device!r}; got {xp.__name__!r} on {dev!r} (move it with subspacelab._backend.move_to)"
            )
        nd = len(shape)
        if x.ndim < nd or tuple(x.shape[x.ndim - nd :]) != tuple(shape):
            raise ValueError(f"{name} must have trailing shape {tuple(shape)}, got shape {tuple(x.shape)}")
        if xp.isdtype(x.dtype, "complex floating"):
            if not self.complex_input:
                raise TypeError(f"{type(self).__name__} is a real operator; {name} must be real, got {x.dtype}")
        elif not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"{name} must have a floating dtype, got {x.dtype}")

    @property
    def H(self):
        """The adjoint operator."""
        return _Adjoint(self)

    def __matmul__(self, other):
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return _Composed(self, other)

    def __mul__(self, c):
        if not isinstance(c, numbers.Number) or isinstance(c, bool):
            return NotImplemented
        return _Scaled(self, c)

    __rmul__ = __mul__

    def opnorm(self, n_iter=100, tol=1e-8, random_state=0, dtype=None):
        """Operator norm ``||A||_2`` by power iteration on ``A^H A``; see :func:`opnorm`."""
        return opnorm(self, n_iter=n_iter, tol=tol, random_state=random_state, dtype=dtype)


class _Adjoint(LinearOperator):
    def __init__(self, op):
        self.op = op
        self.in_shape, self.out_shape = op.out_shape, op.in_shape
        self.complex_input, self.xp, self.device = op.complex_input, op.xp, op.device

    def _forward(self, x):
        return self.op._adjoint(x)

    def _adjoint(self, y):
        return self.op._forward(y)

    @property
    def H(self):
        return self.op


class _Composed(LinearOperator):
    def __init__(self, outer, inner_op):
        if tuple(outer.in_shape) != tuple(inner_op.out_shape):
            raise ValueError(
                f"cannot compose: the left operator takes shape {tuple(outer.in_shape)} but the right "
                f"one returns {tuple(inner_op.out_shape)}"
            )
        self.outer, self.inner = outer, inner_op
        self.in_shape, self.out_shape = inner_op.in_shape, outer.out_shape
        self.complex_input = inner_op.complex_input
        self.xp = inner_op.xp if inner_op.xp is not None else outer.xp
        self.device = inner_op.device if inner_op.device is not None else outer.device

    def _forward(self, x):
        return self.outer._forward(self.inner._forward(x))

    def _adjoint(self, y):
        return self.inner._adjoint(self.outer._adjoint(y))


class _Scaled(LinearOperator):
    def __init__(self, op, c):
        self.op, self.c = op, c
        self.in_shape, self.out_shape = op.in_shape, op.out_shape
        self.complex_input, self.xp, self.device = op.complex_input, op.xp, op.device
        if isinstance(c, complex) and not op.complex_input:
            raise TypeError("a real operator cannot be scaled by a complex number")

    def _forward(self, x):
        return self.c * self.op._forward(x)

    def _adjoint(self, y):
        c = self.c.conjugate() if isinstance(self.c, complex) else self.c
        return c * self.op._adjoint(y)

    def _normal(self, x):
        return (abs(self.c) ** 2) * self.op._normal(x)


class Identity(LinearOperator):
    """The identity on arrays of trailing shape ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Event shape.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import Identity
    >>> Identity((2, 3)).forward(np.ones((2, 3))).sum()
    np.float64(6.0)
    """

    def __init__(self, shape):
        self.in_shape = self.out_shape = tuple(int(s) for s in shape)

    def _forward(self, x):
        return x

    def _adjoint(self, y):
        return y


def opnorm(op, n_iter=100, tol=1e-8, random_state=0, dtype=None):
    r"""Spectral norm :math:`\|A\|_2 = \sqrt{\lambda_{\max}(A^H A)}` by power iteration.

    Parameters
    ----------
    op : LinearOperator
    n_iter : int
        Maximum number of power iterations.
    tol : float
        Stop when the relative change of the estimate is below ``tol``.
    random_state : int, Generator or None
        Seed of the starting vector (drawn with NumPy, moved to the operator's device).
    dtype : dtype, optional
        Dtype of the starting vector (default: float64, or complex128 for complex operators
        where available).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.operators import Inpainting, opnorm
    >>> round(opnorm(3.0 * Inpainting(np.array([1.0, 0.0, 1.0]))), 6)
    3.0
    """
    import numpy as np

    rng = check_random_state(random_state)
    xp = op.xp
    if xp is None:
        import array_api_compat.numpy as xp
    v = rng.standard_normal(op.in_shape)
    if op.complex_input:
        v = v + 1j * rng.standard_normal(op.in_shape)
    v = move_to(np.asarray(v), xp, op.device)
    if dtype is not None:
        v = xp.astype(v, dtype)
    nd = len(op.in_shape)
    est = 0.0
    for _ in range(int(n_iter)):
        nrm = as_float(xp.sqrt(xp.real(inner(v, v, xp, nd))))
        if nrm == 0.0:
            return 0.0
        v = v / nrm
        w = op.normal(v)
        new = as_float(xp.real(inner(v, w, xp, nd)))
        v = w
        if abs(new - est) <= tol * abs(new):
            est = new
            break
        est = new
    return math.sqrt(max(est, 0.0))
