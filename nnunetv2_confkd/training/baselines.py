"""Baselines that are nnU-Net itself with one change: ``nnUNetTrainerIgnorePadding``, stock nnU-Net with the ignore
label whose augmentation padding stays *ignore*.

Stock nnU-Net pads rotated and shifted patches of the segmentation with -1 and then turns -1 into background. On a
weak or unlabeled case that gives labels the annotator never drew: a band of background at patch borders and in
rotated corners, often over the structure itself. ConfKD's trainers keep that padding as ignore; this baseline gives
stock nnU-Net the same treatment, so that a comparison with "nnU-Net + ignore label" does not hinge on it.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_confkd.training.mixed_loading import with_ignore_padding


class nnUNetTrainerIgnorePadding(nnUNetTrainer):
    """Stock nnU-Net (uniform case sampling, stock loss with the ignore label) with padding kept as ignore, on every
    case."""

    report_label = "nnU-Net + ignore label, padding as ignore"

    def get_training_transforms(self, *args, **kwargs):  # noqa: D102 - nnU-Net calls it as self.get_training_transforms
        return with_ignore_padding(super().get_training_transforms(*args, **kwargs), kwargs.get("ignore_label"))
