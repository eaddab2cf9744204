"""Tests of CRATE: the spec's §3.5 invariants, torch vs array-API forward, checkpoints, estimator.

Spec: ../shared/specs/rate_reduction.md §3. Layer-level invariants run on the pure array-API
forward (every backend of the fixture) and on the torch modules; estimator tests train tiny
models for a few epochs.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspacelab import CRATEEncoder
from subspacelab.estimators import _crate_forward as fwd
from subspacelab.nn.crate import (
    CRATE,
    ISTA,
    MSSA,
    CRATELayer,
    Lion,
    from_official_state_dict,
    load_official_state_dict,
    to_official_state_dict,
)
from subspacelab.rate import subspace_compressed_rate, subspace_compressed_rate_grad
from sklearn import config_context


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models: one thread is faster than contending for shared cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _orthonormal(rng, d, k):
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q


def _paper_config(heads, dim_head, eps_sq, attention="softmax", step=0.1):
    return dict(mode="paper", heads=heads, dim_head=dim_head, eps_sq=eps_sq, attention=attention,
                compression_step=step, ista_step=0.1, ista_lambda=0.1, depth=1, decoder_depth=0, pool="cls")


def _code_config(heads, dim_head, depth=1, decoder_depth=0):
    return dict(mode="code", heads=heads, dim_head=dim_head, eps_sq=0.01, attention="softmax", compression_step=None,
                ista_step=0.1, ista_lambda=0.1, depth=depth, decoder_depth=decoder_depth, pool="cls")


def _random_params(rng, d, K, p, mode, depth=1):
    """Random parameters of ``depth`` layers, named as CRATE's state dict."""
    params = {}
    for i in range(depth):
        pre = f"layers.{i}"
        if mode == "code":
            params[pre + ".norm1.weight"] = 1 + 0.1 * rng.standard_normal(d)
            params[pre + ".norm1.bias"] = 0.1 * rng.standard_normal(d)
            params[pre + ".mssa.qkv.weight"] = rng.standard_normal((K * p, d)) / np.sqrt(d)
            params[pre + ".mssa.to_out.weight"] = rng.standard_normal((d, K * p)) / np.sqrt(K * p)
            params[pre + ".mssa.to_out.bias"] = 0.1 * rng.standard_normal(d)
            params[pre + ".norm2.weight"] = 1 + 0.1 * rng.standard_normal(d)
            params[pre + ".norm2.bias"] = 0.1 * rng.standard_normal(d)
        else:
            params[pre + ".mssa.bases"] = rng.standard_normal((K, d, p)) / np.sqrt(d)
        params[pre + ".ista.weight"] = rng.uniform(-1, 1, (d, d)) * np.sqrt(6 / d)
    return params


def _on(backend, params):
    return {k: backend.asarray(v) for k, v in params.items()}


# ------------------------------------------------------------------------------- §3.5 invariants


@pytest.mark.parametrize("mode", ["code", "paper"])
@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1))
def test_token_permutation_equivariance(backend, mode, seed):
    """Without positional embedding a layer commutes with permutations of the tokens (§3.5.1)."""
    rng = np.random.default_rng(seed)
    d, K, p, N = 8, 2, 4, 6
    cfg = _paper_config(K, p, eps_sq=1.0) if mode == "paper" else _code_config(K, p)
    params = _on(backend, _random_params(rng, d, K, p, mode))
    Z = rng.standard_normal((2, N, d))
    perm = rng.permutation(N)
    xp = backend.xp
    out = backend.to_numpy(fwd.layer(backend.asarray(Z), params, 0, cfg, xp))
    out_perm = backend.to_numpy(fwd.layer(backend.asarray(Z[:, perm]), params, 0, cfg, xp))
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_attention_rows_sum_to_one_and_ista_nonnegative(backend, mode, rng):
    d, K, p = 8, 2, 4
    cfg = _paper_config(K, p, eps_sq=1.0) if mode == "paper" else _code_config(K, p)
    params = _on(backend, _random_params(rng, d, K, p, mode))
    rec = {"projections": [], "attention": [], "half": [], "tokens": []}
    Z = backend.asarray(3 * rng.standard_normal((3, 7, d)))
    out = backend.to_numpy(fwd.layer(Z, params, 0, cfg, backend.xp, record=rec))
    att = backend.to_numpy(rec["attention"][0])
    assert att.shape == (3, K, 7, 7)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, rtol=1e-12)
    assert (att >= 0).all()
    assert (out >= 0).all() and (out == 0).any()


@settings(max_examples=10)
@given(seed=st.integers(0, 2**32 - 1), lam=st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_ista_exact_prox_for_orthogonal_dictionary(backend, seed, lam):
    """D orthogonal, eta = 1: ISTA(Z) = ReLU(Z D - lam) (row form of ReLU(D^T z - lam)), the exact
    non-negative lasso solution (§3.5.3): no feasible perturbation lowers the objective."""
    rng = np.random.default_rng(seed)
    d = 6
    D = _orthonormal(rng, d, d)
    z = rng.standard_normal((5, d))
    cfg = dict(ista_step=1.0, ista_lambda=lam)
    out = backend.to_numpy(fwd.ista(backend.asarray(z), backend.asarray(D), cfg, backend.xp))
    np.testing.assert_allclose(out, np.maximum(z @ D - lam, 0), atol=1e-12)

    def objective(x):  # lam ||x||_1 + 1/2 ||z - x D^T||^2 per row
        return lam * np.abs(x).sum(-1) + 0.5 * ((z - x @ D.T) ** 2).sum(-1)

    for _ in range(5):
        trial = np.maximum(out + 0.1 * rng.standard_normal(out.shape), 0)
        assert (objective(trial) >= objective(out) - 1e-12).all()


def test_ista_identity_dictionary_and_worked_example(backend):
    """D = I: ISTA(z) = ReLU(z - eta lam); the worked example (0.5, -0.2, 0.05) -> (0.49, 0, 0.04)."""
    z = backend.asarray(np.array([[0.5, -0.2, 0.05]]))
    out = fwd.ista(z, backend.asarray(np.eye(3)), dict(ista_step=0.1, ista_lambda=0.1), backend.xp)
    np.testing.assert_allclose(backend.to_numpy(out), [[0.49, 0.0, 0.04]], atol=1e-15)
    ista = ISTA(3, step=0.1, lam=0.1).double()
    with torch.no_grad():
        ista.weight.copy_(torch.eye(3, dtype=torch.float64))
    np.testing.assert_allclose(ista(torch.tensor([[0.5, -0.2, 0.05]], dtype=torch.float64)).detach().numpy(),
                               [[0.49, 0.0, 0.04]], atol=1e-15)


def test_ista_large_lambda_gives_zero(rng):
    z = rng.standard_normal((4, 5))
    D = rng.standard_normal((5, 5))
    out = fwd.ista(z, D, dict(ista_step=0.1, ista_lambda=1e6), np)
    assert (out == 0).all()


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1))
def test_paper_mode_basis_rotation_invariance(backend, seed):
    """U_k -> U_k O_k leaves MSSA(Z) and R^c(Z | U) unchanged in paper mode (§3.5.5)."""
    rng = np.random.default_rng(seed)
    d, K, p, N = 8, 2, 3, 5
    U = rng.standard_normal((K, d, p)) / np.sqrt(d)
    UO = np.stack([U[k] @ _orthonormal(rng, p, p) for k in range(K)])
    Z = rng.standard_normal((2, N, d))
    cfg = _paper_config(K, p, eps_sq=2.0)
    xp = backend.xp
    a = fwd.mssa(backend.asarray(Z), {"m.bases": backend.asarray(U)}, "m", cfg, xp)
    b = fwd.mssa(backend.asarray(Z), {"m.bases": backend.asarray(UO)}, "m", cfg, xp)
    np.testing.assert_allclose(backend.to_numpy(a), backend.to_numpy(b), rtol=1e-10, atol=1e-12)
    ra = subspace_compressed_rate(backend.asarray(Z), backend.asarray(U), eps_sq=2.0)
    rb = subspace_compressed_rate(backend.asarray(Z), backend.asarray(UO), eps_sq=2.0)
    np.testing.assert_allclose(backend.to_numpy(ra), backend.to_numpy(rb), rtol=1e-10)


def test_global_rotation_invariance(rng):
    """R^c(Z Q^T | Q U) = R^c(Z | U) (row form of R^c(QZ | QU))."""
    d, K, p = 6, 2, 3
    U = rng.standard_normal((K, d, p))
    Q = _orthonormal(rng, d, d)
    Z = rng.standard_normal((7, d))
    np.testing.assert_allclose(subspace_compressed_rate(Z @ Q.T, np.einsum("ij,kjp->kip", Q, U), eps_sq=0.5),
                               subspace_compressed_rate(Z, U, eps_sq=0.5), rtol=1e-12)


def _linear_step_setup(rng, eps_sq):
    d, K, p, N = 6, 2, 3, 5
    U = _orthonormal(rng, d, K * p).reshape(d, K, p).transpose(1, 0, 2)  # sum_k U_k U_k^T = I
    Z = rng.standard_normal((N, d))
    beta = p / (N * eps_sq)
    return Z, U, beta, _paper_config(K, p, eps_sq=eps_sq, attention="linear")


def test_linear_mssa_is_the_neumann_gradient(backend, rng):
    """With the Gram matrix in place of the softmax, beta Z - beta MSSA_lin(Z) equals the first-order
    Neumann approximation beta Z - beta^2 sum_k G_k Z U_k U_k^T of grad R^c exactly (§3.5.7)."""
    Z, U, beta, cfg = _linear_step_setup(rng, eps_sq=50.0)
    m = fwd.mssa(backend.asarray(Z[None]), {"m.bases": backend.asarray(U)}, "m", cfg, backend.xp)
    approx = beta * Z - beta * backend.to_numpy(m)[0]
    neumann = beta * Z - beta**2 * sum((Z @ U[k]) @ (Z @ U[k]).T @ Z @ U[k] @ U[k].T for k in range(len(U)))
    np.testing.assert_allclose(approx, neumann, rtol=1e-12, atol=1e-14)


def test_linear_mssa_error_to_exact_gradient_is_order_beta_squared(rng):
    """Relative error of the linearised step to the exact grad R^c shrinks ~100x per 10x smaller beta."""
    errors = []
    Z0 = None
    for beta_target in (0.02, 0.002, 0.0002):
        Z, U, _, _ = _linear_step_setup(np.random.default_rng(1), eps_sq=1.0)
        Z0 = Z if Z0 is None else Z0
        N, p = Z.shape[0], U.shape[2]
        eps_sq = p / (N * beta_target)
        cfg = _paper_config(U.shape[0], p, eps_sq=eps_sq, attention="linear")
        approx = beta_target * Z - beta_target * fwd.mssa(Z[None], {"m.bases": U}, "m", cfg, np)[0]
        exact = subspace_compressed_rate_grad(Z, U, eps_sq=eps_sq)
        errors.append(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
    assert errors[0] < 1e-2
    for a, b in zip(errors, errors[1:]):
        assert 50 < a / b < 200, errors


def test_small_compression_step_decreases_rc(rng):
    """A small kappa step along either gradient (exact, or the linear MSSA one) decreases R^c."""
    Z, U, beta, cfg = _linear_step_setup(rng, eps_sq=5.0)
    eps_sq = cfg["eps_sq"]
    rc = float(subspace_compressed_rate(Z, U, eps_sq=eps_sq))
    exact = subspace_compressed_rate_grad(Z, U, eps_sq=eps_sq)
    approx = beta * Z - beta * fwd.mssa(Z[None], {"m.bases": U}, "m", cfg, np)[0]
    kappa = 0.1
    assert float(subspace_compressed_rate(Z - kappa * exact, U, eps_sq=eps_sq)) < rc
    assert float(subspace_compressed_rate(Z - kappa * approx, U, eps_sq=eps_sq)) < rc
    # the paper-mode layer update (1 - kappa beta) Z + kappa beta MSSA_lin(Z) is that step
    kb = kappa * beta
    step = (1 - kb) * Z + kb * fwd.mssa(Z[None], {"m.bases": U}, "m", cfg, np)[0]
    np.testing.assert_allclose(step, Z - kappa * approx, rtol=1e-12)


def test_compression_gradient_matches_finite_differences(rng):
    """The exact grad R^c of §3.1 matches central finite differences (§3.5.8)."""
    d, K, p, N = 5, 2, 2, 4
    U = rng.standard_normal((K, d, p))
    Z = rng.standard_normal((N, d))
    g = subspace_compressed_rate_grad(Z, U, eps_sq=0.5)
    h = 1e-6
    fd = np.zeros_like(Z)
    for i in range(N):
        for j in range(d):
            E = np.zeros_like(Z)
            E[i, j] = h
            fd[i, j] = (subspace_compressed_rate(Z + E, U, eps_sq=0.5) - subspace_compressed_rate(Z - E, U, eps_sq=0.5)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------- torch vs array API


def _module_params(module, backend=None):
    params = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    return params if backend is None else _on(backend, params)


@pytest.mark.parametrize("mode", ["code", "paper"])
def test_torch_modules_equal_array_api_forward(backend, mode, rng):
    """Encoder, head, masked embedding and decoder: torch modules == pure array-API forward."""
    torch.manual_seed(0)
    module = CRATE(4, 6, dim=8, depth=2, heads=2, mode=mode, eps_sq=1.0, n_classes=3, decoder_depth=2).double()
    cfg = dict(mode=mode, heads=2, dim_head=4, depth=2, decoder_depth=2, ista_step=0.1, ista_lambda=0.1, eps_sq=1.0,
               compression_step=module.compression_step, pool="cls", attention="softmax")
    params = _module_params(module, backend)
    units = rng.standard_normal((3, 6, 4))
    mask = rng.random((3, 6)) < 0.5
    xp = backend.xp
    with torch.no_grad():
        ut = torch.as_tensor(units)
        tok_t = module.encode(ut, torch.as_tensor(mask))
        logits_t = module(ut)
        dec_t = module.decode(tok_t[-1])
    tok = fwd.encode(backend.asarray(units), params, cfg, xp, mask=backend.asarray(mask))
    for a, b in zip(tok, tok_t):
        np.testing.assert_allclose(backend.to_numpy(a), b.numpy(), rtol=1e-10, atol=1e-12)
    logits = fwd.head_logits(fwd.pool(fwd.encode(backend.asarray(units), params, cfg, xp)[-1], cfg, xp), params, xp)
    np.testing.assert_allclose(backend.to_numpy(logits), logits_t.numpy(), rtol=1e-10, atol=1e-12)
    dec = fwd.decode(tok[-1], params, cfg, xp)
    np.testing.assert_allclose(backend.to_numpy(dec), dec_t.numpy(), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def digits_small():
    from subspacelab.datasets import load_digits

    X, y = load_digits(return_images=True)
    return X[:300], y[:300], X[300:400], y[300:400]


@pytest.fixture(scope="module")
def fitted(digits_small):
    X, y, _, _ = digits_small
    return CRATEEncoder(image_shape=(8, 8), patch_size=2, dim=16, depth=2, heads=2, n_epochs=3, lr=3e-3,
                        warmup_epochs=1, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def fitted_mae(digits_small):
    X, _, _, _ = digits_small
    return CRATEEncoder(image_shape=(8, 8), patch_size=4, dim=16, depth=2, heads=2, n_epochs=2, lr=3e-3,
                        warmup_epochs=1, random_state=0).fit(X)


def test_estimator_array_api_inference_equals_torch(backend, fitted, digits_small):
    """predict_proba / transform: pure array-API pass on each backend == torch modules (float32)."""
    _, _, Xte, _ = digits_small
    import copy

    est_t = copy.copy(fitted)
    est_t.inference = "torch"
    p_torch = est_t.predict_proba(Xte)
    f_torch = est_t.transform(Xte, layer=1, return_tokens=True)
    with config_context(array_api_dispatch=True):
        X_b = backend.asarray(Xte)
        est = copy.copy(fitted)
        # fitted on NumPy; move the fitted arrays so that the same-namespace guard accepts X_b
        est.dictionaries_ = backend.asarray(backend.to_numpy(fitted.dictionaries_))
        p = est.predict_proba(X_b)
        f = est.transform(X_b, layer=1, return_tokens=True)
        assert type(p) is type(X_b)
    np.testing.assert_allclose(backend.to_numpy(p), p_torch, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(backend.to_numpy(f), f_torch, rtol=1e-4, atol=1e-4)


def test_mae_array_api_equals_torch(fitted_mae, digits_small):
    _, _, Xte, _ = digits_small
    tokens = fitted_mae.transform(Xte, return_tokens=True)
    rec = fitted_mae.inverse_transform(tokens)
    m = fitted_mae.module_
    units = fwd.patchify(Xte.reshape(-1, 8, 8, 1), (4, 4), np)
    with torch.no_grad():
        rec_t = m.decode(m.encode(torch.as_tensor(units, dtype=torch.float32))[-1]).numpy()
    np.testing.assert_allclose(rec, fwd.unpatchify(rec_t, (8, 8, 1), (4, 4), np).reshape(-1, 8, 8), atol=1e-4)


# ------------------------------------------------------------------------- official checkpoints


def _official_state_dict(rng, *, patch_dim, dim, depth, heads, dim_head, n_patches, n_classes):
    """A state dict with the published key layout of model/crate.py (written out by hand)."""
    t = lambda *s: torch.as_tensor(rng.standard_normal(s) * 0.3, dtype=torch.float32)  # noqa: E731
    sd = {
        "pos_embedding": t(1, n_patches + 1, dim),
        "cls_token": t(1, 1, dim),
        "to_patch_embedding.1.weight": 1 + t(patch_dim), "to_patch_embedding.1.bias": t(patch_dim),
        "to_patch_embedding.2.weight": t(dim, patch_dim), "to_patch_embedding.2.bias": t(dim),
        "to_patch_embedding.3.weight": 1 + t(dim), "to_patch_embedding.3.bias": t(dim),
        "mlp_head.0.weight": 1 + t(dim), "mlp_head.0.bias": t(dim),
        "mlp_head.1.weight": t(n_classes, dim), "mlp_head.1.bias": t(n_classes),
    }
    for i in range(depth):
        p = f"transformer.layers.{i}."
        sd[p + "0.norm.weight"], sd[p + "0.norm.bias"] = 1 + t(dim), t(dim)
        sd[p + "0.fn.qkv.weight"] = t(heads * dim_head, dim)
        sd[p + "0.fn.to_out.0.weight"], sd[p + "0.fn.to_out.0.bias"] = t(dim, heads * dim_head), t(dim)
        sd[p + "1.norm.weight"], sd[p + "1.norm.bias"] = 1 + t(dim), t(dim)
        sd[p + "1.fn.weight"] = t(dim, dim)
    return sd


def _official_forward(sd, units, heads, depth):
    """The authors' forward pass written directly on their parameter names."""
    F = torch.nn.functional
    ln = lambda x, k: F.layer_norm(x, x.shape[-1:], sd[k + ".weight"], sd[k + ".bias"])  # noqa: E731
    x = ln(units, "to_patch_embedding.1")
    x = F.linear(x, sd["to_patch_embedding.2.weight"], sd["to_patch_embedding.2.bias"])
    x = ln(x, "to_patch_embedding.3")
    x = torch.cat([sd["cls_token"].expand(x.shape[0], 1, -1), x], 1) + sd["pos_embedding"]
    for i in range(depth):
        p = f"transformer.layers.{i}."
        w = F.linear(ln(x, p + "0.norm"), sd[p + "0.fn.qkv.weight"])
        b, n, hd = w.shape
        w = w.reshape(b, n, heads, hd // heads).permute(0, 2, 1, 3)
        a = torch.softmax(w @ w.transpose(-1, -2) * (hd // heads) ** -0.5, -1)
        o = (a @ w).permute(0, 2, 1, 3).reshape(b, n, hd)
        x = F.linear(o, sd[p + "0.fn.to_out.0.weight"], sd[p + "0.fn.to_out.0.bias"]) + x
        y = ln(x, p + "1.norm")
        W = sd[p + "1.fn.weight"]
        x = F.relu(y + 0.1 * (F.linear(y, W.t()) - F.linear(F.linear(y, W), W.t())) - 0.1 * 0.1)
    return F.linear(ln(x[:, 0], "mlp_head.0"), sd["mlp_head.1.weight"], sd["mlp_head.1.bias"])


def test_official_state_dict_loads_and_round_trips(rng):
    sizes = dict(patch_dim=12, dim=16, depth=2, heads=4, dim_head=4, n_patches=9, n_classes=5)
    sd = _official_state_dict(rng, **sizes)
    module = from_official_state_dict({"model": {"module." + k: v for k, v in sd.items()}}, heads=4)
    assert (module.dim, module.depth, module.heads, module.dim_head) == (16, 2, 4, 4)
    back = to_official_state_dict(module)
    assert set(back) == set(sd)
    for k in sd:
        torch.testing.assert_close(back[k], sd[k], rtol=0, atol=0)
    units = torch.as_tensor(rng.standard_normal((3, 9, 12)), dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(module(units), _official_forward(sd, units, heads=4, depth=2), rtol=1e-5, atol=1e-5)
    # loading into an existing module of the right size works; a wrong shape or key is refused
    other = CRATE(12, 9, dim=16, depth=2, heads=4, n_classes=5)
    load_official_state_dict(other, sd)
    bad = dict(sd)
    bad["mlp_head.1.weight"] = torch.zeros(7, 16)
    with pytest.raises(ValueError, match="mlp_head|head.linear"):
        load_official_state_dict(other, bad)
    with pytest.raises(KeyError, match="unexpected parameter"):
        load_official_state_dict(other, {**sd, "transformer.layers.0.2.fn.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="code"):
        load_official_state_dict(CRATE(12, 9, dim=16, depth=2, heads=4, mode="paper", n_classes=5), sd)


# ------------------------------------------------------------------------------ estimator


def test_fit_attributes_and_shapes(fitted, digits_small):
    _, _, Xte, _ = digits_small
    assert fitted.subspace_bases_.shape == (2, 2, 16, 8)
    assert fitted.dictionaries_.shape == (2, 16, 16)
    np.testing.assert_array_equal(fitted.classes_, np.arange(10))
    assert fitted.n_iter_ == 3 and len(fitted.loss_curve_) == 3
    qkv = fitted.module_.layers[1].mssa.qkv.weight.detach().numpy()
    np.testing.assert_allclose(fitted.subspace_bases_[1, 1], qkv[8:16].T)
    assert fitted.transform(Xte).shape == (100, 16)
    assert fitted.transform(Xte, layer=0, return_tokens=True).shape == (100, 17, 16)
    P = fitted.predict_proba(Xte)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(fitted.predict(Xte), fitted.classes_[P.argmax(1)])
    att = fitted.attention_maps(Xte[:4], -1)
    assert att.shape == (4, 2, 17, 17)
    np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-12)
    assert not hasattr(fitted, "inverse_transform")  # no decoder after supervised fit


def test_float32_stays_float32(fitted, digits_small):
    _, _, Xte, _ = digits_small
    assert fitted.transform(Xte.astype(np.float32)).dtype == np.float32
    assert fitted.predict_proba(Xte.astype(np.float32)).dtype == np.float32


def test_diagnostics_match_independent_computation(fitted, digits_small):
    """layerwise_compression / sparsity / sparse rate reduction recomputed from the torch module."""
    _, _, Xte, _ = digits_small
    m = fitted.module_
    units = torch.as_tensor(fwd.patchify(Xte.reshape(-1, 8, 8, 1), (2, 2), np), dtype=torch.float64)
    md = CRATE(4, 16, dim=16, depth=2, heads=2, n_classes=10).double()
    md.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    comp, spars, srr = [], [], []
    with torch.no_grad():
        z = md.embed_units(units)
        for layer in md.layers:
            w = layer.mssa.project(layer.norm1(z))  # (n, K, N, p)
            w = w / w.norm(dim=-1, keepdim=True)
            N, p = w.shape[2], w.shape[3]
            eye = torch.eye(N, dtype=w.dtype)
            comp.append(float((0.5 * torch.logdet(eye + p / (N * 0.01) * w @ w.transpose(-1, -2))).sum((1,)).mean()))
            z = layer(z)
            spars.append(float((z == 0).double().mean()))
            U = layer.mssa.qkv.weight.reshape(2, 8, 16).transpose(1, 2)
            d = z.shape[-1]
            R = 0.5 * torch.logdet(torch.eye(d, dtype=z.dtype) + d / (N * 0.01) * z.transpose(1, 2) @ z)
            zu = z.unsqueeze(1) @ U
            Rc = (0.5 * torch.logdet(torch.eye(8, dtype=z.dtype) + 8 / (N * 0.01) * zu.transpose(-1, -2) @ zu)).sum(1)
            srr.append(float((R - Rc - 0.1 * z.abs().sum((1, 2))).mean()))
    np.testing.assert_allclose(fitted.layerwise_compression(Xte), comp, rtol=1e-6)
    np.testing.assert_allclose(fitted.layerwise_sparsity(Xte), spars, rtol=1e-6)
    np.testing.assert_allclose(fitted.layerwise_sparse_rate_reduction(Xte), srr, rtol=1e-5)


def test_random_state_reproducible(digits_small):
    X, y, Xte, _ = digits_small
    kw = dict(image_shape=(8, 8), patch_size=4, dim=8, depth=1, heads=2, n_epochs=2, warmup_epochs=1)
    a = CRATEEncoder(random_state=3, **kw).fit(X, y)
    b = CRATEEncoder(random_state=3, **kw).fit(X, y)
    c = CRATEEncoder(random_state=4, **kw).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(Xte), b.predict_proba(Xte))
    assert not np.allclose(a.predict_proba(Xte), c.predict_proba(Xte))
    assert a.loss_curve_ == b.loss_curve_


def test_early_stopping_verbose_and_lion(digits_small, capsys):
    X, y, _, _ = digits_small
    est = CRATEEncoder(image_shape=(8, 8), patch_size=4, dim=8, depth=1, heads=2, n_epochs=40, warmup_epochs=0,
                       optimizer="lion", lr=3e-3, early_stopping=True, n_iter_no_change=2, tol=0.5,
                       random_state=0, verbose=True).fit(X, y)
    assert est.n_iter_ < 40
    assert len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_)
    out = capsys.readouterr().out
    assert "epoch 1/40: loss" in out and "validation score" in out


def test_early_stopping_warns_when_still_improving(digits_small):
    from sklearn.exceptions import ConvergenceWarning

    X, y, _, _ = digits_small
    with pytest.warns(ConvergenceWarning, match="still improving"):
        CRATEEncoder(image_shape=(8, 8), patch_size=4, dim=8, depth=1, heads=2, n_epochs=2, warmup_epochs=0,
                     early_stopping=True, n_iter_no_change=5, tol=0.0, random_state=0, lr=1e-2).fit(X, y)


def test_lion_step_is_sign_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.0)
    p.grad = torch.tensor([0.3, -0.1, 0.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 0.5]))


def test_tokens_input_and_paper_mode(rng):
    """Pre-tokenised (n, T, d) input; paper mode trains (finite loss) and keeps the derivation's layer."""
    X = rng.standard_normal((60, 5, 3))
    y = (X[:, :, 0].sum(1) > 0).astype(int)
    est = CRATEEncoder(dim=8, depth=2, heads=2, mode="paper", eps_sq=1.0, n_epochs=3, warmup_epochs=1,
                       random_state=0).fit(X, y)
    assert np.isfinite(est.loss_curve_).all()
    assert est.transform(X, return_tokens=True).shape == (60, 6, 8)
    assert est.subspace_bases_.shape == (2, 2, 8, 4)
    np.testing.assert_allclose(est.subspace_bases_[0], est.module_.layers[0].mssa.bases.detach().numpy())
    with pytest.raises(ValueError, match="fitted on shape"):
        est.predict(rng.standard_normal((4, 5, 4)))  # wrong token width


def test_masked_autoencoder_api(fitted_mae, digits_small):
    _, _, Xte, _ = digits_small
    assert not hasattr(fitted_mae, "classes_")
    tokens = fitted_mae.transform(Xte, return_tokens=True)
    rec = fitted_mae.inverse_transform(tokens)
    assert rec.shape == Xte.shape
    mask = np.zeros((len(Xte), 4), dtype=bool)
    mask[:, 0] = True
    masked = fitted_mae.reconstruct(Xte, patch_mask=mask)
    assert masked.shape == Xte.shape
    np.testing.assert_allclose(fitted_mae.reconstruct(Xte), rec, atol=1e-12)
    assert not np.allclose(masked, rec)
    with pytest.raises(ValueError, match="without labels"):
        fitted_mae.predict(Xte)
    with pytest.raises(ValueError, match="return_tokens=True"):
        fitted_mae.inverse_transform(tokens[:, :3])
    with pytest.raises(ValueError, match="patch_mask"):
        fitted_mae.reconstruct(Xte, patch_mask=mask[:, :3])


def test_masked_autoencoder_reconstructs_visible_and_unmasked_input():
    """Regression: masked-autoencoding fit(X) must train the visible patches too. When only the
    hidden patches were scored, the decoder never learnt to reproduce what it sees and
    inverse_transform(transform(X)) of held-out digits came out worse than the mean image."""
    from subspacelab.datasets import load_digits

    X, _ = load_digits(return_images=True)
    Xtr, Xte = X[:400], X[1000:1200]
    est = CRATEEncoder(image_shape=(8, 8), patch_size=2, dim=16, depth=1, heads=2, n_epochs=10, batch_size=32,
                       lr=1e-2, mask_ratio=0.5, warmup_epochs=1, random_state=0).fit(Xtr)
    err_mean = (Xte - Xtr.mean(0)) ** 2
    full = ((est.inverse_transform(est.transform(Xte, return_tokens=True)) - Xte) ** 2).mean()
    # measured 0.52x the mean-image error (1.66x when only the hidden patches were scored)
    assert full < 0.7 * err_mean.mean(), (full, err_mean.mean())
    mask = np.zeros((len(Xte), 16), dtype=bool)
    mask[:, ::2] = True  # hide every other patch
    pix = np.repeat(np.repeat(mask.reshape(-1, 4, 4), 2, axis=1), 2, axis=2)
    visible = ((est.reconstruct(Xte, patch_mask=mask) - Xte) ** 2)[~pix].mean()
    assert visible < 0.7 * err_mean[~pix].mean(), (visible, err_mean[~pix].mean())


@pytest.mark.slow
def test_masked_autoencoder_fills_in_held_out_digits_better_than_mean_image():
    """Masked autoencoding (half of the 2x2 patches hidden): the hidden patches of held-out digits
    are predicted better than by the training mean image (measured 0.74x its error)."""
    from subspacelab.datasets import load_digits

    X, _ = load_digits(return_images=True)
    Xtr, Xte = X[:1000], X[1000:1300]
    est = CRATEEncoder(image_shape=(8, 8), patch_size=2, dim=32, depth=2, heads=4, n_epochs=100, batch_size=64,
                       lr=3e-3, mask_ratio=0.5, warmup_epochs=2, random_state=0).fit(Xtr)
    mask = np.argsort(np.random.default_rng(0).random((len(Xte), 16)), axis=1) < 8
    pix = np.repeat(np.repeat(mask.reshape(-1, 4, 4), 2, axis=1), 2, axis=2)
    hidden = ((est.reconstruct(Xte, patch_mask=mask) - Xte) ** 2)[pix].mean()
    baseline = ((Xte - Xtr.mean(0)) ** 2)[pix].mean()
    assert hidden < 0.85 * baseline, (hidden, baseline)


@pytest.mark.slow
def test_digits_accuracy_regression():
    from sklearn.model_selection import train_test_split

    from subspacelab.datasets import load_digits

    X, y = load_digits(return_images=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    est = CRATEEncoder(image_shape=(8, 8), patch_size=2, dim=32, depth=2, heads=4, n_epochs=20, lr=3e-3,
                       warmup_epochs=2, random_state=0).fit(Xtr, ytr)
    assert est.score(Xte, yte) > 0.85


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "X_shape", "match"),
    [
        (dict(image_shape=(8, 8), patch_size=3), (10, 8, 8), "not divisible by patch_size"),
        (dict(image_shape=(8, 8)), (10, 60), "does not match image_shape"),
        (dict(image_shape=(8, 8, 3)), (10, 8, 8), "C=3"),
        (dict(), (10, 4, 4, 1), "pass image_shape"),
        (dict(image_shape=(8,)), (10, 8), r"\(H, W\)"),
        (dict(dim=10, heads=4), (10, 3), "not divisible by heads"),
        (dict(mode="bert"), (10, 3), "mode"),
        (dict(n_epochs=-1), (10, 3), "n_epochs"),
        (dict(mask_ratio=1.0), (10, 3), "mask_ratio"),
    ],
)
def test_bad_input_and_params(kwargs, X_shape, match, rng):
    X = rng.random(X_shape)
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match=match):
        CRATEEncoder(**{"n_epochs": 1, **kwargs}).fit(X, y)


def test_one_class_and_continuous_labels(rng):
    X = rng.random((10, 3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        CRATEEncoder(n_epochs=1).fit(X, np.zeros(10))
    with pytest.raises(ValueError, match="Unknown label type"):
        CRATEEncoder(n_epochs=1).fit(X, rng.random(10))


def test_layer_argument_checked(fitted, digits_small):
    _, _, Xte, _ = digits_small
    with pytest.raises(ValueError, match="layer must be in"):
        fitted.transform(Xte, layer=3)
    with pytest.raises(ValueError, match="layer must be in"):
        fitted.attention_maps(Xte, 2)
    with pytest.raises(ValueError, match="fitted on shape|features"):
        fitted.predict(Xte[:, :4, :4])


def test_import_subspacelab_does_not_import_torch():
    code = ("import sys, subspacelab; from subspacelab.estimators import crate; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
