"""torch DDP training of CRATEEncoder and TorchDenoiser (issue 13, item 3): two CPU processes
(gloo) train the same network as one process, to float32 rounding."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist

from subspacelab import CRATEEncoder
from subspacelab.diffusion import TorchDenoiser
from subspacelab.nn import _ddp as ddp

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="this torch build has no torch.distributed")

CRATE_KW = {"image_shape": (8, 8), "patch_size": 4, "dim": 8, "depth": 1, "heads": 2, "n_epochs": 2,
            "batch_size": 20, "warmup_epochs": 1, "random_state": 0}
DENOISER_KW = {"base_channels": 4, "channel_mult": (1,), "max_steps": 4, "batch_size": 7, "n_threads": 1,
               "random_state": 0}


def _digits(n=50):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


def test_shards_cover_the_batch_in_order():
    for n in (1, 5, 64):
        for world in (1, 2, 3):
            bounds = [ddp.shard(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_share_weights_make_the_global_batch_mean():
    """Sum over the ranks of weight * (share's mean) / world = the batch mean; an empty share
    still runs one row (every rank joins the all-reduce) with weight 0."""
    values = np.arange(1.0, 8.0)
    for n in (1, 2, 5, 7):
        for world in (1, 2, 3):
            parts = [ddp.share(n, r, world) for r in range(world)]
            total = sum(w * values[rows].mean() / world for rows, size, w in parts)
            np.testing.assert_allclose(total, values[:n].mean())
            assert sum(size for _, size, _ in parts) == n
            for rows, size, w in parts:
                assert rows.stop - rows.start == max(size, 1)
                assert (size == 0) == (w == 0)


@pytest.mark.parametrize("value", [0, -2, True, 1.5, "gloo"])
def test_bad_distributed_settings_are_named(value):
    X, y = _digits(20)
    with pytest.raises(ValueError, match="distributed must be None, an int >= 1 or 'process_group'"):
        CRATEEncoder(**{**CRATE_KW, "distributed": value}).fit(X, y)
    with pytest.raises(ValueError, match="distributed must be None"):
        TorchDenoiser(**{**DENOISER_KW, "distributed": value}).fit(X.reshape(-1, 8, 8))


def test_process_group_mode_needs_an_initialised_group():
    X, y = _digits(20)
    with pytest.raises(ValueError, match="needs an initialised torch.distributed process group"):
        CRATEEncoder(**{**CRATE_KW, "distributed": "process_group"}).fit(X, y)


def _state(module):
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def _assert_same_network(a, b, atol):
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        np.testing.assert_allclose(a[k], b[k], atol=atol, err_msg=k)


@pytest.mark.slow
def test_crate_classifier_on_two_processes_follows_the_single_process_fit():
    """distributed=2 spawns two gloo processes; the batch of 20 is split 10/10 (and the last,
    odd batch 5/5), gradients are all-reduced: same network, same losses to float32 rounding."""
    X, y = _digits(45)
    one = CRATEEncoder(**CRATE_KW).fit(X, y)
    two = CRATEEncoder(**{**CRATE_KW, "distributed": 2}).fit(X, y)
    np.testing.assert_allclose(two.loss_curve_, one.loss_curve_, rtol=1e-5)
    _assert_same_network(_state(two.module_), _state(one.module_), atol=1e-5)
    np.testing.assert_allclose(two.predict_proba(X), one.predict_proba(X), atol=1e-5)
    assert two.n_iter_ == one.n_iter_ == 2


def _fits_on_a_process_group(rank, world, X, images):
    """Run by every rank: fits in the caller's process group, as under torchrun."""
    crate = CRATEEncoder(**{**CRATE_KW, "distributed": "process_group", "mask_ratio": 0.5}).fit(X)
    den = TorchDenoiser(**{**DENOISER_KW, "distributed": "process_group"}).fit(images)
    # every rank must end with the same weights: largest deviation from rank 0
    flat = torch.cat([v.flatten().double() for v in den.network_.state_dict().values()]
                     + [v.flatten().double() for v in crate.module_.state_dict().values()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    dev = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(dev, op=dist.ReduceOp.MAX)
    return {"crate": _state(crate.module_), "crate_loss": crate.loss_curve_,
            "den": _state(den.network_), "den_loss": den.loss_history_, "rank_deviation": float(dev[0])}


@pytest.mark.slow
def test_process_group_mode_masked_crate_and_denoiser():
    """distributed='process_group' joins an existing group (here two spawned gloo ranks): the
    masked autoencoder (masks drawn for the global batch, split with it) and the denoiser
    (batch of 7 split 3/4) match the single-process fits, and the ranks agree exactly."""
    X, _ = _digits(30)
    images = X.reshape(-1, 8, 8)
    out = ddp.spawn(_fits_on_a_process_group, 2, (X, images))
    assert out["rank_deviation"] == 0.0
    crate = CRATEEncoder(**{**CRATE_KW, "mask_ratio": 0.5}).fit(X)
    den = TorchDenoiser(**DENOISER_KW).fit(images)
    np.testing.assert_allclose(out["crate_loss"], crate.loss_curve_, rtol=1e-5)
    _assert_same_network(out["crate"], _state(crate.module_), atol=1e-5)
    np.testing.assert_allclose(out["den_loss"], den.loss_history_, rtol=1e-5)
    _assert_same_network(out["den"], _state(den.network_), atol=1e-5)
