"""clustering_accuracy: Hungarian matching of clusters to classes."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.metrics import clustering_accuracy

LABELS = st.lists(st.integers(0, 4), min_size=1, max_size=30)


@given(y=LABELS, data=st.data())
def test_invariant_to_relabelling(y, data):
    perm = data.draw(st.permutations(range(5)))
    y = np.array(y)
    pred = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(y), max_size=len(y))))
    relabelled = np.array(perm)[pred]
    assert clustering_accuracy(y, relabelled) == pytest.approx(clustering_accuracy(y, pred))
    assert clustering_accuracy(y, np.array(perm)[y]) == 1.0


@given(y=LABELS, data=st.data())
def test_bounds_and_brute_force(y, data):
    import itertools

    y = np.array(y)
    pred = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(y), max_size=len(y))))
    acc = clustering_accuracy(y, pred)
    best = 0
    for perm in itertools.permutations(range(5), 4):  # every injective map of 4 clusters to 5 classes
        best = max(best, int(np.sum(np.array(perm)[pred] == y)))
    assert acc == pytest.approx(best / len(y))
    assert 1.0 / len(y) <= acc + 1e-12 and acc <= 1.0


def test_known_values_and_types():
    assert clustering_accuracy(["a", "a", "b", "b"], [1, 1, 0, 0]) == 1.0
    # more clusters than classes: the extra cluster counts as wrong
    assert clustering_accuracy([0, 0, 0, 0], [0, 0, 1, 2]) == 0.5


def test_backend_arrays(backend):
    y = backend.asarray(np.array([0, 0, 1, 1, 2, 2]))
    p = backend.asarray(np.array([1, 1, 0, 0, 2, 0]))
    assert clustering_accuracy(y, p) == pytest.approx(5 / 6)


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        clustering_accuracy([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="1-dimensional"):
        clustering_accuracy([[0, 1]], [[0, 1]])
    with pytest.raises(ValueError, match="empty"):
        clustering_accuracy([], [])
    with pytest.raises(ValueError, match="NaN"):
        clustering_accuracy([0.0, np.nan], [0, 1])
