"""MovieLens-100k read from the file shipped inside the ``recbole`` wheel."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import scipy.sparse as sp
from sklearn.utils import Bunch

__all__ = ["load_movielens_100k", "movielens_100k_path"]

_INSTALL = "pip install --no-deps recbole==1.2.1"


def movielens_100k_path():
    """Path of ``ml-100k.inter`` inside the installed recbole package (recbole is not imported).

    Raises
    ------
    ImportError
        When recbole is not installed.
    FileNotFoundError
        When the installed recbole does not ship the file.

    Examples
    --------
    >>> import os
    >>> from subspacelab.datasets import movielens_100k_path
    >>> os.path.basename(movielens_100k_path())
    'ml-100k.inter'
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"load_movielens_100k reads the copy shipped in the recbole wheel: {_INSTALL}")
    path = os.path.join(spec.submodule_search_locations[0], "dataset_example", "ml-100k", "ml-100k.inter")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing; install the wheel that ships it: {_INSTALL}")
    return path


def load_movielens_100k():
    """Load the MovieLens-100k ratings (943 users x 1682 movies, 100 000 ratings in 1..5).

    The file is read from the ``recbole`` wheel (install with ``pip install --no-deps
    recbole==1.2.1``; recbole itself is never imported, so torch and its other dependencies
    are not needed). The MovieLens terms do not allow redistribution, which is why the data is
    not shipped with subspacelab.

    Returns
    -------
    Bunch
        ``X``: ``scipy.sparse.csr_array`` (943, 1682) whose stored entries are the ratings
        (the completion convention of :class:`~subspacelab.AltMinCompleter`: unstored entries
        are missing); ``users``, ``items``, ``ratings``, ``timestamps``: the 100 000 ratings as
        arrays (user and item codes 0-based, in the order of the original ids);
        ``user_ids``, ``item_ids``: the original ids of each code.

    Examples
    --------
    >>> from subspacelab.datasets import load_movielens_100k
    >>> ml = load_movielens_100k()  # doctest: +SKIP
    >>> ml.X.shape, ml.X.nnz  # doctest: +SKIP
    ((943, 1682), 100000)
    """
    path = movielens_100k_path()
    raw = np.loadtxt(path, delimiter="\t", skiprows=1, dtype=np.int64)
    user_ids, users = np.unique(raw[:, 0], return_inverse=True)
    item_ids, items = np.unique(raw[:, 1], return_inverse=True)
    ratings = raw[:, 2].astype(np.float64)
    X = sp.csr_array((ratings, (users, items)), shape=(user_ids.size, item_ids.size))
    return Bunch(
        X=X, users=users, items=items, ratings=ratings, timestamps=raw[:, 3],
        user_ids=user_ids, item_ids=item_ids,
        DESCR="MovieLens-100k (GroupLens), read from the recbole 1.2.1 wheel's dataset_example.",
    )
