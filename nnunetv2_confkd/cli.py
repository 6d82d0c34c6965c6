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


def _set_torch_threads(device: str) -> None:
    """Torch's thread count as ``nnUNetv2_predict`` sets it: every core on CPU, one thread next to a GPU."""
    import multiprocessing

    import torch

    if device == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif device == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)


def predict_head_main(argv: list[str] | None = None) -> None:
    """``confkd_predict_head``: predict a folder with the student or teacher head of a ConfKD model.

    The prediction flags mean what they mean to ``nnUNetv2_predict`` (``-f`` folds, ``--save_probabilities``,
    ``-num_parts``/``-part_id``, ``-npp``/``-nps``, ``--continue_prediction``, ``--disable_tta``), so the output of
    either head can go into ``nnUNetv2_ensemble``.
    """
    parser = argparse.ArgumentParser(prog="confkd_predict_head",
                                     description="Predict a folder with the student or teacher head of a ConfKD model")
    parser.add_argument("-i", type=Path, required=True, help="input folder (nnU-Net raw layout, *_0000 files)")
    parser.add_argument("-o", type=Path, required=True, help="output folder")
    parser.add_argument("-m", type=Path, required=True,
                        help="model folder, e.g. nnUNet_results/DatasetXXX/nnUNetTrainerConfKD__nnUNetPlans__2d")
    parser.add_argument("-f", nargs="+", default=["0"],
                        help="fold(s); several are averaged as by nnUNetv2_predict (default 0)")
    parser.add_argument("--head", choices=("student", "teacher"), default=None,
                        help="decoder to predict with (default: the model's inference head, the one nnUNetv2_predict "
                             "runs: student unless its trainer chose otherwise)")
    parser.add_argument("-chk", default="checkpoint_final.pth")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write .npz/.pkl class probabilities (needed by nnUNetv2_ensemble)")
    parser.add_argument("-num_parts", type=int, default=1,
                        help="number of separate calls that share the cases (default 1: this call predicts all)")
    parser.add_argument("-part_id", type=int, default=0,
                        help="which of the -num_parts calls this is, counted from 0 (default 0)")
    parser.add_argument("-npp", type=int, default=None, help="preprocessing processes (default: -np)")
    parser.add_argument("-nps", type=int, default=None, help="segmentation export processes (default: -np)")
    parser.add_argument("-np", type=int, default=1,
                        help="processes for both -npp and -nps where those are not given (default 1; -npp 0 -nps 0 "
                             "predicts without worker processes)")
    parser.add_argument("--continue_prediction", action="store_true",
                        help="keep cases already predicted in -o (do not overwrite them)")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    with_ext_trainers()
    import torch

    from nnunetv2_confkd.checks import ConfKDInputError
    from nnunetv2_confkd.training.heads import model_inference_head, predict_folder_with_head

    device = resolve_device(args)
    _set_torch_threads(device)
    npp = args.np if args.npp is None else args.npp
    nps = args.np if args.nps is None else args.nps
    try:
        head = args.head or model_inference_head(args.m)  # None: a model without heads, its own network
        predict_folder_with_head(args.m, args.f, head, args.i, args.o, args.chk, torch.device(device), npp,
                                 num_processes_segmentation_export=nps, save_probabilities=args.save_probabilities,
                                 num_parts=args.num_parts, part_id=args.part_id,
                                 overwrite=not args.continue_prediction, use_mirroring=not args.disable_tta)
    except ConfKDInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


def export_main(argv: list[str] | None = None) -> None:
    """``confkd_export``: write one head of a ConfKD model as a stock nnU-Net model (``-tr nnUNetTrainer``).

    The flags follow ``nnUNetv2_export_model_to_zip``; the model is read from ``$nnUNet_results`` and written to
    ``-o`` in the layout of a results folder. Prints the written model folder.
    """
    parser = argparse.ArgumentParser(
        prog="confkd_export",
        description="Write the student or teacher head (default: the model's inference head) of a trained ConfKD "
                    "model as a stock nnU-Net model folder, which plain nnUNetv2_predict -tr nnUNetTrainer uses "
                    "without this package.")
    parser.add_argument("-d", required=True, help="dataset name or id (the model is read from $nnUNet_results)")
    parser.add_argument("-c", required=True, help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("-f", nargs="+", required=True, help="fold(s) to export, e.g. 0 1 2 3 4 or all")
    parser.add_argument("-tr", required=True, help="ConfKD trainer the model was trained with")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("-chk", nargs="+", default=["checkpoint_final.pth"],
                        help="checkpoint file(s) to export (default checkpoint_final.pth)")
    parser.add_argument("-o", type=Path, required=True,
                        help="results folder to write to (laid out as nnUNet_results; not the model folder)")
    parser.add_argument("--head", choices=("student", "teacher"), default=None,
                        help="decoder to export (default: the model's inference head, the one nnUNetv2_predict runs: "
                             "student unless its trainer chose otherwise)")
    parser.add_argument("--overwrite", action="store_true", help="replace files that already exist in -o")
    args = parser.parse_args(argv)
    from nnunetv2_confkd.checks import ConfKDInputError
    from nnunetv2_confkd.export import export_head

    try:
        target = export_head(args.d, args.c, args.f, args.tr, args.o, args.head, args.p, args.chk, args.overwrite)
    except ConfKDInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(target)
