r"""TorchDenoiser: a small U-Net denoiser trained on clean images with the EDM loss.

Karras, Aittala, Aila & Laine, "Elucidating the design space of diffusion-based generative
models", NeurIPS 2022 (preconditioning, loss weighting, log-normal noise levels);
specs/diffusion_flow.md section 6.3. torch is imported only when the estimator is fitted or
used, so ``import subspacelab`` stays free of it.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .._backend import check_random_state, get_namespace, lazy_import, move_to
from .._validation import check_param, validate_input
from .denoisers import DenoiserMixin, check_sigma

__all__ = ["TorchDenoiser"]


def _torch():
    torch = lazy_import("torch")
    if torch is None:
        raise ImportError("TorchDenoiser needs torch: pip install 'subspacelab[torch]'")
    return torch


class TorchDenoiser(DenoiserMixin, BaseEstimator):
    r"""A U-Net denoiser :math:`D_\theta(z, \sigma)` trained on clean images (EDM recipe).

    Training minimises the EDM denoising loss over mini-batches,

    .. math::

        \mathbb E_{\ln\sigma \sim N(P_\text{mean}, P_\text{std}^2),\, n}
        \Big[\lambda(\sigma)\,\|D_\theta(x + \sigma n, \sigma) - x\|^2\Big],\qquad
        \lambda(\sigma) = \frac{\sigma^2 + \sigma_d^2}{(\sigma\sigma_d)^2},

    with Adam and an exponential moving average (EMA) of the weights, which is the network
    used by :meth:`denoise`. The network is :class:`subspacelab.nn.unet.EDMUNet`.

    Parameters
    ----------
    image_shape : tuple of int, optional
        ``(H, W)`` or ``(C, H, W)`` of one sample when ``X`` is 2-D ``(n_samples, n_features)``;
        with None, 2-D ``X`` is treated as 1 x n_features images and 3-D/4-D ``X`` gives its
        own shape.
    base_channels : int, default 32
    channel_mult : tuple of int, default (1, 2)
    max_steps : int, default 2000
        Optimisation steps (mini-batches).
    batch_size : int, default 64
    learning_rate : float, default 1e-3
    ema_decay : float, default 0.999
    p_mean, p_std : float, default -1.2, 1.2
        Log-normal distribution of training noise levels (EDM).
    sigma_data : float, optional
        :math:`\sigma_d`; default: the standard deviation of the training data.
    device : str, default "cpu"
        torch device used for training and inference.
    n_threads : int, optional
        torch CPU threads during fit and denoise (restored afterwards); default: torch's own
        setting. One thread is much faster on a machine with more busy threads than cores.
    distributed : None, int or "process_group", default None
        Data-parallel training with torch ``DistributedDataParallel``
        (see the scaling guide): an int ``n`` starts ``n`` processes on this machine
        (``gloo`` on CPU, ``nccl`` with one GPU per process on CUDA; ``n_threads`` torch
        threads each, default the CPU count divided by ``n``), ``"process_group"`` joins the
        process group the caller initialised (``torchrun``; every rank calls ``fit`` with the
        same data and parameters). Each process takes its share of every global batch and
        the gradient all-reduce averages the shares, so training follows the single-process
        trajectory up to floating-point summation order.
    random_state : int, Generator or None
        Seeds the weight initialisation and the batches/noise (a torch Generator).
    verbose : int, default 0

    Attributes
    ----------
    network_ : torch.nn.Module
        The EMA network (evaluation mode).
    image_shape_ : tuple of int
        ``(C, H, W)``.
    sigma_data_ : float
    loss_history_ : ndarray of shape (max_steps,)
        Training loss per step.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from subspacelab.diffusion import TorchDenoiser
    >>> X = np.random.default_rng(0).random((16, 8, 8))
    >>> D = TorchDenoiser(base_channels=8, max_steps=5, batch_size=8, n_threads=1, random_state=0).fit(X)
    >>> D.denoise(X[:2], 0.5).shape
    (2, 8, 8)
    """

    def __init__(self, image_shape=None, *, base_channels=32, channel_mult=(1, 2), max_steps=2000, batch_size=64,
                 learning_rate=1e-3, ema_decay=0.999, p_mean=-1.2, p_std=1.2, sigma_data=None, device="cpu",
                 n_threads=None, distributed=None, random_state=None, verbose=0):
        self.image_shape = image_shape
        self.base_channels = base_channels
        self.channel_mult = channel_mult
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.ema_decay = ema_decay
        self.p_mean = p_mean
        self.p_std = p_std
        self.sigma_data = sigma_data
        self.device = device
        self.n_threads = n_threads
        self.distributed = distributed
        self.random_state = random_state
        self.verbose = verbose

    def _event_shape(self, event, n_features):
        if self.image_shape is not None:
            shape = tuple(int(s) for s in self.image_shape)
            if len(shape) == 2:
                shape = (1, *shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(f"image_shape must be (H, W) or (C, H, W) of positive sizes, got {self.image_shape}")
        elif event is None:
            shape = (1, 1, n_features)
        else:
            shape = (1, *event) if len(event) == 2 else tuple(event)
        if math.prod(shape) != n_features:
            raise ValueError(f"image_shape {shape} has {math.prod(shape)} pixels but the samples have {n_features} values")
        return shape

    def _to_torch(self, X, torch):
        """Input (any namespace) -> float32 torch tensor (n, C, H, W) on ``device``."""
        xp, dev = get_namespace(X, names=["X"])
        if xp.isdtype(X.dtype, "complex floating"):
            raise TypeError("X must be real; split complex images into 2 real channels")
        import array_api_compat.torch as xt

        t = move_to(X, xt, torch.device(self.device))
        return t.to(torch.float32).reshape(X.shape[0], *self.image_shape_), xp, dev

    def _threads(self, torch):
        import contextlib

        n = check_param("n_threads", self.n_threads, "int", low=1, allow_none=True)
        if n is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def ctx():
            old = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                yield
            finally:
                torch.set_num_threads(old)

        return ctx()

    def fit(self, X, y=None):
        """Train the network on clean samples ``X`` (n, H, W), (n, C, H, W) or (n, n_features)."""
        torch = _torch()
        with self._threads(torch):
            return self._fit(X, torch)

    def _fit(self, X, torch):
        from ..nn.unet import EDMUNet

        event, flat = None, X
        if hasattr(X, "ndim") and X.ndim in (3, 4):
            xp_in, _ = get_namespace(X, names=["X"])
            event, flat = tuple(X.shape[1:]), xp_in.reshape(X, (X.shape[0], -1))
        Xv, _, _ = validate_input(self, flat, reset=True, ensure_min_samples=2)
        shape = self._event_shape(event, Xv.shape[1])
        check_param("base_channels", self.base_channels, "int", low=1)
        mult = tuple(self.channel_mult)
        for m in mult:
            check_param("channel_mult", m, "int", low=1)
        if not mult:
            raise ValueError("channel_mult must not be empty")
        steps = check_param("max_steps", self.max_steps, "int", low=1)
        bs = check_param("batch_size", self.batch_size, "int", low=1)
        lr = check_param("learning_rate", self.learning_rate, "real", low=0.0, closed="neither")
        ema = check_param("ema_decay", self.ema_decay, "real", low=0.0, high=1.0, closed="left")
        p_mean = check_param("p_mean", self.p_mean, "real")
        p_std = check_param("p_std", self.p_std, "real", low=0.0)
        check_param("verbose", self.verbose, "int", low=0)
        self.image_shape_ = shape
        data, _, _ = self._to_torch(Xv, torch)
        sd = float(data.std()) if self.sigma_data is None else self.sigma_data
        check_param("sigma_data", sd, "real", low=0.0, closed="neither")
        self.sigma_data_ = sd
        seed = int(check_random_state(self.random_state).integers(2**63 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = EDMUNet(shape[0], self.base_channels, mult, sd).to(self.device)
        avg = EDMUNet(shape[0], self.base_channels, mult, sd).to(self.device)
        avg.load_state_dict(net.state_dict())
        avg.requires_grad_(False)
        mode = None
        if self.distributed is not None:
            from ..nn._ddp import check_distributed

            mode = check_distributed(self.distributed)
        job = (net, avg, data, seed, steps, bs, lr, ema, p_mean, p_std)
        if mode is None:
            history = self._train(*job, torch.device(self.device), 0, 1)
        elif mode[0] == "spawn":
            from ..nn import _ddp as ddp

            result = ddp.spawn(_denoiser_rank, mode[1], (self, *job), device=self.device,
                               n_threads=self.n_threads)
            history = result["history"]
            avg.load_state_dict(result["avg"])
        else:
            import torch.distributed as dist

            history = self._train(*job, torch.device(self.device), dist.get_rank(), dist.get_world_size())
        if not np.all(np.isfinite(history)):
            raise FloatingPointError("training diverged (non-finite loss); lower learning_rate")
        avg.eval()
        self.network_ = avg
        self.loss_history_ = history
        return self

    def _train(self, net, avg, data, seed, steps, bs, lr, ema, p_mean, p_std, tdev, rank, world):
        """The training loop, on one process (``world == 1``) or as rank ``rank`` of a DDP group.

        Every rank draws the same global batch, noise levels and noise from the seeded
        generator and trains on its share; returns the loss of every step (of the global batch).
        """
        torch = _torch()
        from ..nn._ddp import all_reduce_sum, share, wrap

        gen = torch.Generator(device="cpu").manual_seed(seed)
        model = wrap(net, tdev) if world > 1 else net
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        n = data.shape[0]
        history = np.empty(steps)
        net.train()
        for step in range(steps):
            idx = torch.randint(0, n, (min(bs, n),), generator=gen).to(tdev)
            x0 = data[idx]
            sigma = torch.exp(p_mean + p_std * torch.randn(x0.shape[0], generator=gen)).to(tdev)
            noise = torch.randn(x0.shape, generator=gen).to(tdev)
            if world == 1:
                loss = self._loss(model, x0, sigma, noise)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                history[step] = float(loss.detach())
            else:
                # this rank's share, weighted so that DDP's gradient average is the global batch's
                rows, size, weight = share(x0.shape[0], rank, world)
                loss = self._loss(model, x0[rows], sigma[rows], noise[rows])
                opt.zero_grad(set_to_none=True)
                (loss * weight).backward()
                history[step] = float(loss.detach()) * size / x0.shape[0]
            opt.step()
            with torch.no_grad():
                for pa, pn in zip(avg.parameters(), net.parameters()):
                    pa.mul_(ema).add_(pn.detach(), alpha=1 - ema)
            if self.verbose and rank == 0 and world == 1 and (step % max(1, steps // 10) == 0 or step == steps - 1):
                print(f"TorchDenoiser step {step + 1}/{steps}: loss {history[step]:.4f}")
        if world > 1:
            history = all_reduce_sum(torch.from_numpy(history)).numpy()
            if self.verbose and rank == 0:
                print(f"TorchDenoiser ({world} processes): loss {history[0]:.4f} -> {history[-1]:.4f}")
        return history

    def _loss(self, net, x0, sigma, noise):
        sd = self.sigma_data_
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        out = net(x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma)
        return (weight * ((out - x0) ** 2).reshape(x0.shape[0], -1).mean(dim=1)).mean()

    def denoise(self, X, sigma):
        r"""Network estimate of :math:`E[x_0 \mid x_0 + \sigma n = z]`, in ``X``'s namespace and shape.

        Parameters
        ----------
        X : array of shape ``(n_samples, *sample_shape)`` as in fit
        sigma : float > 0 or array of shape (n_samples,)
        """
        check_is_fitted(self, "network_")
        torch = _torch()
        xp, dev = get_namespace(X, names=["X"])
        if X.ndim < 2 or math.prod(X.shape[1:]) != math.prod(self.image_shape_):
            raise ValueError(f"X must hold samples of {math.prod(self.image_shape_)} values (image shape "
                             f"{self.image_shape_}), got shape {tuple(X.shape)}")
        if not bool(xp.all(xp.isfinite(X))):
            raise ValueError("X must not contain NaN or infinity")
        dtype = X.dtype if xp.isdtype(X.dtype, "real floating") else xp.float64
        s2 = check_sigma(sigma, X.shape[0], xp, dev, dtype)
        Xt, _, _ = self._to_torch(X, torch)
        import array_api_compat.torch as xt

        st = move_to(xp.sqrt(s2), xt, torch.device(self.device)).to(torch.float32)
        with torch.no_grad(), self._threads(torch):
            out = self.network_(Xt, st)
        out = move_to(out.reshape(X.shape), xp, dev)
        return xp.astype(out, dtype)

    def denoising_loss(self, X, n_sigmas=8, random_state=0):
        """EDM-weighted denoising loss of the trained network on clean samples ``X`` (fixed noise)."""
        check_is_fitted(self, "network_")
        torch = _torch()
        X = np.asarray(X, dtype=np.float32) if not hasattr(X, "shape") else X
        Xt, _, _ = self._to_torch(X, torch)
        gen = torch.Generator().manual_seed(int(check_random_state(random_state).integers(2**63 - 1)))
        total = 0.0
        with torch.no_grad(), self._threads(torch):
            for _ in range(n_sigmas):
                sigma = torch.exp(self.p_mean + self.p_std * torch.randn(Xt.shape[0], generator=gen))
                noise = torch.randn(Xt.shape, generator=gen)
                total += float(self._loss(self.network_, Xt, sigma.to(Xt.device), noise.to(Xt.device)))
        return total / n_sigmas

    def state_dict(self):
        """Everything needed to rebuild the fitted denoiser: parameters, shapes and weights.

        Save it with ``torch.save(denoiser.state_dict(), path)``; restore with
        ``TorchDenoiser().load_state_dict(torch.load(path))``.
        """
        check_is_fitted(self, "network_")
        return {"params": self.get_params(), "image_shape_": tuple(self.image_shape_), "sigma_data_": self.sigma_data_,
                "n_features_in_": self.n_features_in_, "loss_history_": self.loss_history_.tolist(),
                "network": self.network_.state_dict()}

    def load_state_dict(self, state):
        """Restore a denoiser saved with :meth:`state_dict`; returns ``self``."""
        _torch()
        from ..nn.unet import EDMUNet

        self.set_params(**state["params"])
        self.image_shape_ = tuple(state["image_shape_"])
        self.sigma_data_ = float(state["sigma_data_"])
        self.n_features_in_ = int(state["n_features_in_"])
        self.loss_history_ = np.asarray(state["loss_history_"])
        net = EDMUNet(self.image_shape_[0], self.base_channels, tuple(self.channel_mult), self.sigma_data_)
        net.load_state_dict(state["network"])
        net.requires_grad_(False)
        self.network_ = net.to(self.device).eval()
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def _denoiser_rank(rank, world, est, net, avg, data, seed, steps, bs, lr, ema, p_mean, p_std):
    """One DDP rank of ``TorchDenoiser(distributed=n).fit`` (run by ``subspacelab.nn._ddp.spawn``)."""
    import copy

    from ..nn._ddp import rank_device

    tdev = rank_device(est.device, rank)
    # torch.multiprocessing hands the ranks the parent's tensors in shared memory: train copies
    net, avg = copy.deepcopy(net).to(tdev), copy.deepcopy(avg).to(tdev)
    history = est._train(net, avg, data.to(tdev), seed, steps, bs, lr, ema, p_mean, p_std, tdev, rank, world)
    return {"history": history, "avg": {k: v.detach().cpu() for k, v in avg.state_dict().items()}}
