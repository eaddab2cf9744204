"""Tests of subspacelab.merging: the mathematics of each merger, its conventions, bad input."""

import copy
import doctest
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from subspacelab.merging import AdaMerger, ConcreteMaskMerger, TaskArithmeticMerger, TiesMerger
from subspacelab.merging import _entropy, _mergers
from subspacelab.merging._mergers import ties_merge

torch = pytest.importorskip("torch")

MERGERS = [TaskArithmeticMerger, TiesMerger, AdaMerger, ConcreteMaskMerger]
LEARNED = [
    lambda **kw: AdaMerger(**{"n_steps": 5, "tol": None, **kw}),
    lambda **kw: AdaMerger(**{"granularity": "layer", "n_steps": 5, "tol": None, **kw}),
    lambda **kw: ConcreteMaskMerger(**{"n_steps": 5, "tol": None, **kw}),
    lambda **kw: ConcreteMaskMerger(**{"base": "adamerging", "n_steps": 4, "n_adamerging_steps": 3, "tol": None, **kw}),
]
LEARNED_IDS = ["ada-task", "ada-layer", "concrete-ta", "concrete-ada"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The networks here are tiny: one thread is faster, and far faster on a loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------
# small torch setting: an MLP, perturbed copies, per-task heads, unlabelled inputs


def make_mlp(seed, d_in=5, hidden=7, d_out=4, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(d_in, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, d_out)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype))
    return net


def fine_tuned(pretrained, n_models, seed=1, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_models):
        m = copy.deepcopy(pretrained)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        out.append(m)
    return out


@pytest.fixture
def setting():
    pre = make_mlp(0)
    models = fine_tuned(pre, 3)
    g = torch.Generator().manual_seed(2)
    heads = [torch.nn.Linear(4, c) for c in (3, 2, 5)]
    for h in heads:
        with torch.no_grad():
            h.weight.copy_(torch.randn(h.weight.shape, generator=g))
    X = [torch.randn(12, 5, generator=g) for _ in range(3)]
    return pre, models, heads, X


def params_of(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def flat(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


# ----------------------------------------------------------------------------------------------
# task arithmetic


def test_task_arithmetic_single_model_scaling_one_is_exact(backend, rng):
    theta0 = backend.asarray(rng.standard_normal(50) * 10.0 ** rng.integers(-8, 8, 50))
    theta1 = backend.asarray(rng.standard_normal(50) * 10.0 ** rng.integers(-8, 8, 50))
    merged = TaskArithmeticMerger(scaling=1.0).fit([theta1], theta0).merged_model_
    assert type(merged) is type(theta1)
    np.testing.assert_array_equal(backend.to_numpy(merged), backend.to_numpy(theta1))


def test_task_arithmetic_single_module_scaling_one_is_exact(setting):
    pre, models, _, _ = setting
    merged = TaskArithmeticMerger(scaling=1.0).fit(models[:1], pre).merged_model_
    for name, p in merged.named_parameters():
        assert torch.equal(p, dict(models[0].named_parameters())[name])
    assert merged is not pre and merged is not models[0]


@given(
    n_models=st.integers(1, 4),
    n=st.integers(1, 30),
    scaling=st.floats(-2, 2, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_task_arithmetic_formula_and_order_invariance(n_models, n, scaling, seed):
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(n)
    models = [theta0 + rng.standard_normal(n) for _ in range(n_models)]
    merged = TaskArithmeticMerger(scaling=scaling).fit(models, theta0).merged_model_
    expected = theta0 + scaling * sum(m - theta0 for m in models)
    np.testing.assert_allclose(merged, expected, rtol=1e-12, atol=1e-12)
    permuted = TaskArithmeticMerger(scaling=scaling).fit(models[::-1], theta0).merged_model_
    np.testing.assert_allclose(permuted, merged, rtol=1e-12, atol=1e-12)


def test_weight_averaging_is_scaling_one_over_t(backend, rng):
    theta0 = rng.standard_normal(20)
    models = [rng.standard_normal(20) for _ in range(4)]
    ta = TaskArithmeticMerger(scaling=0.25).fit([backend.asarray(m) for m in models], backend.asarray(theta0))
    np.testing.assert_allclose(backend.to_numpy(ta.merged_model_), np.mean(models, axis=0), atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(ta.coefficients_), np.full(4, 0.25))


def test_task_arithmetic_on_modules_matches_vectors(setting):
    pre, models, _, _ = setting
    merged = TaskArithmeticMerger(scaling=0.4).fit(models, pre).merged_model_
    vec = TaskArithmeticMerger(scaling=0.4).fit([flat(m) for m in models], flat(pre)).merged_model_
    torch.testing.assert_close(flat(merged), vec)


# ----------------------------------------------------------------------------------------------
# TIES


def ties_loop_reference(tau, density, aggregate):
    """Direct transcription of the three TIES steps with Python loops."""
    T, n = tau.shape
    k = max(1, int(np.floor(density * n + 0.5)))
    trimmed = np.zeros_like(tau)
    for i in range(T):
        order = sorted(range(n), key=lambda j: (-abs(tau[i, j]), j))
        for j in order[:k]:
            trimmed[i, j] = tau[i, j]
    total = trimmed.sum(axis=0)
    sign = np.sign(total)
    majority = np.sign(sign.sum()) or 1.0
    sign[sign == 0] = majority
    out = np.zeros(n)
    for j in range(n):
        agree = [trimmed[i, j] for i in range(T) if np.sign(trimmed[i, j]) == sign[j]]
        if agree:
            out[j] = sum(agree) / (len(agree) if aggregate == "mean" else 1)
    return out, sign


@given(
    T=st.integers(1, 4),
    n=st.integers(1, 25),
    density=st.floats(0.01, 1.0),
    aggregate=st.sampled_from(["mean", "sum"]),
    seed=st.integers(0, 2**16),
    ties_in_magnitude=st.booleans(),
)
def test_ties_matches_loop_reference(T, n, density, aggregate, seed, ties_in_magnitude):
    rng = np.random.default_rng(seed)
    tau = rng.standard_normal((T, n))
    if ties_in_magnitude:
        tau = np.round(tau)  # many equal magnitudes and exact zeros
    delta, keep, sign = ties_merge(tau, density, aggregate)
    ref_delta, ref_sign = ties_loop_reference(tau, density, aggregate)
    np.testing.assert_allclose(delta, ref_delta, atol=1e-12)
    np.testing.assert_array_equal(sign, ref_sign)
    k = max(1, int(np.floor(density * n + 0.5)))
    assert np.all(keep.sum(axis=1) <= k)


@given(T=st.integers(1, 4), n=st.integers(2, 40), density=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_ties_keeps_the_stated_density(T, n, density, seed):
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(n)
    # all task vectors positive: no sign conflict, so every trimmed entry enters the merge
    models = [theta0 + rng.uniform(0.1, 1.0, n) for _ in range(T)]
    ties = TiesMerger(density=density).fit(models, theta0)
    k = max(1, int(np.floor(density * n + 0.5)))
    np.testing.assert_array_equal(ties.mask_.sum(axis=1), np.full(T, k))
    for i in range(T):  # the kept entries are the k largest
        tau = np.abs(models[i] - theta0)
        assert tau[ties.mask_[i]].min() >= np.sort(tau)[::-1][k - 1]


def test_ties_resolves_sign_conflicts():
    theta0 = np.zeros(3)
    # coordinate 0: +2 and -3 conflict, the sum elects "-"; coordinates 1, 2 agree
    models = [np.array([2.0, 1.0, -1.0]), np.array([-3.0, 3.0, -2.0])]
    ties = TiesMerger(density=1.0, aggregate="mean").fit(models, theta0)
    np.testing.assert_array_equal(ties.merged_model_, [-3.0, 2.0, -1.5])
    np.testing.assert_array_equal(ties.elected_sign_, [-1.0, 1.0, -1.0])
    np.testing.assert_array_equal(ties.mask_, [[False, True, True], [True, True, True]])
    ties_sum = TiesMerger(density=1.0, aggregate="sum", scaling=0.5).fit(models, theta0)
    np.testing.assert_array_equal(ties_sum.merged_model_, 0.5 * np.array([-3.0, 4.0, -3.0]))


@pytest.mark.parametrize("majority, expected", [(1.0, [2.0, 1.0, 1.0]), (-1.0, [-2.0, -1.0, -1.0])])
def test_ties_zero_sum_takes_the_majority_sign(majority, expected):
    # coordinate 0 sums to zero; the other two coordinates carry the majority sign
    models = [np.array([2.0, majority, majority]), np.array([-2.0, majority, majority])]
    ties = TiesMerger(density=1.0).fit(models, np.zeros(3))
    np.testing.assert_array_equal(ties.merged_model_, expected)
    assert ties.elected_sign_[0] == majority


def test_ties_trims_globally_over_module_parameters(setting):
    pre, models, _, _ = setting
    ties = TiesMerger(density=0.3, scaling=0.7).fit(models, pre)
    vec = TiesMerger(density=0.3, scaling=0.7).fit([flat(m) for m in models], flat(pre))
    torch.testing.assert_close(flat(ties.merged_model_), vec.merged_model_)
    mask = torch.cat([v.reshape(3, -1) for v in ties.mask_.values()], dim=1)
    assert torch.equal(mask, vec.mask_)
    assert set(ties.mask_) == {n for n, _ in pre.named_parameters()}


def test_ties_on_every_backend_matches_numpy(backend, rng):
    theta0 = rng.standard_normal(30)
    models = [theta0 + rng.standard_normal(30) for _ in range(3)]
    ref = TiesMerger(density=0.4, scaling=0.8).fit(models, theta0)
    got = TiesMerger(density=0.4, scaling=0.8).fit([backend.asarray(m) for m in models], backend.asarray(theta0))
    np.testing.assert_allclose(backend.to_numpy(got.merged_model_), ref.merged_model_, atol=1e-12)
    np.testing.assert_array_equal(backend.to_numpy(got.mask_), ref.mask_)


def test_ties_order_invariance(rng):
    theta0 = np.round(rng.standard_normal(40))
    models = [theta0 + np.round(rng.standard_normal(40)) for _ in range(4)]
    a = TiesMerger(density=0.3).fit(models, theta0)
    b = TiesMerger(density=0.3).fit(models[::-1], theta0)
    np.testing.assert_allclose(a.merged_model_, b.merged_model_, atol=1e-12)
    np.testing.assert_array_equal(a.mask_[::-1], b.mask_)


def test_float32_weights_stay_float32(rng):
    theta0 = rng.standard_normal(10).astype(np.float32)
    models = [theta0 + 1, theta0 - 2]
    for merger in (TaskArithmeticMerger(), TiesMerger()):
        merger.fit(models, theta0)
        assert merger.merged_model_.dtype == np.float32 and merger.coefficients_.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# Concrete masks


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_relaxed_sample_exceeds_half_with_probability_sigmoid_z(temperature):
    z = torch.tensor([-2.0, -0.5, 0.0, 1.0, 3.0]).repeat_interleave(40000).reshape(5, -1)
    gen = torch.Generator().manual_seed(0)
    (m,) = _entropy.concrete_sample([z], temperature, gen)
    assert torch.all((m >= 0) & (m <= 1))
    frac = (m > 0.5).double().mean(dim=1)
    np.testing.assert_allclose(frac.numpy(), torch.sigmoid(z[:, 0]).double().numpy(), atol=0.01)


def test_all_ones_mask_reduces_concrete_to_task_arithmetic(setting):
    pre, models, heads, X = setting
    # logits of 40 give sigmoid(z) = 1 in float32: the expected mask is all ones
    cm = ConcreteMaskMerger(init_logit=40.0, n_steps=2, learning_rate=1e-3, scaling=0.3, tol=None, random_state=0)
    cm.fit(models, pre, X, heads)
    assert all(torch.equal(m, torch.ones_like(m)) for m in cm.mask_.values())
    ta = TaskArithmeticMerger(scaling=0.3).fit(models, pre)
    torch.testing.assert_close(flat(cm.merged_model_), flat(ta.merged_model_))
    ones = [torch.ones(3, 4), torch.ones(7)]
    assert all(torch.equal(f, o) for f, o in zip(_entropy.rescale(ones), ones))


def test_expected_mask_is_deterministic_and_defines_the_merged_model(setting):
    pre, models, heads, X = setting
    cm = ConcreteMaskMerger(n_steps=6, learning_rate=0.1, tol=None, random_state=3).fit(models, pre, X, heads)
    # the mask is sigmoid of the logits, not a random sample
    for name, z in cm.mask_logits_.items():
        torch.testing.assert_close(cm.mask_[name], torch.sigmoid(z))
    # the merged weights are theta0 + lambda sum_i tau_i * m / mean(m) with m = sigmoid(z)
    theta0, merged = params_of(pre), params_of(cm.merged_model_)
    for name, p0 in theta0.items():
        tau = sum(dict(m.named_parameters())[name].detach() - p0 for m in models)
        m = cm.mask_[name]
        torch.testing.assert_close(merged[name], p0 + 0.3 * tau * m / m.mean())
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(cm.merged_model_(x), cm.merged_model_(x))
    again = ConcreteMaskMerger(n_steps=6, learning_rate=0.1, tol=None, random_state=3).fit(models, pre, X, heads)
    assert all(torch.equal(cm.mask_[k], again.mask_[k]) for k in cm.mask_)
    assert not all(torch.equal(m, torch.full_like(m, 0.5)) for m in cm.mask_.values())  # it learned


def test_concrete_adamerging_records_both_phases(setting):
    pre, models, heads, X = setting
    cm = ConcreteMaskMerger(
        base="adamerging", granularity="layer", n_steps=5, n_adamerging_steps=4, learning_rate=0.05,
        adamerging_learning_rate=0.05, tol=None, random_state=0,
    ).fit(models, pre, X, heads)
    assert len(cm.loss_curve_) == 9
    assert tuple(cm.coefficients_.shape) == (3, 4)
    assert torch.all((cm.coefficients_ >= 0) & (cm.coefficients_ <= 1))
    no_ada = ConcreteMaskMerger(base="adamerging", n_steps=3, n_adamerging_steps=0, scaling=0.2, tol=None, random_state=0)
    no_ada.fit(models, pre, X, heads)
    assert torch.equal(no_ada.coefficients_, torch.full((3,), 0.2))


# ----------------------------------------------------------------------------------------------
# AdaMerging


def test_adamerging_lowers_the_prediction_entropy_and_clamps(setting):
    pre, models, heads, X = setting
    ada = AdaMerger(granularity="layer", n_steps=60, learning_rate=0.05, batch_size=None, tol=None, random_state=0)
    ada.fit(models, pre, X, heads)
    assert ada.loss_curve_[-1] < ada.loss_curve_[0]
    assert torch.all((ada.coefficients_ >= 0) & (ada.coefficients_ <= 1))
    # the entropy of the returned model is the objective at the learned coefficients
    with torch.no_grad():
        h = 0.0
        for t in range(3):
            logp = torch.log_softmax(heads[t](ada.merged_model_(X[t])), dim=-1)
            h += float(-(logp.exp() * logp).sum(-1).mean())
    initial = AdaMerger(n_steps=1, learning_rate=1e-12, batch_size=None, tol=None).fit(models, pre, X, heads)
    assert h < initial.loss_curve_[0]


def test_adamerging_without_heads_uses_the_model_output(setting):
    pre, models, _, X = setting
    ada = AdaMerger(n_steps=3, tol=None, random_state=0).fit(models, pre, X)
    assert tuple(ada.coefficients_.shape) == (3,) and len(ada.loss_curve_) == 3


def test_verbose_prints_ten_progress_lines(setting, capsys):
    pre, models, heads, X = setting
    AdaMerger(n_steps=20, verbose=1, tol=None, random_state=0).fit(models, pre, X, heads)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and lines[-1].startswith("AdaMerger adamerging step 20/20: prediction entropy")


def test_convergence_warning_when_still_improving(setting):
    pre, models, heads, X = setting
    with pytest.warns(ConvergenceWarning, match="still fell"):
        AdaMerger(n_steps=8, learning_rate=0.02, batch_size=None, tol=1e-6).fit(models, pre, X, heads)


@pytest.mark.parametrize("make", LEARNED, ids=LEARNED_IDS)
def test_learned_mergers_are_invariant_to_model_order(setting, make):
    pre, models, heads, X = setting
    perm = [2, 0, 1]
    a = make(batch_size=None, random_state=0).fit(models, pre, X, heads)
    b = make(batch_size=None, random_state=0).fit([models[i] for i in perm], pre, [X[i] for i in perm], [heads[i] for i in perm])
    torch.testing.assert_close(flat(a.merged_model_), flat(b.merged_model_), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.coefficients_[perm], b.coefficients_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make", LEARNED, ids=LEARNED_IDS)
def test_learned_mergers_are_reproducible_and_leave_inputs_alone(setting, make):
    pre, models, heads, X = setting
    before = [params_of(m) for m in [pre, *models, *heads]]
    a = make(random_state=7).fit(models, pre, [x.numpy() for x in X], heads)
    b = make(random_state=7).fit(models, pre, X, heads)
    assert torch.equal(flat(a.merged_model_), flat(b.merged_model_))
    assert a.loss_curve_ == b.loss_curve_
    after = [params_of(m) for m in [pre, *models, *heads]]
    for p, q in zip(before, after):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert all(p.grad is None for h in heads for p in h.parameters())


def test_float64_modules_stay_float64(setting):
    pre, _, _, _ = setting
    pre64 = make_mlp(0, dtype=torch.float64)
    models = fine_tuned(pre64, 2)
    X = [np.random.default_rng(0).standard_normal((6, 5)) for _ in range(2)]
    for merger in (AdaMerger(n_steps=2, tol=None), ConcreteMaskMerger(n_steps=2, tol=None), TiesMerger()):
        merged = merger.fit(models, pre64, X).merged_model_
        assert all(p.dtype == torch.float64 for p in merged.parameters())


# ----------------------------------------------------------------------------------------------
# conventions and bad input


@pytest.mark.parametrize("cls", MERGERS)
def test_sklearn_conventions(cls):
    est = cls()
    params = est.get_params()
    assert params and all(getattr(est, k) == v for k, v in params.items())
    assert clone(est).get_params() == params
    key = next(iter(params))
    assert est.set_params(**{key: params[key]}) is est
    assert "_ESTIMATORS" in cls.__doc__ and "\\tau" in cls.__doc__
    import subspacelab

    assert cls.__name__ not in subspacelab._ESTIMATORS


def test_missing_pretrained_weights(setting):
    pre, models, heads, X = setting
    for merger in (TaskArithmeticMerger(), TiesMerger(), AdaMerger(), ConcreteMaskMerger()):
        with pytest.raises(ValueError, match="pretrained is required"):
            merger.fit(models, None, X, heads)


def test_architectures_that_differ(setting):
    pre, models, heads, X = setting
    wider = make_mlp(0, hidden=8)
    with pytest.raises(ValueError, match=r"models\[1\] has a different architecture.*'0.weight'"):
        TaskArithmeticMerger().fit([models[0], wider], pre)
    deeper = torch.nn.Sequential(*pre, torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"models\[0\].*unexpected \['3.bias', '3.weight'\]"):
        TiesMerger().fit([deeper], pre)
    with pytest.raises(ValueError, match="different architecture"):
        AdaMerger().fit([copy.deepcopy(pre).double()], pre, X[:1])
    with pytest.raises(ValueError, match="shape"):
        TaskArithmeticMerger().fit([np.zeros(3), np.zeros(4)], np.zeros(3))


def test_differing_buffers_are_refused():
    pre = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    model = copy.deepcopy(pre)
    model.train()(torch.randn(8, 3))  # updates the running statistics
    with pytest.raises(ValueError, match="buffer '1.running_mean'"):
        TaskArithmeticMerger().fit([model], pre)


@pytest.mark.parametrize(
    "models, pretrained, error, match",
    [
        ([], np.zeros(3), ValueError, "at least one"),
        (np.zeros((2, 3)), np.zeros(3), TypeError, "models must be a list"),
        ([[0.0, 1.0]], np.zeros(2), TypeError, r"models\[0\] must be a weight array"),
        ([np.zeros(2)], [0.0, 1.0], TypeError, "pretrained must be"),
        ([np.zeros((2, 2))], np.zeros((2, 2)), ValueError, "1-D"),
        ([np.array([1.0, np.nan])], np.zeros(2), ValueError, "NaN"),
        ([np.zeros(2, dtype=np.int64)], np.zeros(2, dtype=np.int64), TypeError, "floating"),
        ([np.zeros(2, dtype=np.float32)], np.zeros(2), ValueError, "dtype"),
    ],
)
def test_bad_weight_vectors(models, pretrained, error, match):
    with pytest.raises(error, match=match):
        TaskArithmeticMerger().fit(models, pretrained)


def test_mixed_modules_and_arrays(setting):
    pre, models, _, _ = setting
    with pytest.raises(TypeError, match=r"models\[1\] must be a torch.nn.Module"):
        TiesMerger().fit([models[0], flat(models[1])], pre)
    with pytest.raises(TypeError, match="weight array"):
        TiesMerger().fit(models, flat(pre))


def test_learned_mergers_need_modules_and_unlabelled_inputs(setting):
    pre, models, heads, X = setting
    for merger in (AdaMerger(), ConcreteMaskMerger()):
        with pytest.raises(TypeError, match="must be torch modules"):
            merger.fit([flat(m) for m in models], flat(pre), X)
        with pytest.raises(ValueError, match="X_unlabelled is required"):
            merger.fit(models, pre)
        with pytest.raises(ValueError, match="one entry per model"):
            merger.fit(models, pre, X[:2], heads)
        with pytest.raises(ValueError, match="one entry per model"):
            merger.fit(models, pre, X, heads[:2])
        with pytest.raises(ValueError, match=r"X_unlabelled\[1\] must not contain NaN"):
            merger.fit(models, pre, [X[0], X[1] * float("nan"), X[2]], heads)
        with pytest.raises(ValueError, match=r"X_unlabelled\[0\] must hold at least one"):
            merger.fit(models, pre, [X[0][:0], X[1], X[2]], heads)
        with pytest.raises(TypeError, match=r"heads\[2\] must be callable"):
            merger.fit(models, pre, X, [heads[0], heads[1], "head"])
        with pytest.raises(TypeError, match=r"X_unlabelled\[0\] must be an array"):
            merger.fit(models, pre, [[1.0] * 5, X[1], X[2]], heads)


@pytest.mark.parametrize(
    "merger, match",
    [
        (TaskArithmeticMerger(scaling="a"), "scaling must be a real"),
        (TiesMerger(density=0.0), r"density must be in \(0"),
        (TiesMerger(density=1.5), "density"),
        (TiesMerger(aggregate="median"), "aggregate must be one of"),
        (AdaMerger(granularity="block"), "granularity"),
        (AdaMerger(init_scaling=1.5), "init_scaling"),
        (AdaMerger(n_steps=0), "n_steps"),
        (AdaMerger(learning_rate=0.0), "learning_rate"),
        (AdaMerger(batch_size=0), "batch_size"),
        (ConcreteMaskMerger(temperature=0.0), "temperature"),
        (ConcreteMaskMerger(base="ties"), "base must be one of"),
        (ConcreteMaskMerger(base="adamerging", scaling=2.0), "scaling"),
        (ConcreteMaskMerger(n_adamerging_steps=-1), "n_adamerging_steps"),
        (ConcreteMaskMerger(init_logit=float("inf")), "init_logit must be finite"),
    ],
)
def test_impossible_parameters(setting, merger, match):
    pre, models, heads, X = setting
    with pytest.raises((ValueError, TypeError), match=match):
        merger.fit(models, pre, X, heads)


def test_batches_cycle_through_every_input():
    X = torch.arange(10.0)[:, None]
    weights = _mergers.collect_weights([torch.nn.Linear(1, 2)], torch.nn.Linear(1, 2))
    objective = _entropy.EntropyObjective(weights, [X], None, 4, np.random.default_rng(0))
    seen = torch.cat([objective.batches()[0] for _ in range(2)])[:, 0].tolist()
    assert len(set(seen)) == 8 and set(seen) <= set(X[:, 0].tolist())  # no repeats within a pass
    full = _entropy.EntropyObjective(weights, [X], None, None, np.random.default_rng(0)).batches()[0]
    assert torch.equal(full, X)


def test_import_does_not_load_torch():
    code = "import sys, subspacelab.merging, subspacelab.datasets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_docstring_examples():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for module in (_mergers, sys.modules["subspacelab.merging._zoo"]):
            result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
            assert result.failed == 0 and result.attempted > 0


# ----------------------------------------------------------------------------------------------
# the real setting of the benchmark, small


@pytest.mark.data
def test_real_digit_tasks_merging_regression():
    from subspacelab.datasets import DataNotAvailableError, make_digit_tasks
    from subspacelab.merging import make_task_models, task_accuracies

    try:
        data = make_digit_tasks(["rotate90", "invert", "digits8x8"], random_state=0)
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))
    zoo = make_task_models(data, pretrain_epochs=4, head_epochs=10, finetune_epochs=2, random_state=0)
    tasks, heads = data.tasks, zoo.heads
    pretrained = task_accuracies(zoo.pretrained, heads, tasks).mean()
    finetuned = task_accuracies(zoo.models, heads, tasks)
    assert finetuned.mean() > pretrained + 0.03
    ta = TaskArithmeticMerger(scaling=0.3).fit(zoo.models, zoo.pretrained)
    ta_acc = task_accuracies(ta.merged_model_, heads, tasks).mean()
    assert pretrained < ta_acc < finetuned.mean()
    cm = ConcreteMaskMerger(n_steps=150, learning_rate=1e-2, tol=None, random_state=0)
    cm.fit(zoo.models, zoo.pretrained, [t.X_unlabelled for t in tasks], heads)
    cm_acc = task_accuracies(cm.merged_model_, heads, tasks).mean()
    assert cm_acc > pretrained
    assert np.mean(cm.loss_curve_[-30:]) < np.mean(cm.loss_curve_[:30])
    print(f"pretrained {pretrained:.3f} fine-tuned {finetuned.mean():.3f} TA {ta_acc:.3f} Concrete TA {cm_acc:.3f}")


def test_task_accuracies_counts_correct_predictions():
    from sklearn.utils import Bunch

    from subspacelab.merging import task_accuracies

    model = torch.nn.Identity()
    model.register_parameter("p", torch.nn.Parameter(torch.zeros(1)))  # gives the dtype and device
    head = torch.nn.Identity()
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    tasks = [Bunch(X_test=X, y_test=np.array([0, 1, 1, 1])), Bunch(X_test=X, y_test=np.array([0, 1, 0, 1]))]
    np.testing.assert_array_equal(task_accuracies(model, [head, head], tasks), [0.75, 1.0])
    np.testing.assert_array_equal(task_accuracies([model, model], [head, head], tasks), [0.75, 1.0])
    with pytest.raises(ValueError, match="same length"):
        task_accuracies(model, [head], tasks)
    with pytest.raises(ValueError, match="split"):
        task_accuracies(model, [head, head], tasks, split="unlabelled")
