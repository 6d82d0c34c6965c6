"""The only module in the folder given to nnUNet_extTrainer: re-exports the trainers of the installed package, so the
classes live in nnunetv2_confkd (they pickle, and every lookup returns the same class object)."""

from nnunetv2_confkd.training.registry import *  # noqa: F401,F403
