"""The public API of subspacelab, discovered from the package itself.

Used at build time by ``docs/conf.py`` (to write the API reference pages, so that a new
estimator or a new public function appears without editing the docs) and by
``tests/test_docs.py`` (every public estimator and function has an Examples section).

What is public:

* every estimator registered in ``subspacelab._ESTIMATORS`` (documented as ``subspacelab.Name``);
* every name in the ``__all__`` of a public module: a module or package under ``subspacelab``
  whose dotted path has no part starting with ``_``, except ``subspacelab.estimators`` (whose
  public names are the registered estimators), searched recursively. An object re-exported by
  a parent package is documented once, under the shortest public path.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from dataclasses import dataclass, field

PACKAGE = "subspacelab"
# Subpackages whose public names are listed elsewhere (the estimators, in _ESTIMATORS).
EXCLUDED = (f"{PACKAGE}.estimators",)


@dataclass
class Section:
    """One page of the API reference: a module and the public objects documented under it."""

    module: str
    title: str
    summary: str
    names: list = field(default_factory=list)  # (name, object) in __all__ order, sorted

    @property
    def callables(self):
        return [(n, o) for n, o in self.names if callable(o)]

    @property
    def data(self):
        return [(n, o) for n, o in self.names if not callable(o)]


def _first_line(doc):
    doc = inspect.cleandoc(doc or "")
    return doc.split("\n\n")[0].replace("\n", " ").strip()


def public_modules():
    """Dotted names of the public modules, parents before children."""
    pkg = importlib.import_module(PACKAGE)
    names = []
    for info in pkgutil.walk_packages(pkg.__path__, PACKAGE + ".", onerror=lambda name: None):
        parts = info.name.split(".")[1:]
        if any(p.startswith("_") for p in parts):
            continue
        if any(info.name == e or info.name.startswith(e + ".") for e in EXCLUDED):
            continue
        names.append(info.name)
    return sorted(names, key=lambda n: (n.count("."), n))


def public_api():
    """The API reference as a list of :class:`Section`, estimators first."""
    pkg = importlib.import_module(PACKAGE)
    seen = set()
    est = Section(PACKAGE, "Estimators", "Estimators registered in ``subspacelab`` (scikit-learn API).")
    for name in sorted(pkg._ESTIMATORS):
        obj = getattr(pkg, name)
        seen.add(id(obj))
        est.names.append((name, obj))
    sections = [est]
    for modname in public_modules():
        mod = importlib.import_module(modname)
        entries = []
        for name in sorted(getattr(mod, "__all__", ())):
            obj = getattr(mod, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            entries.append((name, obj))
        if entries:
            sections.append(Section(modname, f"``{modname}``", _first_line(mod.__doc__), entries))
    return sections


def public_callables():
    """``(dotted public name, object)`` of every public estimator, class and function."""
    return [(f"{s.module}.{n}", o) for s in public_api() for n, o in s.callables]


def _slug(modname):
    return modname.replace(".", "_")


def write_api_pages(outdir):
    """Write ``index.rst`` and one page per section into ``outdir`` (generated, not committed)."""
    os.makedirs(outdir, exist_ok=True)
    sections = public_api()
    index = [
        "API reference",
        "=============",
        "",
        "Generated at build time from ``subspacelab._ESTIMATORS`` and the ``__all__`` of every",
        "public module (``docs/apigen.py``): a new estimator or public function appears here",
        "without editing the documentation.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    index += [f"   {_slug(s.module)}" for s in sections]
    pages = {"index.rst": "\n".join(index) + "\n"}
    for s in sections:
        title = s.title
        lines = [title, "=" * len(title), ""]
        if s.module != PACKAGE:
            lines += [f".. automodule:: {s.module}", "   :no-members:", "   :no-index:", ""]
        else:
            lines += [s.summary, ""]
        lines += [f".. currentmodule:: {s.module}", ""]
        if s.callables:
            lines += [".. autosummary::", "   :toctree: generated", "   :template: autosummary/object.rst", ""]
            lines += [f"   {n}" for n, _ in s.callables] + [""]
        if s.data:
            lines += ["Constants", "---------", ""]
            for n, o in s.data:
                lines += [f".. data:: {n}", f"   :value: {o!r}", ""]
        pages[f"{_slug(s.module)}.rst"] = "\n".join(lines)
    for fname, text in pages.items():
        path = os.path.join(outdir, fname)
        old = None
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = f.read()
        if old != text:  # rewrite only what changed, so incremental builds stay incremental
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    for fname in os.listdir(outdir):  # pages of modules that no longer exist
        if fname.endswith(".rst") and fname not in pages:
            os.remove(os.path.join(outdir, fname))
    return sections
