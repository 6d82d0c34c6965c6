"""Predict with either head of a trained ConfKD model from the same checkpoint (both branches are
reported). ``nnUNetv2_predict`` runs the class's ``inference_head``; this module switches the head of the network the
predictor built, which holds both decoders' weights, so nothing is retrained."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.training.network import HEADS, DualDecoderUNet


def head_predictor(model_folder: Path, fold: int | str, head: str | None,
                   checkpoint_name: str = "checkpoint_final.pth", device: torch.device = torch.device("cpu"),
                   use_mirroring: bool = True) -> nnUNetPredictor:
    """An initialised ``nnUNetPredictor`` whose network runs ``head`` (``"student"`` or ``"teacher"``); with
    ``head=None``, the model's own inference network (any nnU-Net model)."""
    if head is not None and head not in HEADS:
        raise ConfKDInputError(f"head must be one of {HEADS}, got {head!r}")
    checkpoint = Path(model_folder) / f"fold_{fold}" / checkpoint_name
    if not checkpoint.is_file():
        raise ConfKDInputError(f"no checkpoint at {checkpoint}; train the fold first (nnUNetv2_train ... {fold})")
    predictor = nnUNetPredictor(use_mirroring=use_mirroring, perform_everything_on_device=device.type == "cuda",
                                device=device, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), (fold,), checkpoint_name)
    if head is None:
        return predictor
    if not isinstance(predictor.network, DualDecoderUNet):
        raise ConfKDInputError(f"{model_folder} was not trained with a ConfKD trainer "
                               f"(network {type(predictor.network).__name__}); it has no {head} head")
    predictor.network.inference_head = head
    return predictor


def predict_folder_with_head(model_folder: Path, fold: int | str, head: str, input_folder: Path, output_folder: Path,
                             checkpoint_name: str = "checkpoint_final.pth", device: torch.device = torch.device("cpu"),
                             num_processes: int = 1) -> Path:
    """Predict every case of ``input_folder`` (nnU-Net raw layout) with ``head``; returns ``output_folder``."""
    predictor = head_predictor(model_folder, fold, head, checkpoint_name, device)
    os.makedirs(output_folder, exist_ok=True)
    predictor.predict_from_files(str(input_folder), str(output_folder), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=num_processes,
                                 num_processes_segmentation_export=num_processes)
    return Path(output_folder)
