"""A second view of a batch for the student: the same geometry with other intensities.

With ``student_view = "perturbed"`` the student sees :func:`intensity_view` of every case that is not fully labeled,
while the teacher predicts the clean case without gradient; the student then learns the teacher's confident labels of
the clean view on the perturbed one (the confidence term ``"pseudo_teacher"``, FixMatch-style weak/strong
consistency, Sohn et al., NeurIPS 2020). Only intensities change, so every voxel keeps its place and its weak label.

The perturbation acts on nnU-Net's normalised images (z-scores for MRI): per case and channel a contrast factor, a
brightness shift and Gaussian noise of a random level, the ranges of nnU-Net's own intensity augmentations
(``ContrastTransform`` 0.75-1.25, ``GaussianNoiseTransform`` variance up to 0.1), widened so that the view differs
from what nnU-Net's augmentation already gives.
"""

from __future__ import annotations

import torch
from torch import Tensor

CONTRAST = (0.65, 1.5)
BRIGHTNESS_STD = 0.2
NOISE_STD_MAX = 0.3


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
