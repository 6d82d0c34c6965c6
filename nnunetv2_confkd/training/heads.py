"""Predict with either head of a trained ConfKD model from the same checkpoint (both branches are
reported). ``nnUNetv2_predict`` runs the model's inference head (:func:`model_inference_head`); this module switches
the head of the network the predictor built, which holds both decoders' weights, so nothing is retrained."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.training.network import HEADS, DualDecoderUNet, configured_head

Folds = int | str | Sequence[int | str]


def _fold_list(fold: Folds) -> tuple[int | str, ...]:
    folds = (fold,) if isinstance(fold, (int, str)) else tuple(fold)
    return tuple(f if f == "all" else int(f) for f in folds)


def model_inference_head(model_folder: Path) -> str | None:
    """The head ``nnUNetv2_predict`` and nnU-Net's validation run for a model folder (``TRAINER__PLANS__CONFIG``):
    the one its ``plans.json`` names for that configuration (a trainer that chose its head from its data writes it
    there), else the trainer class's ``inference_head``; None for a model of a trainer without heads."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_confkd.training.registry import TRAINERS

    folder = Path(model_folder)
    trainer, configuration = folder.name.partition("__")[0], folder.name.rpartition("__")[2]
    default = getattr(TRAINERS.get(trainer), "inference_head", None)
    if default is None or not (folder / "plans.json").is_file():
        return default
    return configured_head(PlansManager(str(folder / "plans.json")).get_configuration(configuration).configuration,
                          default)


def head_predictor(model_folder: Path, fold: Folds, head: str | None,
                   checkpoint_name: str = "checkpoint_final.pth", device: torch.device = torch.device("cpu"),
                   use_mirroring: bool = True) -> nnUNetPredictor:
    """An initialised ``nnUNetPredictor`` whose network runs ``head`` (``"student"`` or ``"teacher"``); with
    ``head=None``, the model's own inference network (any nnU-Net model). ``fold`` is one fold or several (their
    predictions are averaged, as ``nnUNetv2_predict -f`` does)."""
    if head is not None and head not in HEADS:
        raise ConfKDInputError(f"head must be one of {HEADS}, got {head!r}")
    folds = _fold_list(fold)
    for f in folds:
        checkpoint = Path(model_folder) / f"fold_{f}" / checkpoint_name
        if not checkpoint.is_file():
            raise ConfKDInputError(f"no checkpoint at {checkpoint}; train the fold first (nnUNetv2_train ... {f})")
    predictor = nnUNetPredictor(use_mirroring=use_mirroring, perform_everything_on_device=device.type == "cuda",
                                device=device, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint_name)
    if head is None:
        return predictor
    if not isinstance(predictor.network, DualDecoderUNet):
        raise ConfKDInputError(f"{model_folder} was not trained with a ConfKD trainer "
                               f"(network {type(predictor.network).__name__}); it has no {head} head")
    predictor.network.inference_head = head
    return predictor


def predict_folder_with_head(model_folder: Path, fold: Folds, head: str | None, input_folder: Path, output_folder: Path,
                             checkpoint_name: str = "checkpoint_final.pth", device: torch.device = torch.device("cpu"),
                             num_processes: int = 1, *, num_processes_segmentation_export: int | None = None,
                             save_probabilities: bool = False, num_parts: int = 1, part_id: int = 0,
                             overwrite: bool = True, use_mirroring: bool = True) -> Path:
    """Predict the cases of ``input_folder`` (nnU-Net raw layout) with ``head`` (None: the model's own inference
    network, any nnU-Net model); returns ``output_folder``.

    The keywords mean what they mean to ``nnUNetPredictor.predict_from_files`` and ``nnUNetv2_predict``:
    ``num_processes`` preprocessing workers and ``num_processes_segmentation_export`` export workers (default: as
    many; both 0 predicts without worker processes), ``save_probabilities`` writes ``.npz``/``.pkl`` files beside the
    segmentations (what ``nnUNetv2_ensemble`` reads), part ``part_id`` of ``num_parts`` predicts only that share of
    the cases, and ``overwrite=False`` skips cases already predicted.
    """
    nps = num_processes if num_processes_segmentation_export is None else num_processes_segmentation_export
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise ConfKDInputError(f"part_id must lie in 0..num_parts-1 (parts are counted from 0), got part_id "
                               f"{part_id} of num_parts {num_parts}")
    if num_processes < 0 or nps < 0:
        raise ConfKDInputError(f"process counts must be >= 0, got {num_processes} and {nps}")
    sequential = num_processes == 0 and nps == 0
    if sequential and num_parts > 1:
        raise ConfKDInputError("predicting without worker processes (0 processes) covers all cases; use at least one "
                               "process with num_parts > 1")
    predictor = head_predictor(model_folder, fold, head, checkpoint_name, device, use_mirroring)
    os.makedirs(output_folder, exist_ok=True)
    if sequential:
        predictor.predict_from_files_sequential(str(input_folder), str(output_folder),
                                                save_probabilities=save_probabilities, overwrite=overwrite)
    else:
        predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities=save_probabilities,
                                     overwrite=overwrite, num_processes_preprocessing=num_processes,
                                     num_processes_segmentation_export=nps, num_parts=num_parts, part_id=part_id)
    return Path(output_folder)
