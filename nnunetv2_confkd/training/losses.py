"""Loss terms of ConfKD as pure, dimension-agnostic functions of logits.

Every function takes logits shaped ``(B, C, *spatial)`` (2D or 3D alike), computes in at least float32 and reduces
explicitly. Stop-gradients are *not* applied here: they are policy, decided by :mod:`.objective`.

References: Liu, Desrosiers, Ben Ayed, Dolz, "Segmentation with mixed supervision: Confidence maximization helps
knowledge distillation", MedIA 2023 (arXiv 2109.10902); the loss arithmetic of the authors' released script
(``josedolz/MSL-student-becomes-master:main.py`` at commit 68b98c2) for the ``legacy_*`` functions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CLASS_DIM = 1


def _upcast(x: Tensor) -> Tensor:
    """fp16/bf16 -> fp32; fp32 and fp64 are kept (a float64 gradcheck stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def connected_zero(*tensors: Tensor) -> Tensor:
    """A scalar zero that is still part of the autograd graph of ``tensors``.

    Returned by a term whose case or voxel set is empty, so that DDP (``find_unused_parameters=False``) sees a
    gradient, of value zero, for every parameter that produced ``tensors``.
    """
    return sum(_upcast(t).sum() * 0.0 for t in tensors)


def entropy_map(logits: Tensor) -> Tensor:
    """Per-voxel Shannon entropy (nats) of ``softmax(logits)`` along the class axis.

    Args:
        logits: ``(B, C, *spatial)``.

    Returns:
        ``(B, *spatial)`` entropies in ``[0, log C]``.

    Example:
        >>> round(entropy_map(torch.zeros(1, 4, 2, 2)).mean().item(), 6) == round(float(torch.log(torch.tensor(4.))), 6)
        True
    """
    log_p = F.log_softmax(_upcast(logits), dim=CLASS_DIM)
    p = log_p.exp()
    # 0 * log 0 = 0: with extreme logits a probability underflows to 0 while its log is -inf
    return -(p * torch.where(p > 0, log_p, torch.zeros_like(log_p))).sum(CLASS_DIM)


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy over cases and voxels, MedIA eq. of L_ent: ``1/(|E||Ω|) Σ_i Σ_v H(p_iv)``.

    An empty batch (``B = 0``) gives a graph-connected zero.
    """
    if logits.shape[0] == 0:
        return connected_zero(logits)
    return entropy_map(logits).mean()


def kl_divergence_map(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-voxel ``KL(softmax(p_logits/T) || softmax(q_logits/T))`` in nats, summed over classes.

    Args:
        p_logits: logits of the reference distribution ``p``, ``(B, C, *spatial)``.
        q_logits: logits of the approximating distribution ``q``, same shape.
        temperature: softmax temperature ``T > 0``.

    Returns:
        ``(B, *spatial)`` non-negative divergences.
    """
    if p_logits.shape != q_logits.shape:
        raise ValueError(f"KL needs equal shapes, got {tuple(p_logits.shape)} and {tuple(q_logits.shape)}")
    log_p = F.log_softmax(_upcast(p_logits) / temperature, dim=CLASS_DIM)
    log_q = F.log_softmax(_upcast(q_logits) / temperature, dim=CLASS_DIM)
    p = log_p.exp()
    return (p * torch.where(p > 0, log_p - log_q, torch.zeros_like(log_p))).sum(CLASS_DIM)


def kl_divergence(p_logits: Tensor, q_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``T² · mean_{i,v} KL(softmax(p/T) || softmax(q/T))``: the clean distillation term L_kd.

    The factor ``T²`` keeps the gradient scale roughly independent of ``T`` (Hinton et al. 2015). An empty batch gives
    a graph-connected zero.

    Example:
        >>> x = torch.randn(2, 3, 4, 5)
        >>> float(kl_divergence(x, x, temperature=2.0)) < 1e-6
        True
    """
    if p_logits.shape[0] == 0:
        return connected_zero(p_logits, q_logits)
    return temperature**2 * kl_divergence_map(p_logits, q_logits, temperature).mean()


def partial_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """Cross-entropy averaged over labeled voxels only (the partial CE of the student term L_w).

    ``1/|Ω_L| Σ_{v ∈ Ω_L} -log p_v[y_v]`` where ``Ω_L`` is the set of voxels whose label is not ``ignore_index``.
    With no labeled voxel the result is a graph-connected zero (plain ``F.cross_entropy`` would return NaN).

    Args:
        logits: ``(B, C, *spatial)``.
        target: integer labels ``(B, *spatial)`` or ``(B, 1, *spatial)``; ``ignore_index`` marks unlabeled voxels.
        ignore_index: the ignore label.
    """
    target = _squeeze_channel(target, logits)
    labeled = target != ignore_index
    safe_target = torch.where(labeled, target, torch.zeros_like(target)).long()
    nll = F.cross_entropy(_upcast(logits), safe_target, reduction="none")
    count = labeled.sum()
    return (nll * labeled).sum() / count.clamp_min(1)


def pseudo_mask_cross_entropy(logits: Tensor, reference_logits: Tensor, threshold: float = 0.0) -> Tensor:
    """CE of ``logits`` against the hard pseudo-mask ``argmax(reference_logits)`` (the pseudo-mask baselines).

    Voxels whose reference confidence ``max softmax`` is below ``threshold`` are left out; the mean runs over the rest
    (graph-connected zero if none remain). The caller detaches ``reference_logits``.
    """
    if logits.shape[0] == 0:
        return connected_zero(logits)
    ref_log_p = F.log_softmax(_upcast(reference_logits), dim=CLASS_DIM)
    confidence, pseudo = ref_log_p.exp().max(CLASS_DIM)
    keep = confidence >= threshold
    nll = F.cross_entropy(_upcast(logits), pseudo, reduction="none")
    return (nll * keep).sum() / keep.sum().clamp_min(1)


def _squeeze_channel(target: Tensor, logits: Tensor) -> Tensor:
    if target.ndim == logits.ndim:
        if target.shape[CLASS_DIM] != 1:
            raise ValueError(f"target must have one channel, got shape {tuple(target.shape)}")
        return target[:, 0]
    return target


# --- the arithmetic of the authors' released script, used only by the legacy variant --------------------------


def legacy_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 2.0, alpha: float = 0.5) -> Tensor:
    """The script's KL line: ``alpha·T² · KLDivLoss()(log_softmax(softmax(z_T)/T), softmax(softmax(z_S)/T))``.

    Quirks kept on purpose: the temperature divides probabilities that then go through softmax again (double softmax),
    the argument order makes it KL(student || teacher), and ``KLDivLoss``'s default ``'mean'`` averages over all
    ``B·C·voxels`` elements, so the per-voxel KL is also divided by ``C``.
    """
    if teacher_logits.shape[0] == 0:
        return connected_zero(teacher_logits, student_logits)
    inner_t = F.softmax(_upcast(teacher_logits), dim=CLASS_DIM)
    inner_s = F.softmax(_upcast(student_logits), dim=CLASS_DIM)
    log_input = F.log_softmax(inner_t / temperature, dim=CLASS_DIM)
    target = F.softmax(inner_s / temperature, dim=CLASS_DIM)
    elementwise = target * (torch.log(target) - log_input)
    return alpha * temperature**2 * elementwise.mean()


def legacy_entropy(strong_logits: Tensor, weak_logits: Tensor) -> Tensor:
    """The script's entropy: ``-mean(softmax(x)·log_softmax(x))`` over ``[s(x_S); s(x_S); s(x_S); s(x_W)]``.

    The mean runs over cases, classes and voxels, so it equals ``H/C``, and strong cases count three times (the script
    concatenates the student output on the second copy of ``x_S`` with its output on all ``3B`` images).
    """
    parts = [strong_logits] * 3 + [weak_logits]
    parts = [p for p in parts if p.shape[0] > 0]
    if not parts:
        return connected_zero(strong_logits, weak_logits)
    stacked = torch.cat([_upcast(p) for p in parts], dim=0)
    log_p = F.log_softmax(stacked, dim=CLASS_DIM)
    p = log_p.exp()
    return -(p * torch.where(p > 0, log_p, torch.zeros_like(log_p))).mean()
