"""Test configuration: backend fixture, hypothesis profiles, markers.

``SCIPY_ARRAY_API=1`` must be set before SciPy is imported (scikit-learn refuses
``array_api_dispatch=True`` otherwise), so it is set here, at the top of the first file pytest
imports. The ``backend`` fixture runs a test on numpy, array_api_strict (CPU_DEVICE and the fake
``device1``), torch on the CPU, and, when a GPU is usable, cupy and torch on CUDA.
"""

import os

os.environ.setdefault("SCIPY_ARRAY_API", "1")

import dataclasses  # noqa: E402
import importlib.util  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

if importlib.util.find_spec("torch") is not None:
    import torch

    # The networks the tests train are tiny: one thread is faster than a hand-off between two,
    # and on a busy 2-core machine measured 10-20x faster per step.
    torch.set_num_threads(1)


def _installed(name):
    return importlib.util.find_spec(name) is not None


def _torch_cuda():
    if not _installed("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def _cupy_gpu():
    if not _installed("cupy"):
        return False
    import cupy

    try:
        return bool(cupy.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


@dataclasses.dataclass
class Backend:
    """One array library on one device, as tests see it.

    ``xp`` is the (array-api-compat wrapped) namespace, ``device`` the device object to pass to
    ``xp.asarray``; :meth:`asarray` turns NumPy test data into this backend's arrays and
    :meth:`to_numpy` brings results back for comparisons.
    """

    name: str
    xp: object
    device: object

    def asarray(self, a, dtype=None):
        a = np.asarray(a)
        out = self.xp.asarray(a, device=self.device)
        return out if dtype is None else self.xp.astype(out, dtype)

    def to_numpy(self, a):
        from subspacelab._backend import to_numpy

        return np.asarray(to_numpy(a))

    @property
    def is_numpy(self):
        return self.name == "numpy"


def _make_backend(name):
    import array_api_compat

    if name == "numpy":
        return Backend(name, array_api_compat.numpy, "cpu")
    if name.startswith("array_api_strict"):
        if not _installed("array_api_strict"):
            pytest.skip("array_api_strict is not installed")
        import array_api_strict

        array_api_strict.set_array_api_strict_flags(api_version="2025.12")
        dev = "CPU_DEVICE" if name.endswith("cpu") else "device1"
        return Backend(name, array_api_strict, array_api_strict.Device(dev))
    if name.startswith("torch"):
        if not _installed("torch"):
            pytest.skip("torch is not installed")
        import array_api_compat.torch as xp
        import torch

        dev = "cuda" if name.endswith("cuda") else "cpu"
        if dev == "cuda" and not torch.cuda.is_available():
            pytest.skip("no CUDA device for torch")
        return Backend(name, xp, torch.device(dev))
    if name == "cupy":
        if not _cupy_gpu():
            pytest.skip("no CUDA device for cupy")
        import array_api_compat.cupy as xp

        return Backend(name, xp, None)
    raise ValueError(name)


BACKEND_NAMES = [
    "numpy",
    "array_api_strict-cpu",
    "array_api_strict-device1",
    "torch-cpu",
    pytest.param("cupy", marks=pytest.mark.gpu),
    pytest.param("torch-cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(params=BACKEND_NAMES)
def backend(request):
    """Every array backend of the test matrix (GPU ones skipped without a GPU)."""
    return _make_backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    gpu = _torch_cuda() or _cupy_gpu()
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (cupy.cuda / torch.cuda not available)")
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(skip_gpu)
