"""Small helpers shared by the Dask code paths (dask and distributed are optional)."""

from __future__ import annotations

import sys
import threading
from contextlib import nullcontext

__all__ = ["current_client", "is_dask_collection", "kernel_guard"]

# Numba's "workqueue" threading layer must not be entered from two threads at once; Dask's
# threaded scheduler would do that, so kernel calls are serialised unless the layer is safe.
_WORKQUEUE_LOCK = threading.Lock()


def is_dask_collection(x):
    """Whether ``x`` is a Dask collection (dask is imported whenever one exists)."""
    dask = sys.modules.get("dask")
    return dask is not None and dask.is_dask_collection(x)


def kernel_guard():
    """Context for a Numba kernel call from a Dask task: a lock unless the threading layer is
    thread-safe (omp, tbb)."""
    try:
        import numba

        layer = numba.threading_layer()
    except (ImportError, ValueError):  # numba absent (generic kernels) or no parallel call yet
        layer = None
    return nullcontext() if layer in ("omp", "tbb") else _WORKQUEUE_LOCK


def current_client():
    """The active ``distributed.Client``, or None (local Dask schedulers, or no distributed)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None
