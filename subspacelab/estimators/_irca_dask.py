"""IRCACalibrator.fit on a chunked Dask cube: the per-pixel fit of every chunk by ``map_blocks``.

Every pixel (item) is calibrated independently of the others, so a chunk of pixels (all
sources in one chunk) is fitted by the in-memory fit, with its batched Levenberg–Marquardt
kernel, and only the packed per-pixel parameters come back: about ``sum(degrees) + 8``
numbers per pixel instead of ``n_sources``.
"""

from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .._dask import is_dask_collection, kernel_guard
from .._validation import check_param

__all__ = ["fit_dask"]


def _fit_block(xb, *extra, params, wavenumbers, flat, kinds):
    from .irca import IRCACalibrator

    it = iter(extra)
    flat_b = next(it) if kinds["flat"] else flat
    init_b = next(it) if kinds["init"] else None
    nominal = next(it)[..., 0] if kinds["nominal"] else None
    est = IRCACalibrator(**{**params, "opd_init": nominal, "verbose": 0})
    # no warnings from the chunks (catch_warnings is not thread-safe): fit_dask counts the
    # unfittable and non-converged pixels over the whole cube and warns once
    with kernel_guard():
        est._fit(xb, wavenumbers, flat_b, init_b, warn=False)
    cols = [est.opd_coef_, est.phase_shift_coef_, est.reflectivity_coef_, est.gain_coef_]
    cols += [a[..., None].astype(np.float64) for a in (est.opd_init_, est.rmse_, est.n_iter_, est.converged_)]
    return np.concatenate(cols, axis=-1)


def _like_x(name, arr, X):
    import dask.array as da

    arr = da.asarray(arr)
    if tuple(arr.shape) != tuple(X.shape):
        raise ValueError(f"{name} must have the shape of X {tuple(X.shape)}, got {tuple(arr.shape)}")
    return arr.rechunk(X.chunks)


def fit_dask(est, X, wavenumbers, flat, X_init):
    """Fit ``est`` (an IRCACalibrator) on the Dask array ``X`` of shape (..., n_sources)."""
    import array_api_compat.numpy as xp
    import dask.array as da

    t0 = time.perf_counter()
    est._check_params()
    if not isinstance(X, da.Array):
        raise TypeError(f"IRCACalibrator accepts Dask arrays (dask.array.Array), got {type(X).__name__}")
    if X.ndim < 2:
        raise ValueError(f"X must have shape (..., n_sources) with at least 2 dimensions, got {X.shape}")
    if any(math.isnan(c) for cs in X.chunks for c in cs):
        raise ValueError("X has unknown chunk sizes; call X.compute_chunk_sizes() first")
    if X.size == 0:
        raise ValueError(f"X is empty (shape {X.shape})")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise TypeError(f"X must be real-valued, got dtype {X.dtype}")
    n_src = int(X.shape[-1])
    X = X.rechunk({X.ndim - 1: -1})  # every pixel's sources in one chunk
    lead = tuple(int(d) for d in X.shape[:-1])
    lead_chunks = X.chunks[:-1]
    if is_dask_collection(wavenumbers):
        wavenumbers = wavenumbers.compute()
    sigma = est._as_wavenumbers(wavenumbers, n_src, xp, "cpu", xp.float64)
    lo, hi = float(np.min(sigma)), float(np.max(sigma))
    opd_max = (n_src - 1) / (2.0 * (hi - lo)) if est.opd_max is None else float(est.opd_max)

    args = [X]
    kinds = {"flat": False, "init": False, "nominal": False}
    flat_vec = None
    if flat is not None:
        if getattr(flat, "ndim", np.ndim(flat)) == 1:
            flat_vec = np.asarray(flat.compute() if is_dask_collection(flat) else flat, dtype=float)
        else:
            args.append(_like_x("flat", flat, X))
            kinds["flat"] = True
    if X_init is not None:
        args.append(_like_x("X_init", X_init, X))
        kinds["init"] = True
    nominal_max = None
    if est.opd_init is not None:
        if isinstance(est.opd_init, numbers.Real) and not isinstance(est.opd_init, bool):
            step = check_param("opd_init", est.opd_init, "real", low=0.0, closed="neither")
            k = da.arange(lead[0], dtype=np.float64, chunks=(lead_chunks[0],)) * step
            nom = da.broadcast_to(da.reshape(k, (-1,) + (1,) * (len(lead) - 1)), lead)
            nominal_max = (lead[0] - 1) * step
        else:
            nom_np = np.asarray(est.opd_init, dtype=float)
            if nom_np.ndim > len(lead) or nom_np.shape != lead[: nom_np.ndim]:
                raise ValueError(f"opd_init must have shape {lead} (or a leading part of it), got {nom_np.shape}")
            if not np.all(np.isfinite(nom_np)):
                raise ValueError("opd_init must be finite")
            nominal_max = float(np.max(nom_np))
            nom = da.from_array(nom_np.reshape(nom_np.shape + (1,) * (len(lead) - nom_np.ndim)))
            nom = da.broadcast_to(nom, lead)
        args.append(nom.rechunk(lead_chunks)[..., None])
        kinds["nominal"] = True
    if nominal_max is not None and nominal_max >= opd_max:
        warnings.warn(
            f"some nominal OPDs (opd_init) reach opd_max_={opd_max:.4g} µm = 1/(2 mean source "
            "spacing): the source sampling aliases them, so their fitted OPDs are aliases",
            UserWarning,
            stacklevel=4,
        )

    d = est._degrees
    widths = [d[k] + 1 for k in ("opd", "phase_shift", "reflectivity", "gain")]
    n_out = sum(widths) + 4
    packed = da.map_blocks(
        _fit_block, *args, params=est.get_params(), wavenumbers=np.asarray(sigma), flat=flat_vec, kinds=kinds,
        chunks=lead_chunks + ((n_out,),), dtype=np.float64, meta=np.empty((0,) * X.ndim, dtype=np.float64),
    ).compute()

    o = 0
    for name, p in zip(("opd", "phase_shift", "reflectivity", "gain"), widths):
        setattr(est, f"{name}_coef_", packed[..., o:o + p])
        o += p
    est.wavenumber_range_ = (lo, hi)
    est.opd_max_ = opd_max
    est.opd_init_ = packed[..., o]
    est.rmse_ = packed[..., o + 1]
    est.n_iter_ = packed[..., o + 2].astype(np.int64)
    est.converged_ = packed[..., o + 3] > 0.5
    centre = np.asarray([0.5 * (lo + hi)])
    est.opd_ = est._evaluate("opd", centre)[..., 0]
    est.phase_shift_ = est._evaluate("phase_shift", centre)[..., 0]
    est.n_features_in_ = n_src
    est.fit_time_ = {"total": time.perf_counter() - t0}

    n = int(np.prod(lead))
    bad = np.isnan(est.opd_coef_[..., 0])
    n_bad = int(np.sum(bad))
    n_par = sum(widths)
    if n_bad:
        warnings.warn(
            f"{n_bad} of {n} interferometers could not be fitted (fewer than {n_par + 1} finite "
            "values or a non-positive mean): their parameters are NaN and converged_ is False",
            UserWarning,
            stacklevel=4,
        )
    n_nc = int(np.sum(~bad & ~est.converged_))
    if n_nc and est.solver == "lm" and est.max_iter > 0:
        warnings.warn(
            f"Levenberg-Marquardt did not converge for {n_nc} of {n} interferometers within "
            f"max_iter={est.max_iter}; see converged_ and n_iter_",
            ConvergenceWarning,
            stacklevel=4,
        )
    if bool(np.any(est.opd_ > opd_max)):
        warnings.warn(
            f"some fitted OPDs exceed opd_max_={opd_max:.4g} µm = 1/(2 mean source spacing): "
            "the sampling aliases them and the fit is unreliable there",
            UserWarning,
            stacklevel=4,
        )
    return est
