"""Shared fixtures and helpers of the test suite."""

from __future__ import annotations

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

# ======================================================================================================================
# Hand-written nnU-Net plans (no dataset planning): tiny PlainConvUNet 2D/3D and ResidualEncoderUNet 2D configurations.
# `make_plans_manager(kind)` returns (PlansManager, ConfigurationManager) for kind in PLAN_KINDS.
# ======================================================================================================================

PLAN_KINDS = ("2d", "3d", "resenc")
NUM_INPUT_CHANNELS = 1
NUM_CLASSES = 4  # background + 3 foreground classes; the ignore label (4) gets no output channel
IGNORE_LABEL = 4
DATASET_JSON = {
    "labels": {"background": 0, "a": 1, "b": 2, "c": 3, "ignore": 4},
    "channel_names": {"0": "MRI"},
    "file_ending": ".nii.gz",
    "numTraining": 1,
}
# configuration name in the plans dict for each kind
CONFIGURATION_NAMES = {"2d": "2d", "3d": "3d_fullres", "resenc": "2d_resenc"}
DEFAULT_FEATURES = (8, 16, 32, 64)
# non-square patches: they catch axis mix-ups
DEFAULT_PATCH_SIZES = {"2d": (32, 48), "3d": (8, 32, 48), "resenc": (32, 48)}

_IMPORTS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def _common_arch_kwargs(dim: int, features) -> dict:
    return {
        "n_stages": len(features),
        "features_per_stage": list(features),
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def _configuration(kind: str, features, patch_size) -> dict:
    n = len(features)
    if kind == "3d":
        dim = 3
        kernels = [[1, 3, 3]] + [[3, 3, 3]] * (n - 1)
        strides = [[1, 1, 1]] + [[1, 2, 2]] * (n - 2) + [[2, 2, 2]]
    else:
        dim = 2
        kernels = [[3, 3]] * n
        strides = [[1, 1]] + [[2, 2]] * (n - 1)
    arch_kwargs = _common_arch_kwargs(dim, features)
    arch_kwargs.update({"kernel_sizes": kernels, "strides": strides, "n_conv_per_stage_decoder": [2] * (n - 1)})
    if kind == "resenc":
        class_name = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
        arch_kwargs["n_blocks_per_stage"] = [1] + [2] * (n - 1)
    else:
        class_name = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
        arch_kwargs["n_conv_per_stage"] = [2] * n
    patch_size = list(patch_size)
    return {
        "data_identifier": f"nnUNetPlans_{CONFIGURATION_NAMES[kind]}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 4,
        "patch_size": patch_size,
        "median_image_size_in_voxels": [float(p) for p in patch_size],
        "spacing": [1.0, 1.5, 1.5][-dim:],
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {"network_class_name": class_name, "arch_kwargs": arch_kwargs,
                         "_kw_requires_import": list(_IMPORTS)},
        "batch_dice": True,
    }


def make_plans_dict(features=DEFAULT_FEATURES, patch_sizes: dict | None = None) -> dict:
    """A full nnU-Net plans dict holding the three configurations of :data:`CONFIGURATION_NAMES`.

    ``features`` sets ``features_per_stage`` (and thereby ``n_stages``) of every configuration; ``patch_sizes`` maps
    a kind to its patch size (defaults: :data:`DEFAULT_PATCH_SIZES`).
    """
    patch_sizes = {**DEFAULT_PATCH_SIZES, **(patch_sizes or {})}
    return {
        "dataset_name": "Dataset999_X",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [1.0, 1.5, 1.5],
        "original_median_shape_after_transp": [8, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {name: _configuration(kind, features, patch_sizes[kind])
                           for kind, name in CONFIGURATION_NAMES.items()},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1, "mean": 0, "median": 0, "min": 0, "percentile_00_5": 0, "percentile_99_5": 1, "std": 1}},
    }


def make_plans_manager(kind: str, features=DEFAULT_FEATURES,
                       patch_size=None) -> tuple[PlansManager, ConfigurationManager]:
    """``(plans_manager, configuration_manager)`` of a tiny hand-written configuration.

    Args:
        kind: ``"2d"`` (PlainConvUNet), ``"3d"`` (PlainConvUNet, anisotropic first stage) or ``"resenc"``
            (ResidualEncoderUNet, 2D).
        features: ``features_per_stage``; its length is the number of stages.
        patch_size: overrides the kind's default patch size.
    """
    if kind not in PLAN_KINDS:
        raise ValueError(f"kind must be one of {PLAN_KINDS}, got {kind!r}")
    plans = make_plans_dict(features, {kind: patch_size} if patch_size is not None else None)
    plans_manager = PlansManager(plans)
    return plans_manager, plans_manager.get_configuration(CONFIGURATION_NAMES[kind])


# ======================================================================================================================
# end of the plans section
# ======================================================================================================================



# ======================================================================================================================
# The ConfKD objective as the trainer builds it, and synthetic mixed batches (tests of numerics and DDP).
# ======================================================================================================================


# imported here, not inside the helpers: the DDP test's spawned workers must import these before they start gloo
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss  # noqa: E402

import nnunetv2_confkd.training.registry  # noqa: E402
from nnunetv2_confkd.training.objective import ConfKDLoss, DeepSupervisedPartialCE  # noqa: E402


def trainer_class(name: str):
    """A trainer of the package by name (the same lookup nnU-Net does through nnUNet_extTrainer)."""
    return getattr(nnunetv2_confkd.training.registry, name)


def nnunet_ds_weights(n_scales: int, ddp: bool):
    """nnUNetTrainer._build_loss: ``1/2**i``, the last set to 0 (1e-6 under DDP without compile), normalised."""
    weights = np.array([1 / (2**i) for i in range(n_scales)])
    weights[-1] = 1e-6 if ddp else 0
    return weights / weights.sum()


def trainer_confkd_loss(cls, n_scales: int, batch_dice: bool, ddp: bool):
    """The objective exactly as ``nnUNetTrainerConfKD.initialize`` builds it (nnU-Net's Dice + CE for the teacher)."""
    weights = nnunet_ds_weights(n_scales, ddp)
    supervised = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": ddp}, {}, weight_ce=1,
                       weight_dice=1, ignore_label=IGNORE_LABEL, dice_class=MemoryEfficientSoftDiceLoss),
        weights)
    weak = DeepSupervisedPartialCE(IGNORE_LABEL, tuple(weights))
    return ConfKDLoss(supervised, weak, cls.confkd_config(IGNORE_LABEL))


def mixed_batch(levels, patch, ds_shapes, generator):
    """Input, per-scale targets (nearest-exact, as nnU-Net's DownsampleSegForDSTransform) and the full-case mask.

    ``levels`` per case: "full" (dense), "weak" (about 10 % labeled voxels), "weak_empty" or "unlabeled" (all ignore).
    """
    x = torch.randn(len(levels), NUM_INPUT_CHANNELS, *patch, generator=generator)
    # dense labels in 4x4 blocks, so every class survives at the coarse scales
    coarse = torch.randint(0, NUM_CLASSES, (len(levels), 1, *(p // 4 for p in patch)), generator=generator)
    target = F.interpolate(coarse.float(), size=patch, mode="nearest").to(torch.int16)
    for i, level in enumerate(levels):
        if level == "weak":
            keep = torch.rand(patch, generator=generator) < 0.1
            target[i, 0] = torch.where(keep, target[i, 0], torch.full_like(target[i, 0], IGNORE_LABEL))
        elif level in ("weak_empty", "unlabeled"):
            target[i] = IGNORE_LABEL
    targets = [F.interpolate(target.float(), size=s, mode="nearest-exact").to(torch.int16) for s in ds_shapes]
    is_full = torch.tensor([level == "full" for level in levels])
    return x, targets, is_full

# ======================================================================================================================
# A planned and preprocessed synthetic mixed-label dataset (built once per test run) and nnU-Net's path variables.
# ======================================================================================================================

import os  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SYNTHETIC_ID = 990
SYNTHETIC_NAME = "Dataset990_ConfKDSynthetic"


@dataclass
class PlannedDataset:
    root: Path
    env: dict

    @property
    def raw(self) -> Path:
        return Path(self.env["nnUNet_raw"]) / SYNTHETIC_NAME

    @property
    def preprocessed(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"]) / SYNTHETIC_NAME

    @property
    def results(self) -> Path:
        return Path(self.env["nnUNet_results"]) / SYNTHETIC_NAME

    def run(self, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a console script with this dataset's environment; fail the test with its output's tail."""
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc


def nnunet_env(root: Path) -> dict:
    from nnunetv2_confkd.cli import with_ext_trainers

    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_n_proc_DA="1", nnUNet_def_n_proc="1", nnUNet_compile="f")
    env.pop("nnUNet_extTrainer", None)
    return with_ext_trainers(env)


@pytest.fixture(scope="session")
def planned_dataset(tmp_path_factory) -> PlannedDataset:
    """The synthetic dataset, planned and preprocessed for 2d and 3d_fullres with nnU-Net's own console script."""
    from nnunetv2_confkd_conversion.synthetic import SyntheticSpec, make_synthetic_dataset

    root = tmp_path_factory.mktemp("nnunet")
    ds = PlannedDataset(root, nnunet_env(root))
    make_synthetic_dataset(Path(ds.env["nnUNet_raw"]), SYNTHETIC_ID, SyntheticSpec(),
                           Path(ds.env["nnUNet_preprocessed"]))
    ds.run("nnUNetv2_plan_and_preprocess", "-d", str(SYNTHETIC_ID), "-c", "2d", "3d_fullres", "-np", "1", "-npfp", "1",
           "--verify_dataset_integrity")
    return ds


@pytest.fixture
def nnunet_paths(planned_dataset, monkeypatch) -> PlannedDataset:
    """Point this process's nnU-Net path variables at the planned dataset (nnU-Net reads them lazily since 2.8)."""
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.setenv(var, planned_dataset.env[var])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    return planned_dataset
