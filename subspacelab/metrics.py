"""Evaluation metrics, backend-agnostic (arrays of any array-API library are accepted)."""

from __future__ import annotations

import numpy as np

from ._backend import is_array_api_obj, to_numpy

__all__ = ["clustering_accuracy"]


def _labels_1d(y, name):
    if not is_array_api_obj(y):
        y = np.asarray(y)
    y = np.asarray(to_numpy(y))
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {y.shape}")
    if y.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} must not contain NaN or infinity")
    return y


def clustering_accuracy(y_true, y_pred):
    r"""Clustering accuracy: the best one-to-one matching of clusters to classes.

    .. math::

        \mathrm{ACC} = \max_{\sigma} \frac1n \sum_{i=1}^n \mathbb 1\{y_i = \sigma(\hat y_i)\},

    where :math:`\sigma` ranges over the injective maps from predicted clusters to true classes
    (clusters left unmatched, when there are more clusters than classes, count as errors). The
    maximisation is a linear assignment problem on the contingency table, solved exactly by the
    Hungarian method (:func:`scipy.optimize.linear_sum_assignment`). Labels may be any hashable
    values (integers, strings); they are compared only for equality.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Ground-truth classes.
    y_pred : array-like of shape (n_samples,)
        Predicted cluster labels.

    Returns
    -------
    accuracy : float
        In [0, 1]; 1 exactly when the partitions coincide up to a relabelling.

    Examples
    --------
    >>> from subspacelab.metrics import clustering_accuracy
    >>> clustering_accuracy([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1])
    1.0
    >>> clustering_accuracy([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1])
    0.8333333333333334
    """
    from scipy.optimize import linear_sum_assignment

    y_true = _labels_1d(y_true, "y_true")
    y_pred = _labels_1d(y_pred, "y_pred")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {y_true.shape[0]} and {y_pred.shape[0]}"
        )
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum()) / y_true.shape[0]
