"""The ConfKD loss is finite for every batch composition: no strong case, no labeled voxel, all-ignore patches, and
under fp32, bf16 and fp16 CPU autocast; and its pure terms stay finite for extreme logits.

The network is the real dual-decoder network built from the tiny 2d plans of conftest.py, in ``train()`` mode; the
objective is built exactly as ``nnUNetTrainerConfKD.initialize`` builds it on a single process (nnU-Net's Dice + CE
with ``ddp=False`` and the non-DDP deep-supervision weights, the last scale weighted 0).

Zero strong cases: the trainer never composes such a batch (``strong_count`` is at least 1, ``compose_batch`` and
``check_split`` refuse a training split without a full case), yet the loss module must stay finite there: the network
returns 0-row teacher outputs that stay in the autograd graph (``test_network_runs_the_teacher_on_zero_rows``), and
the loss is fed such outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    IGNORE_LABEL,
    NUM_CLASSES,
    NUM_INPUT_CHANNELS,
    make_plans_manager,
    mixed_batch,
    trainer_class,
    trainer_confkd_loss,
)

from nnunetv2_confkd.training.losses import (
    entropy,
    kl_divergence,
    legacy_entropy,
    legacy_kl,
    partial_cross_entropy,
    pseudo_mask_cross_entropy,
)
from nnunetv2_confkd.training.objective import TERMS
from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD

TRAINER_NAMES = ("nnUNetTrainerConfKD", "nnUNetTrainerConfKD_legacy", "nnUNetTrainerConfKD_pseudoMask",
                 "nnUNetTrainerConfKD_pseudoMaskTeacher", "nnUNetTrainerConfKD_noKD")
# supervision level of every case of a batch of 4; "weak_empty": a weak case without any labeled voxel
COMPOSITIONS = {
    "all_full": ("full",) * 4,
    "2full_2weak": ("full", "weak", "full", "weak"),
    "1full_3unlabeled": ("unlabeled", "full", "unlabeled", "unlabeled"),
    "0full_4weak": ("weak",) * 4,
    "2full_2weak_empty": ("weak_empty", "full", "weak_empty", "full"),
    "all_ignore": ("unlabeled",) * 4,  # every voxel of every case is ignore (full cases never hold ignore voxels)
}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.fixture(scope="module")
def setup():
    """Plans, the deep-supervision output shapes and one initial state of the dual network (re-loaded per test)."""
    plans_manager, configuration_manager = make_plans_manager("2d")
    torch.manual_seed(0)
    net = nnUNetTrainerConfKD.build_network_architecture(plans_manager, configuration_manager, NUM_INPUT_CHANNELS,
                                                         NUM_CLASSES, True)
    patch = tuple(configuration_manager.patch_size)
    cumulative = np.cumprod(np.vstack(configuration_manager.pool_op_kernel_sizes), axis=0)[:-1]
    ds_shapes = [tuple(p // int(s) for p, s in zip(patch, c, strict=True)) for c in cumulative]
    return {"net": net, "state": {k: v.clone() for k, v in net.state_dict().items()}, "patch": patch,
            "ds_shapes": ds_shapes, "batch_dice": configuration_manager.batch_dice}


def _batch(levels, patch, ds_shapes, seed: int = 0):
    return mixed_batch(levels, patch, ds_shapes, torch.Generator().manual_seed(seed))


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)


def _check_autocast_supported(dtype) -> None:
    if dtype is None:
        return
    try:
        with _autocast(dtype):
            torch.nn.functional.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3))
    except (RuntimeError, TypeError, ValueError) as e:
        pytest.skip(f"CPU autocast with {dtype} is not supported by torch {torch.__version__}: {e}")


@pytest.mark.parametrize("trainer_name", TRAINER_NAMES)
@pytest.mark.parametrize("composition", list(COMPOSITIONS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
def test_loss_and_gradients_are_finite(setup, dtype_name, composition, trainer_name):
    dtype = DTYPES[dtype_name]
    _check_autocast_supported(dtype)
    net = setup["net"]
    net.load_state_dict(setup["state"])
    net.train()
    net.zero_grad(set_to_none=True)
    loss_fn = trainer_confkd_loss(trainer_class(trainer_name), len(setup["ds_shapes"]), setup["batch_dice"], ddp=False)
    x, targets, is_full = _batch(COMPOSITIONS[composition], setup["patch"], setup["ds_shapes"])
    teacher_mask = torch.ones_like(is_full) if loss_fn.config.teacher_on_all else is_full.clone()
    assert not loss_fn.config.teacher_on_all or trainer_name == "nnUNetTrainerConfKD_pseudoMaskTeacher"

    with _autocast(dtype):  # forward and loss under autocast, as nnUNetTrainerConfKD.train_step on CUDA
        if bool(teacher_mask.any()):
            output = net(x, teacher_cases=torch.nonzero(teacher_mask).flatten())
            teacher = list(output.teacher)
        else:  # no strong case: 0-row teacher outputs, still connected to the teacher decoder (module docstring)
            output = net(x, teacher_cases=None)
            teacher = [o[:0] for o in output.teacher]
        student = list(output.student)
        if dtype is not None:
            assert student[0].dtype == dtype  # autocast did act on the network
        assert [t.shape[0] for t in teacher] == [int(teacher_mask.sum())] * len(teacher)
        total, terms = loss_fn(teacher, student, targets, is_full, teacher_mask)

    assert torch.isfinite(total), f"total {total}"
    assert set(terms) == set(TERMS)
    for name, value in terms.items():
        assert torch.isfinite(value), f"term {name} = {value}"
    if bool(is_full.any()):
        assert terms["sup"] > 0
    else:
        assert terms["sup"] == 0

    total.backward()
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert any(n.startswith("student_decoder.") for n in grads) and any(n.startswith("encoder.") for n in grads)
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert bad == [], f"non-finite gradients in {bad[:5]}"


def test_network_runs_the_teacher_on_zero_rows(setup):
    """Unreachable from the trainer (strong_count >= 1), but the network must not fail on an empty index: instance norm
    rejects a 0-row batch, so the wrapper runs one case and keeps zero rows, still in the graph."""
    net = setup["net"]
    net.load_state_dict(setup["state"])
    net.train()
    x = torch.randn(2, NUM_INPUT_CHANNELS, *setup["patch"])
    output = net(x, teacher_cases=torch.zeros(0, dtype=torch.long))
    assert all(t.shape[0] == 0 for t in output.teacher)
    sum(t.sum() for t in output.teacher).backward()
    assert all(p.grad is not None for p in net.teacher_decoder.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------------------------
# the pure terms at extreme logits
# ---------------------------------------------------------------------------------------------------------------------

BF16_MAX = float(torch.finfo(torch.bfloat16).max)


def _extreme_logits(magnitude: float, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """``(2, C, 3, 5)`` logits of values in ``{-m, -m/2, 0, m/2, m}``, random per voxel."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=torch.float64) * magnitude
    return steps[torch.randint(0, 5, (2, NUM_CLASSES, 3, 5), generator=g)].to(dtype)


def _labels(logits: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Random labels in ``0..C-1`` with about a third of the voxels ignore, shaped ``(B, 1, *spatial)``."""
    g = torch.Generator().manual_seed(seed)
    shape = (logits.shape[0], 1, *logits.shape[2:])
    labels = torch.randint(0, NUM_CLASSES, shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < 0.3, torch.full_like(labels, IGNORE_LABEL), labels)


UNBOUNDED_FP32_TERMS = {
    "entropy": lambda a, b, y: entropy(a),
    "kl_teacher_student": lambda a, b, y: kl_divergence(a, b, 1.0),
    "kl_student_teacher_T2": lambda a, b, y: kl_divergence(b, a, 2.0),
    "partial_ce": lambda a, b, y: partial_cross_entropy(a, y, IGNORE_LABEL),
    "pseudo_self": lambda a, b, y: pseudo_mask_cross_entropy(a, a.detach(), 0.0),
    "pseudo_teacher_thresholded": lambda a, b, y: pseudo_mask_cross_entropy(a, b.detach(), 0.9),
    "legacy_entropy": lambda a, b, y: legacy_entropy(a[:1], a[1:]),
    "legacy_kl": lambda a, b, y: legacy_kl(b, a, 2.0, 0.5),
}


@pytest.mark.parametrize("term", list(UNBOUNDED_FP32_TERMS))
def test_terms_finite_for_fp32_logits_of_1e4(term):
    a = _extreme_logits(1e4, torch.float32, seed=0).requires_grad_()
    b = _extreme_logits(1e4, torch.float32, seed=2).requires_grad_()
    value = UNBOUNDED_FP32_TERMS[term](a, b, _labels(a))
    assert torch.isfinite(value), f"{term} = {value}"
    value.backward()
    for grad in (a.grad, b.grad):
        assert grad is None or torch.isfinite(grad).all()


def _argmax_labels(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().argmax(1, keepdim=True)


# Terms whose true value stays bounded (or 0) for any logits: they must be finite even at the largest bf16 logits,
# which a bf16-autocast network can emit. (Unbounded ones, such as CE on the class with logit -max, truly exceed
# float32 and may be inf there.)
BOUNDED_BF16_TERMS = {
    "entropy": lambda a: entropy(a),
    "kl_of_identical": lambda a: kl_divergence(a, a.detach(), 1.0),
    "partial_ce_on_argmax": lambda a: partial_cross_entropy(a, _argmax_labels(a), IGNORE_LABEL),
    "pseudo_self": lambda a: pseudo_mask_cross_entropy(a, a.detach(), 0.0),
    "legacy_entropy": lambda a: legacy_entropy(a[:1], a[1:]),
    "legacy_kl": lambda a: legacy_kl(a.detach().flip(1), a, 2.0, 0.5),
}
@pytest.mark.parametrize("term", list(BOUNDED_BF16_TERMS))
def test_bounded_terms_finite_for_bf16_max_logits(term):
    a = _extreme_logits(BF16_MAX, torch.bfloat16).requires_grad_()
    assert torch.isfinite(a).all() and a.abs().max() == BF16_MAX
    value = BOUNDED_BF16_TERMS[term](a)
    assert torch.isfinite(value), f"{term} = {value}"
    value.backward()
    assert torch.isfinite(a.grad).all()
