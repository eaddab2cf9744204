"""Blind harmonisation baselines, template standardisation, segmentation metric, DomainShift and
the spin-echo phantoms."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subspacelab.datasets import (
    SCANNERS,
    DataNotAvailableError,
    DomainShift,
    load_mni152_axial_slices,
    make_spin_echo_phantoms,
)
from subspacelab.harmonization import (
    dice_score,
    histogram_matching,
    multiotsu_thresholds,
    nyul_normalize,
    template_standardize,
    three_class_segmentation,
    zscore_normalize,
)


@pytest.fixture(scope="module")
def target():
    return make_spin_echo_phantoms(6, 32, scanner="A", random_state=0)


# ----------------------------------------------------------------------------- baselines

def test_histogram_matching_undoes_a_monotone_map_of_the_target(target):
    src = np.where(target > 0.05, target**2.0 + 0.1, 0.0)  # monotone on the foreground
    out = histogram_matching(src, target)
    fg = target > 0.05
    # pooled quantiles of 6 subjects: exact up to the between-subject histogram differences
    assert np.mean(np.abs(out - target)[fg]) < 0.02
    np.testing.assert_array_equal(out[~fg], src[~fg])
    one = histogram_matching(src[0], target[0])  # one image onto its own histogram: exact ranks
    assert one.shape == (32, 32)
    err = np.abs(one - target[0])[fg[0]]
    assert np.median(err) < 1e-3 and err.mean() < 0.01  # exact up to interpolation at intensity jumps


def test_nyul_recovers_an_affine_map_and_zscore_matches_moments(target):
    src = np.where(target > 0.05, 0.5 * target + 0.2, 0.0)
    out = nyul_normalize(src, target[:1])
    fg = target > 0.05
    # with a single target image the standard landmarks are its own: an affine map is undone
    np.testing.assert_allclose(out[0][fg[0]], target[0][fg[0]], atol=1e-10)
    z = zscore_normalize(src, target)
    pooled = target[fg]
    for i in range(src.shape[0]):
        v = z[i][fg[i]]
        assert math.isclose(v.mean(), pooled.mean(), rel_tol=1e-10)
        assert math.isclose(v.std(), pooled.std(), rel_tol=1e-10)


def test_baselines_bad_input(target):
    with pytest.raises(ValueError, match="NaN"):
        histogram_matching(np.full((2, 8, 8), np.nan), target)
    with pytest.raises(ValueError, match="foreground"):
        zscore_normalize(np.zeros((1, 8, 8)), target)
    with pytest.raises(ValueError, match="constant foreground"):
        nyul_normalize(np.full((1, 8, 8), 0.5), target)
    with pytest.raises(ValueError, match="percentiles"):
        nyul_normalize(target, target, percentiles=(50, 10))
    with pytest.raises(ValueError, match="stack of images"):
        histogram_matching(np.ones(5), target)


# ----------------------------------------------------------------------------- template standardisation

def test_template_standardize_undoes_a_monotone_map_exactly(target):
    """field_degree=0, one neighbour, the clean image among the targets: the weighted isotonic
    regression of the template on a strictly monotone map of it is the inverse map."""
    fg = target > 0.05
    src = np.where(fg, np.exp(2.0 * target) - 0.9, 0.0)
    out = template_standardize(src, target, n_neighbors=1, field_degree=0)
    np.testing.assert_allclose(out[fg], target[fg], atol=1e-12)
    np.testing.assert_array_equal(out[~fg], 0.0)  # the targets' background median


def test_template_standardize_removes_a_smooth_field(target):
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    field = np.exp(0.25 * xx - 0.15 * xx * yy + 0.1 * yy**2)
    src = (target * field) ** 1.3
    src /= src.max(axis=(1, 2), keepdims=True)
    fg = target > 0.05
    ours = template_standardize(src, target, n_neighbors=1)
    nyul = nyul_normalize(src, target)
    err, err_nyul = np.abs(ours - target)[fg].mean(), np.abs(nyul - target)[fg].mean()
    assert err < 0.01 and err < err_nyul / 3
    # without the field model only the intensity map is undone
    assert np.abs(template_standardize(src, target, n_neighbors=1, field_degree=0) - target)[fg].mean() > 2 * err


def _slice_stack(n, size=32):
    """A smooth sequence of "slices": an ellipse whose size and inner structure change with j."""
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = []
    for j in range(n):
        t = j / (n - 1)
        head = (xx / (0.5 + 0.3 * t)) ** 2 + (yy / 0.8) ** 2 < 1
        inner = (xx - 0.4 * t + 0.2) ** 2 + yy**2 < (0.1 + 0.15 * t) ** 2
        out.append(np.where(head, 0.5 + 0.4 * inner + 0.05 * yy, 0.0))
    return np.stack(out)


def test_template_standardize_auto_picks_the_adjacent_slices():
    """Targets are the even slices of a smooth sequence, the sources odd slices under a field:
    the mean of the two adjacent target slices is the best template, and the automatic choice
    (likelihood under the neighbours' per-pixel Gaussians) takes it."""
    stack = _slice_stack(41)
    targets, truth = stack[0::2], stack[9:31:4]
    yy, xx = np.mgrid[-1:1:32j, -1:1:32j]
    src = truth * np.exp(0.2 * xx - 0.1 * yy)
    out, ks = template_standardize(src, targets, return_n_neighbors=True)
    assert np.mean(ks == 2) >= 0.8
    for i, k in enumerate(ks):  # "auto" returns the fixed-k result of the size it chose
        np.testing.assert_array_equal(out[i], template_standardize(src[i], targets, n_neighbors=int(k)))
    err = np.abs(out - truth).mean()
    for k in (5, 12):
        assert err < np.abs(template_standardize(src, targets, n_neighbors=k) - truth).mean()
    # fewer targets than the smallest automatic size: all of them
    one, k1 = template_standardize(src[:1], targets[:1], return_n_neighbors=True)
    assert k1.tolist() == [1] and one.shape == (1, 32, 32)


@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_template_standardize_is_monotone_without_a_field(seed, k):
    """field_degree=0: on the foreground the output is a non-decreasing function of the source
    (so a contrast is never inverted), with values inside the targets' range."""
    rng = np.random.default_rng(seed)
    targets = rng.random((4, 8, 8))
    src = rng.random((2, 8, 8))
    out = template_standardize(src, targets, n_neighbors=k, field_degree=0)
    for o, x in zip(out, src):
        fg = x > 0.05
        order = np.argsort(x[fg], kind="stable")
        assert np.all(np.diff(o[fg][order]) >= -1e-12)
        assert targets.min() - 1e-12 <= o[fg].min() and o[fg].max() <= targets.max() + 1e-12


def test_template_standardize_bad_input(target):
    with pytest.raises(ValueError, match="n_neighbors"):
        template_standardize(target, target, n_neighbors=7)
    with pytest.raises(ValueError, match="n_neighbors"):
        template_standardize(target, target, n_neighbors="best")
    with pytest.raises(ValueError, match="std_floor"):
        template_standardize(target, target, std_floor=0.0)
    with pytest.raises(ValueError, match="one image shape"):
        template_standardize(target[:, :16, :16], target)
    with pytest.raises(ValueError, match="field_degree"):
        template_standardize(target, target, field_degree=-1)
    with pytest.raises(ValueError, match="relative_variance_floor"):
        template_standardize(target, target, relative_variance_floor=0.0)
    with pytest.raises(ValueError, match="NaN"):
        template_standardize(np.full((1, 32, 32), np.nan), target)
    with pytest.raises(ValueError, match="constant foreground"):
        template_standardize(np.full((1, 32, 32), 0.5), target)
    # a source whose foreground misses every target's: no pixels to fit a field and a map on
    left, right = np.zeros((2, 32, 32)), np.zeros((1, 32, 32))
    left[:, 8:24, 2:12] = np.linspace(0.3, 1.0, 10)
    right[0, 8:24, 20:30] = np.linspace(0.3, 1.0, 10)
    with pytest.raises(ValueError, match="overlaps its nearest target images on 0"):
        template_standardize(right, left)


def test_multiotsu_and_dice():
    rng = np.random.default_rng(0)
    img = np.zeros((1, 30, 30))
    img[0, 5:25, 5:12] = 0.2
    img[0, 5:25, 12:19] = 0.5
    img[0, 5:25, 19:25] = 0.9
    noisy = np.clip(img + 0.01 * rng.standard_normal(img.shape) * (img > 0), 0, 1)
    t = multiotsu_thresholds(noisy)
    assert 0.2 < t[0] < 0.5 < t[1] < 0.9
    labels = three_class_segmentation(noisy, t)
    np.testing.assert_array_equal(np.unique(labels), [0, 1, 2, 3])
    assert dice_score(labels, labels)[0] == 1.0
    shifted = labels.copy()
    shifted[labels == 3] = 2
    d = dice_score(labels, shifted)[0]
    assert 0.3 < d < 0.8  # class 3 lost, class 2 diluted
    with pytest.raises(ValueError, match="increasing"):
        three_class_segmentation(noisy, (0.6, 0.3))


# ----------------------------------------------------------------------------- data

def test_domain_shift_is_seeded_composable_and_normalised(target):
    a = DomainShift(["gamma", "bias_field"], random_state=3)(target)
    b = DomainShift(["gamma", "bias_field"], random_state=3)(target)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, DomainShift(["gamma", "bias_field"], random_state=4)(target))
    assert a.shape == target.shape and np.all(a.min(axis=(1, 2)) == 0) and np.all(a.max(axis=(1, 2)) == 1)
    bg = target <= 0.05
    for kind in ("exp", "lut", "contrast", "inversion"):  # these keep the background at 0
        out = DomainShift(kind, random_state=0)(target)
        assert np.all(out[bg] == out[bg].min()), kind  # background stays flat
    inv = DomainShift("inversion", random_state=0)(target)
    fg = ~bg
    assert np.corrcoef(inv[fg], target[fg])[0, 1] < -0.5
    # intensity maps are monotone on the foreground: ranks preserved
    g = DomainShift("lut", random_state=1)(target[0])
    order = np.argsort(target[0][fg[0]], kind="stable")
    assert np.all(np.diff(g[fg[0]][order]) >= -1e-12)


def test_domain_shift_bias_field_amplitude():
    flat = np.full((5, 32, 32), 0.5)
    flat[:, 0, 0] = 0.0  # one zero pixel: min-max normalisation then divides by the field's maximum
    out = DomainShift("bias_field", random_state=0, bias_amplitude=0.3)(flat)
    field = out[:, 1:, 1:]
    ratio = field.max(axis=(1, 2)) / field.min(axis=(1, 2))
    assert np.all(ratio <= 1.3 / 0.7 + 1e-9) and np.all(ratio > 1.05)
    # smooth: neighbouring pixels differ by a small fraction of the field's range
    assert np.abs(np.diff(field, axis=2)).max() < 0.1


def test_domain_shift_bad_input():
    with pytest.raises(ValueError, match="kinds"):
        DomainShift("warp")
    with pytest.raises(ValueError, match="NaN"):
        DomainShift("gamma")(np.full((1, 4, 4), np.nan))
    with pytest.raises(ValueError, match="constant"):
        DomainShift("gamma")(np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="noise_range"):
        DomainShift("rician_noise", noise_range=(0.05, 0.01))


def test_spin_echo_phantoms_follow_the_signal_equation():
    a = make_spin_echo_phantoms(3, 48, scanner="A", random_state=0)
    b = make_spin_echo_phantoms(3, 48, scanner="B", random_state=0)
    assert a.shape == (3, 48, 48) and a.min() == 0 and a.max() == 1
    # same subjects: the same anatomy (support) on both scanners, different contrast
    clean_b = make_spin_echo_phantoms(3, 48, scanner={**SCANNERS["B"], "coil": 0.0, "noise": 0.0}, random_state=0)
    np.testing.assert_array_equal(a > 0, clean_b > 0)
    assert np.abs(a - clean_b).max() > 0.05
    assert not np.array_equal(a[0], a[1])  # subjects differ
    # a uniform white-matter "subject" (no texture) reproduces S = M0 (1 - exp(-TR/T1)) exp(-TE/T2)
    from subspacelab.datasets._harmonization import _tissue_maps

    wm = _tissue_maps(3.0)["white"]
    gm = _tissue_maps(3.0)["gray"]
    s = [m0 * (1 - math.exp(-500.0 / t1)) * math.exp(-15.0 / t2) for m0, t1, t2 in (wm, gm)]
    assert _tissue_maps(1.5)["white"][1] == 600.0 and math.isclose(_tissue_maps(3.0)["white"][1], 830.0)
    assert s[0] > s[1]  # T1-weighted: white matter brighter than gray matter at 3 T
    assert b.shape == a.shape and np.isfinite(b).all()
    with pytest.raises(ValueError, match="scanner"):
        make_spin_echo_phantoms(1, 16, scanner="C")
    with pytest.raises(ValueError, match="misses"):
        make_spin_echo_phantoms(1, 16, scanner={"b0": 3.0})


@pytest.mark.data
def test_mni152_axial_slices():
    try:
        X = load_mni152_axial_slices(32, step=20)
    except DataNotAvailableError as exc:
        pytest.skip(str(exc))
    assert X.shape == (6, 32, 32) and X.min() == 0 and X.max() == 1
    assert np.all((X > 0.05).mean(axis=(1, 2)) > 0.1)  # brain in every slice
    with pytest.raises(ValueError, match="increasing"):
        load_mni152_axial_slices(32, z_range=(50, 40))
