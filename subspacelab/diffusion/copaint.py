r"""CoPaint (coherent inpainting through the one-step estimate) and inpainting baselines on DDIM.

Zhang, Ji, Zhang, Yu, Jaakkola & Chang, "Towards coherent image inpainting using denoising
diffusion implicit models", ICML 2023 (arXiv 2304.03322); specs/diffusion_flow.md section 5.

All samplers run a deterministic DDIM chain (Song et al. 2021) on the VP process
:math:`x_t = a_t x_0 + s_t\varepsilon`, :math:`a_t = \sqrt{\bar\alpha_t}`,
:math:`s_t = \sqrt{1-\bar\alpha_t}`, with the linear DDPM schedule
(:math:`\beta` from 1e-4 to 0.02 over 1000 steps) respaced to ``n_steps`` times, and the clean
estimate :math:`\hat x_0(x_t) = D(x_t/a_t, s_t/a_t)` of a denoiser with the interface
:math:`D(z, \sigma) = E[x_0 \mid z = x_0 + \sigma n]` (spec section 1.2). They differ in how the
revealed pixels (mask :math:`m = 1`) of the reference :math:`y` enter:

* :func:`copaint`: before each DDIM step, ``n_grad_steps`` gradient steps on :math:`x_t` for

  .. math::

      L(x) = \|m \odot (y - \hat x_0(x))\|^2 + c_t \|x - x_t^{\text{orig}}\|^2,

  so the *whole* image moves so that the prediction agrees with :math:`y`. The gradient needs
  the vector-Jacobian product of :math:`\hat x_0`; by Tweedie's second-order identity
  :math:`\partial D/\partial z = \mathrm{Cov}[x_0 \mid z]/\sigma^2`, so
  :math:`\partial \hat x_0/\partial x_t = (a_t/s_t^2)\,\mathrm{Cov}[x_0 \mid x_t]`, symmetric:
  closed form for Gaussian and MoLRG priors, torch autograd for a :class:`TorchDenoiser`.
* :func:`replacement_inpaint`: RePaint without resampling: after each DDIM step the revealed
  pixels of :math:`x_{t'}` are overwritten by :math:`a_{t'} y + s_{t'} z`.
* :func:`projection_inpaint`: DDS (Chung, Lee & Ye 2024) data consistency on :math:`\hat x_0`:
  conjugate gradients on :math:`A^HA x = A^H y` started from :math:`\hat x_0`
  (:math:`A` the mask: one step gives hard replacement), then the DDS re-noise with its
  :math:`\eta` (spec section 1.3).
* :func:`ddnm_inpaint`: DDNM (Wang et al. 2023) range-null projection
  :math:`\hat x_0' = A^+y + (I - A^+A)\hat x_0` followed by a standard DDIM-:math:`\eta` step.
* :func:`dps_inpaint`: DPS (Chung et al. 2023): an ancestral step, then a gradient step on
  :math:`\|m\odot(y - \hat x_0(x_t))\|` through the same VJP as CoPaint.

Unlike the reference code, :math:`\hat x_0` is not clipped to a fixed range (our priors work
in data units). Every function returns the sample and a dict with ``nfe`` (denoiser
evaluations per image, a vector-Jacobian product counting as one) and ``mismatch`` (the final
mean squared error on the revealed pixels).
"""

from __future__ import annotations

import math

import numpy as np

from .._backend import check_random_state, get_namespace, move_to, random_normal
from .._validation import check_param
from ._lowrank import mixture_posterior
from .samplers import vp_alpha_bar

__all__ = [
    "copaint",
    "ddim_times",
    "ddnm_inpaint",
    "dps_inpaint",
    "projection_inpaint",
    "replacement_inpaint",
    "time_travel_walk",
]


def ddim_times(n_steps, n_train=1000):
    """Respaced times (increasing, t_0 = 0 ... t_{N-1} = T-1) and their :math:`\\bar\\alpha`.

    Examples
    --------
    >>> from subspacelab.diffusion.copaint import ddim_times
    >>> t, alpha_bar = ddim_times(5)
    >>> t.tolist()
    [0, 250, 500, 749, 999]
    """
    check_param("n_steps", n_steps, "int", low=1, high=n_train)
    t = np.unique(np.round(np.linspace(0, n_train - 1, n_steps)).astype(int))
    return t, vp_alpha_bar(n_train)[t]


def time_travel_walk(n_steps, travel_length, travel_repeat):
    """Index walk of CoPaint-TT over the respaced chain (0 = least noisy, ``n_steps - 1`` = start).

    Walking down one step at a time, on reaching a marked index ``j`` (``j = 0, tau, 2 tau, ...``
    with ``j < n_steps - tau``) that has revisits left, the walk goes back up ``tau`` steps
    (``travel_repeat - 1`` revisits per mark), as RePaint's ``jump_length``/``jump_n_sample``.
    Returns a list of ``(i, i_next)`` moves; ``i_next < i`` is a denoising step, ``i_next = i + 1``
    a forward (noising) step. ``travel_length = 0`` or ``travel_repeat = 1`` gives the plain walk.

    Examples
    --------
    >>> from subspacelab.diffusion.copaint import time_travel_walk
    >>> time_travel_walk(3, 0, 1)  # the plain walk down
    [(2, 1), (1, 0)]
    >>> time_travel_walk(4, 1, 2)[:4]  # on reaching the mark 2, one step back up first
    [(3, 2), (2, 3), (3, 2), (2, 1)]
    """
    tau, K = travel_length, travel_repeat
    left = {}
    if tau > 0 and K > 1:
        left = {j: K - 1 for j in range(0, n_steps - tau, tau)}
    moves, i = [], n_steps - 1
    while i > 0:
        moves.append((i, i - 1))
        i -= 1
        if left.get(i, 0) > 0:
            left[i] -= 1
            for _ in range(tau):
                moves.append((i, i + 1))
                i += 1
    return moves


# ------------------------------------------------------------------------------ priors
class _AnalyticPrior:
    """Exact Tweedie denoiser and posterior-covariance product of a low-rank Gaussian mixture.

    Built from a fitted :class:`GaussianDenoiser` (K = 1) or :class:`MoLRGDenoiser`. With
    :math:`r_k = z-\\mu_k`, :math:`c_k = U_k^Tr_k`, :math:`v = \\lambda+\\delta^2`, the component
    posteriors are :math:`N(m_k, C_k)` with
    :math:`m_k = \\mu_k + U_k[\\tfrac{v}{v+\\sigma^2}c_k] + \\tfrac{\\delta^2}{\\delta^2+\\sigma^2}(I-U_kU_k^T)r_k`,
    :math:`C_k = U_k\\,\\mathrm{diag}(\\tfrac{v\\sigma^2}{v+\\sigma^2})U_k^T + \\tfrac{\\delta^2\\sigma^2}{\\delta^2+\\sigma^2}(I-U_kU_k^T)`,
    and :math:`\\mathrm{Cov}[x_0\\mid z]\\,u = \\sum_k w_k[C_ku + (m_k-m)(m_k-m)^Tu]`.
    """

    def __init__(self, denoiser, xp, device, dtype):
        from ..estimators.molrg import MoLRGDenoiser
        from .denoisers import GaussianDenoiser

        cast = lambda a: xp.astype(move_to(a, xp, device), dtype)  # noqa: E731
        if isinstance(denoiser, GaussianDenoiser):
            self.means = cast(denoiser.mean_)[None, :]
            self.bases = cast(denoiser.components_).T[None, :, :]
            self.lam = cast(denoiser.explained_variance_ - denoiser.noise_variance_)[None, :]
            self.logw = xp.zeros((1,), dtype=dtype, device=device)
        elif isinstance(denoiser, MoLRGDenoiser):
            self.means, self.bases, self.lam = cast(denoiser.means_), cast(denoiser.subspaces_), cast(denoiser.variances_)
            w = cast(denoiser.weights_)
            self.logw = xp.log(xp.maximum(w, xp.full_like(w, xp.finfo(dtype).smallest_normal)))
        else:
            raise TypeError(f"no closed-form Jacobian for {type(denoiser).__name__}")
        self.delta2 = float(denoiser.noise_variance_)
        self.xp, self.device = xp, device

    def _components(self, z, s2):
        xp = self.xp
        _, resp, _ = mixture_posterior(z, s2, self.means, self.bases, self.lam, self.delta2, self.logw, xp, need_mean=False)
        r = z[None, :, :] - self.means[:, None, :]
        c = xp.matmul(r, self.bases)
        Ut = xp.permute_dims(self.bases, (0, 2, 1))
        perp = r - xp.matmul(c, Ut)
        v = (self.lam + self.delta2)[:, None, :]
        denom = v + s2[None, :, None]
        iso = (self.delta2 + s2)[None, :, None]
        comp = self.means[:, None, :] + (self.delta2 / iso) * perp + xp.matmul((v / denom) * c, Ut)
        mean = xp.sum(resp[:, :, None] * comp, axis=0)
        return resp, comp, mean, v, denom, iso, Ut

    def denoise(self, z, s2):
        return self._components(z, s2)[2]

    def denoise_and_cov(self, z, s2, u):
        """:math:`D(z,\\sigma)` and :math:`\\mathrm{Cov}[x_0\\mid z]\\,u` for rows of ``z``, ``u``."""
        return self.denoise_then_cov(z, s2, lambda mean: u)

    def denoise_then_cov(self, z, s2, u_of_mean):
        """:math:`D(z,\\sigma)` and :math:`\\mathrm{Cov}[x_0\\mid z]\\,u` with ``u = u_of_mean(D(z, sigma))``
        (one evaluation of the mixture's components for both)."""
        xp = self.xp
        resp, comp, mean, v, denom, iso, Ut = self._components(z, s2)
        u = u_of_mean(mean)
        cu = xp.matmul(u[None, :, :], self.bases)  # (K, B, d)
        in_sub = xp.matmul(cu, Ut)
        Cu = xp.matmul((v * s2[None, :, None] / denom) * cu, Ut) + (self.delta2 * s2[None, :, None] / iso) * (u[None, ...] - in_sub)
        dev = comp - mean[None, ...]
        Cu = Cu + dev * xp.sum(dev * u[None, ...], axis=-1, keepdims=True)
        return mean, xp.sum(resp[:, :, None] * Cu, axis=0)


class _TorchPrior:
    """A fitted :class:`TorchDenoiser` on flat rows; the VJP by torch autograd (float32), with the
    denoiser's ``n_threads`` torch threads."""

    def __init__(self, denoiser, xp, device, dtype):
        import torch

        self.torch, self.net, self.shape = torch, denoiser.network_, tuple(denoiser.image_shape_)
        self.threads = lambda: denoiser._threads(torch)
        self.tdev = torch.device(denoiser.device)
        self.xp, self.device, self.dtype = xp, device, dtype

    def _t(self, a):
        import array_api_compat.torch as xt

        return move_to(a, xt, self.tdev).to(self.torch.float32)

    def _back(self, t):
        return self.xp.astype(move_to(t.detach().reshape(t.shape[0], -1).contiguous(), self.xp, self.device), self.dtype)

    def denoise(self, z, s2):
        with self.torch.no_grad(), self.threads():
            out = self.net(self._t(z).reshape(z.shape[0], *self.shape), self._t(s2).sqrt())
        return self._back(out)

    def denoise_and_vjp(self, z, s2, g):
        """:math:`D(z,\\sigma)` and :math:`g^T\\,\\partial D/\\partial z` by reverse mode."""
        return self.denoise_then_vjp(z, s2, lambda out: g)

    def denoise_then_vjp(self, z, s2, g_of_out):
        """:math:`D(z,\\sigma)` and :math:`g^T\\,\\partial D/\\partial z` with ``g = g_of_out(D(z, sigma))``:
        one forward and one backward pass."""
        torch = self.torch
        zt = self._t(z).reshape(z.shape[0], *self.shape).requires_grad_(True)
        with torch.enable_grad(), self.threads():
            out = self.net(zt, self._t(s2).sqrt())
            x0 = self._back(out)
            g = g_of_out(x0)
            (grad,) = torch.autograd.grad(out, zt, grad_outputs=self._t(g).reshape(out.shape))
        return x0, self._back(grad)


def _prior(denoiser, xp, device, dtype):
    from sklearn.base import BaseEstimator
    from sklearn.utils.validation import check_is_fitted

    from .torch_denoiser import TorchDenoiser

    if isinstance(denoiser, BaseEstimator):  # other objects get _AnalyticPrior's TypeError
        check_is_fitted(denoiser)
    if isinstance(denoiser, TorchDenoiser):
        return _TorchPrior(denoiser, xp, device, dtype)
    return _AnalyticPrior(denoiser, xp, device, dtype)


def _x0_and_vjp(prior, x, a, s, g):
    r""":math:`\hat x_0(x) = D(x/a, s/a)` and :math:`g^T\partial\hat x_0/\partial x`."""
    s2 = prior.xp.full((x.shape[0],), (s / a) ** 2, dtype=x.dtype, device=prior.device)
    if isinstance(prior, _TorchPrior):
        x0, vjp = prior.denoise_and_vjp(x / a, s2, g)
        return x0, vjp / a
    x0, cov_g = prior.denoise_and_cov(x / a, s2, g)
    return x0, (a / s**2) * cov_g


def _x0_then_vjp(prior, x, a, s, g_of_x0):
    r""":math:`\hat x_0(x)` and :math:`g^T\partial\hat x_0/\partial x` with :math:`g` a function of
    :math:`\hat x_0` (DPS's residual gradient): one forward and one backward evaluation."""
    s2 = prior.xp.full((x.shape[0],), (s / a) ** 2, dtype=x.dtype, device=prior.device)
    if isinstance(prior, _TorchPrior):
        x0, vjp = prior.denoise_then_vjp(x / a, s2, g_of_x0)
        return x0, vjp / a
    x0, cov_g = prior.denoise_then_cov(x / a, s2, g_of_x0)
    return x0, (a / s**2) * cov_g


def _x0(prior, x, a, s):
    s2 = prior.xp.full((x.shape[0],), (s / a) ** 2, dtype=x.dtype, device=prior.device)
    return prior.denoise(x / a, s2)


def _check_problem(y, mask):
    xp, dev = get_namespace(y, mask, names=["y", "mask"])
    if y.ndim != 2:
        raise ValueError(f"y must have shape (n_samples, n_features), got {tuple(y.shape)}")
    if tuple(mask.shape) != tuple(y.shape):
        raise ValueError(f"mask must have the shape of y {tuple(y.shape)}, got {tuple(mask.shape)}")
    if not xp.isdtype(y.dtype, "real floating"):
        raise TypeError(f"y must be a real floating array, got {y.dtype}")
    if not xp.isdtype(mask.dtype, "bool") and not bool(xp.all((mask == 0) | (mask == 1))):
        raise ValueError("mask must contain only 0 and 1 (1 = revealed) or booleans")
    if not bool(xp.all(xp.isfinite(xp.where(mask > 0, y, xp.zeros_like(y))))):
        raise ValueError("y must be finite at the revealed pixels")
    return xp, dev


# ------------------------------------------------------------------------------ CoPaint
def copaint(denoiser, y, mask, *, n_steps=50, n_grad_steps=2, lr=0.5, lr_growth=1.012, coherence_weight=1e-4,
            coherence_growth=1.01, time_travel=True, travel_length=10, travel_repeat=2, max_backtrack=20,
            random_state=None):
    r"""CoPaint(-TT) inpainting of rows of ``y`` where ``mask`` is 1 (spec section 5).

    At every visited time :math:`t` (index :math:`i` of the respaced chain), with
    :math:`x^{\text{orig}} = x_t`, ``n_grad_steps`` times:
    :math:`g = \nabla L(x)`, :math:`x^+ = x - \eta_t g`, halving-type backtracking
    (:math:`\eta \leftarrow 0.8\,\eta` per sample while :math:`L(x^+) > L(x)`, at most
    ``max_backtrack`` times, else the step is rejected), then the deterministic DDIM step
    :math:`x_{t'} = a_{t'}\hat x_0 + s_{t'}\hat\varepsilon` (:math:`\eta_{\text{DDIM}} = 0`).
    Step size :math:`\eta_t = \text{lr}\cdot\text{lr\_growth}^{N-1-i}\cdot a_t` (the reference's
    growth per step and :math:`\sqrt{\bar\alpha_t}` "smart" decay), weight
    :math:`c_t = \text{coherence\_weight}\cdot\text{coherence\_growth}^{N-1-i}`, both set
    back when time travel walks up. Time travel (CoPaint-TT, :func:`time_travel_walk`):
    before walking up, :math:`x_t` is optimised once more; each upward step is the one-step
    forward kernel :math:`x_{i+1} = \sqrt{\bar\alpha_{i+1}/\bar\alpha_i}\,x_i +
    \sqrt{1-\bar\alpha_{i+1}/\bar\alpha_i}\,z`. The output is :math:`\hat x_0` of the
    optimised :math:`x` at the least noisy time (revealed pixels are not pasted in, so the
    final ``mismatch`` measures how well the prior reproduces them).

    Parameters
    ----------
    denoiser : fitted GaussianDenoiser, MoLRGDenoiser or TorchDenoiser
    y : array of shape (n_samples, n_features)
        Reference images (flattened); values at hidden pixels are ignored but must be finite.
    mask : array of y's shape, 1 = revealed, 0 = hidden
    n_steps, n_grad_steps, lr, lr_growth, coherence_weight, coherence_growth : see above
    time_travel : bool
    travel_length, travel_repeat : int
        :math:`\tau` and :math:`K` of the time travel.
    max_backtrack : int
    random_state : int, Generator or None

    Returns
    -------
    x : array like ``y``
    info : dict with ``nfe`` (per image), ``mismatch`` (final mean squared error on the revealed
        pixels) and ``loss_history`` (mean revealed-pixel MSE of :math:`\hat x_0` after each
        denoising step).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    >>> prior = GaussianDenoiser().fit(X)
    >>> x = X[:2]
    >>> mask = np.ones((2, 6))
    >>> mask[:, 3:] = 0.0  # last three coordinates hidden
    >>> from subspacelab.diffusion.copaint import copaint
    >>> x_hat, info = copaint(prior, x * mask, mask, n_steps=10, random_state=0)
    >>> x_hat.shape, bool(np.allclose(x_hat * mask, x * mask, atol=0.5))
    ((2, 6), True)
    """
    xp, dev = _check_problem(y, mask)
    N = check_param("n_steps", n_steps, "int", low=1, high=1000)
    G = check_param("n_grad_steps", n_grad_steps, "int", low=0)
    check_param("lr", lr, "real", low=0.0, closed="neither")
    check_param("lr_growth", lr_growth, "real", low=0.0, closed="neither")
    check_param("coherence_weight", coherence_weight, "real", low=0.0)
    check_param("coherence_growth", coherence_growth, "real", low=0.0, closed="neither")
    check_param("time_travel", time_travel, "bool")
    check_param("travel_length", travel_length, "int", low=0)
    check_param("travel_repeat", travel_repeat, "int", low=1)
    check_param("max_backtrack", max_backtrack, "int", low=1)
    rng = check_random_state(random_state)
    dt = y.dtype
    prior = _prior(denoiser, xp, dev, dt)
    y = xp.where(mask > 0, y, xp.zeros_like(y))
    m = xp.astype(mask, dt)
    _, abar = ddim_times(N)
    moves = time_travel_walk(N, travel_length, travel_repeat) if time_travel else time_travel_walk(N, 0, 1)
    B = y.shape[0]
    nfe = 0

    def loss(x, x0, x_orig, c):
        r = m * (y - x0)
        return xp.sum(r * r, axis=1) + c * xp.sum((x - x_orig) ** 2, axis=1)

    def optimise(x, i):
        nonlocal nfe
        a, s = math.sqrt(abar[i]), math.sqrt(1 - abar[i])
        grow = N - 1 - i
        eta0 = lr * lr_growth**grow * a
        c = coherence_weight * coherence_growth**grow
        x_orig = x
        x0 = _x0(prior, x, a, s)
        nfe += 1
        for _ in range(G):
            x0, vjp = _x0_and_vjp(prior, x, a, s, -2.0 * m * (y - x0))
            nfe += 1
            g = vjp + 2.0 * c * (x - x_orig)
            cur = loss(x, x0, x_orig, c)
            eta = xp.full((B,), eta0, dtype=dt, device=dev)
            todo = xp.ones((B,), dtype=xp.bool, device=dev)
            new_x, new_x0 = x, x0
            for _ in range(max_backtrack):
                cand = x - eta[:, None] * g
                cand0 = _x0(prior, cand, a, s)
                nfe += 1
                new_loss = loss(cand, cand0, x_orig, c)
                ok = todo & xp.isfinite(new_loss) & (new_loss <= cur)
                new_x = xp.where(ok[:, None], cand, new_x)
                new_x0 = xp.where(ok[:, None], cand0, new_x0)
                todo = todo & ~ok
                if not bool(xp.any(todo)):
                    break
                eta = xp.where(todo, 0.8 * eta, eta)
            x, x0 = new_x, new_x0
        return x, x0, a, s

    x = random_normal(rng, (B, y.shape[1]), xp, device=dev, dtype=dt)
    history = []
    for k, (i, j) in enumerate(moves):
        if j < i:
            x, x0, a, s = optimise(x, i)
            eps = (x - a * x0) / s
            x = math.sqrt(abar[j]) * x0 + math.sqrt(1 - abar[j]) * eps
            r = m * (y - x0)
            history.append(float(xp.sum(r * r)) / max(float(xp.sum(m)), 1.0))
        else:
            if moves[k - 1][1] < moves[k - 1][0]:  # first upward step: optimise before travelling
                x = optimise(x, i)[0]
            ratio = abar[j] / abar[i]
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * random_normal(rng, tuple(x.shape), xp, device=dev, dtype=dt)
    x, x0, _, _ = optimise(x, 0)
    r = m * (y - x0)
    mismatch = float(xp.sum(r * r)) / max(float(xp.sum(m)), 1.0)
    return x0, {"nfe": nfe, "mismatch": mismatch, "loss_history": history}


# ------------------------------------------------------------------------------ baselines
def _ddim_loop(denoiser, y, mask, n_steps, random_state, *, correct_x0=None, renoise="ddim", eta=0.0,
               replace_xt=False):
    """Shared DDIM chain of the baselines: hooks on :math:`\\hat x_0` and on :math:`x_{t'}`."""
    xp, dev = _check_problem(y, mask)
    N = check_param("n_steps", n_steps, "int", low=1, high=1000)
    check_param("eta", eta, "real", low=0.0, high=1.0)
    rng = check_random_state(random_state)
    dt = y.dtype
    prior = _prior(denoiser, xp, dev, dt)
    m = xp.astype(mask, dt)
    y = m * xp.where(mask > 0, y, xp.zeros_like(y))
    _, abar = ddim_times(N)
    fix = correct_x0 if correct_x0 is not None else (lambda x0: x0)
    x = random_normal(rng, tuple(y.shape), xp, device=dev, dtype=dt)
    for i in range(N - 1, 0, -1):
        a, s = math.sqrt(abar[i]), math.sqrt(1 - abar[i])
        a1, s1 = math.sqrt(abar[i - 1]), math.sqrt(1 - abar[i - 1])
        x0 = _x0(prior, x, a, s)
        eps = (x - a * x0) / s
        x0 = fix(x0)
        if renoise == "dds":  # DDS-eta form (spec 1.3): consistent only at eta = 0
            c1, c2 = s1 * eta, s1 * math.sqrt(1 - eta**2)
        else:  # standard DDIM-eta
            c1 = eta * math.sqrt((1 - abar[i - 1]) / (1 - abar[i])) * math.sqrt(1 - abar[i] / abar[i - 1])
            c2 = math.sqrt(max(1 - abar[i - 1] - c1**2, 0.0))
        x = a1 * x0 + c2 * eps
        if c1 > 0:
            x = x + c1 * random_normal(rng, tuple(y.shape), xp, device=dev, dtype=dt)
        if replace_xt:
            noisy_y = a1 * y + s1 * random_normal(rng, tuple(y.shape), xp, device=dev, dtype=dt)
            x = m * noisy_y + (1 - m) * x
    a, s = math.sqrt(abar[0]), math.sqrt(1 - abar[0])
    x0 = fix(_x0(prior, x, a, s))
    if replace_xt:
        x0 = m * y + (1 - m) * x0
    r = m * (y - x0)
    mismatch = float(xp.sum(r * r)) / max(float(xp.sum(m)), 1.0)
    return x0, {"nfe": N, "mismatch": mismatch}


def replacement_inpaint(denoiser, y, mask, *, n_steps=50, random_state=None):
    r"""Replacement sampling (RePaint without resampling) on a deterministic DDIM chain.

    After each DDIM step :math:`x_{t'} \leftarrow m\odot(a_{t'}y + s_{t'}z) + (1-m)\odot x_{t'}`;
    the output is :math:`m\odot y + (1-m)\odot\hat x_0`. Arguments and returns as :func:`copaint`.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    >>> prior = GaussianDenoiser().fit(X)
    >>> x = X[:2]
    >>> mask = np.ones((2, 6))
    >>> mask[:, 3:] = 0.0  # last three coordinates hidden
    >>> from subspacelab.diffusion.copaint import replacement_inpaint
    >>> out = replacement_inpaint(prior, x * mask, mask, n_steps=10, random_state=0)
    >>> bool(np.allclose(out[0] * mask, x * mask))  # observed entries are kept
    True
    """
    return _ddim_loop(denoiser, y, mask, n_steps, random_state, replace_xt=True)


def projection_inpaint(denoiser, y, mask, *, n_steps=50, eta=0.85, cg_iter=5, random_state=None):
    r"""DDS-style sampling: CG data consistency on :math:`\hat x_0`, then the DDS re-noise.

    :math:`\hat x_0' = \mathrm{CG}(A^HA, A^Hy, \text{init}=\hat x_0, \text{cg\_iter})` with
    :math:`A` the mask operator (:class:`~subspacelab.operators.Inpainting`); for a mask CG
    converges in one step to the hard replacement :math:`\hat x_0 + m\odot(y - \hat x_0)`
    and leaves the hidden pixels untouched (spec 2.2). Re-noise
    :math:`x_{t'} = a_{t'}\hat x_0' + s_{t'}(\eta z + \sqrt{1-\eta^2}\hat\varepsilon)` (DDS
    default :math:`\eta = 0.85`).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    >>> prior = GaussianDenoiser().fit(X)
    >>> x = X[:2]
    >>> mask = np.ones((2, 6))
    >>> mask[:, 3:] = 0.0  # last three coordinates hidden
    >>> from subspacelab.diffusion.copaint import projection_inpaint
    >>> out = projection_inpaint(prior, x * mask, mask, n_steps=10, random_state=0)
    >>> bool(np.allclose(out[0] * mask, x * mask))  # observed entries are kept
    True
    """
    from ..operators import conjugate_gradient

    check_param("cg_iter", cg_iter, "int", low=1)
    m = mask

    def dc(x0):
        xp, _ = get_namespace(x0)
        mm = xp.astype(m, x0.dtype)
        return conjugate_gradient(lambda v: mm * v, mm * y, x0, max_iter=cg_iter, fixed_iter=True, event_ndim=1).x

    xp, _ = _check_problem(y, mask)
    y = xp.where(mask > 0, y, xp.zeros_like(y))
    return _ddim_loop(denoiser, y, mask, n_steps, random_state, correct_x0=dc, renoise="dds", eta=eta)


def ddnm_inpaint(denoiser, y, mask, *, n_steps=50, eta=0.85, random_state=None):
    r"""DDNM range-null sampling: :math:`\hat x_0' = A^+y + (I - A^+A)\hat x_0`, then DDIM-:math:`\eta`.

    For a mask :math:`A^+ = A = \mathrm{diag}(m)`, so :math:`\hat x_0' = m\odot y + (1-m)\odot\hat x_0`;
    the step uses the standard DDIM noise :math:`\sigma_t = \eta\sqrt{(1-\bar\alpha')/(1-\bar\alpha)}
    \sqrt{1-\bar\alpha/\bar\alpha'}` (DDNM's default :math:`\eta = 0.85`).

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    >>> prior = GaussianDenoiser().fit(X)
    >>> x = X[:2]
    >>> mask = np.ones((2, 6))
    >>> mask[:, 3:] = 0.0  # last three coordinates hidden
    >>> from subspacelab.diffusion.copaint import ddnm_inpaint
    >>> out = ddnm_inpaint(prior, x * mask, mask, n_steps=10, random_state=0)
    >>> bool(np.allclose(out[0] * mask, x * mask))  # observed entries are kept
    True
    """
    xp, _ = _check_problem(y, mask)
    m = xp.astype(mask, y.dtype)
    yy = xp.where(mask > 0, y, xp.zeros_like(y))
    return _ddim_loop(denoiser, y, mask, n_steps, random_state, correct_x0=lambda x0: m * yy + (1 - m) * x0,
                      renoise="ddim", eta=eta)


def dps_inpaint(denoiser, y, mask, *, n_steps=50, step_size=1.0, random_state=None):
    r"""Diffusion posterior sampling (Chung et al., ICLR 2023) for inpainting (spec section 2.9).

    Each step is an ancestral DDIM-:math:`\eta = 1` step to :math:`x'_{t'}` followed by

    .. math::

        x_{t'} = x'_{t'} - \zeta\,\nabla_{x_t}\|m\odot(y - \hat x_0(x_t))\|,

    a gradient of the (unsquared) residual norm through the denoiser (the same closed-form or
    autograd VJP as :func:`copaint`), with :math:`\zeta` = ``step_size`` (CoPaint's DPS
    config uses 1.0 on a 1000-step chain). Two evaluations per step (forward and VJP).
    Arguments and returns as :func:`copaint`; the output is :math:`\hat x_0` at the last time.

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import GaussianDenoiser
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    >>> prior = GaussianDenoiser().fit(X)
    >>> x = X[:2]
    >>> mask = np.ones((2, 6))
    >>> mask[:, 3:] = 0.0  # last three coordinates hidden
    >>> from subspacelab.diffusion.copaint import dps_inpaint
    >>> out = dps_inpaint(prior, x * mask, mask, n_steps=10, random_state=0)
    >>> out[0].shape
    (2, 6)
    """
    xp, dev = _check_problem(y, mask)
    N = check_param("n_steps", n_steps, "int", low=1, high=1000)
    check_param("step_size", step_size, "real", low=0.0)
    rng = check_random_state(random_state)
    dt = y.dtype
    prior = _prior(denoiser, xp, dev, dt)
    m = xp.astype(mask, dt)
    y = m * xp.where(mask > 0, y, xp.zeros_like(y))

    def grad_norm(x0):  # gradient of ||m (y - x0)|| with respect to x0
        r = m * (y - x0)
        norm = xp.sqrt(xp.sum(r * r, axis=1, keepdims=True))
        return -r / xp.where(norm > 0, norm, xp.ones_like(norm))

    x = random_normal(rng, tuple(y.shape), xp, device=dev, dtype=dt)
    x0, nfe = _dps_loop(prior, x, grad_norm, N, step_size, rng)
    r = m * (y - x0)
    return x0, {"nfe": nfe, "mismatch": float(xp.sum(r * r)) / max(float(xp.sum(m)), 1.0)}


def _dps_loop(prior, x, grad_norm, n_steps, step_size, rng):
    r"""The DPS chain shared by :func:`dps_inpaint` and :func:`~subspacelab.diffusion.baselines.dps_sample`.

    On the respaced DDPM grid (:func:`ddim_times`), for :math:`i = N-1, \dots, 1`:
    :math:`\hat x_0 = \hat x_0(x_i)` and :math:`v = g^T\partial\hat x_0/\partial x_i` with
    :math:`g` = ``grad_norm(x0)`` (the gradient of the residual norm with respect to
    :math:`\hat x_0`), the ancestral step (DDIM :math:`\eta = 1`)
    :math:`x' = a_{i-1}\hat x_0 + c_2\hat\varepsilon + c_1 z`, then :math:`x_{i-1} = x' - \zeta v`.
    Returns :math:`\hat x_0` at the least noisy time and the number of evaluations
    (forward and VJP each count one: :math:`2(N-1) + 1`).
    """
    xp, dev = prior.xp, prior.device
    _, abar = ddim_times(n_steps)
    nfe = 0
    for i in range(n_steps - 1, 0, -1):
        a, s = math.sqrt(abar[i]), math.sqrt(1 - abar[i])
        x0, grad = _x0_then_vjp(prior, x, a, s, grad_norm)
        nfe += 2
        eps = (x - a * x0) / s
        c1 = math.sqrt((1 - abar[i - 1]) / (1 - abar[i])) * math.sqrt(1 - abar[i] / abar[i - 1])
        c2 = math.sqrt(max(1 - abar[i - 1] - c1**2, 0.0))
        x_new = math.sqrt(abar[i - 1]) * x0 + c2 * eps + c1 * random_normal(rng, tuple(x.shape), xp, device=dev,
                                                                             dtype=x.dtype)
        x = x_new - step_size * grad
    x0 = _x0(prior, x, math.sqrt(abar[0]), math.sqrt(1 - abar[0]))
    return x0, nfe + 1
