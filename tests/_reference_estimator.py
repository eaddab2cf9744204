"""A minimal array-API estimator built only from subspacelab's shared estimator plumbing.

It exists so that tests/test_common.py proves the plumbing (validate_input, the same-namespace
guard, fitted attributes on the input's device) passes scikit-learn's array-API checks on its
own, independently of any one method.
"""

from sklearn.base import BaseEstimator, TransformerMixin

from subspacelab._backend import check_same_namespace
from subspacelab._validation import check_param, validate_input


class ReferenceSubspaceProjector(TransformerMixin, BaseEstimator):
    """Project onto the top ``n_components`` principal directions (eigh of the covariance)."""

    def __init__(self, n_components=2):
        self.n_components = n_components

    def fit(self, X, y=None):
        X, xp, _ = validate_input(self, X, reset=True)
        k = check_param("n_components", self.n_components, "int", low=1, high=X.shape[1])
        self.mean_ = xp.mean(X, axis=0)
        Xc = X - self.mean_
        _, vecs = xp.linalg.eigh(Xc.T @ Xc)
        self.components_ = xp.flip(vecs[:, -k:], axis=1).T
        return self

    def transform(self, X):
        check_same_namespace(X, self, attribute="components_", method="transform")
        X, _, _ = validate_input(self, X, reset=False)
        return (X - self.mean_) @ self.components_.T

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
