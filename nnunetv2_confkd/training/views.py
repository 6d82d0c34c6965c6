"""Second views of a batch for the student: other intensities (``"perturbed"``) or, in addition, a box of another
case pasted in (``"cutmix"``).

With ``student_view = "perturbed"`` the student sees :func:`intensity_view` of every case that is not fully labeled,
while the teacher predicts the clean case without gradient; the student then learns the teacher's confident labels of
the clean view on the perturbed one (the confidence term ``"pseudo_teacher"``, FixMatch-style weak/strong
consistency, Sohn et al., NeurIPS 2020). Only intensities change, so every voxel keeps its place and its weak label.

With ``student_view = "cutmix"`` each of those cases also gets a box of another of them pasted in (CutMix, Yun et
al., ICCV 2019, used on the strong view of semi-supervised segmentation by UniMatch, Yang et al., CVPR 2023). The
same boxes are pasted into the teacher's clean-view logits and into every scale of the labels (:class:`BoxMix`), so
each voxel's reference and weak label travel with it.

The perturbation acts on nnU-Net's normalised images (z-scores for MRI): per case and channel a contrast factor, a
brightness shift and Gaussian noise of a random level, the ranges of nnU-Net's own intensity augmentations
(``ContrastTransform`` 0.75-1.25, ``GaussianNoiseTransform`` variance up to 0.1), widened so that the view differs
from what nnU-Net's augmentation already gives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

CONTRAST = (0.65, 1.5)
BRIGHTNESS_STD = 0.2
NOISE_STD_MAX = 0.3
BOX_SHARE = (0.02, 0.4)  # UniMatch's CutMix box: share of the patch
BOX_ASPECT = (0.3, 1 / 0.3)  # and its aspect range
MIX_PROBABILITY = 0.5  # UniMatch's: each case is mixed with this probability


def intensity_view(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A new tensor: ``a * x + b + noise`` per case and channel, ``a ~ U(CONTRAST)``, ``b ~ N(0, BRIGHTNESS_STD²)``,
    noise ``N(0, s²)`` with ``s ~ U(0, NOISE_STD_MAX)``, each scaled by the case's and channel's standard deviation.

    Args:
        x: images ``(B, C, *spatial)``; not modified.
        generator: optional random generator on ``x``'s device (None: torch's global one).
    """
    shape = (x.shape[0], x.shape[1], *[1] * (x.ndim - 2))
    kwargs = {"device": x.device, "dtype": torch.float32, "generator": generator}
    scale = x.float().flatten(2).std(2).view(shape).clamp_min(1e-6)
    contrast = CONTRAST[0] + (CONTRAST[1] - CONTRAST[0]) * torch.rand(shape, **kwargs)
    brightness = BRIGHTNESS_STD * torch.randn(shape, **kwargs) * scale
    noise_std = NOISE_STD_MAX * torch.rand(shape, **kwargs) * scale
    mean = x.float().mean(dim=tuple(range(2, x.ndim)), keepdim=True)
    noise = torch.randn(x.shape, **kwargs) * noise_std
    return ((x.float() - mean) * contrast + mean + brightness + noise).to(x.dtype)


class BoxMix:
    """One draw of CutMix boxes for ``n`` cases in ``ndim`` spatial dimensions, applicable to tensors of any spatial
    size (images, logits, every deep-supervision scale of the labels): case ``i`` takes the voxels of case
    ``partner[i]`` inside its box. Boxes are stored as fractions of the patch, so one draw pastes the same region at
    every scale. Case ``i`` is mixed with probability ``MIX_PROBABILITY``; its box covers a share ``BOX_SHARE`` of the
    patch with per-axis aspect in ``BOX_ASPECT`` (clipped at the border); partners are a cyclic shift of a random
    order, so no case is its own partner when ``n > 1``.
    """

    def __init__(self, n: int, ndim: int, generator: torch.Generator | None = None):
        order = torch.randperm(n, generator=generator)
        self.partner = torch.empty(n, dtype=torch.long)
        self.partner[order] = order.roll(-1)
        self.mixed = (torch.rand(n, generator=generator) < MIX_PROBABILITY) & (self.partner != torch.arange(n))
        share = BOX_SHARE[0] + (BOX_SHARE[1] - BOX_SHARE[0]) * torch.rand(n, 1, generator=generator)
        log_aspect = math.log(BOX_ASPECT[0]) + math.log(BOX_ASPECT[1] / BOX_ASPECT[0]) * torch.rand(
            n, ndim, generator=generator)
        log_aspect = (log_aspect - log_aspect.mean(1, keepdim=True)) / 2
        self.size = (share ** (1 / ndim) * log_aspect.exp()).clamp(max=1.0)
        centre = torch.rand(n, ndim, generator=generator)
        self.low, self.high = (centre - self.size / 2).clamp(0, 1), (centre + self.size / 2).clamp(0, 1)

    def mask(self, spatial: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
        """``(n, 1, *spatial)`` bool: True inside each mixed case's box."""
        out = self.mixed.to(device).view(-1, *[1] * len(spatial))
        low, high = self.low.to(device), self.high.to(device)
        for axis, size in enumerate(spatial):
            coords = (torch.arange(size, device=device) + 0.5) / size  # voxel centres
            inside = (coords >= low[:, axis:axis + 1]) & (coords < high[:, axis:axis + 1])
            out = out & inside.view(-1, *[1] * axis, size, *[1] * (len(spatial) - axis - 1))
        return out.unsqueeze(1)

    def __call__(self, x: Tensor) -> Tensor:
        """A new tensor ``(n, C, *spatial)``: ``x`` with each mixed case's box taken from its partner."""
        return torch.where(self.mask(tuple(x.shape[2:]), x.device), x[self.partner.to(x.device)], x)
