"""Unit tests of the ConfKD composer :mod:`~.training.objective`: terms, masks, switches, stop-gradients."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

from nnunetv2_confkd.training.losses import (
    connected_zero,
    entropy,
    kl_divergence,
    legacy_entropy,
    legacy_kl,
    partial_cross_entropy,
    pseudo_mask_cross_entropy,
)
from nnunetv2_confkd.training.objective import (
    _CHOICES,
    TERMS,
    ConfKDConfig,
    ConfKDLoss,
    DeepSupervisedPartialCE,
    row_index,
)
from nnunetv2_confkd.training.seeds import erosion_seeds

CLASSES = 3
IGNORE = 3  # nnU-Net puts the ignore label right after the last class


def make_config(**switches) -> ConfKDConfig:
    """The trainer's defaults (the one place they live), with the student seeing the targets as given on strong cases
    unless a test asks otherwise, so that direct computations below can use the raw targets."""
    from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD

    return replace(nnUNetTrainerConfKD.confkd_config(IGNORE), **{"student_strong_labels": "full", **switches})
# highest resolution first, non-square, as nnU-Net's deep-supervision outputs
SCALES = {"2d": [(16, 12), (8, 6), (4, 3)], "3d": [(4, 16, 12), (2, 8, 6), (1, 4, 3)]}
DS_WEIGHTS = (0.571, 0.286, 0.143)
LEGACY = {"legacy": True, "detach_teacher": False, "kd_direction": "student_teacher", "entropy_on": "all",
          "temperature": 2.0, "kd_alpha": 0.5}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@dataclass
class Batch:
    teacher: list[torch.Tensor]
    student: list[torch.Tensor]
    targets: list[torch.Tensor]
    is_full: torch.Tensor
    teacher_mask: torch.Tensor

    def logits(self) -> list[torch.Tensor]:
        return self.teacher + self.student


def _blobs(batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Dense ``(B, 1, *shape)`` label maps: background, a large class-1 box and a smaller class-2 box per case."""
    labels = torch.zeros(batch, 1, *shape, dtype=torch.long)
    h, w = shape[-2:]
    for b in range(batch):
        for c, (dh, dw) in ((1, (h // 2 + 2, w // 2 + 2)), (2, (h // 4 + 1, w // 4 + 1))):
            y = int(torch.randint(0, h - dh + 1, ()))
            x = int(torch.randint(0, w - dw + 1, ()))
            labels[b, 0, ..., y:y + dh, x:x + dw] = c
    return labels


def _downsample(labels: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """nnU-Net's target downsampling for deep supervision (batchgeneratorsv2 ``DownsampleSegForDSTransform``)."""
    if tuple(labels.shape[2:]) == tuple(shape):
        return labels
    return F.interpolate(labels.float(), size=shape, mode="nearest-exact").to(labels.dtype)


def _batch(dim: str, is_full, teacher_all: bool = False, scales: int = 3, labeled_fraction: float = 0.2,
           dtype: torch.dtype = torch.int16, no_labels: bool = False) -> Batch:
    is_full = torch.tensor(is_full, dtype=torch.bool)
    shapes = SCALES[dim][:scales]
    dense = _blobs(len(is_full), shapes[0])
    weak = torch.where(torch.rand(dense.shape) < labeled_fraction, dense, torch.full_like(dense, IGNORE))
    if no_labels:
        weak = torch.full_like(dense, IGNORE)
    labels = torch.where(is_full.view(-1, *[1] * (dense.ndim - 1)), dense, weak).to(dtype)
    teacher_mask = torch.ones_like(is_full) if teacher_all else is_full.clone()
    n_teacher = int(teacher_mask.sum())
    return Batch(
        teacher=[(3 * torch.randn(n_teacher, CLASSES, *s)).requires_grad_() for s in shapes],
        student=[(3 * torch.randn(len(is_full), CLASSES, *s)).requires_grad_() for s in shapes],
        targets=[_downsample(labels, s) for s in shapes],
        is_full=is_full,
        teacher_mask=teacher_mask,
    )


def _dc_ce(weights=DS_WEIGHTS) -> DeepSupervisionWrapper:
    """nnU-Net's supervised loss with the ignore label, as ``nnUNetTrainer._build_loss`` builds it."""
    loss = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=IGNORE, dice_class=MemoryEfficientSoftDiceLoss)
    return DeepSupervisionWrapper(loss, weights)


def _zero_loss(outputs, targets):
    return connected_zero(*outputs)


def _confkd(supervised=None, weights=DS_WEIGHTS, **switches) -> ConfKDLoss:
    config = make_config(**switches)
    return ConfKDLoss(supervised if supervised is not None else _dc_ce(weights),
                      DeepSupervisedPartialCE(IGNORE, weights), config)


def _run(loss: ConfKDLoss, batch: Batch, entropy_scale: float = 1.0):
    return loss(batch.teacher, batch.student, batch.targets, batch.is_full, batch.teacher_mask, entropy_scale)


def _cases(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def _teacher_rows(batch: Batch, cases: list[int]) -> list[int]:
    """Rows of the teacher outputs that hold ``cases`` (teacher rows follow batch order over ``teacher_mask``)."""
    ran = _cases(batch.teacher_mask)
    return [ran.index(i) for i in cases]


def _ds_partial_ce(outputs, targets, weights=DS_WEIGHTS) -> torch.Tensor:
    return sum(w * partial_cross_entropy(o, t, IGNORE)
               for w, o, t in zip(weights, outputs, targets, strict=True) if w != 0)


# --- configuration ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(_CHOICES))
def test_config_rejects_unknown_switch_values(name):
    with pytest.raises(ValueError, match=name):
        make_config(**{name: "bogus"})


@pytest.mark.parametrize(("name", "allowed"), sorted(_CHOICES.items()))
def test_config_accepts_every_documented_switch_value(name, allowed):
    needs = {"student_view": {"confidence_term": "pseudo_teacher"}}  # the perturbed view needs the teacher's labels
    for value in allowed:
        assert getattr(make_config(**{name: value, **needs.get(name, {})}), name) == value


@pytest.mark.parametrize(("name", "value"), [("weak_weight", -0.1), ("kd_weight", -1.0), ("entropy_weight", -1e-3),
                                             ("temperature", 0.0), ("temperature", -2.0)])
def test_config_rejects_negative_weights_and_non_positive_temperature(name, value):
    with pytest.raises(ValueError, match=name):
        make_config(**{name: value})


def test_config_accepts_zero_weights():
    config = make_config(weak_weight=0.0, kd_weight=0.0, entropy_weight=0.0)
    assert (config.weak_weight, config.kd_weight, config.entropy_weight) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("kd_on", "confidence_term", "expected"), [
    ("strong", "entropy", False), ("strong", "pseudo_self", False), ("strong", "pseudo_teacher", True),
    ("all", "entropy", True), ("all", "pseudo_self", True),
])
def test_config_teacher_on_all(kd_on, confidence_term, expected):
    config = make_config(kd_on=kd_on, confidence_term=confidence_term)
    assert config.teacher_on_all is expected


# --- composition -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("switches", [{}, {"student_strong_labels": "derived_weak"}, LEGACY])
@pytest.mark.parametrize("entropy_scale", [1.0, 0.5, 0.0])
def test_total_is_the_weighted_sum_of_detached_terms(dim, switches, entropy_scale):
    loss = _confkd(weak_weight=0.3, kd_weight=1.7, entropy_weight=0.4, **switches)
    total, terms = _run(loss, _batch(dim, [True, False, True, False]), entropy_scale)
    assert tuple(terms) == TERMS
    expected = terms["sup"] + 0.3 * terms["weak"] + 1.7 * terms["kd"] + 0.4 * entropy_scale * terms["ent"]
    torch.testing.assert_close(total.detach(), expected)
    assert total.requires_grad
    for name, value in terms.items():
        assert not value.requires_grad and value.grad_fn is None, name
        assert value.ndim == 0 and torch.isfinite(value), name
        assert value.item() > 0.0, name


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("is_full", [[True, False, True, False], [False, True, False, False, True],
                                     [True, False, False], [True, True, False, False], [False, False, True, True]])
@pytest.mark.parametrize("teacher_all", [False, True])
def test_terms_match_a_direct_computation_for_mixed_masks(dim, is_full, teacher_all):
    batch = _batch(dim, is_full, teacher_all=teacher_all)
    loss = _confkd(temperature=2.0)
    _, terms = _run(loss, batch)
    full, weak = _cases(batch.is_full), _cases(~batch.is_full)
    assert len(batch.teacher[0]) == (len(is_full) if teacher_all else len(full))
    rows = _teacher_rows(batch, full)
    with torch.no_grad():
        sup = _dc_ce()([t[rows] for t in batch.teacher], [t[full] for t in batch.targets])
        weak_term = _ds_partial_ce(batch.student, batch.targets)
        kd = kl_divergence(batch.teacher[0][rows], batch.student[0][full], temperature=2.0)
        ent = entropy(batch.student[0])
    torch.testing.assert_close(terms["sup"], sup)
    torch.testing.assert_close(terms["weak"], weak_term)
    torch.testing.assert_close(terms["kd"], kd)
    torch.testing.assert_close(terms["ent"], ent)
    assert weak  # every mask above mixes both kinds


@pytest.mark.parametrize(("mask", "expected"), [
    ([True, True, False], slice(0, 2)), ([False, True, True], slice(1, 3)), ([True, True], slice(0, 2)),
    ([False, False], slice(0, 0)), ([True, False, True], None), ([False, True, False, True], None)])
def test_row_index_is_a_slice_exactly_for_one_run_of_rows(mask, expected):
    mask = torch.tensor(mask)
    index = row_index(mask)
    if expected is None:
        assert torch.equal(index, mask)
    else:
        assert index == expected
    rows = torch.arange(len(mask))
    assert rows[index].tolist() == _cases(mask)


def _permuted(batch: Batch, order: list[int]) -> Batch:
    """The same cases in another row order (the teacher's rows follow the batch order of its cases)."""
    ran = _cases(batch.teacher_mask)
    teacher_order = [ran.index(i) for i in order if batch.teacher_mask[i]]
    return Batch(teacher=[t.detach()[teacher_order] for t in batch.teacher],
                 student=[s.detach()[order] for s in batch.student], targets=[t[order] for t in batch.targets],
                 is_full=batch.is_full[order], teacher_mask=batch.teacher_mask[order])


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("switches", [{}, {"kd_on": "all"}, {"entropy_on": "weak"}, {"legacy": True},
                                      {"confidence_term": "pseudo_teacher", "kd_on": "all"}])
def test_full_rows_first_changes_no_term(dim, switches):
    """The trainer puts the fully labeled rows first (their row sets become views); the objective must not see it."""
    batch = _batch(dim, [False, True, False, True, False], teacher_all=switches.get("kd_on") == "all")
    full_first = [1, 3, 0, 2, 4]
    loss = _confkd(**switches)
    total, terms = _run(loss, batch)
    total_sorted, terms_sorted = _run(loss, _permuted(batch, full_first))
    torch.testing.assert_close(total_sorted, total.detach())
    for name in TERMS:
        torch.testing.assert_close(terms_sorted[name], terms[name])


def test_the_teacher_must_run_on_every_full_case():
    batch = _batch("2d", [True, False, True])
    batch.teacher_mask = torch.tensor([True, False, False])
    batch.teacher = [t[:1] for t in batch.teacher]
    with pytest.raises(ValueError, match="every fully labeled case"):
        _run(_confkd(), batch)


# --- stop-gradient ---------------------------------------------------------------------------------------------------


def _kd_only(**switches) -> ConfKDLoss:
    """Only ``kd_weight · L_kd`` carries gradient: L_s and L_w are graph-connected zeros, λ_w = λ_ent = 0."""
    config = make_config(weak_weight=0.0, entropy_weight=0.0, kd_weight=1.0, **switches)
    return ConfKDLoss(_zero_loss, _zero_loss, config)


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
@pytest.mark.parametrize("legacy", [False, True])
def test_detached_teacher_gets_no_kd_gradient(dim, direction, legacy):
    batch = _batch(dim, [True, False, True, False])
    total, terms = _run(_kd_only(detach_teacher=True, kd_direction=direction, legacy=legacy), batch)
    assert terms["kd"].item() > 0.0
    total.backward()
    for t in batch.teacher:
        assert t.grad is not None and torch.equal(t.grad, torch.zeros_like(t.grad))
    student = batch.student[0].grad
    assert student[batch.is_full].abs().sum() > 0
    assert torch.equal(student[~batch.is_full], torch.zeros_like(student[~batch.is_full]))


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
@pytest.mark.parametrize("legacy", [False, True])
def test_undetached_teacher_gets_kd_gradient(dim, direction, legacy):
    batch = _batch(dim, [True, False, True, False])
    total, _ = _run(_kd_only(detach_teacher=False, kd_direction=direction, legacy=legacy), batch)
    total.backward()
    assert batch.teacher[0].grad.abs().sum(dim=tuple(range(1, batch.teacher[0].ndim))).min() > 0
    assert batch.student[0].grad[batch.is_full].abs().sum() > 0
    # L_kd is full resolution only: lower teacher scales get (connected) zeros
    for t in batch.teacher[1:]:
        assert torch.equal(t.grad, torch.zeros_like(t.grad))


@pytest.mark.parametrize("confidence_term", ["pseudo_self", "pseudo_teacher"])
def test_pseudo_mask_reference_is_detached(confidence_term):
    batch = _batch("2d", [True, False, True, False], teacher_all=True)
    config = make_config(weak_weight=0.0, kd_weight=0.0, entropy_weight=1.0,
                          confidence_term=confidence_term, detach_teacher=False)
    total, terms = _run(ConfKDLoss(_zero_loss, _zero_loss, config), batch)
    assert terms["ent"].item() > 0.0
    total.backward()
    assert torch.equal(batch.teacher[0].grad, torch.zeros_like(batch.teacher[0]))
    assert batch.student[0].grad.abs().sum() > 0


# --- case sets -------------------------------------------------------------------------------------------------------


def _perturbed(batch: Batch, student_case: int | None = None, teacher_row: int | None = None) -> Batch:
    with torch.no_grad():
        student = [s.clone() for s in batch.student]
        teacher = [t.clone() for t in batch.teacher]
        if student_case is not None:
            student[0][student_case] = 5.0 * torch.randn_like(student[0][student_case])
        if teacher_row is not None:
            teacher[0][teacher_row] = 5.0 * torch.randn_like(teacher[0][teacher_row])
    return Batch(teacher, student, batch.targets, batch.is_full, batch.teacher_mask)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_kd_on_strong_uses_only_full_cases(dim):
    batch = _batch(dim, [True, False, True, False], teacher_all=True)
    loss = _confkd(kd_on="strong")
    kd = _run(loss, batch)[1]["kd"]
    assert _run(loss, _perturbed(batch, student_case=1))[1]["kd"].item() == kd.item()
    assert _run(loss, _perturbed(batch, teacher_row=3))[1]["kd"].item() == kd.item()
    assert _run(loss, _perturbed(batch, student_case=2))[1]["kd"].item() != kd.item()
    with torch.no_grad():
        torch.testing.assert_close(kd, kl_divergence(batch.teacher[0][[0, 2]], batch.student[0][[0, 2]]))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_kd_on_all_uses_every_case(dim):
    batch = _batch(dim, [True, False, True, False], teacher_all=True)
    loss = _confkd(kd_on="all")
    kd = _run(loss, batch)[1]["kd"]
    assert _run(loss, _perturbed(batch, student_case=1))[1]["kd"].item() != kd.item()
    assert _run(loss, _perturbed(batch, teacher_row=3))[1]["kd"].item() != kd.item()
    with torch.no_grad():
        torch.testing.assert_close(kd, kl_divergence(batch.teacher[0], batch.student[0]))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_entropy_on_weak_ignores_full_cases(dim):
    batch = _batch(dim, [True, False, True, False])
    loss = _confkd(entropy_on="weak")
    ent = _run(loss, batch)[1]["ent"]
    with torch.no_grad():
        torch.testing.assert_close(ent, entropy(batch.student[0][[1, 3]]))
    assert _run(loss, _perturbed(batch, student_case=0))[1]["ent"].item() == ent.item()
    assert _run(loss, _perturbed(batch, student_case=1))[1]["ent"].item() != ent.item()
    ent_all = _run(_confkd(entropy_on="all"), batch)[1]["ent"]
    assert _run(_confkd(entropy_on="all"), _perturbed(batch, student_case=0))[1]["ent"].item() != ent_all.item()


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("entropy_on", ["weak", "all"])
@pytest.mark.parametrize("threshold", [0.0, 0.7])
def test_pseudo_mask_confidence_terms(dim, entropy_on, threshold):
    batch = _batch(dim, [False, True, True, False], teacher_all=True)
    cases = _cases(~batch.is_full) if entropy_on == "weak" else list(range(4))
    common = {"entropy_on": entropy_on, "pseudo_threshold": threshold}
    ent_self = _run(_confkd(confidence_term="pseudo_self", **common), batch)[1]["ent"]
    ent_teacher = _run(_confkd(confidence_term="pseudo_teacher", **common), batch)[1]["ent"]
    with torch.no_grad():
        student = batch.student[0][cases]
        torch.testing.assert_close(ent_self, pseudo_mask_cross_entropy(student, student, threshold))
        torch.testing.assert_close(ent_teacher, pseudo_mask_cross_entropy(student, batch.teacher[0][cases], threshold))


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("entropy_on", ["all", "weak"])
def test_perturbed_view_takes_the_teachers_clean_view_on_the_other_cases(dim, entropy_on):
    """``student_view = "perturbed"``: on full cases the reference is the teacher's own row, on the others the
    teacher's logits of the clean view; nothing of the reference trains."""
    batch = _batch(dim, [True, False, True, False])  # the teacher ran on the full cases only
    view = 3 * torch.randn(2, CLASSES, *batch.student[0].shape[2:])
    loss = _confkd(student_view="perturbed", confidence_term="pseudo_teacher", entropy_on=entropy_on,
                   pseudo_threshold=0.5)
    total, terms = loss(batch.teacher, batch.student, batch.targets, batch.is_full, batch.teacher_mask, 1.0, view)
    reference = torch.stack([batch.teacher[0][0], view[0], batch.teacher[0][1], view[1]]).detach()
    cases = [1, 3] if entropy_on == "weak" else [0, 1, 2, 3]
    with torch.no_grad():
        expected = pseudo_mask_cross_entropy(batch.student[0][cases], reference[cases], 0.5)
    torch.testing.assert_close(terms["ent"], expected)
    # the confidence term sends no gradient into the teacher: its rows only get the supervised and KL gradients
    without = loss.config.entropy_weight * terms["ent"]
    assert without > 0
    grads = torch.autograd.grad(total, batch.teacher[0])[0]
    reference_loss = _confkd(student_view="perturbed", confidence_term="pseudo_teacher", entropy_on=entropy_on,
                             pseudo_threshold=0.5, entropy_weight=0.0)
    total_without, _ = reference_loss(batch.teacher, batch.student, batch.targets, batch.is_full, batch.teacher_mask,
                                      1.0, view)
    torch.testing.assert_close(grads, torch.autograd.grad(total_without, batch.teacher[0])[0])


@pytest.mark.parametrize("view", ["perturbed", "cutmix"])
@pytest.mark.parametrize("switches", [{"confidence_term": "entropy"}, {"kd_on": "all"}, {"legacy": True}])
def test_other_views_need_the_teachers_labels_as_reference(view, switches):
    with pytest.raises(ValueError, match=f"student_view='{view}'"):
        make_config(student_view=view, **{"confidence_term": "pseudo_teacher", **switches})


def test_teacher_view_is_given_exactly_with_the_perturbed_view():
    batch = _batch("2d", [True, False])
    with pytest.raises(ValueError, match="exactly when"):
        _confkd()(batch.teacher, batch.student, batch.targets, batch.is_full, batch.teacher_mask, 1.0,
                  torch.zeros(1, CLASSES, *batch.student[0].shape[2:]))


# --- empty case and voxel sets: the DDP "graph-connected zero" contract ---------------------------------------------


SCENARIOS = {
    # name: (is_full, labels of weak cases present?, switches that make the term under test empty, term)
    "no_full_case": ([False, False, False], True, {}, "sup"),
    "no_labeled_voxel": ([False, False], False, {}, "weak"),
    "all_full": ([True, True, True], True, {"entropy_on": "weak"}, "ent"),
}


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("switches", [{}, {"kd_on": "all"}, {"confidence_term": "pseudo_teacher"},
                                      {"student_strong_labels": "derived_weak"}, {"confidence_term": "pseudo_self"},
                                      LEGACY])
def test_empty_sets_give_finite_graph_connected_zeros(dim, scenario, switches):
    is_full, has_labels, scenario_switches, empty_term = SCENARIOS[scenario]
    config = {**switches, **scenario_switches}
    if switches.get("legacy") and empty_term == "ent":
        config["entropy_on"] = "all"  # the legacy entropy always runs on every case (strong ones three times)
    loss = _confkd(**config)
    batch = _batch(dim, is_full, teacher_all=loss.config.teacher_on_all, no_labels=not has_labels)
    total, terms = _run(loss, batch)
    assert torch.isfinite(total)
    for name, value in terms.items():
        assert torch.isfinite(value), name
    if not (switches.get("legacy") and empty_term == "ent"):
        assert terms[empty_term].item() == 0.0
    if scenario == "no_full_case" and loss.config.kd_on == "strong":
        assert terms["kd"].item() == 0.0
    total.backward()
    for i, logits in enumerate(batch.logits()):
        assert logits.grad is not None, f"logits #{i} ({tuple(logits.shape)}) are not in the graph"
        assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_teacher_without_rows_is_still_in_the_graph(dim):
    batch = _batch(dim, [False, False], teacher_all=False)
    assert all(t.shape[0] == 0 for t in batch.teacher)
    total, terms = _run(_confkd(), batch)
    assert terms["sup"].item() == 0.0 and terms["kd"].item() == 0.0
    total.backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in batch.teacher)


# --- deep supervision ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("weights", [DS_WEIGHTS, (0.6, 0.4, 0.0), (1.0, 0.0, 0.0)])
def test_weak_term_is_the_weighted_sum_over_scales(dim, weights):
    batch = _batch(dim, [True, False, True, False])
    _, terms = _run(_confkd(weights=weights), batch)
    with torch.no_grad():
        expected = sum(w * partial_cross_entropy(o, t, IGNORE)
                       for w, o, t in zip(weights, batch.student, batch.targets, strict=True) if w != 0)
    torch.testing.assert_close(terms["weak"], expected)
    assert len(batch.student) == 3
    assert [tuple(s.shape[2:]) for s in batch.student] == SCALES[dim]


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_deep_supervised_partial_ce_skips_zero_weights(dim):
    batch = _batch(dim, [True, False])
    outputs = [s.detach().clone().requires_grad_() for s in batch.student]
    with torch.no_grad():
        outputs[2].fill_(float("nan"))  # multiplied by 0 it would still poison the sum; skipped it cannot
    value = DeepSupervisedPartialCE(IGNORE, (0.7, 0.3, 0.0))(outputs, batch.targets)
    assert torch.isfinite(value)
    expected = 0.7 * partial_cross_entropy(outputs[0], batch.targets[0], IGNORE) + 0.3 * partial_cross_entropy(
        outputs[1], batch.targets[1], IGNORE)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert outputs[2].grad is None and outputs[0].grad is not None and outputs[1].grad is not None


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_kd_and_entropy_use_the_highest_resolution_only(dim):
    batch = _batch(dim, [True, False, True])
    loss = _confkd()
    _, terms = _run(loss, batch)
    changed = _perturbed(batch)
    with torch.no_grad():
        changed.student[1].mul_(-3.0)
        changed.teacher[2].mul_(5.0)
    _, changed_terms = _run(loss, changed)
    assert changed_terms["kd"].item() == terms["kd"].item()
    assert changed_terms["ent"].item() == terms["ent"].item()


# --- derived weak labels on strong cases -----------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("dtype", [torch.int16, torch.long, torch.float32])
def test_derived_weak_targets_are_seeds_of_the_dense_target(dim, dtype):
    batch = _batch(dim, [True, False, True, False], dtype=dtype)
    originals = [t.clone() for t in batch.targets]
    loss = _confkd(student_strong_labels="derived_weak")
    derived = loss.student_targets(batch.targets, batch.is_full)
    assert all(torch.equal(t, o) for t, o in zip(batch.targets, originals, strict=True))  # inputs untouched
    full, weak = batch.is_full, ~batch.is_full
    for scale, (seed, dense) in enumerate(zip(derived, batch.targets, strict=True)):
        assert seed.shape == dense.shape and seed.dtype == dense.dtype
        assert torch.equal(seed[weak], dense[weak]), f"weak cases changed at scale {scale}"
        annotated = seed[full] != IGNORE
        assert torch.equal(seed[full][annotated], dense[full][annotated]), f"wrong class at scale {scale}"
        assert annotated.sum() < (dense[full] != IGNORE).sum(), f"nothing eroded at scale {scale}"
    # full resolution: exactly the erosion seeds, every foreground class present, no background seed
    torch.testing.assert_close(derived[0][full], erosion_seeds(batch.targets[0][full], IGNORE, 10))
    for case in derived[0][full]:
        assert set(torch.unique(case).tolist()) == {1, 2, IGNORE}


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_derived_weak_labels_feed_the_weak_term(dim):
    batch = _batch(dim, [True, False, True, False])
    loss = _confkd(student_strong_labels="derived_weak")
    _, terms = _run(loss, batch)
    with torch.no_grad():
        expected = _ds_partial_ce(batch.student, loss.student_targets(batch.targets, batch.is_full))
        dense = _ds_partial_ce(batch.student, batch.targets)
    torch.testing.assert_close(terms["weak"], expected)
    assert terms["weak"].item() != pytest.approx(dense.item())


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_full_student_labels_are_the_targets(dim):
    batch = _batch(dim, [True, False, True, False])
    out = _confkd(student_strong_labels="full").student_targets(batch.targets, batch.is_full)
    assert len(out) == len(batch.targets)
    assert all(torch.equal(a, b) for a, b in zip(out, batch.targets, strict=True))


def test_derived_weak_without_full_case_returns_the_targets():
    batch = _batch("2d", [False, False])
    out = _confkd(student_strong_labels="derived_weak").student_targets(batch.targets, batch.is_full)
    assert all(torch.equal(a, b) for a, b in zip(out, batch.targets, strict=True))


# --- legacy arithmetic -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("teacher_all", [False, True])
@pytest.mark.parametrize("student_labels", ["full", "derived_weak"])
def test_legacy_terms_follow_the_script(dim, teacher_all, student_labels):
    batch = _batch(dim, [True, False, False, True, False], teacher_all=teacher_all)
    loss = _confkd(student_strong_labels=student_labels, **LEGACY)
    total, terms = _run(loss, batch)
    full, weak = _cases(batch.is_full), _cases(~batch.is_full)
    rows = _teacher_rows(batch, full)
    student_targets = loss.student_targets(batch.targets, batch.is_full)
    with torch.no_grad():
        kd = legacy_kl(batch.teacher[0][rows], batch.student[0][full], temperature=2.0, alpha=0.5)
        ent = legacy_entropy(batch.student[0][full], batch.student[0][weak])
        # the two parts of the partial CE are normalised separately and added
        weak_term = (_ds_partial_ce([s[full] for s in batch.student], [t[full] for t in student_targets])
                     + _ds_partial_ce([s[weak] for s in batch.student], [t[weak] for t in student_targets]))
    torch.testing.assert_close(terms["kd"], kd)
    torch.testing.assert_close(terms["ent"], ent)
    torch.testing.assert_close(terms["weak"], weak_term)
    total.backward()
    teacher_grad = batch.teacher[0].grad
    for case, row in zip(full, rows, strict=True):
        assert teacher_grad[row].abs().sum() > 0, f"no gradient on the teacher for full case {case}"


def test_legacy_kd_gradient_reaches_the_teacher():
    batch = _batch("2d", [True, False, True, False])
    total, _ = _run(_kd_only(**{k: v for k, v in LEGACY.items() if k != "detach_teacher"}, detach_teacher=False),
                    batch)
    total.backward()
    assert batch.teacher[0].grad.abs().sum() > 0


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("switches", [{}, {"student_strong_labels": "derived_weak"}, LEGACY])
def test_bfloat16_logits_give_finite_float32_terms(dim, switches):
    batch = _batch(dim, [True, False, True, False])
    batch.teacher = [t.detach().to(torch.bfloat16).requires_grad_() for t in batch.teacher]
    batch.student = [s.detach().to(torch.bfloat16).requires_grad_() for s in batch.student]
    total, terms = _run(_confkd(supervised=DeepSupervisedPartialCE(IGNORE, DS_WEIGHTS), **switches), batch)
    assert total.dtype == torch.float32 and torch.isfinite(total)
    for name, value in terms.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), name
    total.backward()
    for logits in batch.logits():
        assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
        assert torch.isfinite(logits.grad.float()).all()
