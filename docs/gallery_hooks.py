"""Hooks of the sphinx-gallery configuration (named by string in conf.py, so Sphinx can pickle it)."""

import os
import tempfile


QUICK_IN_GALLERY = {"harmonization"}


def reset_argv(gallery_conf, script_vars):
    """Command line of each example in the gallery: write the figure file outside the source tree.

    The examples save their figure to ``--out`` when run as scripts; in the gallery the figure
    is also captured from matplotlib, so the saved copy only needs to go somewhere harmless.
    """
    name = os.path.splitext(os.path.basename(script_vars["src_file"]))[0]
    outdir = os.path.join(tempfile.gettempdir(), "subspacelab-gallery")
    os.makedirs(outdir, exist_ok=True)
    argv = ["--out", os.path.join(outdir, name + ".png")]
    # examples whose full size takes minutes run at their documented --quick size here
    return argv + ["--quick"] if name in QUICK_IN_GALLERY else argv
