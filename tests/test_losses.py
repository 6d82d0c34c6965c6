"""Unit tests of the pure loss terms in :mod:`~.training.losses`: closed forms, shapes, gradients, precision."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_confkd.training.losses import (
    connected_zero,
    entropy,
    entropy_map,
    kl_divergence,
    kl_divergence_map,
    legacy_entropy,
    legacy_kl,
    partial_cross_entropy,
    pseudo_mask_cross_entropy,
)

# non-square spatial shapes catch a class axis mixed up with a spatial one
SPATIAL = {"2d": (5, 7), "3d": (3, 5, 7)}
IGNORE = 255


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _logits(batch: int, classes: int, dim: str, scale: float = 3.0, dtype=torch.float32) -> torch.Tensor:
    return (scale * torch.randn(batch, classes, *SPATIAL[dim])).to(dtype)


def _labels(batch: int, classes: int, dim: str, ignore_fraction: float = 0.3) -> torch.Tensor:
    labels = torch.randint(0, classes, (batch, *SPATIAL[dim]))
    labels[torch.rand(labels.shape) < ignore_fraction] = IGNORE
    return labels


def _two_class(p0: float) -> torch.Tensor:
    """Logits ``(1, 2, 1, 1)`` whose softmax is exactly ``(p0, 1 - p0)``."""
    return torch.tensor([math.log(p0), math.log(1.0 - p0)], dtype=torch.float64).view(1, 2, 1, 1)


def _transposed(x: torch.Tensor) -> torch.Tensor:
    """A non-contiguous tensor equal to ``x``: built with the last two axes swapped, then swapped back."""
    y = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not y.is_contiguous() and torch.equal(y, x)
    return y


# --- entropy ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("classes", [2, 3, 5])
def test_entropy_of_uniform_logits_is_log_c(dim, classes):
    logits = torch.zeros(2, classes, *SPATIAL[dim])
    hmap = entropy_map(logits)
    assert hmap.shape == (2, *SPATIAL[dim])
    torch.testing.assert_close(hmap, torch.full_like(hmap, math.log(classes)))
    torch.testing.assert_close(entropy(logits), torch.tensor(math.log(classes)))


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("classes", [2, 3, 5])
def test_entropy_of_near_one_hot_is_zero(dim, classes):
    labels = torch.randint(0, classes, (2, *SPATIAL[dim]))
    logits = 50.0 * F.one_hot(labels, classes).movedim(-1, 1).float()
    assert entropy(logits).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy_map(logits).abs().max().item() < 1e-6


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("scale", [0.1, 3.0, 30.0])
def test_entropy_map_is_bounded_by_log_c(dim, classes, scale):
    hmap = entropy_map(_logits(3, classes, dim, scale))
    assert hmap.min().item() >= 0.0
    assert hmap.max().item() <= math.log(classes) + 1e-6


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_entropy_is_the_mean_of_the_per_voxel_entropy(dim):
    logits = _logits(2, 4, dim)
    p = torch.softmax(logits.double(), dim=1)
    expected = -(p * p.log()).sum(1).mean()
    torch.testing.assert_close(entropy(logits).double(), expected, rtol=1e-5, atol=1e-6)


# --- KL divergence ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_of_a_distribution_with_itself_is_zero(dim, temperature):
    x = _logits(2, 3, dim)
    assert kl_divergence(x, x, temperature).item() == 0.0
    assert kl_divergence_map(x, x, temperature).abs().max().item() == 0.0


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_is_non_negative(dim, classes, temperature):
    p, q = _logits(3, classes, dim), _logits(3, classes, dim)
    kmap = kl_divergence_map(p, q, temperature)
    assert kmap.shape == (3, *SPATIAL[dim])
    assert kmap.min().item() >= -1e-6
    assert kl_divergence(p, q, temperature).item() > 0.0


def _hand_kl(p: tuple[float, float], q: tuple[float, float], temperature: float) -> float:
    """``T² · KL(softmax(log p / T) || softmax(log q / T))`` written out for two classes."""
    # softmax(log p / T) = p^(1/T) / Σ p^(1/T)
    pt = [pk ** (1.0 / temperature) for pk in p]
    qt = [qk ** (1.0 / temperature) for qk in q]
    pt = [v / (pt[0] + pt[1]) for v in pt]
    qt = [v / (qt[0] + qt[1]) for v in qt]
    return temperature**2 * (pt[0] * math.log(pt[0] / qt[0]) + pt[1] * math.log(pt[1] / qt[1]))


def test_hand_computed_two_class_kl_at_t1():
    # KL((0.8, 0.2) || (0.4, 0.6)) = 0.8 log 2 + 0.2 log(1/3)
    expected = 0.8 * math.log(0.8 / 0.4) + 0.2 * math.log(0.2 / 0.6)
    assert expected == pytest.approx(0.334795, abs=1e-6)
    value = kl_divergence(_two_class(0.8), _two_class(0.4), temperature=1.0)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_hand_computed_two_class_kl_at_t2():
    # softmax(log(0.8, 0.2) / 2) = (√0.8, √0.2) / (√0.8 + √0.2) = (2/3, 1/3)
    pt = (2.0 / 3.0, 1.0 / 3.0)
    s = math.sqrt(0.4) + math.sqrt(0.6)
    qt = (math.sqrt(0.4) / s, math.sqrt(0.6) / s)
    expected = 2.0**2 * (pt[0] * math.log(pt[0] / qt[0]) + pt[1] * math.log(pt[1] / qt[1]))
    assert expected == pytest.approx(_hand_kl((0.8, 0.2), (0.4, 0.6), 2.0), rel=1e-12)
    value = kl_divergence(_two_class(0.8), _two_class(0.4), temperature=2.0)
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_hand_computed_kl_is_a_per_voxel_mean_on_non_square_grids(dim, temperature):
    """The same two-class pair at every voxel of a non-square grid, a second pair on another case: mean of the two."""
    shape = SPATIAL[dim]
    first_p, first_q = _two_class(0.8), _two_class(0.4)
    second_p, second_q = _two_class(0.3), _two_class(0.9)
    p = torch.cat([first_p, second_p]).view(2, 2, *[1] * len(shape)).expand(2, 2, *shape)
    q = torch.cat([first_q, second_q]).view(2, 2, *[1] * len(shape)).expand(2, 2, *shape)
    expected = 0.5 * (_hand_kl((0.8, 0.2), (0.4, 0.6), temperature) + _hand_kl((0.3, 0.7), (0.9, 0.1), temperature))
    assert kl_divergence(p, q, temperature).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kl_is_asymmetric(temperature):
    p, q = _two_class(0.8), _two_class(0.4)
    forward, reverse = kl_divergence(p, q, temperature).item(), kl_divergence(q, p, temperature).item()
    assert forward == pytest.approx(_hand_kl((0.8, 0.2), (0.4, 0.6), temperature), rel=1e-12)
    assert reverse == pytest.approx(_hand_kl((0.4, 0.6), (0.8, 0.2), temperature), rel=1e-12)
    assert abs(forward - reverse) > 1e-3


def test_kl_rejects_different_shapes():
    with pytest.raises(ValueError, match="equal shapes"):
        kl_divergence(torch.zeros(1, 3, 4, 5), torch.zeros(1, 3, 5, 4))


# --- partial cross-entropy -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("classes", [2, 3, 5])
@pytest.mark.parametrize("channel_axis", [True, False])
def test_partial_ce_equals_torch_ce_with_ignore_index(dim, classes, channel_axis):
    logits, labels = _logits(3, classes, dim), _labels(3, classes, dim)
    assert (labels != IGNORE).any() and (labels == IGNORE).any()
    target = labels[:, None] if channel_axis else labels
    expected = F.cross_entropy(logits, labels, ignore_index=IGNORE)
    torch.testing.assert_close(partial_cross_entropy(logits, target, IGNORE), expected)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_partial_ce_accepts_non_long_targets(dim):
    logits, labels = _logits(2, 3, dim), _labels(2, 3, dim)
    expected = partial_cross_entropy(logits, labels, IGNORE)
    for dtype in (torch.int16, torch.float32):
        torch.testing.assert_close(partial_cross_entropy(logits, labels[:, None].to(dtype), IGNORE), expected)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("channel_axis", [True, False])
def test_partial_ce_without_labeled_voxel_is_a_connected_zero(dim, channel_axis):
    logits = _logits(2, 3, dim).requires_grad_()
    target = torch.full((2, *SPATIAL[dim]), IGNORE)
    value = partial_cross_entropy(logits, target[:, None] if channel_axis else target, IGNORE)
    assert torch.isfinite(value) and value.item() == 0.0
    assert value.requires_grad
    value.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_partial_ce_only_counts_labeled_voxels():
    """One labeled voxel: the loss is that voxel's NLL, whatever the logits elsewhere."""
    logits = _logits(1, 3, "2d")
    target = torch.full((1, *SPATIAL["2d"]), IGNORE)
    target[0, 2, 4] = 1
    expected = -F.log_softmax(logits[0, :, 2, 4], dim=0)[1]
    torch.testing.assert_close(partial_cross_entropy(logits, target, IGNORE), expected)
    logits[0, :, 0, 0] += 100.0
    torch.testing.assert_close(partial_cross_entropy(logits, target, IGNORE), expected)


def test_partial_ce_rejects_multi_channel_targets():
    with pytest.raises(ValueError, match="one channel"):
        partial_cross_entropy(torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 5, dtype=torch.long), IGNORE)


# --- pseudo-mask cross-entropy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_pseudo_mask_ce_above_max_confidence_is_a_connected_zero(dim):
    logits = _logits(2, 3, dim).requires_grad_()
    threshold = torch.softmax(logits, 1).max().item() + 1e-3
    value = pseudo_mask_cross_entropy(logits, logits.detach(), threshold)
    assert torch.isfinite(value) and value.item() == 0.0
    value.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_pseudo_mask_ce_is_ce_against_the_argmax(dim):
    logits, reference = _logits(2, 3, dim), _logits(2, 3, dim)
    torch.testing.assert_close(pseudo_mask_cross_entropy(logits, logits), F.cross_entropy(logits, logits.argmax(1)))
    torch.testing.assert_close(pseudo_mask_cross_entropy(logits, reference),
                               F.cross_entropy(logits, reference.argmax(1)))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_pseudo_mask_ce_keeps_only_confident_voxels(dim):
    logits, reference = _logits(2, 3, dim), _logits(2, 3, dim)
    confidence, pseudo = torch.softmax(reference, 1).max(1)
    threshold = confidence.median().item()
    keep = confidence >= threshold
    assert 0 < keep.sum() < keep.numel()
    expected = F.cross_entropy(logits, torch.where(keep, pseudo, IGNORE), ignore_index=IGNORE)
    torch.testing.assert_close(pseudo_mask_cross_entropy(logits, reference, threshold), expected)


# --- non-contiguous, gradcheck, bfloat16, empty batch ----------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_non_contiguous_inputs_match_contiguous_ones(dim):
    a, b = _logits(2, 3, dim), _logits(2, 3, dim)
    labels = _labels(2, 3, dim)
    a_nc, b_nc, labels_nc = _transposed(a), _transposed(b), _transposed(labels)
    torch.testing.assert_close(entropy_map(a_nc), entropy_map(a))
    torch.testing.assert_close(entropy(a_nc), entropy(a))
    torch.testing.assert_close(kl_divergence(a_nc, b_nc, 2.0), kl_divergence(a, b, 2.0))
    torch.testing.assert_close(partial_cross_entropy(a_nc, labels_nc, IGNORE), partial_cross_entropy(a, labels, IGNORE))
    torch.testing.assert_close(partial_cross_entropy(a_nc, labels_nc[:, None], IGNORE),
                               partial_cross_entropy(a, labels, IGNORE))
    torch.testing.assert_close(pseudo_mask_cross_entropy(a_nc, b_nc), pseudo_mask_cross_entropy(a, b))
    torch.testing.assert_close(legacy_kl(a_nc, b_nc), legacy_kl(a, b))
    torch.testing.assert_close(legacy_entropy(a_nc, b_nc), legacy_entropy(a, b))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_non_contiguous_class_axis(dim):
    """Logits whose class axis is not the fastest-varying one in memory (channels-last layout)."""
    a, b = _logits(2, 4, dim), _logits(2, 4, dim)
    a_cl = a.movedim(1, -1).contiguous().movedim(-1, 1)
    b_cl = b.movedim(1, -1).contiguous().movedim(-1, 1)
    assert not a_cl.is_contiguous()
    torch.testing.assert_close(entropy(a_cl), entropy(a))
    torch.testing.assert_close(kl_divergence(a_cl, b_cl), kl_divergence(a, b))


def _gradcheck_logits(shape=(2, 3, 3, 4)) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 3, 2, 3, 4)])
def test_gradcheck_entropy(shape):
    assert torch.autograd.gradcheck(entropy, (_gradcheck_logits(shape),))
    assert entropy(_gradcheck_logits(shape)).dtype == torch.float64


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 3, 2, 3, 4)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gradcheck_kl_both_arguments(shape, temperature):
    p, q = _gradcheck_logits(shape), _gradcheck_logits(shape)
    assert torch.autograd.gradcheck(lambda a, b: kl_divergence(a, b, temperature), (p, q))


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 3, 2, 3, 4)])
def test_gradcheck_partial_ce(shape):
    logits = _gradcheck_logits(shape)
    target = torch.randint(0, 3, (shape[0], *shape[2:]))
    target[..., 0] = IGNORE
    assert torch.autograd.gradcheck(lambda x: partial_cross_entropy(x, target, IGNORE), (logits,))


def test_gradcheck_legacy_terms():
    a, b = _gradcheck_logits(), _gradcheck_logits()
    assert torch.autograd.gradcheck(lambda x, y: legacy_kl(x, y, 2.0, 0.5), (a, b))
    assert torch.autograd.gradcheck(legacy_entropy, (a, b))


def _all_terms(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "entropy": entropy(a),
        "kl": kl_divergence(a, b, 2.0),
        "partial_ce": partial_cross_entropy(a, labels, IGNORE),
        "pseudo_mask_ce": pseudo_mask_cross_entropy(a, b, 0.5),
        "legacy_kl": legacy_kl(a, b),
        "legacy_entropy": legacy_entropy(a, b),
    }


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_bfloat16_inputs_give_finite_float32_results(dim):
    a, b = _logits(2, 3, dim, 10.0), _logits(2, 3, dim, 10.0)
    labels = _labels(2, 3, dim)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    low = _all_terms(a16, b16, labels)
    reference = _all_terms(a16.float(), b16.float(), labels)  # same values, upcast by hand
    for name, value in low.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
        torch.testing.assert_close(value, reference[name], msg=name)


def test_finite_float32_results_under_bfloat16_autocast():
    layer = torch.nn.Conv2d(2, 3, kernel_size=1)
    x, y = torch.randn(2, 2, 5, 7), torch.randn(2, 2, 5, 7)
    labels = _labels(2, 3, "2d")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = layer(x), layer(y)
        assert a.dtype == torch.bfloat16
        values = _all_terms(a, b, labels)
    for name, value in values.items():
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_empty_batch_gives_a_connected_zero(dim, dtype):
    a = torch.randn(0, 3, *SPATIAL[dim]).to(dtype).requires_grad_()
    b = torch.randn(0, 3, *SPATIAL[dim]).to(dtype).requires_grad_()
    labels = torch.zeros(0, 1, *SPATIAL[dim], dtype=torch.long)
    values = _all_terms(a, b, labels)
    for name, value in values.items():
        assert torch.isfinite(value) and value.item() == 0.0, name
        assert value.dtype == torch.float32, name
        assert value.requires_grad, name
    sum(values.values()).backward()
    assert a.grad is not None and a.grad.shape == a.shape
    assert b.grad is not None and b.grad.shape == b.shape


def test_connected_zero_reaches_every_tensor():
    a, b = torch.randn(2, 3, 4, requires_grad=True), torch.randn(5, requires_grad=True)
    zero = connected_zero(a, b)
    assert zero.item() == 0.0
    zero.backward()
    assert torch.equal(a.grad, torch.zeros_like(a)) and torch.equal(b.grad, torch.zeros_like(b))


# --- the arithmetic of the authors' released script ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize(("temperature", "alpha"), [(2.0, 0.5), (1.0, 1.0), (4.0, 0.3)])
def test_legacy_kl_matches_the_script_line(dim, temperature, alpha):
    z_t, z_s = _logits(2, 2, dim), _logits(2, 2, dim)
    expected = torch.nn.KLDivLoss()(
        torch.log_softmax(torch.softmax(z_t, 1) / temperature, 1),
        torch.softmax(torch.softmax(z_s, 1) / temperature, 1),
    ) * alpha * temperature**2
    torch.testing.assert_close(legacy_kl(z_t, z_s, temperature, alpha), expected)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize(("strong", "weak"), [(2, 3), (1, 1), (0, 2), (2, 0)])
def test_legacy_entropy_matches_the_script_line(dim, strong, weak):
    s_strong, s_weak = _logits(strong, 3, dim), _logits(weak, 3, dim)
    x = torch.cat([s_strong, s_strong, s_strong, s_weak])
    expected = -(torch.softmax(x, 1) * torch.log_softmax(x, 1)).mean()
    torch.testing.assert_close(legacy_entropy(s_strong, s_weak), expected)


def test_legacy_entropy_is_entropy_over_c_with_strong_cases_three_times():
    s_strong, s_weak = _logits(2, 4, "2d"), _logits(3, 4, "2d")
    h_strong, h_weak = entropy_map(s_strong).mean(), entropy_map(s_weak).mean()
    expected = (3 * 2 * h_strong + 3 * h_weak) / (3 * 2 + 3) / 4
    torch.testing.assert_close(legacy_entropy(s_strong, s_weak), expected)


def test_legacy_kl_is_kl_student_teacher_divided_by_c():
    """Legacy arithmetic = α T² · KL(student || teacher) on the double-softmax distributions, averaged with /C."""
    z_t, z_s = _logits(2, 3, "2d"), _logits(2, 3, "2d")
    temperature, alpha = 2.0, 0.5
    inner_t, inner_s = torch.softmax(z_t, 1), torch.softmax(z_s, 1)
    # kl_divergence works on logits: softmax(inner / T) are the tempered double-softmax distributions
    per_voxel = kl_divergence_map(inner_s, inner_t, temperature)
    torch.testing.assert_close(legacy_kl(z_t, z_s, temperature, alpha), alpha * temperature**2 * per_voxel.mean() / 3)


def test_legacy_kl_with_two_classes_at_t2_is_bounded_per_pixel():
    """The released script's double softmax: with K = 2 and T = 2 the per-pixel KL (summed over classes) is at
    most ~0.12 nats."""
    temperature, classes = 2.0, 2
    z_t = 100.0 * torch.randn(64, classes, 1, 1)
    z_s = 100.0 * torch.randn(64, classes, 1, 1)
    # the two most distant pixels: the teacher certain of class 0, the student certain of class 1
    z_t[0, :, 0, 0], z_s[0, :, 0, 0] = torch.tensor([60.0, -60.0]), torch.tensor([-60.0, 60.0])
    per_pixel = []
    for i in range(z_t.shape[0]):
        # alpha = 1 and one pixel: legacy_kl = T² · (Σ_k elements) / K
        value = legacy_kl(z_t[i:i + 1], z_s[i:i + 1], temperature, alpha=1.0)
        per_pixel.append(value.item() * classes / temperature**2)
    assert max(per_pixel) <= 0.125
    assert min(per_pixel) >= -1e-7
    # the bound is reached by opposite certain predictions: 0.5 · (σ(0.5) - σ(-0.5)) ≈ 0.1225
    bound = 0.5 * (1 / (1 + math.exp(-0.5)) - 1 / (1 + math.exp(0.5)))
    assert per_pixel[0] == pytest.approx(bound, abs=1e-6)
    assert bound == pytest.approx(0.1225, abs=1e-4)
