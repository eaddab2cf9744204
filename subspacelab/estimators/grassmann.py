r"""Grassmann class representation (GCR): every class is a subspace, trained by Riemannian SGD.

:class:`GrassmannClassifier` implements the Grassmann class representation of Wang, Li and
Zhang [1]_ as a scikit-learn classifier; :class:`SoftmaxVectorClassifier` is the same pipeline
(same optimiser, schedule, batches and feature network) with ordinary softmax class vectors, the
baseline the paper compares against. On fixed features both are pure array-API code with
analytic gradients (NumPy, PyTorch, CuPy, array_api_strict; CPU or GPU); with
``feature_network="mlp"`` PyTorch trains a small network jointly with the class head.

References
----------
.. [1] H. Wang, Z. Li, W. Zhang, "Get the Best of Both Worlds: Improving Accuracy and
   Transferability by Grassmann Class Representation", ICCV 2023. Code: innerlee/GCR.
.. [2] S. Watanabe, N. Pakvasa, "Subspace method of pattern recognition", Proc. 1st Int. Joint
   Conf. on Pattern Recognition, 1973 (CLAFIC, the class-wise PCA initialisation).
"""

from __future__ import annotations

import math
import numbers

import array_api_compat
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .._backend import (
    as_float,
    check_random_state,
    check_same_namespace,
    dispatch_enabled,
    is_array_api_obj,
    lazy_import,
    move_to,
    to_numpy,
)
from .._validation import check_param, validate_input
from ..manifolds import _exp, _project, _qr

__all__ = ["GrassmannClassifier", "SoftmaxVectorClassifier"]

# Re-orthonormalise the bases by QR every this many Riemannian steps (the RSGD default of the
# reference code); the exact geodesic step keeps them orthonormal up to rounding in between.
_REORTH_EVERY = 5


# --------------------------------------------------------------------------------------------
# array-API building blocks


def _softmax_cross_entropy(logits, Y, xp):
    """Mean cross-entropy of ``logits`` (n, C) against one-hot ``Y`` and its gradient in logits."""
    m = xp.max(logits, axis=1, keepdims=True)
    shifted = logits - m
    lse = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    log_p = shifted - lse
    n = logits.shape[0]
    loss = -xp.sum(Y * log_p) / n
    return loss, (xp.exp(log_p) - Y) / n


def _softmax(logits, xp):
    e = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def _normalize_rows(Z, xp):
    """Rows divided by their Euclidean norm (a zero row stays zero)."""
    norms = xp.sqrt(xp.sum(Z * Z, axis=1, keepdims=True))
    return Z / xp.where(norms > 0, norms, xp.ones_like(norms))


def _flat_bases(bases, xp):
    """(C, d, k) bases as one (d, C*k) matrix, class after class."""
    C, d, k = bases.shape
    return xp.reshape(xp.permute_dims(bases, (1, 0, 2)), (d, C * k))


def _projections(Zn, bases, xp):
    """Projections S_c^T z (n, C, k) of the normalised rows Zn onto every class basis."""
    C, _, k = bases.shape
    return xp.reshape(Zn @ _flat_bases(bases, xp), (Zn.shape[0], C, k))


def _grassmann_logits(Zn, bases, scale, xp):
    """Logits gamma * ||S_c^T z|| (n, C) and the projections (n, C, k)."""
    P = _projections(Zn, bases, xp)
    return scale * xp.sqrt(xp.sum(P * P, axis=2)), P


def _grassmann_grad(Zn, P, logits, dlogits, scale, xp):
    r"""Euclidean gradient of the loss in the bases, (C, d, k).

    With logit :math:`l_{ic} = \gamma \lVert S_c^\top \hat z_i \rVert` and
    :math:`g_{ic} = \partial L / \partial l_{ic}`,
    :math:`\partial L / \partial S_c = \gamma \sum_i g_{ic}\, \hat z_i\, \hat z_i^\top S_c /
    \lVert S_c^\top \hat z_i \rVert`; a zero projection contributes 0 (a subgradient).
    """
    n, C, k = P.shape
    norms = logits / scale
    safe = xp.where(norms > 0, norms, xp.ones_like(norms))
    a = xp.where(norms > 0, scale * dlogits / safe, xp.zeros_like(norms))
    weighted = xp.reshape(P * xp.expand_dims(a, axis=2), (n, C * k))
    E = xp.matrix_transpose(Zn) @ weighted  # (d, C*k)
    return xp.permute_dims(xp.reshape(E, (Zn.shape[1], C, k)), (1, 0, 2))


def _rsgd_step(bases, grad, buf, lr, momentum, step, xp):
    """One Riemannian SGD step with momentum on a stack of Grassmann bases.

    The momentum buffer accumulates the Euclidean gradient, ``buf <- momentum * buf + grad``;
    its projection on the horizontal space at the current bases is the Riemannian direction
    ``G``, and the bases move along the exact geodesic ``exp_S(-lr * G)``. Every
    ``_REORTH_EVERY`` steps the bases are re-orthonormalised by QR.
    """
    buf = momentum * buf + grad
    G = _project(bases, buf, xp)
    bases = _exp(bases, -lr * G, xp)
    if (step + 1) % _REORTH_EVERY == 0:
        bases = _qr(bases, xp)
    return bases, buf


def _class_pca_bases(Zn, y_idx, n_classes, k, xp, dev):
    """Top-k eigenvectors of every class autocorrelation sum_{i in c} z_i z_i^T, (C, d, k)."""
    order = np.argsort(y_idx, kind="stable")
    counts = np.bincount(y_idx, minlength=n_classes)
    Zs = xp.take(Zn, move_to(order, xp, dev), axis=0)
    out = []
    start = 0
    for c in range(n_classes):
        Zc = Zs[start : start + int(counts[c]), :]
        start += int(counts[c])
        if Zc.shape[0] >= k:
            # right singular vectors of Z_c: the eigenvectors of Z_c^T Z_c, cheaper when n_c < d
            _, _, Vt = xp.linalg.svd(Zc, full_matrices=False)
            out.append(xp.matrix_transpose(Vt[:k, :]))
        else:  # fewer samples than k: complete the basis with eigh's null-space vectors
            _, vecs = xp.linalg.eigh(xp.matrix_transpose(Zc) @ Zc)
            out.append(xp.flip(vecs[:, -k:], axis=1))
    return xp.stack(out)


def _cosine_lr(lr, step, total, schedule):
    if schedule == "constant" or total <= 1:
        return lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * step / total))


# --------------------------------------------------------------------------------------------
# the shared pipeline


class _ClassRepresentationClassifier(BaseEstimator):
    """Validation, label handling, the mini-batch loop and the torch path shared by both heads."""

    # -- parameters ----------------------------------------------------------------------

    def _check_params(self):
        """Validate the shared parameters; return hidden_layer_sizes as a tuple."""
        check_param("n_epochs", self.n_epochs, "int", low=0)
        check_param("lr", self.lr, "real", low=0.0, closed="neither")
        check_param("momentum", self.momentum, "real", low=0.0, high=1.0, closed="left")
        check_param("batch_size", self.batch_size, "int", low=1)
        check_param("lr_schedule", self.lr_schedule, "option", options=("cosine", "constant"))
        check_param("weight_decay", self.weight_decay, "real", low=0.0)
        check_param("feature_network", self.feature_network, "option", options=(None, "mlp"))
        if not isinstance(self.verbose, bool):
            check_param("verbose", self.verbose, "int", low=0)
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        if not isinstance(sizes, (tuple, list)) or not sizes:
            raise TypeError(
                "hidden_layer_sizes must be a non-empty tuple of positive ints, got "
                f"{self.hidden_layer_sizes!r}"
            )
        for s in sizes:
            check_param("hidden_layer_sizes[i]", s, "int", low=1)
        return tuple(int(s) for s in sizes)

    # -- labels --------------------------------------------------------------------------

    def _encode_labels(self, y, xp, dev):
        y = np.asarray(y)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {classes[0]!r}"
            )
        if dispatch_enabled() and classes.dtype.kind in "biuf":
            self.classes_ = move_to(classes, xp, dev)
        else:
            self.classes_ = classes
        return y_idx.astype(np.int64), classes.shape[0]

    # -- fit -----------------------------------------------------------------------------

    def fit(self, X, y):
        """Fit the class representation (and the feature network) by mini-batch SGD.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
            Training data (NumPy, or any array-API array under scikit-learn's
            ``array_api_dispatch``).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self
        """
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        # labels are handled on the host; validate_data checks y (1-d, finite, same length)
        y = to_numpy(y) if is_array_api_obj(y) else y
        (X, y), xp, dev = validate_input(self, X, reset=True, y=y)
        hidden = self._check_params()
        rng = check_random_state(self.random_state)
        y_idx, n_classes = self._encode_labels(y, xp, dev)
        Y = xp.astype(
            xp.expand_dims(move_to(y_idx, xp, dev), axis=1) == xp.arange(n_classes, device=dev),
            X.dtype,
        )
        self.loss_curve_ = []
        if self.feature_network is None:
            self.network_ = None
            self._fit_fixed(X, Y, y_idx, n_classes, xp, dev, rng)
        else:
            self._fit_network(X, Y, y_idx, n_classes, hidden, xp, dev, rng)
        self.n_iter_ = int(self.n_epochs)
        return self

    def _batches(self, n, rng):
        order = rng.permutation(n)
        b = int(self.batch_size)
        return [order[i : i + b] for i in range(0, n, b)]

    def _report(self, epoch, loss):
        self.loss_curve_.append(loss)
        if self.verbose:
            print(f"{type(self).__name__}: epoch {epoch + 1}/{self.n_epochs}, loss {loss:.6f}")

    def _fit_fixed(self, X, Y, y_idx, n_classes, xp, dev, rng):
        Z = self._fixed_features(X, xp)
        params = self._init_head(Z, y_idx, n_classes, xp, dev, rng)
        bufs = [xp.zeros_like(p) for p in params]
        n = Z.shape[0]
        total = int(self.n_epochs) * math.ceil(n / int(self.batch_size))
        step = 0
        for epoch in range(int(self.n_epochs)):
            epoch_loss = 0.0
            for idx in self._batches(n, rng):
                idx_xp = move_to(idx, xp, dev)
                Zb, Yb = xp.take(Z, idx_xp, axis=0), xp.take(Y, idx_xp, axis=0)
                loss, grads = self._loss_and_grads(params, Zb, Yb, xp)
                lr = _cosine_lr(float(self.lr), step, total, self.lr_schedule)
                params, bufs = self._update(params, grads, bufs, lr, step, xp)
                epoch_loss += as_float(loss) * idx.shape[0]
                step += 1
            if not math.isfinite(epoch_loss):
                raise FloatingPointError(
                    f"{type(self).__name__}: the training loss became {epoch_loss} at epoch "
                    f"{epoch + 1}; lower lr (now {self.lr})"
                )
            self._report(epoch, epoch_loss / n)
        self._store_head(params)

    # -- torch path ----------------------------------------------------------------------

    def _fit_network(self, X, Y, y_idx, n_classes, hidden, xp, dev, rng):
        torch = lazy_import("torch")
        if torch is None:
            raise ImportError(
                'feature_network="mlp" trains the network with PyTorch, which is not installed: '
                "pip install torch (or subspacelab[torch])"
            )
        import array_api_compat.torch as txp

        tdev = dev if array_api_compat.is_torch_namespace(xp) else torch.device("cpu")
        Xt = move_to(X, txp, tdev)
        Yt = move_to(Y, txp, tdev)
        net = _make_mlp(X.shape[1], hidden, Xt.dtype, tdev, rng)
        with torch.no_grad():
            F0 = net(Xt)
        head = [
            torch.nn.Parameter(p)
            for p in self._init_head(self._fixed_features(F0, txp), y_idx, n_classes, txp, tdev, rng)
        ]
        # weight decay on the network and the class vectors, never on intercepts or bases
        decayed = list(net.parameters()) + [p for p, r in zip(head, self._riemannian()) if r is False]
        free = [p for p, r in zip(head, self._riemannian()) if r is None]
        groups = [{"params": decayed, "weight_decay": float(self.weight_decay)}]
        if free:
            groups.append({"params": free, "weight_decay": 0.0})
        opt = torch.optim.SGD(
            groups,
            lr=float(self.lr),
            momentum=float(self.momentum),
        )
        riem = [p for p, r in zip(head, self._riemannian()) if r is True]
        rbufs = [torch.zeros_like(p) for p in riem]
        n = X.shape[0]
        total = int(self.n_epochs) * math.ceil(n / int(self.batch_size))
        step = 0
        net.train()
        for epoch in range(int(self.n_epochs)):
            epoch_loss = 0.0
            for idx in self._batches(n, rng):
                idx_t = torch.as_tensor(idx, device=tdev)
                lr = _cosine_lr(float(self.lr), step, total, self.lr_schedule)
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad(set_to_none=True)
                for p in riem:
                    p.grad = None
                logits = self._torch_logits([p for p in head], net(Xt[idx_t]), txp)
                loss = torch.nn.functional.cross_entropy(logits, Yt[idx_t])
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for i, p in enumerate(riem):
                        new, rbufs[i] = _rsgd_step(p.detach(), p.grad, rbufs[i], lr, float(self.momentum), step, txp)
                        p.copy_(new)
                epoch_loss += float(loss.detach()) * idx.shape[0]
                step += 1
            if not math.isfinite(epoch_loss):
                raise FloatingPointError(
                    f"{type(self).__name__}: the training loss became {epoch_loss} at epoch "
                    f"{epoch + 1}; lower lr (now {self.lr})"
                )
            self._report(epoch, epoch_loss / n)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.network_ = net
        self._store_head([move_to(p.detach(), xp, dev) for p in head])

    # -- prediction ----------------------------------------------------------------------

    def _validated(self, X, method):
        check_is_fitted(self)
        check_same_namespace(X, self, attribute=self._fitted_attribute, method=method)
        X, xp, dev = validate_input(self, X, reset=False)
        return X, xp, dev

    def _network_features(self, X, xp, dev):
        """Features of X seen by the head: the network output, or X itself."""
        if self.network_ is None:
            return X
        import array_api_compat.torch as txp
        import torch

        tdev = next(self.network_.parameters()).device
        with torch.no_grad():
            F = self.network_(move_to(X, txp, tdev))
        return move_to(F, xp, dev)

    def embed(self, X):
        """Features the class head sees: the trained network's output for ``feature_network="mlp"``
        (before any normalisation), ``X`` itself otherwise. Used for linear-probe transfer.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        array of shape (n_samples, n_embedding)
        """
        X, xp, dev = self._validated(X, "embed")
        return self._network_features(X, xp, dev)

    def _logits(self, X, method):
        X, xp, dev = self._validated(X, method)
        return self._head_logits(self._fixed_features(self._network_features(X, xp, dev), xp), xp), xp

    def decision_function(self, X):
        """Logits: one column per class, or ``l_1 - l_0`` (shape (n_samples,)) for two classes.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        array of shape (n_samples, n_classes) or (n_samples,)
        """
        logits, xp = self._logits(X, "decision_function")
        if logits.shape[1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits

    def predict_proba(self, X):
        """Class probabilities, the softmax of the logits.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        array of shape (n_samples, n_classes)
        """
        logits, xp = self._logits(X, "predict_proba")
        return _softmax(logits, xp)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (computed stably from the logits)."""
        logits, xp = self._logits(X, "predict_log_proba")
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))

    def predict(self, X):
        """Class with the largest logit.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        array of shape (n_samples,)
            Labels from ``classes_``.
        """
        logits, xp = self._logits(X, "predict")
        idx = xp.argmax(logits, axis=1)
        if isinstance(self.classes_, np.ndarray):
            return self.classes_[to_numpy(idx)]
        return xp.take(self.classes_, idx, axis=0)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        return tags


def _make_mlp(n_in, hidden, dtype, device, rng):
    """Linear-ReLU stack whose output (the last ReLU) is the feature; He-uniform weights drawn
    from ``rng`` with NumPy, so one seed gives one network on every device."""
    import torch

    layers = []
    fan_in = n_in
    for width in hidden:
        lin = torch.nn.Linear(fan_in, width, dtype=dtype, device=device)
        bound = math.sqrt(6.0 / fan_in)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(rng.uniform(-bound, bound, (width, fan_in)), dtype=dtype))
            lin.bias.zero_()
        layers += [lin, torch.nn.ReLU()]
        fan_in = width
    return torch.nn.Sequential(*layers)


# --------------------------------------------------------------------------------------------
# the two heads


class GrassmannClassifier(ClassifierMixin, TransformerMixin, _ClassRepresentationClassifier):
    r"""Grassmann class representation: each class is a subspace; Riemannian SGD training.

    Every class :math:`c` is a :math:`k`-dimensional subspace of the feature space, stored as an
    orthonormal basis :math:`S_c \in \mathbb{R}^{d \times k}` (a point of the Grassmannian
    :math:`\mathrm{Gr}(k, d)`). With the normalised feature :math:`\hat x = x / \lVert x \rVert`,
    the logit of class :math:`c` is the scaled norm of its projection,

    .. math:: l_c(x) = \gamma\, \lVert S_c^\top \hat x \rVert_2 = \gamma \cos\theta_c(x),

    :math:`\theta_c` the angle between :math:`x` and the subspace, and the model is trained by
    softmax cross-entropy. The Euclidean gradient has the closed form

    .. math:: \frac{\partial L}{\partial S_c} = \gamma \sum_i \frac{\partial L}{\partial l_{ic}}
              \frac{\hat x_i \hat x_i^\top S_c}{\lVert S_c^\top \hat x_i \rVert},

    and each step of Riemannian SGD with momentum :math:`\mu` [1]_ is

    .. math:: B \leftarrow \mu B + \frac{\partial L}{\partial S_c}, \quad
              G = B - S_c S_c^\top B, \quad
              S_c \leftarrow \exp_{S_c}(-\eta_t G)

    (momentum on the Euclidean gradient, projection to the horizontal space, exact geodesic
    step :func:`subspacelab.manifolds.grassmann_exp`), with a QR re-orthonormalisation every
    5 steps, a cosine learning-rate schedule :math:`\eta_t` and no weight decay on the bases,
    as in the reference code. With ``k = 1`` the logit is :math:`\gamma |\langle s_c, \hat x
    \rangle|`, a sign-invariant cosine classifier. When the subspaces together need more
    dimensions than there are (``n_classes * subspace_dim > n_features``) they must overlap;
    that is allowed.

    On fixed features (``feature_network=None``) everything is array-API code with the analytic
    gradient above. With ``feature_network="mlp"`` a ReLU network ``hidden_layer_sizes`` is
    trained jointly in PyTorch: SGD with momentum and ``weight_decay`` on the network, the
    Riemannian step (autograd's Euclidean gradient) on the bases, one learning rate and
    schedule for both.

    Parameters
    ----------
    subspace_dim : int, default=8
        Dimension :math:`k` of every class subspace, ``1 <= k <= n_features`` (of the network
        features for ``feature_network="mlp"``).
    scale : float, default=25.0
        Logit scale :math:`\gamma`. The loss is bounded below by
        :math:`\log(1 + (C - 1) e^{-\gamma})`, so :math:`\gamma` must not be small.
    n_epochs : int, default=30
        Passes over the data. ``0`` keeps the initialisation: with ``init="pca"`` that is the
        classical nearest-subspace classifier (CLAFIC) [2]_.
    lr : float, default=0.05
        Peak learning rate (geodesic step per unit of Riemannian gradient; also the network's
        learning rate).
    momentum : float, default=0.9
        Momentum :math:`\mu` in ``[0, 1)``.
    batch_size : int, default=64
        Mini-batch size (the last batch of an epoch may be smaller).
    init : {"pca", "random"}, default="pca"
        ``"pca"``: the top-:math:`k` eigenvectors of every class autocorrelation
        :math:`\sum_{i \in c} \hat x_i \hat x_i^\top`; ``"random"``: a Gaussian matrix
        orthonormalised by QR per class (the paper's initialisation).
    lr_schedule : {"cosine", "constant"}, default="cosine"
        Cosine decay of the learning rate from ``lr`` to 0 over all steps, or a constant rate.
    feature_network : {None, "mlp"}, default=None
        ``None`` trains the bases on ``X`` itself; ``"mlp"`` trains a ReLU network with PyTorch.
    hidden_layer_sizes : tuple of int, default=(256, 128)
        Widths of the network's layers (``feature_network="mlp"`` only); the last is the
        feature dimension.
    weight_decay : float, default=1e-4
        L2 weight decay of the network's parameters (never applied to the bases).
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the initialisation, the network and the batch order; the same seed gives the same
        model on every backend up to floating-point rounding.
    verbose : int, default=0
        Print the training loss after every epoch.

    Attributes
    ----------
    bases_ : array of shape (n_classes, n_features_or_embedding, subspace_dim)
        Orthonormal class bases, in the namespace and on the device of ``X``.
    classes_ : array of shape (n_classes,)
        Class labels.
    loss_curve_ : list of float
        Mean training cross-entropy of every epoch (measured during the epoch).
    n_iter_ : int
        Epochs run.
    network_ : torch.nn.Module or None
        The trained feature network (``feature_network="mlp"``).
    n_features_in_ : int
        Number of features of ``X``.

    See Also
    --------
    SoftmaxVectorClassifier : the same pipeline with softmax class vectors.
    subspacelab.manifolds : tangent projection, geodesic step, retraction, principal angles.

    Notes
    -----
    The closed-form gradient, the geodesic update and the reference code's defaults
    (momentum 0.9 on the Euclidean gradient, QR every 5 steps, :math:`\gamma = 25`) follow
    innerlee/GCR (``gcr/rsgd.py``, ``gcr/grassmann_head.py``). The ImageNet accuracies and
    transfer gains of the paper were not reproduced here; this library's benchmark
    (``benchmarks/grassmann.py``) reports what the method does on small real image sets.

    References
    ----------
    .. [1] H. Wang, Z. Li, W. Zhang, "Get the Best of Both Worlds: Improving Accuracy and
       Transferability by Grassmann Class Representation", ICCV 2023.
    .. [2] S. Watanabe, N. Pakvasa, "Subspace method of pattern recognition", 1973.

    Examples
    --------
    >>> from subspacelab import GrassmannClassifier
    >>> from subspacelab.datasets import load_digits
    >>> X, y = load_digits()
    >>> clf = GrassmannClassifier(subspace_dim=4, n_epochs=5, random_state=0).fit(X[:1200], y[:1200])
    >>> clf.bases_.shape
    (10, 64, 4)
    >>> bool(clf.score(X[1200:], y[1200:]) > 0.9)
    True
    """

    _fitted_attribute = "bases_"

    def __init__(
        self,
        subspace_dim=8,
        *,
        scale=25.0,
        n_epochs=30,
        lr=0.05,
        momentum=0.9,
        batch_size=64,
        init="pca",
        lr_schedule="cosine",
        feature_network=None,
        hidden_layer_sizes=(256, 128),
        weight_decay=1e-4,
        random_state=None,
        verbose=0,
    ):
        self.subspace_dim = subspace_dim
        self.scale = scale
        self.n_epochs = n_epochs
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.init = init
        self.lr_schedule = lr_schedule
        self.feature_network = feature_network
        self.hidden_layer_sizes = hidden_layer_sizes
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        check_param("subspace_dim", self.subspace_dim, "int", low=1)
        check_param("scale", self.scale, "real", low=0.0, closed="neither")
        check_param("init", self.init, "option", options=("pca", "random"))
        return super()._check_params()

    def _riemannian(self):
        return (True,)

    def _fixed_features(self, Z, xp):
        return _normalize_rows(Z, xp)

    def _init_head(self, Zn, y_idx, n_classes, xp, dev, rng):
        d, k = Zn.shape[1], int(self.subspace_dim)
        if k > d:
            where = "network features (hidden_layer_sizes[-1])" if self.feature_network else "features"
            raise ValueError(f"subspace_dim={k} must be <= the number of {where}, {d}")
        if self.init == "pca":
            return [_class_pca_bases(Zn, y_idx, n_classes, k, xp, dev)]
        draw = move_to(rng.standard_normal((n_classes, d, k)), xp, dev)
        return [_qr(xp.astype(draw, Zn.dtype), xp)]

    def _loss_and_grads(self, params, Zn, Y, xp):
        scale = float(self.scale)
        logits, P = _grassmann_logits(Zn, params[0], scale, xp)
        loss, dlogits = _softmax_cross_entropy(logits, Y, xp)
        return loss, [_grassmann_grad(Zn, P, logits, dlogits, scale, xp)]

    def _update(self, params, grads, bufs, lr, step, xp):
        bases, buf = _rsgd_step(params[0], grads[0], bufs[0], lr, float(self.momentum), step, xp)
        return [bases], [buf]

    def _torch_logits(self, params, F, txp):
        return _grassmann_logits(_normalize_rows(F, txp), params[0], float(self.scale), txp)[0]

    def _store_head(self, params):
        self.bases_ = params[0]

    def _head_logits(self, Zn, xp):
        return _grassmann_logits(Zn, self.bases_, float(self.scale), xp)[0]

    def transform(self, X):
        r"""Projection norms :math:`\lVert S_c^\top \hat x \rVert` (cosines of the angles
        between ``x`` and each class subspace), one column per class, in ``[0, 1]``.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        array of shape (n_samples, n_classes)
        """
        X, xp, dev = self._validated(X, "transform")
        Zn = _normalize_rows(self._network_features(X, xp, dev), xp)
        P = _projections(Zn, self.bases_, xp)
        return xp.sqrt(xp.sum(P * P, axis=2))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


class SoftmaxVectorClassifier(ClassifierMixin, _ClassRepresentationClassifier):
    r"""Softmax class vectors trained by the same pipeline as :class:`GrassmannClassifier`.

    The vector form of the class representation, the baseline of Wang, Li and Zhang [1]_:
    logits :math:`l_c(x) = w_c^\top x + b_c` on the (unnormalised) features, softmax
    cross-entropy, SGD with momentum and L2 ``weight_decay`` on the weights, the same cosine
    schedule, batches and optional PyTorch feature network. On fixed features it is multinomial
    logistic regression fitted by SGD, in array-API code with the analytic gradient
    :math:`\partial L / \partial W = X^\top (\pi - Y) / n + \lambda W`.

    Parameters
    ----------
    n_epochs : int, default=30
        Passes over the data.
    lr : float, default=0.05
        Peak learning rate.
    momentum : float, default=0.9
        Momentum in ``[0, 1)``.
    batch_size : int, default=64
        Mini-batch size.
    lr_schedule : {"cosine", "constant"}, default="cosine"
        Cosine decay from ``lr`` to 0, or constant.
    feature_network : {None, "mlp"}, default=None
        ``None`` fits the vectors on ``X``; ``"mlp"`` trains a ReLU network with PyTorch.
    hidden_layer_sizes : tuple of int, default=(256, 128)
        Network widths (``feature_network="mlp"`` only).
    weight_decay : float, default=1e-4
        L2 weight decay of the class vectors and the network weights (not the biases of the
        class vectors).
    random_state : int, numpy.random.Generator or None, default=None
        Seeds the initialisation, the network and the batch order.
    verbose : int, default=0
        Print the training loss after every epoch.

    Attributes
    ----------
    coef_ : array of shape (n_classes, n_features_or_embedding)
        Class vectors :math:`w_c`.
    intercept_ : array of shape (n_classes,)
        Biases :math:`b_c`.
    classes_, loss_curve_, n_iter_, network_, n_features_in_
        As in :class:`GrassmannClassifier`.

    References
    ----------
    .. [1] H. Wang, Z. Li, W. Zhang, "Get the Best of Both Worlds: Improving Accuracy and
       Transferability by Grassmann Class Representation", ICCV 2023.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from subspacelab import SoftmaxVectorClassifier
    >>> from subspacelab.datasets import load_digits
    >>> X, y = load_digits()
    >>> clf = make_pipeline(StandardScaler(), SoftmaxVectorClassifier(n_epochs=5, random_state=0))
    >>> bool(clf.fit(X[:1200], y[:1200]).score(X[1200:], y[1200:]) > 0.85)
    True
    """

    _fitted_attribute = "coef_"

    def __init__(
        self,
        *,
        n_epochs=30,
        lr=0.05,
        momentum=0.9,
        batch_size=64,
        lr_schedule="cosine",
        feature_network=None,
        hidden_layer_sizes=(256, 128),
        weight_decay=1e-4,
        random_state=None,
        verbose=0,
    ):
        self.n_epochs = n_epochs
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.lr_schedule = lr_schedule
        self.feature_network = feature_network
        self.hidden_layer_sizes = hidden_layer_sizes
        self.weight_decay = weight_decay
        self.random_state = random_state
        self.verbose = verbose

    def _riemannian(self):
        # per head parameter: True = Grassmann (RSGD), False = Euclidean with weight decay,
        # None = Euclidean without weight decay
        return (False, None)

    def _fixed_features(self, Z, xp):
        return Z

    def _init_head(self, Z, y_idx, n_classes, xp, dev, rng):
        d = Z.shape[1]
        bound = 1.0 / math.sqrt(d)
        W = xp.astype(move_to(rng.uniform(-bound, bound, (n_classes, d)), xp, dev), Z.dtype)
        return [W, xp.zeros((n_classes,), dtype=Z.dtype, device=dev)]

    def _loss_and_grads(self, params, Z, Y, xp):
        W, b = params
        logits = Z @ xp.matrix_transpose(W) + b
        loss, dlogits = _softmax_cross_entropy(logits, Y, xp)
        gW = xp.matrix_transpose(dlogits) @ Z + float(self.weight_decay) * W
        return loss, [gW, xp.sum(dlogits, axis=0)]

    def _update(self, params, grads, bufs, lr, step, xp):
        mu = float(self.momentum)
        bufs = [mu * buf + g for buf, g in zip(bufs, grads)]
        return [p - lr * buf for p, buf in zip(params, bufs)], bufs

    def _torch_logits(self, params, F, txp):
        return F @ params[0].T + params[1]

    def _store_head(self, params):
        self.coef_, self.intercept_ = params

    def _head_logits(self, Z, xp):
        return Z @ xp.matrix_transpose(self.coef_) + self.intercept_


def demo_row():
    """GrassmannClassifier versus the softmax-vector baseline on digits (fixed split)."""
    from sklearn.model_selection import train_test_split

    from ..datasets import load_digits

    X, y = load_digits()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    gcr = GrassmannClassifier(subspace_dim=8, random_state=0).fit(Xtr, ytr)
    vec = SoftmaxVectorClassifier(random_state=0).fit(Xtr, ytr)
    return {
        "method": "GrassmannClassifier (k=8)",
        "data": "digits (70/30 split)",
        "metric": "test accuracy",
        "value": float(gcr.score(Xte, yte)),
        "baseline": "SoftmaxVectorClassifier",
        "baseline_value": float(vec.score(Xte, yte)),
    }
