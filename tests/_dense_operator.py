"""A real matrix as a :class:`~subspacelab.operators.LinearOperator` (a test helper shared by the
DDS tests)."""

from subspacelab.operators import LinearOperator


class Dense(LinearOperator):
    """The operator x -> M x on rows (forward ``x @ M.T``, adjoint ``y @ M``)."""

    def __init__(self, M, xp=None, device=None):
        self.M = M
        self.out_shape, self.in_shape = (M.shape[0],), (M.shape[1],)
        self.complex_input = False
        self.xp, self.device = xp, device

    def _forward(self, x):
        return x @ self.M.T

    def _adjoint(self, y):
        return y @ self.M
