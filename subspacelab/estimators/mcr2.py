r"""MLC: manifold linearizing and clustering by maximal coding rate reduction.

The estimator :class:`MCR2Clusterer` learns, jointly, a representation :math:`Z` of the data on
the unit sphere and a doubly stochastic membership matrix :math:`\Gamma`, by minimising

.. math::

    L = -R_\varepsilon(Z) + \gamma_c R^c_\varepsilon(Z, \Gamma)
        + \frac{\gamma_F}{2}\lVert\Gamma\rVert_F^2,

(specs/rate_reduction.md §2), then clusters by spectral clustering of :math:`\Gamma`.
"""

from __future__ import annotations

import math
import time
import warnings

import array_api_compat
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from .._backend import check_random_state, check_same_namespace, move_to, to_numpy
from .._validation import check_param, validate_input
from ..kernels import sinkhorn, weighted_logdet
from ..rate import coding_length, coding_rate

__all__ = ["MCR2Clusterer"]

# Fraction of a cluster's energy (sum of squared singular values of its embedded points) that
# the basis used by ``predict`` keeps: the smallest number of leading singular directions
# reaching it.
_SUBSPACE_ENERGY = 0.9


class MCR2Clusterer(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    r"""Manifold linearizing and clustering (MLC) by maximal coding rate reduction.

    MLC [1]_ learns, jointly,

    * a representation :math:`z_i = f_\theta(x_i)` on the unit sphere that maps data near a
      union of manifolds onto a union of (nearly orthogonal) linear subspaces, and
    * a doubly stochastic membership :math:`\Gamma \in \mathbb R^{n\times n}`
      (:math:`\Gamma \ge 0,\ \Gamma 1 = 1,\ \Gamma^\top 1 = 1`), where :math:`\Gamma_{ij}` is
      a soft "samples i and j lie in the same cluster",

    by minimising

    .. math::

        L(\theta) = -R_\varepsilon(Z) + \gamma_c\, R^c_\varepsilon(Z, \Gamma_\theta)
            + \frac{\gamma_F}{2} \lVert \Gamma_\theta \rVert_F^2,

    with the coding rate :math:`R_\varepsilon(Z) = \frac12\log\det(I + \frac{d}{n\varepsilon^2}
    Z^\top Z)` and the compressed rate that treats every column of :math:`\Gamma` as a soft
    cluster of mass :math:`t_j = \sum_i \Gamma_{ij}`,

    .. math::

        R^c_\varepsilon(Z, \Gamma) = \sum_{j=1}^n \frac{t_j}{2n} \log\det\Big(I_d +
            \frac{d}{t_j\varepsilon^2} Z^\top \operatorname{diag}(\Gamma_{:,j}) Z\Big).

    The membership comes from a second network head :math:`c_i = g_\theta(x_i)` through
    entropic optimal transport, :math:`\Gamma = n\,\mathrm{Sinkhorn}(|CC^\top| / \eta)`. The
    number of clusters is only used at the end, by spectral clustering of :math:`\Gamma`
    (normalised affinity :math:`D^{-1/2}\frac{\Gamma + \Gamma^\top}{2}D^{-1/2}`, its top
    eigenvectors, row normalisation, k-means), or chosen by the coding-length criterion
    (:meth:`estimate_n_clusters`). Optionally (``refine_max_iter > 0``, our addition) the
    spectral labels are then refined by greedy descent of the label-block compressed rate
    :math:`R^c(Z, \text{labels})` on the representation, to hard labels whose rate reduction
    :math:`\Delta R` is a local maximum.

    Parameters
    ----------
    n_clusters : int >= 1 or None, default=None
        Number of clusters of the final spectral clustering. None chooses it among
        ``n_clusters_candidates`` by the coding length of the embedding (official
        ``optimalcluster.py``).
    solver : {"network", "membership"}, default="network"
        ``"network"``: the full MLC method; a shared MLP trunk (Linear → BatchNorm → ReLU →
        Linear → ReLU) with an L2-normalised feature head (Z) and cluster head (C), trained by
        SGD with PyTorch autograd. ``"membership"``: the features are fixed to the
        L2-normalised rows of X and only :math:`\Gamma` is optimised, by entropic mirror
        descent over the doubly stochastic matrices with the analytic gradient (spec §2.6 B),
        in plain array-API code (NumPy, array_api_strict, PyTorch, CuPy; no torch needed).
        It does not learn a representation; it is a reproducible, backend-agnostic variant.
    feature_dim : int, default=32
        Dimension d of the feature and cluster heads (network solver). Official: 128 (CIFAR),
        1024 (ImageNet).
    hidden_dim : int, default=256
        Width h of the trunk (network solver). Official: 4096 (CIFAR), 2048 (ImageNet).
    eps_sq : float, default=0.1
        Squared distortion :math:`\varepsilon^2` of both rates (the official code's ``eps``,
        hard-coded to 0.1 there).
    compress_weight : float, default=1.0
        :math:`\gamma_c`, weight of :math:`R^c`. Official: 1.0.
    frobenius_weight : float, default=0.05
        :math:`\gamma_F`, weight of :math:`\frac12\lVert\Gamma\rVert_F^2`. Official: 0.05
        (``pigam``). ◐ Whether the ICCV paper's objective has this term is unverified; the
        official code has it.
    sinkhorn_eta : float, default=0.1
        Entropic temperature :math:`\eta`. Official: 0.175 (CIFAR), 0.12 (ImageNet); 0.1
        recovered warped unions of subspaces far better in our CPU-sized runs.
    sinkhorn_n_iter : int, default=5
        Sinkhorn half-iterations (row update first). Official: 5, after which rows sum to 1
        exactly and columns only approximately.
    sinkhorn_tol : float or None, default=None
        When set, Sinkhorn stops once the marginal error is at most this (still at most
        ``sinkhorn_n_iter`` half-iterations, so raise that too). Official: None.
    warmup_steps : int, default=0
        SGD steps on the total coding rate alone (loss :math:`-R(Z)`) before the MLC loss
        (network solver). Here they come before the ``n_epochs`` epochs of MLC training; the
        official loop counts them inside. Official: 50 (CIFAR README), 0 (``main.py``).
    copy_heads_after_warmup : bool, default=True
        Copy the feature head's weights into the cluster head after warm-up (MLC's one-shot
        membership initialisation: then :math:`C = Z` and :math:`\Gamma \approx
        \mathrm{Sinkhorn}(|ZZ^\top|/\eta)`). Official: True.
    n_epochs : int, default=30
        Epochs of MLC training (network solver). Official: 30 (``main.py``), 15 (CIFAR README).
    batch_size : int, default=512
        Mini-batch size b (the last incomplete batch of an epoch is dropped; ``min(b, n)`` is
        used). :math:`\Gamma` and :math:`R^c` are per batch. Official: 1024 (README), 2000
        (``main.py``).
    lr : float, default=1e-3
        SGD learning rate of the trunk and feature head. Official: 1e-4 (README), 3e-3
        (``main.py``).
    lr_cluster : float, default=1e-3
        SGD learning rate of the cluster head. Official: 1e-4 (README), 2e-3 (``main.py``).
    n_networks : int >= 1, default=1
        Independently initialised networks trained on the same data (network solver; our
        addition, the paper trains one). The labels come from spectral clustering of the mean
        of their full-data memberships (a mean of doubly stochastic matrices is doubly
        stochastic); the representation is their unit-norm features concatenated and scaled
        by :math:`1/\sqrt{m}`, so that :math:`z_i^\top z_j` is the mean cosine. MLC's
        labels vary much with the seed on real data (digits: ACC 0.797-0.891 over six seeds);
        the mean membership averages that out at m times the cost.
    momentum : float, default=0.9
        SGD momentum of both parameter groups. Official: 0.9.
    weight_decay : float, default=1e-4
        Weight decay of the trunk and feature head. Official: 1e-4.
    weight_decay_cluster : float, default=5e-3
        Weight decay of the cluster head. Official: 5e-3.
    max_iter : int, default=50
        Mirror-descent iterations (membership solver).
    step_size : float, default=1.0
        Mirror-descent step :math:`\tau` (membership solver):
        :math:`\Gamma \leftarrow \mathrm{Sinkhorn}(\Gamma \odot e^{-\tau G})`.
    tol : float, default=1e-6
        The membership solver stops when no entry of :math:`\Gamma` moves more than this.
    n_clusters_candidates : sequence of int, default=(2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20)
        Candidates for ``n_clusters=None`` (those below the number of samples are used).
        Official: (5, 8, 9, 10, 15, 20, 30, 50).
    spectral_n_init : int, default=10
        k-means restarts in spectral clustering. Official: 10.
    refine_max_iter : int >= 0, default=0
        Rounds of rate-reduction refinement of the spectral labels (our addition, not in the
        paper or the official code; the default 0 gives the paper's labels, 100 is ample for
        a few thousand samples). For hard labels the membership
        is label-block and :math:`\Delta R = R(Z) - R^c(Z, \text{labels})`; each round moves
        the samples whose move to another cluster lowers :math:`R^c` the most (the exact change,
        by the matrix determinant lemma), keeps the batch of moves only if the exact
        :math:`R^c` decreases (halving it otherwise), and stops when no single move lowers it.
        So :math:`\Delta R` of the returned labels is never below that of the spectral labels.
    refine_n_init : int >= 1, default=1
        Starts of the refinement (when ``refine_max_iter > 0``): the spectral labels, then
        ``refine_n_init - 1`` uniformly
        random labelings (seeded by ``random_state``); the labels with the smallest
        :math:`R^c` (largest :math:`\Delta R`) are kept. The greedy descent has local minima;
        restarts matter when the membership's spectral labels are poor.
    chunk_size : int, default=2048
        Rows of :math:`\Gamma` formed at a time when clustering the full data: memory stays
        O(n · chunk_size) (network solver).
    verbose : int, default=0
        Print progress (one line per epoch / iteration) when positive.
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the network initialisation and mini-batch order (a seeded ``torch.Generator``
        drawn from it), the eigensolver start and k-means: a fixed seed gives the same fit on
        every backend up to floating-point rounding.

    Attributes
    ----------
    labels_ : array of shape (n_samples,)
        Cluster of every training sample (spectral clustering of the full-data
        :math:`\Gamma`), in the input's namespace.
    embedding_ : array of shape (n_samples, d)
        The representation Z of the training data (``d = feature_dim`` for the network solver,
        ``n_features_in_`` for the membership solver).
    n_clusters_ : int
        Number of clusters used.
    subspace_bases_ : array of shape ``(n_clusters_, d, r)``
        Orthonormal basis of each cluster's subspace (leading right singular vectors of its
        embedded points, enough to keep 90% of their energy; zero-padded), used by
        :meth:`predict`.
    loss_curve_ : list of float
        Loss after every optimiser step (network: warm-up steps included, the networks one
        after the other) or mirror-descent
        iteration (membership: :math:`\gamma_c R^c + \frac{\gamma_F}{2}\lVert\Gamma\rVert^2`).
    rates_ : list of tuple of float
        :math:`(R(Z), R^c(Z, \Gamma))` at every MLC step / iteration (warm-up excluded).
    n_iter_ : int
        Optimiser steps (network) or mirror-descent iterations (membership) performed.
    refine_n_iter_ : int
        Rounds of rate-reduction refinement performed, summed over the starts (see
        ``refine_max_iter``, ``refine_n_init``).
    networks_ : list of torch.nn.ModuleDict
        The trained networks (``trunk``, ``feature_head``, ``cluster_head``), ``n_networks``
        of them; network solver only.
    n_features_in_ : int
        Number of features seen during fit.

    Notes
    -----
    Differences from the official implementation (LeslieTrue/CPP, which runs the MLC objective;
    MLC's own repository was not available): the whole-data clustering is done here (the
    official code only clusters each training batch); gradients flow through every Sinkhorn
    update (the official code detaches the column potential); the warm-up steps precede the
    training epochs. ``predict`` assigns a new point to the cluster whose subspace leaves the
    smallest residual :math:`\lVert z - U_k U_k^\top z\rVert` (nearest subspace); the paper
    defines no out-of-sample rule (on the training data it agrees with ``labels_`` except for
    points near the boundary between two clusters, where the spectral or refined labels decide
    otherwise). The rate-reduction refinement of the labels (``refine_max_iter > 0``) is not in
    the paper or the official code, whose labels are the spectral clustering of
    :math:`\Gamma`. It makes the final labels a local maximum of the objective MLC optimises,
    restricted to hard memberships; on overlapping warped subspaces it lifts the membership
    solver's accuracy from 0.2-0.4 to above 0.9 (with ``refine_n_init=10``, see the benchmark),
    while on digits it lowered the network solver's accuracy slightly (0.874 to 0.870), so it
    is off by default.
    The network solver needs PyTorch; it trains in the input's
    floating dtype on the input's device (CPU for NumPy input).

    The membership solver minimises :math:`\gamma_c R^c(Z, \Gamma) +
    \frac{\gamma_F}{2}\lVert\Gamma\rVert_F^2` for fixed Z from
    :math:`\Gamma_0 = \mathrm{Sinkhorn}(|ZZ^\top|/\eta)` with the gradient
    :math:`G_{ij} = \gamma_c \frac{d}{2n\varepsilon^2} z_i^\top M_j^{-1} z_i + \gamma_F
    \Gamma_{ij}` (column masses held fixed, :math:`M_j = I + \frac{d}{t_j\varepsilon^2}
    Z^\top\operatorname{diag}(\Gamma_{:,j})Z`), computed by
    :func:`subspacelab.kernels.weighted_logdet`. Its memory is O(n²).

    References
    ----------
    .. [1] T. Ding, S. Tong, K. H. R. Chan, X. Dai, Y. Ma, B. D. Haeffele, "Unsupervised
       Manifold Linearizing and Clustering", ICCV 2023.
    .. [2] T. Chu, S. Tong, T. Ding, X. Dai, B. D. Haeffele, R. Vidal, Y. Ma, "Image Clustering
       via the Principle of Rate Reduction in the Age of Pretrained Models", ICLR 2024.

    Examples
    --------
    >>> from subspacelab import MCR2Clusterer
    >>> from subspacelab.datasets import make_union_of_subspaces
    >>> from subspacelab.metrics import clustering_accuracy
    >>> X, y, _ = make_union_of_subspaces(60, (3, 3, 3), 30, noise=0.01, warp=0.5,
    ...                                   shuffle=True, random_state=0)
    >>> est = MCR2Clusterer(3, feature_dim=16, hidden_dim=64, n_epochs=40, batch_size=60,
    ...                     random_state=0).fit(X)
    >>> clustering_accuracy(y, est.labels_)
    1.0
    >>> est.transform(X).shape, est.membership(X).shape
    ((180, 16), (180, 180))
    """

    def __init__(
        self,
        n_clusters=None,
        *,
        solver="network",
        feature_dim=32,
        hidden_dim=256,
        eps_sq=0.1,
        compress_weight=1.0,
        frobenius_weight=0.05,
        sinkhorn_eta=0.1,
        sinkhorn_n_iter=5,
        sinkhorn_tol=None,
        warmup_steps=0,
        copy_heads_after_warmup=True,
        n_epochs=30,
        batch_size=512,
        lr=1e-3,
        lr_cluster=1e-3,
        n_networks=1,
        momentum=0.9,
        weight_decay=1e-4,
        weight_decay_cluster=5e-3,
        max_iter=50,
        step_size=1.0,
        tol=1e-6,
        n_clusters_candidates=(2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20),
        spectral_n_init=10,
        refine_max_iter=0,
        refine_n_init=1,
        chunk_size=2048,
        verbose=0,
        random_state=None,
    ):
        self.n_clusters = n_clusters
        self.solver = solver
        self.feature_dim = feature_dim
        self.hidden_dim = hidden_dim
        self.eps_sq = eps_sq
        self.compress_weight = compress_weight
        self.frobenius_weight = frobenius_weight
        self.sinkhorn_eta = sinkhorn_eta
        self.sinkhorn_n_iter = sinkhorn_n_iter
        self.sinkhorn_tol = sinkhorn_tol
        self.warmup_steps = warmup_steps
        self.copy_heads_after_warmup = copy_heads_after_warmup
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_cluster = lr_cluster
        self.n_networks = n_networks
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.weight_decay_cluster = weight_decay_cluster
        self.max_iter = max_iter
        self.step_size = step_size
        self.tol = tol
        self.n_clusters_candidates = n_clusters_candidates
        self.spectral_n_init = spectral_n_init
        self.refine_max_iter = refine_max_iter
        self.refine_n_init = refine_n_init
        self.chunk_size = chunk_size
        self.verbose = verbose
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------
    # parameters

    def _check_params(self, n_samples):
        check_param("solver", self.solver, "option", options=("network", "membership"))
        check_param("n_clusters", self.n_clusters, "int", low=1, allow_none=True)
        if self.n_clusters is not None and self.n_clusters > n_samples:
            raise ValueError(
                f"n_clusters={self.n_clusters} needs at least as many samples, got {n_samples} sample(s)"
            )
        if n_samples < 2:
            raise ValueError(f"MCR2Clusterer needs at least 2 samples, got {n_samples} sample(s)")
        for name in ("feature_dim", "hidden_dim", "sinkhorn_n_iter", "n_epochs", "batch_size", "max_iter"):
            check_param(name, getattr(self, name), "int", low=1)
        for name in ("spectral_n_init", "chunk_size", "n_networks"):
            check_param(name, getattr(self, name), "int", low=1)
        check_param("warmup_steps", self.warmup_steps, "int", low=0)
        check_param("refine_max_iter", self.refine_max_iter, "int", low=0)
        check_param("refine_n_init", self.refine_n_init, "int", low=1)
        check_param("verbose", self.verbose, "int", low=0)
        for name in ("eps_sq", "sinkhorn_eta", "lr", "lr_cluster", "step_size"):
            check_param(name, getattr(self, name), "real", low=0.0, closed="neither")
        for name in ("compress_weight", "frobenius_weight", "weight_decay", "weight_decay_cluster", "tol"):
            check_param(name, getattr(self, name), "real", low=0.0)
        check_param("momentum", self.momentum, "real", low=0.0, high=1.0, closed="left")
        check_param("sinkhorn_tol", self.sinkhorn_tol, "real", low=0.0, allow_none=True)
        check_param("copy_heads_after_warmup", self.copy_heads_after_warmup, "bool")
        if self.n_clusters is None:
            self._candidates(n_samples)

    def _candidates(self, n_samples):
        cands = self.n_clusters_candidates
        if isinstance(cands, (str, bytes)) or not hasattr(cands, "__iter__"):
            raise TypeError(f"n_clusters_candidates must be a sequence of int, got {cands!r}")
        cands = [int(check_param("n_clusters_candidates[i]", k, "int", low=1)) for k in cands]
        kept = sorted({k for k in cands if k < n_samples})
        if not kept:
            raise ValueError(
                f"no entry of n_clusters_candidates={tuple(cands)} is below the number of "
                f"samples ({n_samples} sample(s)); pass n_clusters or smaller candidates"
            )
        return kept

    # ----------------------------------------------------------------------------------------
    # fit

    def fit(self, X, y=None):
        """Learn the representation and the membership, then cluster the training data.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Training data, any array-API namespace (see the class docstring for devices).
        y : ignored

        Returns
        -------
        self
        """
        X, xp, dev = validate_input(self, X, reset=True)
        n = X.shape[0]
        self._check_params(n)
        rng = check_random_state(self.random_state)
        torch_seed = int(rng.integers(0, 2**62))
        self.loss_curve_, self.rates_ = [], []
        if self.solver == "network":
            seeds = [torch_seed] + [int(rng.integers(0, 2**62)) for _ in range(self.n_networks - 1)]
            self.networks_ = [self._fit_network(X, seed) for seed in seeds]
            self.n_iter_ = len(self.loss_curve_)
            heads = self._heads(X)
            Z = move_to(_concat_features(heads), xp, dev)
            affinity = self._network_affinity(heads)
        else:
            Z = _normalize_rows(X, xp)
            gamma = self._optimize_membership(Z, xp, record=True)
            affinity = _Affinity.dense(to_numpy(gamma))
        spectral = _SpectralEmbedding(affinity, rng)
        if self.n_clusters is None:
            k, labels = self._select_n_clusters(Z, spectral, self._candidates(n), rng)
        else:
            k = int(self.n_clusters)
            labels = spectral.labels(k, self.spectral_n_init, rng)
        labels = self._refine(Z, move_to(labels, xp, dev), k, rng)
        self.n_clusters_ = k
        self.embedding_ = Z
        self.labels_ = labels
        self.subspace_bases_ = _subspace_bases(Z, to_numpy(labels), k, xp, dev)
        return self

    def fit_predict(self, X, y=None):
        """Fit and return ``labels_``: spectral clustering of the full-data :math:`\\Gamma`
        (refined by rate reduction when ``refine_max_iter > 0``).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        labels : array of shape (n_samples,)
        """
        return self.fit(X).labels_

    def _refine(self, Z, labels, k, rng):
        """Rate-reduction refinement from the spectral labels and refine_n_init - 1 random
        labelings; the labels with the smallest label-block R^c win."""
        if self.refine_max_iter == 0:
            self.refine_n_iter_ = 0
            return labels
        xp = array_api_compat.array_namespace(Z)
        n = Z.shape[0]
        best = None
        self.refine_n_iter_ = 0
        for start in range(self.refine_n_init):
            if start > 0:
                draw = rng.integers(0, k, n)
                draw[rng.choice(n, size=k, replace=False)] = np.arange(k)  # every cluster non-empty
                labels = move_to(draw, xp, array_api_compat.device(Z))
            refined, rounds, rc, converged = _refine_labels(
                Z, labels, k, self.eps_sq, self.refine_max_iter, self.chunk_size
            )
            self.refine_n_iter_ += rounds
            if not converged:
                warnings.warn(
                    f"MCR2Clusterer's label refinement did not converge in refine_max_iter="
                    f"{self.refine_max_iter} rounds (a move still lowers the compressed rate); "
                    "raise refine_max_iter",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            if self.verbose:
                print(f"[MCR2Clusterer] refinement start {start + 1}/{self.refine_n_init}: "
                      f"{rounds} round(s), compressed rate {rc:.6f}")
            if best is None or rc < best[0]:
                best = (rc, refined)
        return best[1]

    def _select_n_clusters(self, Z, spectral, candidates, rng):
        Zn = to_numpy(Z)
        best = None
        for k in candidates:
            labels = spectral.labels(k, self.spectral_n_init, rng)
            length = float(coding_length(Zn, labels, eps_sq=self.eps_sq))
            if self.verbose:
                print(f"[MCR2Clusterer] n_clusters={k}: coding length {length:.2f} nats")
            if best is None or length < best[0]:
                best = (length, k, labels)
        return best[1], best[2]

    # ---- network solver ----------------------------------------------------------------------

    def _fit_network(self, X, seed):
        torch = _import_torch()
        xp_t = _torch_xp()
        Xt = move_to(X, xp_t, _torch_device(X))
        n, n_in = Xt.shape
        gen = torch.Generator(device="cpu").manual_seed(seed)
        net = _build_network(torch, n_in, self.hidden_dim, self.feature_dim, gen, Xt.dtype, Xt.device)
        head_params = list(net["cluster_head"].parameters())
        main_params = list(net["trunk"].parameters()) + list(net["feature_head"].parameters())
        opt_main = torch.optim.SGD(main_params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        opt_head = torch.optim.SGD(
            head_params, lr=self.lr_cluster, momentum=self.momentum, weight_decay=self.weight_decay_cluster
        )
        b = min(self.batch_size, n)
        per_epoch = n // b
        batches = _batch_stream(torch, n, b, gen, Xt.device)
        net.train()
        t0 = time.perf_counter()
        for step in range(self.warmup_steps):
            idx = next(batches)
            z, _ = _forward(torch, net, Xt[idx])
            loss = -coding_rate(z, eps_sq=self.eps_sq)
            opt_main.zero_grad()
            loss.backward()
            opt_main.step()
            self.loss_curve_.append(float(loss.detach()))
            if self.verbose and (step + 1) % max(1, per_epoch) == 0:
                print(f"[MCR2Clusterer] warm-up step {step + 1}/{self.warmup_steps}: -R = {self.loss_curve_[-1]:.4f}")
        if self.copy_heads_after_warmup:
            with torch.no_grad():
                net["cluster_head"].weight.copy_(net["feature_head"].weight)
                net["cluster_head"].bias.copy_(net["feature_head"].bias)
        for epoch in range(self.n_epochs):
            for _ in range(per_epoch):
                idx = next(batches)
                z, c = _forward(torch, net, Xt[idx])
                gamma = self._membership_from_heads(c)
                r = coding_rate(z, eps_sq=self.eps_sq)
                rc = _compressed_rate(z, gamma, self.eps_sq, backend="generic")
                loss = -r + self.compress_weight * rc + 0.5 * self.frobenius_weight * torch.sum(gamma * gamma)
                opt_main.zero_grad()
                opt_head.zero_grad()
                loss.backward()
                opt_main.step()
                opt_head.step()
                self.loss_curve_.append(float(loss.detach()))
                self.rates_.append((float(r.detach()), float(rc.detach())))
            if self.verbose:
                r_last, rc_last = self.rates_[-1] if self.rates_ else (math.nan, math.nan)
                print(
                    f"[MCR2Clusterer] epoch {epoch + 1}/{self.n_epochs}: loss {self.loss_curve_[-1]:.4f}, "
                    f"R {r_last:.4f}, Rc {rc_last:.4f} ({time.perf_counter() - t0:.1f}s)"
                )
        net.eval()
        return net

    def _membership_from_heads(self, c):
        a = c @ c.T
        return sinkhorn(
            abs(a), self.sinkhorn_eta, n_iter=self.sinkhorn_n_iter, tol=self.sinkhorn_tol, backend="generic"
        ).plan

    def _heads(self, X):
        """Feature and cluster heads of every network on X (torch, no grad)."""
        torch = _import_torch()
        Xt = move_to(X, _torch_xp(), _torch_device(X))
        with torch.no_grad():
            return [_forward(torch, net, Xt) for net in self.networks_]

    def _network_affinity(self, heads):
        """The mean of the networks' full-data memberships (from their ``_heads``), as a
        chunked operator."""
        parts = [
            _Affinity.from_embedding(
                to_numpy(c), self.sinkhorn_eta, self.sinkhorn_n_iter, self.sinkhorn_tol, self.chunk_size
            )
            for _, c in heads
        ]
        return _Affinity.mean(parts)

    # ---- membership solver -----------------------------------------------------------------

    def _optimize_membership(self, Z, xp, record):
        n, d = Z.shape
        beta = d / self.eps_sq
        res = sinkhorn(xp.abs(Z @ xp.matrix_transpose(Z)), self.sinkhorn_eta, self.sinkhorn_n_iter, self.sinkhorn_tol)
        gamma = res.plan
        log_gamma = (
            xp.abs(Z @ xp.matrix_transpose(Z)) + res.row_potential[:, None] + res.col_potential[None, :]
        ) / self.sinkhorn_eta
        converged = False
        n_iter = 0
        r = float(coding_rate(Z, eps_sq=self.eps_sq)) if record else None
        for it in range(self.max_iter):
            t = xp.sum(gamma, axis=0)
            terms = weighted_logdet(Z, gamma / t[None, :], beta, return_quadratic=True)
            rc = float(xp.sum(t * terms.logdet)) / (2 * n)
            frob = float(xp.sum(gamma * gamma))
            if record:
                self.loss_curve_.append(self.compress_weight * rc + 0.5 * self.frobenius_weight * frob)
                self.rates_.append((r, rc))
            grad = (self.compress_weight * beta / (2 * n)) * terms.quadratic + self.frobenius_weight * gamma
            step = log_gamma - self.step_size * grad
            res = sinkhorn(step, 1.0, self.sinkhorn_n_iter, self.sinkhorn_tol)
            new = res.plan
            log_gamma = step + res.row_potential[:, None] + res.col_potential[None, :]
            change = float(xp.max(xp.abs(new - gamma)))
            gamma = new
            n_iter = it + 1
            if self.verbose and record:
                print(f"[MCR2Clusterer] iteration {n_iter}: objective {self.loss_curve_[-1]:.6f}, max change {change:.2e}")
            if change <= self.tol:
                converged = True
                break
        if record:
            self.n_iter_ = n_iter
            if not converged:
                warnings.warn(
                    f"MCR2Clusterer(solver='membership') did not converge in max_iter={self.max_iter} "
                    f"iterations (last max change of Gamma {change:.2e} > tol={self.tol}); raise "
                    "max_iter or tol",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        return gamma

    # ----------------------------------------------------------------------------------------
    # methods of a fitted estimator

    def _validate_fitted_input(self, X, method):
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="embedding_", method=method)
        return validate_input(self, X, reset=False)

    def _transform(self, X, xp, dev):
        if self.solver == "network":
            return move_to(_concat_features(self._heads(X)), xp, dev)
        return _normalize_rows(X, xp)

    def transform(self, X):
        """The learned representation Z of ``X`` (unit-norm rows).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        Z : array of shape (n_samples, d)
            In the input's namespace and floating dtype.
        """
        X, xp, dev = self._validate_fitted_input(X, "transform")
        return self._transform(X, xp, dev)

    def predict(self, X):
        """Assign samples to the nearest cluster subspace of the learned representation.

        The label of ``x`` is :math:`\\arg\\min_k \\lVert z - U_k U_k^\\top z\\rVert` with
        :math:`z` its representation and :math:`U_k` the basis in ``subspace_bases_``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        labels : array of shape (n_samples,)
        """
        X, xp, dev = self._validate_fitted_input(X, "predict")
        Z = self._transform(X, xp, dev)
        proj = xp.sum((Z[None, :, :] @ self.subspace_bases_) ** 2, axis=-1)  # (K, n)
        return xp.argmax(proj, axis=0)

    def membership(self, X):
        """The doubly stochastic membership :math:`\\Gamma` of the samples ``X`` (n × n).

        Network solver: :math:`\\mathrm{Sinkhorn}(|CC^\\top|/\\eta)` from the cluster head
        (the mean over the networks when ``n_networks > 1``).
        Membership solver: the mirror-descent optimum for the features of ``X``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        Gamma : array of shape (n_samples, n_samples)
            Rows sum to 1 (exactly after an odd number of Sinkhorn half-iterations), columns
            approximately or to ``sinkhorn_tol``.
        """
        X, xp, dev = self._validate_fitted_input(X, "membership")
        if self.solver == "network":
            gamma = None
            for _, c in self._heads(X):
                c = move_to(c, xp, dev)
                a = xp.abs(c @ xp.matrix_transpose(c))
                plan = sinkhorn(a, self.sinkhorn_eta, self.sinkhorn_n_iter, self.sinkhorn_tol).plan
                gamma = plan if gamma is None else gamma + plan
            return gamma / len(self.networks_)
        return self._optimize_membership(_normalize_rows(X, xp), xp, record=False)

    def score(self, X, y=None):
        """Rate reduction :math:`\\Delta R = R(Z) - R^c(Z, \\Gamma)` of ``X`` (nats; larger is
        better, and never negative for a doubly stochastic :math:`\\Gamma`).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        score : float
        """
        gamma = self.membership(X)
        X, xp, dev = validate_input(self, X, reset=False)
        Z = self._transform(X, xp, dev)
        rc = _compressed_rate(Z, gamma, self.eps_sq)
        return float(coding_rate(Z, eps_sq=self.eps_sq)) - float(rc)

    def estimate_n_clusters(self, X, candidates=None):
        """Number of clusters by the coding-length criterion (MLC/CPP ``optimalcluster.py``).

        For each candidate K, spectrally cluster the membership of ``X`` into K groups and
        compute the coding length of the representation,
        :math:`L(K) = \\sum_k \\big[\\frac{m_k + d}{2}\\log\\det(I + \\frac{d}{\\varepsilon^2 m_k}
        Z_k^\\top Z_k) - m_k\\log\\frac{m_k}{m}\\big]` (:func:`subspacelab.rate.coding_length`);
        return the K with the shortest code.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        candidates : sequence of int, optional
            Defaults to ``n_clusters_candidates``; values not below n_samples are dropped.

        Returns
        -------
        n_clusters : int
        """
        X, xp, dev = self._validate_fitted_input(X, "estimate_n_clusters")
        n = X.shape[0]
        if candidates is None:
            cands = self._candidates(n)
        else:
            cands = _CandidatesView(candidates)._candidates(n)
        rng = check_random_state(self.random_state)
        if self.solver == "network":
            heads = self._heads(X)
            Z = move_to(_concat_features(heads), xp, dev)
            affinity = self._network_affinity(heads)
        else:
            Z = self._transform(X, xp, dev)
            affinity = _Affinity.dense(to_numpy(self._optimize_membership(Z, xp, record=False)))
        k, _ = self._select_n_clusters(Z, _SpectralEmbedding(affinity, rng), cands, rng)
        return k

    @property
    def _n_features_out(self):
        return self.embedding_.shape[1]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        tags.input_tags.allow_nan = False
        tags.non_deterministic = False
        return tags


class _CandidatesView:
    """Validates a candidate list with the estimator's rules (for estimate_n_clusters)."""

    def __init__(self, candidates):
        self.n_clusters_candidates = candidates

    _candidates = MCR2Clusterer._candidates


# --------------------------------------------------------------------------------------------
# helpers


def _import_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in CI
        raise ImportError(
            "MCR2Clusterer(solver='network') needs PyTorch: pip install 'subspacelab[torch]' "
            "(or use solver='membership', which needs no torch)"
        ) from exc
    return torch


def _torch_xp():
    _import_torch()
    import array_api_compat.torch as xp_torch

    return xp_torch


def _torch_device(X):
    if array_api_compat.is_torch_array(X):
        return X.device
    if array_api_compat.is_cupy_array(X):
        return f"cuda:{X.device.id}"
    return "cpu"


def _compressed_rate(Z, gamma, eps_sq, backend="auto"):
    """MLC's R^c(Z, Gamma) = sum_j t_j/(2n) logdet(I + d/(t_j eps^2) Z^T diag(Gamma_j) Z), by
    the weighted_logdet kernel (equal to rate.compressed_coding_rate with Gamma as soft
    memberships, without its (n, d, n) intermediate; the generic backend keeps autograd)."""
    xp = array_api_compat.array_namespace(Z, gamma)
    n, d = Z.shape
    t = xp.sum(gamma, axis=0)
    logdet = weighted_logdet(Z, gamma / t[None, :], d / eps_sq, backend=backend).logdet
    return xp.sum(t * logdet) / (2 * n)


def _concat_features(heads):
    """The representation of several networks: their unit-norm features side by side, scaled
    by 1/sqrt(m) so that rows have unit norm again (one network: its features)."""
    torch = _import_torch()
    zs = [z for z, _ in heads]
    return zs[0] if len(zs) == 1 else torch.cat(zs, dim=1) / math.sqrt(len(zs))


def _hard_rate_terms(Z, labels, k, beta):
    """Per-cluster state of the label-block compressed rate.

    Returns the one-hot memberships (n, k), the cluster sizes m (k,), the eigenvalues (k, d)
    and eigenvectors (k, d, d) of S_j = Z_j^T Z_j, and the terms
    m_j/(2n) logdet(I + beta/m_j S_j) whose sum is R^c(Z, labels) (beta = d/eps^2)."""
    xp = array_api_compat.array_namespace(Z)
    n = Z.shape[0]
    ks = xp.arange(k, device=array_api_compat.device(Z))
    onehot = xp.astype(labels[:, None] == ks[None, :], Z.dtype)
    m = xp.sum(onehot, axis=0)
    Zt = xp.matrix_transpose(Z)
    S = xp.stack([(Zt * onehot[:, j][None, :]) @ Z for j in range(k)])
    lam, V = xp.linalg.eigh(S)
    lam = xp.clip(lam, 0.0, None)
    safe_m = xp.where(m > 0, m, xp.ones_like(m))
    terms = m / (2 * n) * xp.sum(xp.log1p((beta / safe_m)[:, None] * lam), axis=1)
    return onehot, m, lam, V, terms


def _best_moves(Z, labels, state, beta, chunk):
    """For every sample, the cluster it would best move to and the exact change of R^c.

    With S_j's eigen-decomposition the terms after adding z to cluster j (size m_j + 1) or
    removing it from its own cluster a (size m_a - 1) follow from the matrix determinant lemma,
    logdet(I + c (S +- z z^T)) = logdet(I + c S) + log(1 +- c z^T (I + c S)^{-1} z). Moves out
    of a singleton cluster are excluded (the cluster would vanish). Memory O(k * chunk * d)."""
    xp = array_api_compat.array_namespace(Z)
    onehot, m, lam, V, terms = state
    n = Z.shape[0]
    c_add = beta / (m + 1)
    base_add = xp.sum(xp.log1p(c_add[:, None] * lam), axis=1)  # (k,)
    ma = xp.take(m, labels)
    m_rem = xp.where(ma > 1, ma - 1, xp.ones_like(ma))
    c_rem = beta / m_rem  # (n,)
    lam_own = xp.take(lam, labels, axis=0)  # (n, d)
    tiny = xp.finfo(Z.dtype).smallest_normal
    best, gain = [], []
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        q = (Z[None, r0:r1, :] @ V) ** 2  # (k, b, d): squared coordinates in each eigenbasis
        quad_add = xp.sum(q / (1 + c_add[:, None, None] * lam[:, None, :]), axis=2)  # (k, b)
        added = ((m + 1) / (2 * n))[:, None] * (base_add[:, None] + xp.log1p(c_add[:, None] * quad_add))
        delta = xp.matrix_transpose(added - terms[:, None])  # (b, k)
        oh = onehot[r0:r1, :]
        q_own = xp.sum(xp.permute_dims(q, (1, 0, 2)) * oh[:, :, None], axis=1)  # (b, d)
        cr = c_rem[r0:r1]
        lo = lam_own[r0:r1, :]
        quad_rem = xp.sum(q_own / (1 + cr[:, None] * lo), axis=1)
        removed = m_rem[r0:r1] / (2 * n) * (
            xp.sum(xp.log1p(cr[:, None] * lo), axis=1) + xp.log(xp.clip(1 - cr * quad_rem, tiny, None))
        )
        removed = removed - xp.take(terms, labels[r0:r1])
        delta = delta + removed[:, None]
        blocked = (oh > 0) | (ma[r0:r1] <= 1)[:, None]
        delta = xp.where(blocked, xp.full_like(delta, math.inf), delta)
        best.append(xp.argmin(delta, axis=1))
        gain.append(xp.min(delta, axis=1))
    return xp.concat(best), xp.concat(gain)


def _refine_labels(Z, labels, k, eps_sq, max_iter, chunk):
    """Greedy descent of the label-block compressed rate R^c(Z, labels) (see refine_max_iter).

    Every round computes each sample's best move exactly, applies the moves with the most
    negative changes together (all of them first, then half as many, ...) as soon as the exact
    R^c of the result is lower, and stops when no single move lowers it (then it returns
    converged=True). Array-API code in Z's namespace; returns (labels, rounds, R^c, converged)."""
    xp = array_api_compat.array_namespace(Z)
    n, d = Z.shape
    beta = d / eps_sq
    state = _hard_rate_terms(Z, labels, k, beta)
    obj = float(xp.sum(state[4]))
    for it in range(max_iter):
        best, change = _best_moves(Z, labels, state, beta, chunk)
        tol = 1e-12 * max(1.0, abs(obj))
        movable = change < -tol
        n_moves = int(xp.sum(xp.astype(movable, xp.int64)))
        if n_moves == 0:
            return labels, it, obj, True
        ordered = xp.sort(xp.where(movable, change, xp.full_like(change, math.inf)))
        while True:
            threshold = ordered[n_moves - 1]
            moved = movable & (change <= threshold)
            trial = xp.where(moved, best, labels)
            trial_state = _hard_rate_terms(Z, trial, k, beta)
            trial_obj = float(xp.sum(trial_state[4]))
            if trial_obj < obj and bool(xp.all((trial_state[1] > 0) | (state[1] == 0))):  # none emptied
                break
            if n_moves == 1:  # the exact single-move change is below rounding: a fixed point
                return labels, it, obj, True
            n_moves = (n_moves + 1) // 2
        labels, state, obj = trial, trial_state, trial_obj
    best, change = _best_moves(Z, labels, state, beta, chunk)
    return labels, max_iter, obj, not bool(xp.any(change < -1e-12 * max(1.0, abs(obj))))


def _normalize_rows(X, xp):
    """Rows scaled to unit norm (a zero row stays zero)."""
    norms = xp.sqrt(xp.sum(X * X, axis=1, keepdims=True))
    return X / xp.where(norms > 0, norms, xp.ones_like(norms))


def _build_network(torch, n_in, hidden, feat, gen, dtype, device):
    nn = torch.nn
    net = nn.ModuleDict(
        {
            "trunk": nn.Sequential(
                nn.Linear(n_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
            ),
            "feature_head": nn.Linear(hidden, feat),
            "cluster_head": nn.Linear(hidden, feat),
        }
    )
    # PyTorch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from
    # the seeded generator so that a seed gives the same network everywhere.
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
                module.weight.uniform_(-bound, bound, generator=gen)
                module.bias.uniform_(-bound, bound, generator=gen)
    return net.to(device=device, dtype=dtype)


def _forward(torch, net, x):
    h = net["trunk"](x)
    z = torch.nn.functional.normalize(net["feature_head"](h), dim=1)
    c = torch.nn.functional.normalize(net["cluster_head"](h), dim=1)
    return z, c


def _batch_stream(torch, n, b, gen, device):
    """Endless mini-batch indices: a fresh permutation per epoch, last partial batch dropped."""
    while True:
        perm = torch.randperm(n, generator=gen).to(device)
        for start in range(0, n - b + 1, b):
            yield perm[start : start + b]


def _subspace_bases(Z, labels, k, xp, dev):
    """Orthonormal basis of each cluster's span (right singular vectors keeping 90% energy)."""
    Zn = to_numpy(Z)
    d = Zn.shape[1]
    bases = []
    for j in range(k):
        Zk = Zn[labels == j]
        if Zk.shape[0] == 0:
            bases.append(np.zeros((d, 0)))
            continue
        _, s, vt = np.linalg.svd(Zk, full_matrices=False)
        energy = np.cumsum(s**2)
        r = int(np.searchsorted(energy, _SUBSPACE_ENERGY * energy[-1]) + 1)
        bases.append(vt[:r].T)
    r_max = max(1, max(b.shape[1] for b in bases))
    out = np.zeros((k, d, r_max), dtype=Zn.dtype)
    for j, basis in enumerate(bases):
        out[j, :, : basis.shape[1]] = basis
    return move_to(out, xp, dev)


class _Affinity:
    """The membership Gamma of the whole data as an operator (matvec with Gamma and Gamma^T),
    either dense or, for the network solver, generated ``chunk`` rows at a time from the
    cluster embedding C: Gamma_ij = exp(|c_i . c_j|/eta + f_i + g_j), with the potentials of
    the same Sinkhorn schedule as :func:`subspacelab.kernels.sinkhorn`. NumPy, host memory."""

    def __init__(self, n, matvec, rmatvec):
        self.n = n
        self.matvec = matvec
        self.rmatvec = rmatvec

    @classmethod
    def dense(cls, gamma):
        gamma = np.asarray(gamma, dtype=np.float64)
        return cls(gamma.shape[0], lambda v: gamma @ v, lambda v: gamma.T @ v)

    @classmethod
    def mean(cls, parts):
        if len(parts) == 1:
            return parts[0]
        m = len(parts)
        return cls(
            parts[0].n,
            lambda v: sum(p.matvec(v) for p in parts) / m,
            lambda v: sum(p.rmatvec(v) for p in parts) / m,
        )

    @classmethod
    def from_embedding(cls, C, eta, n_iter, tol, chunk):
        C = np.asarray(C, dtype=np.float64)
        f, g = _chunked_sinkhorn_potentials(C, eta, n_iter, tol, chunk)
        n = C.shape[0]

        def apply(v, left, right):
            out = np.empty((n,) + v.shape[1:])
            for r0 in range(0, n, chunk):
                r1 = min(n, r0 + chunk)
                block = np.exp(np.abs(C[r0:r1] @ C.T) / eta + left[r0:r1, None] + right[None, :])
                out[r0:r1] = block @ v
            return out

        # |CC^T| is symmetric, so Gamma^T = exp(K + g 1^T + 1 f^T): the same generator with the
        # potentials swapped.
        return cls(n, lambda v: apply(v, f, g), lambda v: apply(v, g, f))


def _chunked_sinkhorn_potentials(C, eta, n_iter, tol, chunk):
    """Scaled potentials (f, g) of Sinkhorn on K = |CC^T|/eta, rows first, K never stored."""
    n = C.shape[0]

    def neg_lse(pot):
        out = np.empty(n)
        for r0 in range(0, n, chunk):
            r1 = min(n, r0 + chunk)
            x = np.abs(C[r0:r1] @ C.T) / eta + pot[None, :]
            m = x.max(axis=1)
            out[r0:r1] = -(m + np.log(np.exp(x - m[:, None]).sum(axis=1)))
        return out

    f, g = np.zeros(n), np.zeros(n)
    for it in range(n_iter):
        if it % 2 == 0:
            new, old = neg_lse(g), f
        else:
            new, old = neg_lse(f), g  # column LSE = row LSE of the symmetric K
        if tol is not None and it > 0 and np.max(np.abs(np.exp(old - new) - 1.0)) <= tol:
            break
        if it % 2 == 0:
            f = new
        else:
            g = new
    return f, g


class _SpectralEmbedding:
    """Top eigenvectors of the normalised symmetric membership, shared by several K."""

    def __init__(self, affinity, rng):
        self.affinity = affinity
        self.rng = rng
        self._vectors = None

    def _apply_sym(self, v):
        return 0.5 * (self.affinity.matvec(v) + self.affinity.rmatvec(v))

    def vectors(self, k):
        if self._vectors is not None and self._vectors.shape[1] >= k:
            return self._vectors[:, :k]
        n = self.affinity.n
        deg = self._apply_sym(np.ones(n))
        scale = 1.0 / np.sqrt(np.maximum(deg, np.finfo(np.float64).tiny))
        if n <= 1000 or k >= n - 1:
            S = self._apply_sym(np.eye(n))
            S = scale[:, None] * S * scale[None, :]
            vals, vecs = np.linalg.eigh(0.5 * (S + S.T))
            vecs = vecs[:, ::-1][:, :k]
        else:
            from scipy.sparse.linalg import LinearOperator, eigsh

            def mv(v):
                v = np.asarray(v, dtype=np.float64)
                return scale.reshape((-1,) + (1,) * (v.ndim - 1)) * self._apply_sym(
                    scale.reshape((-1,) + (1,) * (v.ndim - 1)) * v
                )

            op = LinearOperator((n, n), matvec=mv, matmat=mv, dtype=np.float64)
            v0 = self.rng.uniform(-1.0, 1.0, size=n)
            vals, vecs = eigsh(op, k=k, which="LA", v0=v0)
            vecs = vecs[:, np.argsort(vals)[::-1]]
        self._vectors = vecs
        return vecs

    def labels(self, k, n_init, rng):
        from sklearn.cluster import KMeans

        if k == 1:
            return np.zeros(self.affinity.n, dtype=np.int64)
        U = self.vectors(k)
        norms = np.linalg.norm(U, axis=1, keepdims=True)
        U = U / np.where(norms > 0, norms, 1.0)
        seed = int(rng.integers(0, 2**31 - 1))
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(U)
        return km.labels_.astype(np.int64)


def demo_row():
    """MCR2Clusterer (network solver) versus k-means on three warped 3-dim subspaces of R^30."""
    from sklearn.cluster import KMeans

    from ..datasets import make_union_of_subspaces
    from ..metrics import clustering_accuracy

    X, y, _ = make_union_of_subspaces(60, (3, 3, 3), 30, noise=0.01, warp=0.5, shuffle=True, random_state=0)
    est = MCR2Clusterer(3, feature_dim=16, hidden_dim=64, n_epochs=40, batch_size=60, random_state=0)
    labels = est.fit_predict(X)
    km = KMeans(n_clusters=3, n_init=10, random_state=0).fit_predict(X)
    return {
        "method": "MCR2Clusterer (network)",
        "data": "warped union of subspaces 180x30",
        "metric": "clustering ACC",
        "value": clustering_accuracy(y, labels),
        "baseline": "KMeans",
        "baseline_value": clustering_accuracy(y, km),
    }
