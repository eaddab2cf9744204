"""Every public estimator, class and function documents an Examples section (numpydoc).

The public API is discovered the way the documentation build discovers it
(``docs/apigen.py``: ``subspacelab._ESTIMATORS`` and the ``__all__`` of every public module),
so a new public object cannot skip its example. The examples themselves run as doctests under
pytest's ``--doctest-modules``; this test does not build the site.
"""

import importlib.util
import inspect
import os
import sys

import pytest

docscrape = pytest.importorskip("numpydoc.docscrape", reason="numpydoc is in the test extra")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _apigen():
    spec = importlib.util.spec_from_file_location("subspacelab_docs_apigen", os.path.join(ROOT, "docs", "apigen.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


APIGEN = _apigen()
PUBLIC = APIGEN.public_callables()


def test_discovery_finds_every_registered_estimator_and_module():
    import subspacelab

    names = {name for name, _ in PUBLIC}
    for est in subspacelab._ESTIMATORS:
        assert f"subspacelab.{est}" in names
    # a sample of public functions from several modules, found through __all__
    for name in ("subspacelab.rate.coding_rate", "subspacelab.kernels.sinkhorn",
                 "subspacelab.operators.conjugate_gradient", "subspacelab.diffusion.baselines.tv_admm"):
        assert name in names
    # private modules and the estimators subpackage are not walked
    assert not any("._" in name or ".estimators." in name for name in names)
    # each object is documented once
    assert len({id(obj) for _, obj in PUBLIC}) == len(PUBLIC)


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_object_has_examples_section(name, obj):
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    examples = docscrape.NumpyDocString(doc)["Examples"]
    assert any(line.lstrip().startswith(">>>") for line in examples), (
        f"{name} has no numpydoc Examples section with a doctest (>>> lines)")
