"""AltMinCompleter.fit on Dask arrays (issue 13, item 1): blocked ALS equals the in-memory fit,
reads every chunk once and never gathers the observations in one place."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from subspacelab import AltMinCompleter
from subspacelab.datasets import make_low_rank_matrix_completion

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")


def _data(m=120, n=80, k=3, p=0.4, seed=0, noise=0.0):
    d = make_low_rank_matrix_completion(m, n, k, sampling=p, noise=noise, random_state=seed)
    return d.X, d.U @ d.V.T


def _completed(est):
    out = est.row_factors_ @ est.components_
    if hasattr(est, "global_mean_"):
        out = out + est.global_mean_
    if hasattr(est, "row_bias_"):
        out = out + est.row_bias_[:, None] + est.col_bias_[None, :]
    return out


def _pair(X, Xd, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the capped ridge fits, in both
        ref = AltMinCompleter(**params).fit(X)
        got = AltMinCompleter(**params).fit(Xd)
    return ref, got


@pytest.mark.parametrize(
    "params",
    [
        dict(rank=3),
        dict(rank=3, solver="cg"),
        dict(rank=3, solver="sketch", sketch_size=6),
        dict(rank=3, init="random", n_iter=40),
        dict(rank=3, center="global", clip_incoherence=True),
        dict(rank=3, center="biases", ridge=0.1, ridge_scaling="count", n_iter=15),
    ],
    ids=["exact", "cg", "sketch", "random-init", "global-clip", "biases-alswr"],
)
@pytest.mark.parametrize("chunks", [(30, 40), (50, 80), (120, 25)], ids=["4x2", "3x1", "1x4"])
def test_dask_fit_equals_the_in_memory_fit(params, chunks):
    """Same completion, train-RMSE curve, stopping and offsets as the in-memory fit (1e-8)."""
    X, _ = _data(noise=0.01 if "center" in params else 0.0)
    if params.get("center") == "biases":
        X = X + 3.0 + np.linspace(0, 1, X.shape[0])[:, None]
    ref, got = _pair(X, da.from_array(X, chunks=chunks), random_state=0, **params)
    assert got.n_iter_ == ref.n_iter_ and got.stop_reason_ == ref.stop_reason_
    np.testing.assert_allclose(got.objective_curve_, ref.objective_curve_, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(_completed(got), _completed(ref), rtol=0, atol=1e-8 * np.abs(_completed(ref)).max())
    np.testing.assert_allclose(got.singular_values_, ref.singular_values_, rtol=1e-8)
    assert got.sampling_rate_ == ref.sampling_rate_ and got.n_features_in_ == X.shape[1]
    # the fitted model serves in-memory inference as usual
    np.testing.assert_allclose(got.transform(X), ref.transform(X), atol=1e-8 * np.abs(_completed(ref)).max())


def test_sparse_chunks_observe_stored_entries():
    """scipy.sparse chunks follow the in-memory sparse convention (stored = observed, zeros
    included) and give the in-memory sparse fit."""
    X, _ = _data(seed=3)
    r, c = np.nonzero(~np.isnan(X))
    vals = X[r, c].copy()
    vals[::7] = 0.0  # explicit zeros are observations
    S = sp.csr_matrix((vals, (r, c)), shape=X.shape)
    ref, got = _pair(S, da.from_array(S, chunks=(40, 80), asarray=False), rank=3, random_state=1)
    np.testing.assert_allclose(_completed(got), _completed(ref), atol=1e-8 * np.abs(_completed(ref)).max())


def test_float32_is_preserved_and_close():
    X, _ = _data(seed=2)
    X32 = X.astype(np.float32)
    ref, got = _pair(X32, da.from_array(X32, chunks=(40, 40)), rank=3, random_state=0)
    assert got.row_factors_.dtype == np.float32 and got.components_.dtype == np.float32
    np.testing.assert_allclose(_completed(got), _completed(ref), atol=1e-4)


def test_recovers_a_low_rank_matrix_on_a_local_cluster():
    """The same code on a distributed cluster (in-process, 2 workers): factors are scattered,
    blocks persisted on the workers; the result equals the in-memory fit."""
    distributed = pytest.importorskip("distributed")
    X, M = _data(seed=4)
    ref = AltMinCompleter(rank=3, random_state=0).fit(X)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster, distributed.Client(cluster):
        got = AltMinCompleter(rank=3, random_state=0).fit(da.from_array(X, chunks=(30, 40)))
    np.testing.assert_allclose(_completed(got), _completed(ref), atol=1e-8 * np.abs(M).max())
    assert np.linalg.norm(_completed(got) - M) / np.linalg.norm(M) < 1e-8


class _Recorder(dask.callbacks.Callback):
    """Records the size of every task result and how often each chunk of X is computed."""

    def __init__(self, chunk_keys):
        super().__init__()
        self.chunk_keys = chunk_keys
        self.chunk_computes = dict.fromkeys(chunk_keys, 0)
        self.largest_task = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        if key in self.chunk_keys:
            self.chunk_computes[key] += 1
        else:
            self.largest_task = max(self.largest_task, _nbytes(result))


def _nbytes(obj):
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if sp.issparse(obj):
        return obj.data.nbytes
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    if hasattr(obj, "__dict__"):
        return sum(_nbytes(v) for v in vars(obj).values())
    return 0


def test_the_fit_never_materialises_the_data():
    """Every chunk of X is computed exactly once (no pass re-reads the data, nothing computes X
    as a whole); no task result holds more than half of the observations; and apart from the
    one ``persist`` of the blocks (which a local scheduler keeps in this process, a cluster on
    its workers) everything returned to the caller is factor-sized."""
    X, _ = _data(m=160, n=120, k=3, p=0.5, seed=5)
    Xd = da.from_array(X, chunks=(40, 60)) * 1.0  # chunks computed by tasks (from_array embeds them)
    obs_bytes = int(np.sum(~np.isnan(X))) * 24  # row, column (int64) and value (float64)
    chunk_keys = set(dask.core.flatten(Xd.__dask_keys__()))
    returned = []

    def counting_get(dsk, keys, **kwargs):
        result = dask.local.get_sync(dsk, keys, **kwargs)
        returned.append(_nbytes(list(result) if isinstance(result, tuple) else result))
        return result

    rec = _Recorder(chunk_keys)
    with dask.config.set(scheduler=counting_get), rec:
        est = AltMinCompleter(rank=3, random_state=0).fit(Xd)
    assert est.converged_
    assert set(rec.chunk_computes.values()) == {1}
    assert rec.largest_task < obs_bytes / 2
    persists = [b for b in returned if b >= obs_bytes / 2]
    assert len(persists) == 1  # the blocks: the data twice (by rows and by columns)
    factor_bytes = 8 * (160 + 120) * (3 + max(10, 3))
    assert max(b for b in returned if b < obs_bytes / 2) <= factor_bytes
    assert len(returned) > 2 * est.n_iter_  # really iterated blockwise


def test_bad_dask_input_is_named():
    X, _ = _data()
    Xd = da.from_array(X, chunks=(40, 40))
    with pytest.raises(ValueError, match="sample_splitting"):
        AltMinCompleter(rank=3, sample_splitting=True).fit(Xd)
    with pytest.raises(ValueError, match="2-D"):
        AltMinCompleter(rank=3).fit(da.from_array(X[0], chunks=40))
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        AltMinCompleter(rank=3).fit(Xd[da.from_array(np.ones(X.shape[0], bool), chunks=40)])
    with pytest.raises(ValueError, match="rank=90 must not exceed"):
        AltMinCompleter(rank=90).fit(Xd)
    with pytest.raises(TypeError, match="real numeric dtype"):
        AltMinCompleter(rank=3).fit(Xd.astype(np.complex128))
    bad = X.copy()
    bad[5, 7] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        AltMinCompleter(rank=3).fit(da.from_array(bad, chunks=(40, 40)))
    empty = X.copy()
    empty[:, 11] = np.nan
    with pytest.raises(ValueError, match="1 columns with no observed entry"):
        AltMinCompleter(rank=3).fit(da.from_array(empty, chunks=(40, 40)))
    S = sp.csr_matrix(np.nan_to_num(X, nan=0.0))
    S.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite stored entries"):
        AltMinCompleter(rank=3).fit(da.from_array(S, chunks=(40, 80), asarray=False))
    with pytest.raises(ValueError, match="X is empty"):
        AltMinCompleter(rank=1).fit(da.zeros((0, 5), chunks=1))


def test_generated_dask_problem_is_recovered_like_in_memory():
    """make_dask_low_rank_completion builds sparse chunks lazily; the fit on it equals the
    in-memory fit of the same entries and recovers U V^T."""
    from subspacelab.datasets import make_dask_low_rank_completion

    d = make_dask_low_rank_completion(400, 120, 3, 12_000, row_chunk=100, random_state=3)
    assert d.X.numblocks == (4, 1) and sp.issparse(d.X._meta)
    S = d.X.compute()
    assert S.nnz == 12_000
    ref, got = _pair(sp.csr_matrix(S), d.X, rank=3, random_state=0)
    np.testing.assert_allclose(_completed(got), _completed(ref), atol=1e-8)
    M = np.concatenate([d.left_factor(b) for b in range(4)]) @ d.right_factor().T
    assert np.linalg.norm(_completed(got) - M) / np.linalg.norm(M) < 1e-8
    with pytest.raises(ValueError, match="rank"):
        make_dask_low_rank_completion(10, 5, 6, 20)
