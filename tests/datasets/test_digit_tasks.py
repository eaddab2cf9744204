import doctest

import numpy as np
import pytest

from subspacelab.datasets import DIGIT_TASKS, DataNotAvailableError, make_digit_tasks
from subspacelab.datasets import _digit_tasks


def _tasks(*args, **kwargs):
    try:
        return make_digit_tasks(*args, **kwargs)
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))


@pytest.mark.data
def test_digit_tasks_splits_and_transforms():
    data = _tasks(random_state=0)
    assert [t.name for t in data.tasks] == list(DIGIT_TASKS)
    assert data.pretrain.X_train.shape == (2000, 784)
    by_name = {t.name: t for t in data.tasks}
    for t in data.tasks:
        n = {s: len(t[f"X_{s}"]) for s in ("train", "unlabelled", "val", "test")}
        total = sum(n.values())
        assert total == (1797 if t.name == "digits8x8" else 3000)
        assert n["train"] == round(0.6 * total) and n["unlabelled"] == round(0.15 * total)
        assert t.X_train.shape[1] == 784 and 0.0 <= t.X_test.min() and t.X_test.max() <= 1.0
        assert len(t.y_train) == n["train"] and set(np.unique(t.y_test)) == set(range(10))
    # every MNIST task transforms the same images: invert(x) = 1 - x, rotate90 keeps the pixel multiset
    np.testing.assert_allclose(by_name["invert"].X_test, 1.0 - by_name["flipud"].X_test.reshape(-1, 28, 28)[:, ::-1].reshape(-1, 784))
    np.testing.assert_array_equal(np.sort(by_name["rotate90"].X_train, axis=1), np.sort(by_name["shuffle_blocks"].X_train, axis=1))
    np.testing.assert_array_equal(by_name["rotate90"].y_test, by_name["invert"].y_test)
    # the pre-training images are none of the task images
    pre = {r.tobytes() for r in data.pretrain.X_train}
    assert not any(r.tobytes() in pre for r in by_name["flipud"].X_test.reshape(-1, 28, 28)[:, ::-1].reshape(-1, 784))
    # the 8x8 digits are repeated 3x3 and padded by 2 pixels
    img = by_name["digits8x8"].X_train[0].reshape(28, 28)
    assert np.all(img[:2] == 0) and np.all(img[:, -2:] == 0)
    np.testing.assert_array_equal(img[2:26, 2:26], np.kron(img[2:26:3, 2:26:3], np.ones((3, 3))))


@pytest.mark.data
def test_digit_tasks_subset_and_seed():
    a = _tasks(["digits8x8", "invert"], n_pretrain=500, random_state=1)
    b = _tasks(["digits8x8", "invert"], n_pretrain=500, random_state=1)
    assert [t.name for t in a.tasks] == ["digits8x8", "invert"]
    np.testing.assert_array_equal(a.tasks[1].X_train, b.tasks[1].X_train)
    c = _tasks(["invert"], n_pretrain=500, random_state=2)
    assert not np.array_equal(a.tasks[1].X_train, c.tasks[0].X_train)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"tasks": "invert"}, TypeError, "sequence of task names"),
        ({"tasks": []}, ValueError, "at least one"),
        ({"tasks": ["rotate45"]}, ValueError, "unknown task"),
        ({"tasks": ["invert", "invert"]}, ValueError, "repeat"),
        ({"n_pretrain": 50}, ValueError, "n_pretrain"),
        ({"n_pretrain": 2000.0}, ValueError, "n_pretrain"),
    ],
)
def test_digit_tasks_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_digit_tasks(**kwargs)


@pytest.mark.data
def test_digit_tasks_docstring_example():
    _tasks(["invert"])  # skips when the data package is absent
    result = doctest.testmod(_digit_tasks)
    assert result.failed == 0 and result.attempted > 0
