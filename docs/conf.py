"""Sphinx configuration of the subspacelab documentation (``make docs``).

The API reference is generated at build time from the package (``apigen.py``); the example
gallery runs the scripts in ``examples/`` (sphinx-gallery); the user guide pages are MyST
markdown files in this folder.
"""

import os
import sys

os.environ.setdefault("SCIPY_ARRAY_API", "1")  # the examples use array_api_dispatch; set before SciPy

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import subspacelab  # noqa: E402
from apigen import write_api_pages  # noqa: E402

project = "subspacelab"
copyright = "subspacelab developers"
author = "subspacelab developers"
release = subspacelab.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
# Module docstrings list the references of the whole module, not all of them cited in its own
# text (their functions cite them); an uncited reference is not an error.
suppress_warnings = ["ref.citation"]
exclude_patterns = ["_build"]

# API reference: one page per public module plus the estimators, written before Sphinx reads.
write_api_pages(os.path.join(HERE, "api"))
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
numpydoc_show_class_members = False  # the class template lists members with autodoc
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# MyST: $...$ and $$...$$ math, ::: fences, anchors for ## and ### headings.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

intersphinx_mapping = {}  # no network access at build time: no intersphinx inventories

# Example gallery. Every script in examples/ runs, except helpers (names starting with "_") and
# scripts whose name starts with "slow_" (those are rendered, not executed: use the prefix for an
# example that takes minutes; its method page then cannot show a generated figure).
sphinx_gallery_conf = {
    "examples_dirs": os.path.join(ROOT, "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/(?!slow_)[^/]*\.py$",
    "ignore_pattern": r"^_",
    "reset_argv": "gallery_hooks.reset_argv",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "min_reported_time": 1,
    "matplotlib_animations": False,
    "show_memory": False,
    "plot_gallery": "True",
}

html_theme = "pydata_sphinx_theme"
html_title = f"subspacelab {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path = []
html_show_sourcelink = False


def _skip_member(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated metadata-routing setters (``set_fit_request``, ...):
    they are scikit-learn's API, documented there, and their docstrings cite its glossary."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
