"""Loaders for packaged real data and generators of synthetic data."""

from ._completion import make_low_rank_matrix_completion, oversampling_to_probability
from ._movielens import load_movielens_100k, movielens_100k_path

__all__ = [
    "load_movielens_100k",
    "make_low_rank_matrix_completion",
    "movielens_100k_path",
    "oversampling_to_probability",
]
