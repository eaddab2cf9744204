"""scikit-learn's common estimator checks on every public estimator, array-API checks included.

The estimator list is discovered from ``subspacelab._ESTIMATORS`` (the one registry of public
estimators), so a new estimator cannot opt out. The reference projector built from the shared
plumbing runs the same checks, so they visibly run even where a method has not landed yet.
"""

import inspect
import os

import pytest
from sklearn.base import BaseEstimator
from sklearn.utils.estimator_checks import parametrize_with_checks

import subspacelab
from tests._reference_estimator import ReferenceSubspaceProjector

# Per-estimator constructor arguments that keep the common checks small and fast.
CHECK_PARAMS = {
    # Tiny CRATE: the checks train it dozens of times on blobs of 2-10 scalar tokens.
    "CRATEEncoder": dict(dim=8, depth=1, heads=2, n_epochs=20, batch_size=64, warmup_epochs=1, lr=1e-2,
                         label_smoothing=0.0),
}
# Checks an estimator is known to fail, with the reason: {name: {check_name: reason}}.
EXPECTED_FAILED_CHECKS = {}


def public_estimators():
    out = []
    for name in sorted(subspacelab._ESTIMATORS):
        cls = getattr(subspacelab, name)
        out.append(cls(**CHECK_PARAMS.get(name, {})))
    return out


def test_registry_lists_every_estimator_class():
    """Every BaseEstimator subclass defined in subspacelab.estimators is public and checked."""
    import importlib
    import pkgutil

    import subspacelab.estimators as pkg

    found = set()
    for mod in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"{pkg.__name__}.{mod.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseEstimator) and obj.__module__ == module.__name__ and not name.startswith("_"):
                found.add(name)
    assert found <= set(subspacelab._ESTIMATORS), f"not registered in subspacelab._ESTIMATORS: {found - set(subspacelab._ESTIMATORS)}"
    for name in subspacelab._ESTIMATORS:
        assert name in subspacelab.__all__


def test_array_api_checks_are_enabled():
    """The array-API checks only run with SCIPY_ARRAY_API=1 and array_api_strict/torch present."""
    assert os.environ.get("SCIPY_ARRAY_API") == "1"
    import array_api_strict  # noqa: F401
    import torch  # noqa: F401


@parametrize_with_checks(
    [ReferenceSubspaceProjector(), *public_estimators()],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}),
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
