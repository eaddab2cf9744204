"""The backend layer: namespaces, devices, moves, the same-namespace guard, dtypes, randomness."""

import subprocess
import sys

import numpy as np
import pytest
import sklearn

from subspacelab import _backend as B
from subspacelab._validation import check_array, check_param, validate_input
from subspacelab.kernels import _dispatch


def test_get_namespace_and_device(backend, rng):
    x = backend.asarray(rng.normal(size=(3, 2)))
    xp, dev = B.get_namespace(x, None, 2.0)
    assert dev == B.device(x)
    assert xp.asarray(x).dtype == xp.float64 and xp.mean(x).dtype == x.dtype


def test_get_namespace_errors():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one array library"):
        B.get_namespace(np.ones(2), torch.ones(2), names=["X", "y"])
    with pytest.raises(TypeError, match="X must be an array"):
        B.get_namespace([1.0, 2.0], names=["X"])
    with pytest.raises(TypeError, match="at least one array"):
        B.get_namespace(None, 3.0)


def test_mixed_devices_rejected():
    strict = pytest.importorskip("array_api_strict")
    a = strict.asarray([1.0], device=strict.Device("CPU_DEVICE"))
    b = strict.asarray([1.0], device=strict.Device("device1"))
    with pytest.raises(ValueError, match="one device: a is on .* but b is on"):
        B.get_namespace(a, b, names=["a", "b"])


def test_move_to_round_trip_every_backend(backend, rng):
    x = rng.normal(size=(4, 3))
    moved = B.move_to(x, backend.xp, backend.device)
    assert B.device(moved) == backend.device
    np.testing.assert_array_equal(B.to_numpy(moved), x)
    import array_api_compat.numpy as npx

    back = B.move_to(moved, npx, "cpu")
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, x)


def test_move_to_negative_strides_to_torch():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as txp

    x = np.arange(12.0).reshape(3, 4)[::-1, ::-2]
    t = B.move_to(x, txp, torch.device("cpu"))
    np.testing.assert_array_equal(t.numpy(), x)


def test_to_numpy_detaches_torch():
    torch = pytest.importorskip("torch")
    t = torch.ones(3, requires_grad=True) * 2
    np.testing.assert_array_equal(B.to_numpy(t), [2.0, 2.0, 2.0])
    assert B.as_float(t.sum()) == 6.0


class _Fitted:
    pass


def test_check_same_namespace_wording():
    strict = pytest.importorskip("array_api_strict")
    est = _Fitted()
    est.coef_ = strict.asarray([1.0])
    with sklearn.config_context(array_api_dispatch=True):
        with pytest.raises(ValueError, match=r"must use the same namespace.*_Fitted\.predict\(\)|_Fitted\.predict\(\).*must use the same namespace"):
            B.check_same_namespace(np.ones((1, 1)), est, attribute="coef_", method="predict")
        B.check_same_namespace(strict.asarray([[1.0]]), est, attribute="coef_", method="predict")
    # off: inputs are converted to NumPy by validation, the guard does nothing
    B.check_same_namespace(np.ones((1, 1)), est, attribute="coef_", method="predict")


def test_estimator_namespace_follows_dispatch():
    torch = pytest.importorskip("torch")
    import array_api_compat

    t = torch.ones(2)
    assert B.estimator_namespace(t)[0] is array_api_compat.numpy
    with sklearn.config_context(array_api_dispatch=True):
        assert array_api_compat.is_torch_namespace(B.estimator_namespace(t)[0])


def test_float_dtype_policy(backend):
    xp = backend.xp
    x32 = backend.asarray(np.ones(2, dtype=np.float32))
    x64 = backend.asarray(np.ones(2))
    xi = backend.asarray(np.ones(2, dtype=np.int64))
    assert B.float_dtype(xp, x32, device=backend.device) == xp.float32
    assert B.float_dtype(xp, x64, device=backend.device) == xp.float64
    assert B.float_dtype(xp, xi, device=backend.device) == xp.float64
    assert B.supported_float_dtypes(xp, backend.device) == [xp.float64, xp.float32]


def test_seed_gives_same_draw_on_every_backend(backend):
    a = B.random_normal(B.check_random_state(7), (3, 2), backend.xp, device=backend.device)
    b = np.random.default_rng(7).standard_normal((3, 2))
    np.testing.assert_array_equal(backend.to_numpy(a), b)
    u = B.random_uniform(B.check_random_state(7), (4,), backend.xp, device=backend.device, dtype=backend.xp.float32)
    assert u.dtype == backend.xp.float32


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), ("seed", TypeError), (1.5, TypeError), (True, TypeError)])
def test_check_random_state_errors(bad, exc):
    with pytest.raises(exc, match="random_state"):
        B.check_random_state(bad)


def test_check_random_state_accepts_generator_and_legacy():
    g = np.random.default_rng(1)
    assert B.check_random_state(g) is g
    assert isinstance(B.check_random_state(np.random.RandomState(0)), np.random.Generator)
    assert isinstance(B.check_random_state(None), np.random.Generator)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (("eps_sq", -1.0, "real"), {"low": 0.0, "closed": "neither"}, ValueError, r"eps_sq must be in \(0"),
        (("eps_sq", float("inf"), "real"), {}, ValueError, "eps_sq must be finite"),
        (("eps_sq", "a", "real"), {}, TypeError, "eps_sq must be a real number"),
        (("k", True, "int"), {}, TypeError, "k must be a real number"),
        (("k", 2.5, "int"), {}, TypeError, "k must be an integer"),
        (("k", 11, "int"), {"high": 10}, ValueError, r"k must be in \[-inf, 10\]"),
        (("solver", "x", "option"), {"options": ("a", "b")}, ValueError, "solver must be one of"),
        (("flag", 1, "bool"), {}, TypeError, "flag must be a bool"),
    ],
)
def test_check_param_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_param(*args, **kwargs)


def test_check_param_returns_value():
    assert check_param("k", 3, "int", low=1) == 3
    assert check_param("tol", None, "real", allow_none=True) is None
    assert check_param("solver", "a", "option", options=("a",)) == "a"


@pytest.mark.parametrize(
    "x, kwargs, exc, match",
    [
        (np.ones(3), {"min_ndim": 2}, ValueError, "Z must have at least 2"),
        (np.ones((2, 2, 2)), {"max_ndim": 2}, ValueError, "Z must have at most 2"),
        (np.ones(3), {"ndim": 2}, ValueError, "Z must be 2-dimensional"),
        (np.ones((0, 2)), {}, ValueError, "Z must not be empty"),
        (np.array([np.nan]), {}, ValueError, "Z must not contain NaN"),
        (np.ones(2, dtype=int), {}, TypeError, "Z must have a real floating dtype"),
    ],
)
def test_check_array_errors(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_array(x, "Z", **kwargs)


def test_validate_input_preserves_float32_and_converts_with_dispatch_off():
    torch = pytest.importorskip("torch")

    class Est(sklearn.base.BaseEstimator):
        pass

    X, xp, dev = validate_input(Est(), torch.ones((3, 2), dtype=torch.float32), reset=True)
    assert isinstance(X, np.ndarray) and X.dtype == np.float32
    X, _, _ = validate_input(Est(), np.ones((3, 2), dtype=int), reset=True)
    assert X.dtype == np.float64


def test_select_backend_auto_rules():
    torch = pytest.importorskip("torch")
    strict = pytest.importorskip("array_api_strict")
    assert _dispatch.select_backend(np.ones(2)) == "numba"
    assert _dispatch.select_backend(torch.ones(2)) == "generic"
    assert _dispatch.select_backend(strict.ones(2)) == "generic"
    with _dispatch.kernel_backend("generic"):
        assert _dispatch.select_backend(np.ones(2)) == "generic"
        assert _dispatch.select_backend(np.ones(2), "numba") == "numba"
    with pytest.raises(ValueError, match="backend must be one of"):
        _dispatch.select_backend(np.ones(2), "opencl")


def test_forced_cuda_without_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_dispatch, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA device"):
        _dispatch.select_backend(np.ones(2), "cuda")


def test_import_is_light():
    code = (
        "import sys, subspacelab, subspacelab.kernels, subspacelab.rate;"
        "heavy = {'torch', 'numba', 'cupy', 'dask'} & set(sys.modules);"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
