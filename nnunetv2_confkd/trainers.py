"""Every trainer of the package, in one namespace (re-exported to nnU-Net through ``EXT_TRAINER_DIR``)."""

from nnunetv2_confkd.trainer import nnUNetTrainerConfKD, nnUNetTrainerStrongOnly
from nnunetv2_confkd.variants import (
    nnUNetTrainer_confkdDemo,
    nnUNetTrainerConfKD_decoupled,
    nnUNetTrainerConfKD_demo,
    nnUNetTrainerConfKD_legacy,
    nnUNetTrainerConfKD_noEntropy,
    nnUNetTrainerConfKD_noKD,
    nnUNetTrainerConfKD_pseudoMask,
    nnUNetTrainerConfKD_pseudoMaskTeacher,
    nnUNetTrainerConfKD_smoke,
    nnUNetTrainerConfKD_teacherHead,
    nnUNetTrainerStrongOnly_demo,
    nnUNetTrainerStrongOnly_smoke,
)

__all__ = [
    "nnUNetTrainerConfKD",
    "nnUNetTrainerConfKD_decoupled",
    "nnUNetTrainerConfKD_demo",
    "nnUNetTrainerConfKD_legacy",
    "nnUNetTrainerConfKD_noEntropy",
    "nnUNetTrainerConfKD_noKD",
    "nnUNetTrainerConfKD_pseudoMask",
    "nnUNetTrainerConfKD_pseudoMaskTeacher",
    "nnUNetTrainerConfKD_smoke",
    "nnUNetTrainerConfKD_teacherHead",
    "nnUNetTrainerStrongOnly",
    "nnUNetTrainerStrongOnly_demo",
    "nnUNetTrainerStrongOnly_smoke",
    "nnUNetTrainer_confkdDemo",
]
