"""IRCACalibrator per-pixel calibration of a chunked Dask cube (issue 13, item 2)."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from subspacelab import IRCACalibrator
from subspacelab.datasets import make_fabry_perot_acquisition

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

ATTRS = ("opd_", "phase_shift_", "opd_coef_", "phase_shift_coef_", "reflectivity_coef_", "gain_coef_",
         "opd_init_", "rmse_", "n_iter_", "converged_")
SMALL = {"degrees": {"reflectivity": 1, "gain": 2}, "opd_span": 0.01}


@pytest.fixture(scope="module")
def cube():
    return make_fabry_perot_acquisition(3, 120, noise=0.01, subimage_shape=(4, 5), fov=2.0, random_state=7)


def _assert_same(got, ref):
    for name in ATTRS:
        a, b = getattr(got, name), getattr(ref, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
    assert got.wavenumber_range_ == ref.wavenumber_range_ and got.opd_max_ == ref.opd_max_
    assert got.n_features_in_ == ref.n_features_in_


@pytest.mark.parametrize(
    "chunks",
    [(1, 4, 5, 120), (2, 3, 2, 40), (3, 1, 5, 60)],
    ids=["per-interferometer", "ragged+split-sources", "rows"],
)
def test_chunked_cube_equals_the_in_memory_per_pixel_fit(cube, chunks):
    """Every chunk is fitted by the in-memory fit; the nominal staircase (an array of a leading
    part of the shape) is sliced per chunk; sources split over chunks are joined first."""
    kw = dict(opd_init=cube.opd_nominal, **SMALL)
    ref = IRCACalibrator(**kw).fit(cube.data, cube.wavenumbers, flat=cube.flat)
    got = IRCACalibrator(**kw).fit(da.from_array(cube.data, chunks=chunks), cube.wavenumbers, flat=cube.flat)
    _assert_same(got, ref)
    np.testing.assert_allclose(got.opd_, cube.opd, atol=5e-3)  # and it calibrates (noise 1 %)
    np.testing.assert_allclose(got.predict(cube.wavenumbers), ref.predict(cube.wavenumbers), rtol=1e-10)


def test_float_staircase_x_shaped_flat_and_x_init(cube):
    """opd_init as a step along axis 0 keeps the global index in every chunk; a flat field and
    initialisation data shaped like X travel chunk by chunk."""
    X = cube.data[:, :2]  # (3, 2, 5, n_src)
    flat = np.broadcast_to(cube.flat, X.shape) * 1.5
    Xi = cube.mean[:, :2]
    kw = dict(opd_init=float(cube.opd_step), opd_span=0.3, degrees={"reflectivity": 1, "gain": 2}, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = IRCACalibrator(**kw).fit(X, cube.wavenumbers, flat=flat, X_init=Xi)
        got = IRCACalibrator(**kw).fit(
            da.from_array(X, chunks=(1, 2, 3, 120)), cube.wavenumbers,
            flat=da.from_array(flat, chunks=(3, 1, 5, 60)), X_init=Xi,
        )
    _assert_same(got, ref)


def test_bad_pixels_are_reported_once_for_the_cube(cube):
    X = cube.data[:, :, :2].copy()
    X[0, 1, 1] = np.nan  # unfittable pixel
    X[2, 3, 0, ::4] = np.nan  # missing values: still fitted
    Xd = da.from_array(X, chunks=(1, 2, 2, 120))
    with pytest.warns(UserWarning, match="1 of 24 interferometers could not be fitted"):
        got = IRCACalibrator(opd_init=cube.opd_nominal, **SMALL).fit(Xd, cube.wavenumbers, flat=cube.flat)
    assert np.isnan(got.opd_[0, 1, 1]) and not got.converged_[0, 1, 1]
    assert np.sum(np.isnan(got.opd_)) == 1
    with pytest.warns(ConvergenceWarning, match="did not converge for"):
        IRCACalibrator(opd_init=cube.opd_nominal, max_iter=1, **SMALL).fit(Xd[:, :1], cube.wavenumbers, flat=cube.flat)


class _Largest(dask.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if isinstance(result, np.ndarray):
            self.largest = max(self.largest, result.nbytes)


def test_the_cube_is_read_once_and_never_gathered(cube):
    """Each chunk of the cube is produced once (a counting chunk generator); no task result is
    larger than a chunk of the cube or the packed per-pixel parameters (a fraction of it)."""
    reads = {}

    def load(block_info=None):
        loc = tuple(map(tuple, block_info[None]["array-location"]))
        reads[loc] = reads.get(loc, 0) + 1
        return cube.data[tuple(slice(a, b) for a, b in loc)]

    chunks = (1, 2, 5, 120)
    Xd = da.map_blocks(load, chunks=da.core.normalize_chunks(chunks, cube.data.shape), dtype=np.float64,
                       meta=np.empty((0, 0, 0, 0)))
    rec = _Largest()
    with dask.config.set(scheduler="sync"), rec:
        got = IRCACalibrator(opd_init=cube.opd_nominal, **SMALL).fit(Xd, cube.wavenumbers, flat=cube.flat)
    assert len(reads) == Xd.npartitions and set(reads.values()) == {1}
    ref = IRCACalibrator(opd_init=cube.opd_nominal, **SMALL).fit(cube.data, cube.wavenumbers, flat=cube.flat)
    _assert_same(got, ref)
    packed = got.opd_.size * (2 + 2 + 2 + 3 + 4) * 8
    chunk = int(np.prod(chunks)) * 8
    assert packed < cube.data.nbytes / 4
    assert rec.largest <= max(packed, chunk) < cube.data.nbytes / 4


def test_bad_dask_input_is_named(cube):
    Xd = da.from_array(cube.data, chunks=(1, 4, 5, 120))
    with pytest.raises(ValueError, match="X_init must have the shape of X"):
        IRCACalibrator(**SMALL).fit(Xd, cube.wavenumbers, X_init=cube.mean[:2])
    with pytest.raises(ValueError, match="opd_init must have shape"):
        IRCACalibrator(opd_init=np.ones(5), **SMALL).fit(Xd, cube.wavenumbers)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        IRCACalibrator(**SMALL).fit(da.ones(10, chunks=5), np.linspace(1, 2, 10))
    with pytest.raises(ValueError, match="wavenumbers has 3 entries"):
        IRCACalibrator(**SMALL).fit(Xd, [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="real-valued"):
        IRCACalibrator(**SMALL).fit(Xd.astype(complex), cube.wavenumbers)
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        IRCACalibrator(**SMALL).fit(Xd[da.from_array(np.ones(3, bool), chunks=1)], cube.wavenumbers)
