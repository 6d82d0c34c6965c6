"""Shared-encoder, two-decoder network, and where a model's plans name its inference head. Imports nothing from
nnU-Net.

In ``train()`` the wrapper returns :class:`DualOutput` (teacher, student). The teacher decoder can run on a subset of
the batch (``teacher_cases``: the first ``n`` rows, as views of the skips, or any listed rows): nnU-Net normalises
per sample (instance norm), so the teacher's outputs on a subset are exactly its outputs on those rows of the full
batch. In ``eval()`` the wrapper runs the encoder and *one* decoder, the
``inference_head``, and returns its output unchanged (one tensor once deep supervision is off), which is what
``nnUNetPredictor`` expects; inference therefore costs what a plain nnU-Net with the same plans costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from torch import Tensor, nn

HEADS = ("student", "teacher")
#: key of a configuration in a model's plans.json naming the head ``eval()`` runs, where the trainer chose it from its
#: data (``nnUNetTrainerConfKDAuto``); without it the class's ``inference_head`` decides
PLANS_HEAD_KEY = "confkd_inference_head"


def configured_head(configuration: Mapping, default: str) -> str:
    """The inference head a configuration of the plans names (:data:`PLANS_HEAD_KEY`), else ``default``.

    Example:
        >>> configured_head({"patch_size": [64]}, "student"), configured_head({PLANS_HEAD_KEY: "teacher"}, "student")
        ('student', 'teacher')
    """
    return configuration.get(PLANS_HEAD_KEY) or default


class DualOutput(NamedTuple):
    """Outputs of both heads; each a tensor, or a list of tensors (highest resolution first) under deep supervision."""

    teacher: Tensor | list[Tensor]
    student: Tensor | list[Tensor]


class DualDecoderUNet(nn.Module):
    """Encoder shared by a teacher and a student decoder of identical architecture.

    Args:
        encoder: module returning the list of skip tensors (bottleneck last), e.g. ``PlainConvEncoder``.
        teacher_decoder: decoder taking the skips (``UNetDecoder``); trained on fully labeled cases.
        student_decoder: decoder of the same architecture; trained on all cases.
        inference_head: ``"student"`` or ``"teacher"``, the head ``eval()`` runs.
    """

    def __init__(self, encoder: nn.Module, teacher_decoder: nn.Module, student_decoder: nn.Module,
                 inference_head: str = "student"):
        super().__init__()
        if inference_head not in HEADS:
            raise ValueError(f"inference_head must be one of {HEADS}, got {inference_head!r}")
        self.encoder = encoder
        # UNetDecoder registers its encoder as a sub-module: point both at the shared one, so that no second encoder
        # hides in the module tree (memory, and a DDP unused-parameter crash).
        for decoder in (teacher_decoder, student_decoder):
            if hasattr(decoder, "encoder"):
                decoder.encoder = encoder
        self.teacher_decoder = teacher_decoder
        self.student_decoder = student_decoder
        self.inference_head = inference_head

    @property
    def deep_supervision(self) -> bool:
        return bool(self.student_decoder.deep_supervision)

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self.teacher_decoder.deep_supervision = enabled
        self.student_decoder.deep_supervision = enabled

    def forward(self, x: Tensor, teacher_cases: Tensor | int | None = None) -> DualOutput | Tensor | list[Tensor]:
        """Run the network.

        Args:
            x: input batch ``(B, C_in, *spatial)``.
            teacher_cases: the batch rows on which the teacher runs in ``train()``: an int ``n`` for the first ``n``
                rows (what the trainer passes: its batches hold the fully labeled rows first), an ``(n,)`` long tensor
                of rows, or None for all rows. A fixed ``n`` keeps shapes static under ``torch.compile``.
        """
        skips = self.encoder(x)
        if not self.training:
            head = self.student_decoder if self.inference_head == "student" else self.teacher_decoder
            return head(skips)
        student = self.student_decoder(skips)
        if teacher_cases is None:
            return DualOutput(self.teacher_decoder(skips), student)
        n = teacher_cases if isinstance(teacher_cases, int) else teacher_cases.numel()
        if n == 0:
            # instance norm rejects an empty batch: run one case and keep zero rows, still in the autograd graph
            teacher = self.teacher_decoder([s[:1] for s in skips])
            return DualOutput([t[:0] for t in teacher] if isinstance(teacher, list) else teacher[:0], student)
        return DualOutput(self.teacher_decoder(teacher_skips(skips, teacher_cases)), student)


def teacher_logits(network: DualDecoderUNet, x: Tensor) -> Tensor:
    """The teacher's highest-resolution logits on ``x`` (encoder and teacher decoder; call it under ``no_grad`` for a
    reference that trains nothing)."""
    out = network.teacher_decoder(network.encoder(x))
    return out[0] if isinstance(out, (list, tuple)) else out


def teacher_skips(skips: list[Tensor], teacher_cases: Tensor | int | None) -> list[Tensor]:
    """The skips of the teacher's rows: all of them for None, views of the first ``n`` rows for an int ``n``, else the
    listed rows."""
    if teacher_cases is None:
        return skips
    if isinstance(teacher_cases, int):
        return [s[:teacher_cases] for s in skips]
    return [s.index_select(0, teacher_cases) for s in skips]


def count_parameters(module: nn.Module) -> int:
    """Number of distinct parameters (``parameters()`` de-duplicates shared ones)."""
    return sum(p.numel() for p in module.parameters())

