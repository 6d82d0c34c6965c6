"""The ConfKD objective: composes the pure terms of :mod:`nnunetv2_confkd.training.losses`.

``L = L_s + λ_w L_w + λ_kd L_kd + λ_ent L_ent``

* ``L_s``: nnU-Net's own supervised loss (Dice + CE with deep supervision, ``nnUNetTrainer._build_loss``) on the
  teacher head and the fully labeled cases only.
* ``L_w``: the student's loss on labeled voxels (partial CE by default) with nnU-Net's deep-supervision weights.
* ``L_kd``: KL distillation teacher -> student, full resolution only (project choice: closest to the paper, whose
  network has one output scale).
* ``L_ent``: Shannon entropy of the student (or a pseudo-mask CE in the PM baselines; with ``student_view``
  ``"perturbed"`` or ``"cutmix"`` the teacher's pseudo-mask of a clean view against the student on a perturbed one),
  full resolution only.

Every term whose case set is empty in a batch returns a graph-connected zero, so DDP sees a gradient for every
parameter in every step (DDP raises when a parameter gets no gradient in a step).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nnunetv2_confkd.training.losses import (
    connected_zero,
    entropy,
    kl_divergence,
    legacy_entropy,
    legacy_kl,
    partial_cross_entropy,
    pseudo_mask_cross_entropy,
)
from nnunetv2_confkd.training.seeds import erosion_seeds

TERMS = ("sup", "weak", "kd", "ent")

_CHOICES = {
    "kd_direction": ("teacher_student", "student_teacher"),
    "entropy_on": ("weak", "all"),
    "kd_on": ("strong", "all"),
    "student_strong_labels": ("derived_weak", "full"),
    "weak_loss": ("ce", "dice_ce"),
    "confidence_term": ("entropy", "pseudo_self", "pseudo_teacher"),
    "student_view": ("same", "perturbed", "cutmix"),
}


@dataclass(frozen=True)
class ConfKDConfig:
    """The switches of the ConfKD objective, validated. No defaults here: the defaults are the class attributes of
    ``nnUNetTrainerConfKD`` (one place), which ``nnUNetTrainerConfKD.confkd_config`` turns into this object."""

    ignore_label: int
    weak_weight: float
    kd_weight: float
    entropy_weight: float
    temperature: float
    kd_alpha: float
    detach_teacher: bool
    kd_direction: str
    entropy_on: str
    kd_on: str
    student_strong_labels: str
    weak_loss: str
    confidence_term: str
    pseudo_threshold: float
    seed_iterations: int
    legacy: bool
    student_view: str

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ConfKD switch {name}={getattr(self, name)!r} is not one of {allowed}")
        if not self.temperature > 0:  # also rejects NaN
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        for name in ("weak_weight", "kd_weight", "entropy_weight", "kd_alpha"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.student_view != "same" and (self.confidence_term != "pseudo_teacher" or self.kd_on != "strong"
                                            or self.legacy):
            raise ValueError(f"student_view={self.student_view!r} takes the teacher's labels of the clean view as the "
                             "student's target on the other cases: it needs confidence_term='pseudo_teacher', "
                             f"kd_on='strong' and legacy=False (got {self.confidence_term!r}, {self.kd_on!r}, "
                             f"{self.legacy})")

    @property
    def teacher_on_all(self) -> bool:
        """Whether the teacher decoder must run on every case of the batch, not only on the strong ones (with
        another ``student_view`` it predicts the other cases apart, on their clean view, without gradient)."""
        return self.kd_on == "all" or (self.confidence_term == "pseudo_teacher" and self.student_view == "same")


class DeepSupervisedPartialCE(nn.Module):
    """Partial CE summed over deep-supervision scales with nnU-Net's weights (zero weights are skipped, as in
    ``DeepSupervisionWrapper``)."""

    def __init__(self, ignore_label: int, weights: Sequence[float]):
        super().__init__()
        self.ignore_label = ignore_label
        self.weights = tuple(float(w) for w in weights)
        if not any(w != 0.0 for w in self.weights):
            raise ValueError(f"at least one deep-supervision weight must be non-zero, got {self.weights}")

    def forward(self, outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
        terms = [w * partial_cross_entropy(o, t, self.ignore_label)
                 for w, o, t in zip(self.weights, outputs, targets, strict=False) if w != 0.0]
        return sum(terms)


def row_index(mask: Tensor) -> slice | Tensor:
    """An index of the rows where the bool ``mask`` is True: a ``slice`` (indexing gives views, no copy) when they form
    one run, as the trainer's batches do (fully labeled rows first), else the mask itself (indexing copies)."""
    n = int(mask.sum())
    first = int(mask.int().argmax()) if n else 0
    if bool(mask[first:first + n].all()):
        return slice(first, first + n)
    return mask


def _rows(outputs: Sequence[Tensor], mask: Tensor) -> list[Tensor]:
    index = row_index(mask)
    return [o[index] for o in outputs]


def _take(x: Tensor, mask: Tensor) -> Tensor:
    return x[row_index(mask)]


def _teacher_everywhere(teacher: Tensor, teacher_view: Tensor, is_full: Tensor, teacher_mask: Tensor) -> Tensor:
    """Teacher logits for every case in batch order: its rows on the full cases, ``teacher_view`` on the others."""
    out = teacher_view.new_empty((len(is_full), *teacher_view.shape[1:]))
    out[row_index(is_full)] = _take(teacher, is_full[teacher_mask]).to(out.dtype)
    out[row_index(~is_full)] = teacher_view
    return out


def _resize_like(labels: Tensor, like: Tensor) -> Tensor:
    if labels.shape[2:] == like.shape[2:]:
        return labels
    return F.interpolate(labels.float(), size=like.shape[2:], mode="nearest-exact").to(like.dtype)


class ConfKDLoss(nn.Module):
    """Total ConfKD loss and its terms.

    Args:
        supervised_loss: nnU-Net's deep-supervised loss (``trainer.loss``), used for ``L_s`` on the teacher head.
        weak_loss: the student's loss on labeled voxels over deep-supervision scales, ``(outputs, targets) -> Tensor``.
        config: the switches.
    """

    def __init__(self, supervised_loss: Callable, weak_loss: Callable, config: ConfKDConfig):
        super().__init__()
        self.supervised_loss = supervised_loss
        self.weak_loss = weak_loss
        self.config = config

    def student_targets(self, targets: Sequence[Tensor], is_full: Tensor) -> list[Tensor]:
        """What the student sees: weak labels as given, and on strong cases either the dense mask or seeds derived
        from it at full resolution and resampled (nearest) to each deep-supervision scale."""
        if self.config.student_strong_labels == "full" or not bool(is_full.any()):
            return list(targets)
        full = row_index(is_full)
        seeds = erosion_seeds(targets[0][full], self.config.ignore_label, self.config.seed_iterations)
        out = []
        for t in targets:
            t = t.clone()
            t[full] = _resize_like(seeds, t)
            out.append(t)
        return out

    def forward(self, teacher_out: Sequence[Tensor], student_out: Sequence[Tensor], targets: Sequence[Tensor],
                is_full: Tensor, teacher_mask: Tensor, entropy_scale: float = 1.0,
                teacher_view: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the objective.

        Args:
            teacher_out: teacher logits per deep-supervision scale (highest resolution first), rows = the cases where
                ``teacher_mask`` is True, in batch order.
            student_out: student logits per scale, all ``B`` cases.
            targets: label maps per scale ``(B, 1, *spatial)``; strong cases dense, others with the ignore label.
            is_full: ``(B,)`` bool, True for fully labeled cases (best on the host: a device mask is copied there).
            teacher_mask: ``(B,)`` bool, the cases the teacher ran on (must include every full case; same).
            entropy_scale: multiplier of ``λ_ent`` (ramp-up), in ``[0, 1]``.
            teacher_view: with ``student_view`` other than ``"same"``, the teacher's full-resolution logits on the
                clean view of the cases that are not fully labeled (in batch order, no gradient; with ``"cutmix"``
                mixed by the same boxes as the student's input): the reference of the ``"pseudo_teacher"`` term on
                those cases, whose student rows saw the other view.

        Returns:
            ``(total, terms)``; ``terms`` holds detached ``sup``, ``weak``, ``kd``, ``ent`` values.
        """
        cfg = self.config
        # the row masks live on the host: row sets become slices without a device sync
        is_full, teacher_mask = is_full.cpu(), teacher_mask.cpu()
        full_in_teacher = is_full[teacher_mask]
        if bool((is_full & ~teacher_mask).any()):
            raise ValueError("the teacher must run on every fully labeled case of the batch")
        if cfg.teacher_on_all and not bool(teacher_mask.all()):
            raise ValueError(f"kd_on={cfg.kd_on!r} / confidence_term={cfg.confidence_term!r} need the teacher on "
                             "every case of the batch")
        if (teacher_view is not None) != (cfg.student_view != "same"):
            raise ValueError("teacher_view is given exactly when student_view is not 'same'")

        if bool(is_full.any()):
            sup = self.supervised_loss(_rows(teacher_out, full_in_teacher), _rows(targets, is_full))
        else:
            sup = connected_zero(*teacher_out)
        weak = self.weak_term(student_out, self.student_targets(targets, is_full), is_full)
        kd = self.kd_term(teacher_out[0], student_out[0], is_full, teacher_mask)
        ent = self.ent_term(teacher_out[0], student_out[0], is_full, teacher_mask, teacher_view)
        total = sup + cfg.weak_weight * weak + cfg.kd_weight * kd + cfg.entropy_weight * entropy_scale * ent
        terms = {"sup": sup, "weak": weak, "kd": kd, "ent": ent}
        return total, {k: v.detach() if torch.is_tensor(v) else torch.tensor(float(v)) for k, v in terms.items()}

    def weak_term(self, student_out: Sequence[Tensor], student_targets: Sequence[Tensor], is_full: Tensor) -> Tensor:
        """``L_w``: the student's loss on labeled voxels over the deep-supervision scales (arguments as
        :meth:`forward`; ``student_targets`` from :meth:`student_targets`)."""
        if not self.config.legacy:
            return self.weak_loss(student_out, student_targets)
        # the script normalises the labels derived from strong cases and those of weak cases separately
        parts = [self.weak_loss(_rows(student_out, m), _rows(student_targets, m)) for m in (is_full, ~is_full)
                 if bool(m.any())]
        return sum(parts) + connected_zero(*student_out)

    def kd_term(self, teacher: Tensor, student: Tensor, is_full: Tensor, teacher_mask: Tensor) -> Tensor:
        """``L_kd`` on the highest-resolution logits of both heads (arguments as :meth:`forward`)."""
        cfg = self.config
        cases = is_full if cfg.kd_on == "strong" else teacher_mask
        t = _take(teacher, cases[teacher_mask])
        s = _take(student, cases)
        if cfg.detach_teacher:
            t = t.detach()
        if cfg.legacy:
            return legacy_kl(t, s, cfg.temperature, cfg.kd_alpha) + connected_zero(teacher, student)
        p, q = (t, s) if cfg.kd_direction == "teacher_student" else (s, t)
        return kl_divergence(p, q, cfg.temperature) + connected_zero(teacher, student)

    def ent_term(self, teacher: Tensor, student: Tensor, is_full: Tensor, teacher_mask: Tensor,
                 teacher_view: Tensor | None = None) -> Tensor:
        """``L_ent``: the confidence term of ``confidence_term`` on the highest-resolution logits (arguments as
        :meth:`forward`)."""
        cfg = self.config
        if cfg.legacy:
            return legacy_entropy(_take(student, is_full), _take(student, ~is_full))
        cases = ~is_full if cfg.entropy_on == "weak" else torch.ones_like(is_full)
        s = _take(student, cases)
        if cfg.confidence_term == "entropy":
            value = entropy(s)
        elif cfg.confidence_term == "pseudo_self":
            value = pseudo_mask_cross_entropy(s, s.detach(), cfg.pseudo_threshold)
        else:
            reference = _take(teacher, cases[teacher_mask]).detach() if teacher_view is None else \
                _take(_teacher_everywhere(teacher.detach(), teacher_view, is_full, teacher_mask), cases)
            value = pseudo_mask_cross_entropy(s, reference, cfg.pseudo_threshold)
        return value + connected_zero(student)
