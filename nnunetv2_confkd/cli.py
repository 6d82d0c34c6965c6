"""Console scripts. ``confkd_train`` and ``confkd_predict`` are nnU-Net's own entry points with the package's trainer
folder appended to ``nnUNet_extTrainer``, so no manual export is needed; ``confkd_predict_head`` predicts with a chosen
head of a ConfKD checkpoint.

Every console script of the package spells a notion that nnU-Net has the way nnU-Net does (``-d`` dataset id, ``-c``
configuration, ``-f`` fold, ``-tr`` trainer, ``-i``/``-o`` input and output folders, ``-device``, ``-np`` processes);
the long forms of earlier releases stay as aliases. :func:`add_device_argument` gives every script the same device
flag and default.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nnunetv2_confkd


def with_ext_trainers(environ: dict | None = None) -> dict:
    """``environ`` (default: ``os.environ``) with ``EXT_TRAINER_DIR`` appended to ``nnUNet_extTrainer``."""
    environ = os.environ if environ is None else environ
    current = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if nnunetv2_confkd.EXT_TRAINER_DIR not in current:
        current.append(nnunetv2_confkd.EXT_TRAINER_DIR)
    environ["nnUNet_extTrainer"] = os.pathsep.join(current)
    return environ


DEVICES = ("cuda", "cpu", "mps")


def default_device() -> str:
    """``"cuda"`` where a CUDA device is visible (nnU-Net's default), else ``"cpu"``: the default of every script."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``-device`` (alias ``--device``) with the package-wide default :func:`default_device`, resolved at parse time."""
    parser.add_argument("-device", "--device", dest="device", choices=DEVICES, default=None,
                        help="device to train or predict on (default: cuda if available, else cpu)")


def resolve_device(args: argparse.Namespace) -> str:
    """The parsed ``-device``, or :func:`default_device` when it was not given."""
    return args.device or default_device()


def print_ext_trainer_dir() -> None:
    print(nnunetv2_confkd.EXT_TRAINER_DIR)


SEED_VARIABLE = "CONFKD_SEED"


def seed_from_environment() -> int | None:
    """Seed Python, NumPy and torch from ``$CONFKD_SEED`` if set (``confkd_benchmark`` sets it per replicate).

    nnU-Net itself seeds nothing; this fixes the network initialisation and the main process's draws. The data
    augmentation workers keep their own randomness, so two runs with one seed are replicates, not bit-identical."""
    value = os.environ.get(SEED_VARIABLE)
    if value is None:
        return None
    import random

    import numpy as np
    import torch

    seed = int(value)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def train_main() -> None:
    with_ext_trainers()
    seed_from_environment()
    from nnunetv2.run.run_training import run_training_entry

    run_training_entry()


def predict_main() -> None:
    with_ext_trainers()
    from nnunetv2.inference.predict_from_raw_data import predict_entry_point

    predict_entry_point()


def predict_head_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Predict a folder with the student or teacher head of a ConfKD model")
    parser.add_argument("-i", type=Path, required=True, help="input folder (nnU-Net raw layout, *_0000 files)")
    parser.add_argument("-o", type=Path, required=True, help="output folder")
    parser.add_argument("-m", type=Path, required=True,
                        help="model folder, e.g. nnUNet_results/DatasetXXX/nnUNetTrainerConfKD__nnUNetPlans__2d")
    parser.add_argument("-f", default="0", help="fold (default 0)")
    parser.add_argument("--head", choices=("student", "teacher"), default="student",
                        help="decoder to predict with (default: student, the trainers' inference head)")
    parser.add_argument("-chk", default="checkpoint_final.pth")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    with_ext_trainers()
    import torch

    from nnunetv2_confkd.training.heads import predict_folder_with_head

    fold = args.f if args.f == "all" else int(args.f)
    predict_folder_with_head(args.m, fold, args.head, args.i, args.o, args.chk, torch.device(resolve_device(args)))
