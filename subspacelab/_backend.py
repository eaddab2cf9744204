"""Array-API backend layer: namespaces, devices, dtypes, moves between libraries, randomness.

Every function here works from the arrays it is given and never imports torch, cupy, numba or
dask unless the caller's arrays already come from that library (``array_api_compat``'s
``is_*_array`` predicates look at ``sys.modules``, so they import nothing).

Conventions (DESIGN.md section 2):

* Functions of :mod:`subspacelab.rate` and :mod:`subspacelab.kernels` always work in the
  namespace and on the device of their inputs, as SciPy functions do under ``SCIPY_ARRAY_API``.
* Estimators follow scikit-learn's ``array_api_dispatch`` switch: off, inputs become NumPy;
  on, the work and the fitted attributes stay in the input's namespace and on its device.
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import sys

import array_api_compat
import array_api_compat.numpy  # noqa: F401  (the wrapped NumPy namespace)
import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj

__all__ = [
    "array_namespace",
    "as_float",
    "check_same_namespace",
    "device",
    "estimator_namespace",
    "float_dtype",
    "get_namespace",
    "gpu_available",
    "is_array_api_obj",
    "lazy_import",
    "move_to",
    "random_normal",
    "random_uniform",
    "check_random_state",
    "supported_float_dtypes",
    "to_numpy",
]


def lazy_import(name):
    """Import module ``name`` on first use; return None when it is not installed."""
    if name in sys.modules:
        return sys.modules[name]
    try:
        if importlib.util.find_spec(name.split(".")[0]) is None:
            return None
    except (ValueError, ImportError):  # pragma: no cover - broken meta path entries
        return None
    return importlib.import_module(name)


def get_namespace(*arrays, names=None):
    """Return ``(xp, device)`` common to ``arrays`` (``None`` entries and Python scalars ignored).

    Parameters
    ----------
    *arrays : arrays of any array-API library
    names : sequence of str, optional
        Argument names, used in the error message when namespaces or devices differ.

    Raises
    ------
    TypeError
        When an argument is not an array (a list, say) or the arrays come from different
        libraries.
    ValueError
        When the arrays live on different devices.
    """
    names = list(names) if names is not None else [f"argument {i}" for i in range(len(arrays))]
    kept = [(n, a) for n, a in zip(names, arrays) if a is not None and not isinstance(a, numbers.Number)]
    if not kept:
        got = ", ".join(f"{n}: {type(a).__name__}" for n, a in zip(names, arrays))
        raise TypeError(f"expected at least one array argument, got {got or 'nothing'}")
    for n, a in kept:
        if not is_array_api_obj(a):
            raise TypeError(
                f"{n} must be an array of an array-API library (numpy, torch, cupy, "
                f"array_api_strict, ...), got {type(a).__name__}"
            )
    try:
        xp = array_namespace(*(a for _, a in kept))
    except TypeError as exc:
        libs = ", ".join(f"{n}: {type(a).__module__}.{type(a).__name__}" for n, a in kept)
        raise TypeError(f"arrays must come from one array library; got {libs}") from exc
    devices = [(n, device(a)) for n, a in kept]
    first = devices[0][1]
    for n, d in devices[1:]:
        if d != first:
            raise ValueError(
                f"arrays must be on one device: {devices[0][0]} is on {first!r} but {n} is on {d!r}"
            )
    return xp, first


def dispatch_enabled():
    """Whether scikit-learn's ``array_api_dispatch`` is on."""
    import sklearn

    return bool(sklearn.get_config().get("array_api_dispatch", False))


def estimator_namespace(*arrays):
    """Namespace and device an estimator should work in, following scikit-learn's switch.

    With ``array_api_dispatch`` off this is NumPy (``array_api_compat.numpy``) on the CPU,
    whatever the input; with it on, it is the inputs' common namespace and device.
    """
    if not dispatch_enabled():
        return array_api_compat.numpy, "cpu"
    arrays = [a for a in arrays if a is not None and is_array_api_obj(a)]
    if not arrays:
        return array_api_compat.numpy, "cpu"
    return get_namespace(*arrays)


def to_numpy(x):
    """Return ``x`` as a NumPy array (copying from a GPU when needed)."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_numpy_array(x) or np.isscalar(x):
        return np.asarray(x)
    xp = array_namespace(x)
    if array_api_compat.is_array_api_strict_namespace(xp):
        # array_api_strict refuses np.asarray on non-CPU devices; go through its CPU device.
        import array_api_strict

        return np.asarray(xp.asarray(x, device=array_api_strict.Device("CPU_DEVICE"), copy=True))
    return np.asarray(x)


def as_float(x):
    """Python float of a 0-d array of any library (torch tensors are detached first)."""
    if array_api_compat.is_torch_array(x):
        x = x.detach()
    return float(x)


def move_to(array, xp, device=None):
    """Move ``array`` into namespace ``xp`` on ``device``.

    DLPack is tried first (zero-copy when the source and the target share memory); when the
    libraries cannot exchange through DLPack the array goes through NumPy. Negative-strided
    NumPy arrays are copied first, since ``torch.from_dlpack`` aborts the process on them.
    """
    if array is None:
        return None
    src_xp = array_namespace(array)
    if src_xp is xp and (device is None or array_api_compat.device(array) == device):
        return array
    if isinstance(array, np.ndarray) and any(s < 0 for s in array.strides):
        array = np.ascontiguousarray(array)
    try:
        kwargs = {} if device is None else {"device": device}
        if src_xp is xp:
            return array_api_compat.to_device(array, device)
        return xp.from_dlpack(array, **kwargs)
    except (AttributeError, BufferError, TypeError, ValueError, RuntimeError, NotImplementedError):
        host = np.ascontiguousarray(to_numpy(array))
        return xp.asarray(host, device=device) if device is not None else xp.asarray(host)


def check_same_namespace(X, estimator, *, attribute, method):
    """Raise scikit-learn's error when ``X`` is not in the namespace/device of a fitted attribute.

    Does nothing when ``array_api_dispatch`` is off (inputs are NumPy then).
    """
    if not dispatch_enabled():
        return
    fitted = getattr(estimator, attribute)
    xp_fit, dev_fit = get_namespace(fitted)
    try:
        xp_x, dev_x = get_namespace(X)
    except TypeError:
        return  # not an array (a list, say): validate_data converts it later
    if xp_x is not xp_fit or dev_x != dev_fit:
        raise ValueError(
            f"Inputs passed to {type(estimator).__name__}.{method}() must use the same namespace "
            f"and the same device as those passed to fit(). Got namespace {xp_x.__name__!r} on "
            f"device {dev_x!r}, expected {xp_fit.__name__!r} on device {dev_fit!r}."
        )


def supported_float_dtypes(xp, device=None):
    """Real floating dtypes usable on ``device``, widest first.

    Devices without float64 (torch MPS, array_api_strict's ``no_float64``) give only float32.
    """
    try:
        info = xp.__array_namespace_info__()
        dtypes = info.dtypes(device=device, kind="real floating")
        out = [dtypes[k] for k in ("float64", "float32") if k in dtypes]
        if out:
            return out
    except (AttributeError, TypeError, ValueError):
        pass
    return [xp.float64, xp.float32]


def float_dtype(xp, *arrays, device=None):
    """Floating dtype results should have: float32 stays float32, anything else becomes the
    widest float the device supports (float64 where available)."""
    allowed = supported_float_dtypes(xp, device)
    for a in arrays:
        if a is not None and getattr(a, "dtype", None) == xp.float32:
            continue
        if a is not None and getattr(a, "dtype", None) == xp.float64 and xp.float64 in allowed:
            return xp.float64
        return allowed[0]
    return xp.float32


def check_random_state(random_state):
    """Turn ``random_state`` (None, int, or ``numpy.random.Generator``) into a Generator.

    Random draws are made with NumPy on the host and moved to the caller's device, so that one
    seed gives the same numbers on every backend.
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**32 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, a non-negative int or a numpy.random.Generator, "
        f"got {type(random_state).__name__}"
    )


def random_normal(rng, shape, xp, *, device=None, dtype=None):
    """Standard normal draws from ``rng`` (host, float64), moved to ``xp``/``device``/``dtype``."""
    draw = rng.standard_normal(shape)
    out = move_to(draw, xp, device)
    return out if dtype is None else xp.astype(out, dtype)


def random_uniform(rng, shape, xp, *, device=None, dtype=None, low=0.0, high=1.0):
    """Uniform draws on [low, high) from ``rng`` (host, float64), moved to ``xp``/``device``."""
    draw = rng.uniform(low, high, size=shape)
    out = move_to(draw, xp, device)
    return out if dtype is None else xp.astype(out, dtype)


def gpu_available():
    """Whether a CUDA device is usable through cupy or torch (decided by the libraries, not by
    whether they import)."""
    cupy = lazy_import("cupy")
    if cupy is not None:
        try:
            if cupy.cuda.is_available():
                return True
        except Exception:  # noqa: BLE001 - cupy raises driver errors of several types
            pass
    if importlib.util.find_spec("torch") is not None:
        torch = lazy_import("torch")
        return bool(torch.cuda.is_available())
    return False
