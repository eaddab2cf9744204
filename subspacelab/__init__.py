"""subspacelab: low-dimensional structure methods as scikit-learn estimators on any array-API backend.

Public estimators are resolved lazily (PEP 562), so ``import subspacelab`` imports neither
torch, numba, cupy nor dask.
"""

import importlib

__version__ = "0.1.0.dev0"

# Public estimator name -> module that defines it. A new estimator is added here and nowhere
# else; tests/test_common.py discovers the list from this mapping.
_ESTIMATORS = {
    "AltMinCompleter": ".estimators.altmin",
    "BlindHarmonizer": ".estimators.blind_harmony",
    "CRATEEncoder": ".estimators.crate",
    "CoPaintInpainter": ".estimators.copaint",
    "DDSReconstructor": ".estimators.dds",
    "GaussianDenoiser": ".diffusion.denoisers",
    "GrassmannClassifier": ".estimators.grassmann",
    "IRCACalibrator": ".estimators.irca",
    "MCR2Clusterer": ".estimators.mcr2",
    "MoLRGDenoiser": ".estimators.molrg",
    "SoftmaxVectorClassifier": ".estimators.grassmann",
    "SpectralReconstructor": ".estimators.irca",
    "TorchDenoiser": ".diffusion.torch_denoiser",
}

__all__ = sorted(["__version__", *_ESTIMATORS])


def __getattr__(name):
    if name in _ESTIMATORS:
        module = importlib.import_module(_ESTIMATORS[name], __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'subspacelab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_ESTIMATORS))
