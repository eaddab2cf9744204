"""Small parameter validator and shared input checks.

Estimators validate their constructor parameters in ``fit`` (never in ``__init__``) with
:func:`check_param`; functions of the library validate array arguments with
:func:`check_array`. Every error names the offending argument.
"""

from __future__ import annotations

import math
import numbers

import array_api_compat
import numpy as np

from ._backend import estimator_namespace, get_namespace, is_array_api_obj, supported_float_dtypes, to_numpy

__all__ = ["check_array", "check_finite", "check_param", "validate_input"]


def check_param(name, value, kind, *, low=None, high=None, closed="both", options=None, allow_none=False):
    """Validate one scalar or option parameter and return it.

    Parameters
    ----------
    name : str
        Parameter name used in the error message.
    value : object
        The value to check.
    kind : {"real", "int", "bool", "option", "str"}
        ``"real"`` accepts any real number (not bool), ``"int"`` an integral number (not bool),
        ``"option"`` one of ``options``.
    low, high : float, optional
        Interval bounds for numbers.
    closed : {"both", "left", "right", "neither"}
        Which bounds are included.
    options : collection, optional
        Allowed values for ``kind="option"``.
    allow_none : bool
        Whether None is accepted.
    """
    if value is None and allow_none:
        return value
    if kind == "option":
        if value not in options:
            raise ValueError(f"{name} must be one of {sorted(map(repr, options))}, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, (bool,)) and type(value).__name__ != "bool_":
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        return bool(value)
    if kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if kind == "int" and not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    lo_ok = low is None or (value >= low if closed in ("both", "left") else value > low)
    hi_ok = high is None or (value <= high if closed in ("both", "right") else value < high)
    if not (lo_ok and hi_ok):
        left = "[" if closed in ("both", "left") else "("
        right = "]" if closed in ("both", "right") else ")"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in {left}{lo}, {hi}{right}, got {value}")
    return value


def check_finite(x, name, xp):
    """Raise ValueError naming ``name`` when ``x`` holds NaN or infinity."""
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must not contain NaN or infinity")


def check_array(x, name, *, min_ndim=1, max_ndim=None, ndim=None, finite=True, allow_empty=False, floating=True):
    """Check an array argument of a library function and return ``(xp, device)``.

    Raises TypeError for non-arrays and non-floating dtypes (when ``floating``), ValueError for
    a wrong rank, empty arrays and non-finite values. The array is not converted: library
    functions work in the namespace and on the device of their inputs.
    """
    xp, dev = get_namespace(x, names=[name])
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {tuple(x.shape)}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(x.shape)}")
    if max_ndim is not None and x.ndim > max_ndim:
        raise ValueError(f"{name} must have at most {max_ndim} dimension(s), got shape {tuple(x.shape)}")
    if floating and not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype (float32 or float64), got {x.dtype}")
    if not allow_empty and any(s == 0 for s in x.shape):
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite:
        check_finite(x, name, xp)
    return xp, dev


def validate_input(estimator, X, *, reset, **kwargs):
    """Validate estimator input ``X`` and return ``(X, xp, device)``.

    The namespace follows scikit-learn's ``array_api_dispatch`` switch (NumPy when it is off);
    ``validate_data`` then checks X (rank, emptiness, NaN/inf unless ``ensure_all_finite`` says
    otherwise, sparse refusal, ...), converts it to a floating dtype of that namespace (float32
    stays float32) and records ``n_features_in_`` when ``reset``.
    """
    from sklearn.utils.validation import validate_data

    xp, dev = estimator_namespace(X)
    if xp is array_api_compat.numpy and is_array_api_obj(X) and not isinstance(X, np.ndarray):
        X = to_numpy(X)  # dispatch off: a torch/cupy float32 array stays float32 in NumPy
    X = validate_data(estimator, X, reset=reset, dtype=supported_float_dtypes(xp, dev), **kwargs)
    return X, xp, dev
