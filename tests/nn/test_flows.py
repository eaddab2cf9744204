"""Normalizing flows: invertibility, exact log-determinants (against brute-force Jacobians),
the rational-quadratic spline's monotonicity and knots, density normalisation, and the
array-API forward/inverse of an exported flow equal to torch on every backend."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import array_api_compat.numpy as xnp  # noqa: E402
import array_api_compat.torch as xt  # noqa: E402

from subspacelab.nn._flow_xp import (  # noqa: E402
    flow_forward,
    flow_inverse,
    rational_quadratic_spline,
    sobel,
    sobel_adjoint,
)
from subspacelab.nn.flows import (  # noqa: E402
    ActNorm,
    AffineCoupling,
    Glow,
    InvertibleConv1x1,
    SplineCoupling,
    Squeeze,
)

COUPLINGS = ["affine", "rational_quadratic_spline"]


def _perturb(module, std, seed=0):
    """Give the zero-initialised conditioner outputs (and biases) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.add_(std * torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                m.bias.add_(std * torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
            if isinstance(m, ActNorm):
                m.bias.add_(0.3 * torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
                m.log_scale.add_(0.3 * torch.randn(m.log_scale.shape, generator=g, dtype=m.log_scale.dtype))
                m.initialized.fill_(True)
    return module


def _glow(coupling, shape=(1, 8, 8), levels=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    g = Glow(shape, levels=levels, steps_per_level=2, hidden_channels=8, coupling=coupling).to(dtype)
    return _perturb(g, 0.05, seed).eval()


@pytest.mark.parametrize("layer", ["squeeze", "actnorm", "invconv", "affine", "spline"])
def test_each_layer_inverts_and_logdets_cancel(layer):
    torch.manual_seed(0)
    m = {"squeeze": lambda: Squeeze(), "actnorm": lambda: ActNorm(4), "invconv": lambda: InvertibleConv1x1(4),
         "affine": lambda: AffineCoupling(4, 8, 1), "spline": lambda: SplineCoupling(4, 8, 1)}[layer]()
    m = _perturb(m.double(), 0.2)
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    y, ld = m(x)
    xr, ldi = m.inverse(y)
    assert (xr - x).abs().max() < 1e-10
    assert (ld + ldi).abs().max() < 1e-9
    assert layer == "squeeze" or not torch.allclose(y, x)


def test_layer_logdet_identities():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    an = _perturb(ActNorm(3).double(), 0.0)
    assert torch.allclose(an(x)[1], 20 * an.log_scale.sum().expand(2))
    conv = InvertibleConv1x1(3).double()
    with torch.no_grad():
        conv.log_diag.add_(0.3)
    _, logabs = torch.linalg.slogdet(conv.weight())
    assert torch.allclose(conv(x)[1], 20 * logabs.expand(2))
    assert torch.allclose(logabs, conv.log_diag.sum())
    assert torch.all(Squeeze()(x[:, :, :4, :4])[1] == 0)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_glow_inverse_float64_and_float32(coupling):
    g = _glow(coupling)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) - 0.5
    z, ld = g(x)
    xr, ldi = g.inverse(z)
    assert (xr - x).abs().max() < 1e-10
    assert (ld + ldi).abs().max() < 1e-8
    zr, _ = g(g.inverse(z)[0])
    assert (zr - z).abs().max() < 1e-10
    g32 = g.float()
    x32 = x.float()
    assert (g32.inverse(g32(x32)[0])[0] - x32).abs().max() < 1e-5


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 2), ((6, 2, 2), 0)])
def test_glow_logdet_equals_bruteforce_jacobian(coupling, shape, levels):
    g = _glow(coupling, shape, levels)
    x = torch.rand(2, *shape, dtype=torch.float64) - 0.5
    with torch.no_grad():
        _, ld = g(x)
    for i in range(2):
        J = torch.autograd.functional.jacobian(lambda v: g(v.reshape(1, *shape))[0].reshape(-1), x[i].reshape(-1))
        sign, logabs = torch.linalg.slogdet(J)
        assert sign != 0
        assert abs(float(logabs) - float(ld[i])) < 1e-8


def test_glow_latent_layout_and_bad_shapes():
    g = Glow((1, 8, 8), levels=3, steps_per_level=1, hidden_channels=4)
    assert g.latent_shapes == [(2, 4, 4), (4, 2, 2), (16, 1, 1)]
    assert sum(math.prod(s) for s in g.latent_shapes) == 64
    with pytest.raises(ValueError, match="divisible by 8"):
        Glow((1, 12, 12), levels=3)
    with pytest.raises(ValueError, match="coupling"):
        Glow((1, 8, 8), levels=1, coupling="additive")
    with pytest.raises(ValueError, match="at least 2 channels"):
        Glow((1, 4, 4), levels=0)


def test_actnorm_data_dependent_init():
    an = ActNorm(2).train()
    x = torch.randn(64, 2, 4, 4) * torch.tensor([3.0, 0.5]).view(1, 2, 1, 1) + 2.0
    y, _ = an(x)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4)
    y2, _ = an(x + 1.0)  # initialised once only
    assert torch.allclose(y2, y + torch.exp(an.log_scale).view(1, 2, 1, 1), atol=1e-5)


# ------------------------------------------------------------------------------ the spline

def _spline_params(seed, shape, K, scale):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((*shape, K)), scale * rng.standard_normal((*shape, K)),
            scale * rng.standard_normal((*shape, K - 1)))


@given(seed=st.integers(0, 10_000), K=st.integers(2, 10), scale=st.floats(0.0, 3.0), B=st.floats(0.5, 5.0))
def test_spline_monotone_knots_and_inverse(seed, K, scale, B):
    uw, uh, ud = _spline_params(seed, (1,), K, scale)
    x = np.linspace(-B - 1, B + 1, 801)
    y, ld = rational_quadratic_spline(x, np.repeat(uw, 801, 0), np.repeat(uh, 801, 0), np.repeat(ud, 801, 0),
                                      tail_bound=B, xp=xnp)
    assert np.all(np.diff(y) > 0)  # strictly monotone
    tails = np.abs(x) > B
    np.testing.assert_array_equal(y[tails], x[tails])  # identity tails
    np.testing.assert_array_equal(ld[tails], 0.0)
    # knots map to knots: widths/heights from the softmax, pinned ends at -B, B
    from subspacelab.nn._flow_xp import _knots

    _, cw = _knots(uw, B, 1e-3, xnp)
    _, ch = _knots(uh, B, 1e-3, xnp)
    yk, _ = rational_quadratic_spline(cw[0], np.repeat(uw, K + 1, 0), np.repeat(uh, K + 1, 0),
                                      np.repeat(ud, K + 1, 0), tail_bound=B, xp=xnp)
    np.testing.assert_allclose(yk, ch[0], atol=1e-12 * max(1.0, B))
    assert cw[0, 0] == -B and cw[0, -1] == B and np.all(np.diff(cw[0]) >= 1e-3 * 2 * B * (1 - 1e-9))
    # log-derivative agrees with finite differences inside
    h = 1e-5
    inner = np.abs(x) < B - 1e-3
    yp, _ = rational_quadratic_spline(x + h, np.repeat(uw, 801, 0), np.repeat(uh, 801, 0),
                                      np.repeat(ud, 801, 0), tail_bound=B, xp=xnp)
    ym, _ = rational_quadratic_spline(x - h, np.repeat(uw, 801, 0), np.repeat(uh, 801, 0),
                                      np.repeat(ud, 801, 0), tail_bound=B, xp=xnp)
    fd = (yp - ym) / (2 * h)
    near_knot = np.min(np.abs(x[:, None] - cw[0][None, :]), axis=1) < 2 * h
    sel = inner & ~near_knot
    np.testing.assert_allclose(np.exp(ld[sel]), fd[sel], rtol=1e-4, atol=1e-6)
    # the inverse recovers x and negates the log-derivative
    xr, ldi = rational_quadratic_spline(y, np.repeat(uw, 801, 0), np.repeat(uh, 801, 0), np.repeat(ud, 801, 0),
                                        inverse=True, tail_bound=B, xp=xnp)
    np.testing.assert_allclose(xr, x, atol=1e-9)
    np.testing.assert_allclose(ldi, -ld, atol=1e-7)


def test_spline_boundary_derivative_is_one_and_bad_bins():
    uw, uh, ud = _spline_params(3, (2,), 6, 2.0)
    x = np.array([-3.0 + 1e-12, 3.0 - 1e-12])
    _, ld = rational_quadratic_spline(x, uw, uh, ud, tail_bound=3.0, xp=xnp)
    np.testing.assert_allclose(ld, 0.0, atol=1e-6)  # slope 1 where the linear tails join
    with pytest.raises(ValueError, match="min_bin_width"):
        rational_quadratic_spline(x, uw, uh, ud, min_bin_width=0.5, xp=xnp)


def test_spline_density_integrates_to_one():
    """p(x) = N(g(x)) g'(x) of a 1-D spline flow integrates to 1 (density normalisation)."""
    uw, uh, ud = _spline_params(5, (1,), 8, 1.5)
    x = np.linspace(-12, 12, 200_001)
    n = x.size
    y, ld = rational_quadratic_spline(x, np.repeat(uw, n, 0), np.repeat(uh, n, 0), np.repeat(ud, n, 0),
                                      tail_bound=3.0, xp=xnp)
    p = np.exp(-0.5 * y**2 - 0.5 * math.log(2 * math.pi) + ld)
    assert abs(np.trapezoid(p, x) - 1.0) < 1e-6


def test_spline_torch_autograd_matches_numpy():
    uw, uh, ud = _spline_params(7, (5,), 4, 1.0)
    x = np.linspace(-3.5, 3.5, 5)
    yn, _ = rational_quadratic_spline(x, uw, uh, ud, xp=xnp)
    tt = [torch.tensor(a, requires_grad=True) for a in (x, uw, uh, ud)]
    yt, lt = rational_quadratic_spline(*tt, xp=xt)
    np.testing.assert_allclose(yt.detach().numpy(), yn, atol=1e-12)
    (yt.sum() + lt.sum()).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in tt)


# ------------------------------------------------------------------------ Sobel and array API

def test_sobel_adjoint_dot_test():
    rng = np.random.default_rng(0)
    x, gu, gv = rng.standard_normal((3, 2, 7, 9))
    su, sv = sobel(x, xnp)
    lhs = np.sum(su * gu) + np.sum(sv * gv)
    rhs = np.sum(x * sobel_adjoint(gu, gv, xnp))
    assert abs(lhs - rhs) < 1e-12 * np.linalg.norm(su) * np.linalg.norm(gu)
    ramp = np.tile(np.arange(6.0), (6, 1))
    np.testing.assert_allclose(sobel(ramp, xnp)[0][1:-1, 1:-1], 8.0)  # interior d/du of a unit ramp
    np.testing.assert_allclose(sobel(ramp, xnp)[1][1:-1, 1:-1], 0.0)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_array_api_flow_equals_torch(backend, coupling):
    g = _glow(coupling, (1, 8, 8), 2)
    ex = g.export()
    x = np.random.default_rng(0).random((3, 1, 8, 8)) - 0.5
    with torch.no_grad():
        zt, ldt = g(torch.tensor(x))
    xb = backend.asarray(x)
    z, ld = flow_forward(xb, ex)
    assert type(z) is type(xb)
    np.testing.assert_allclose(backend.to_numpy(z), zt.numpy(), atol=1e-10)
    np.testing.assert_allclose(backend.to_numpy(ld), ldt.numpy(), atol=1e-9)
    xr = flow_inverse(z, ex)
    np.testing.assert_allclose(backend.to_numpy(xr), x, atol=1e-10)
    z32, _ = flow_forward(backend.asarray(x, dtype=backend.xp.float32), ex)
    assert z32.dtype == backend.xp.float32
    np.testing.assert_allclose(backend.to_numpy(z32), zt.numpy(), atol=1e-4)


@pytest.mark.parametrize("coupling", COUPLINGS)
def test_samples_follow_the_training_distribution(coupling):
    """Change of variables: base samples through f^-1 have the training marginals (KS test, 2-D toy)."""
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(0)
    a = rng.standard_normal(2000)
    data = np.stack([a, 0.5 * a**2 + 0.3 * rng.standard_normal(2000) - 0.5], axis=1)  # a banana
    x = torch.tensor(data, dtype=torch.float32).reshape(-1, 2, 1, 1)
    torch.manual_seed(0)
    g = Glow((2, 1, 1), levels=0, steps_per_level=3, hidden_channels=16, coupling=coupling)
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 2000, (256,), generator=gen)
        loss = -g.log_prob(x[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    g.eval()
    with torch.no_grad():
        s = g.inverse(torch.randn(2000, 2, generator=gen))[0].reshape(-1, 2).numpy()
    for j in range(2):  # marginal CDFs within 10 % everywhere (a small flow, 150 steps)
        assert ks_2samp(s[:, j], data[:, j]).statistic < 0.1
    # and the fitted density beats a Gaussian fitted to the same data
    from scipy.stats import multivariate_normal

    with torch.no_grad():
        ll_flow = float(g.log_prob(x).mean())
    ll_gauss = multivariate_normal(data.mean(0), np.cov(data.T)).logpdf(data).mean()
    assert ll_flow > ll_gauss + 0.1
