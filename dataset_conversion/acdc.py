"""ACDC cine-MRI into a mixed-supervision nnU-Net dataset: ``confkd_convert_acdc``.

The source (``-i``/``--source``) is the official ACDC release or the WSL4MIS HDF5 copy; both layouts, the HDF5 copy's
required ``--spacing`` and the held-out test part of each are described in :mod:`~.acdc_layouts`. The target is
``-d``/``--id`` (the new dataset id) under ``-o``/``--out`` (default ``$nnUNet_raw``).

Cases are ``patientXXX_frameYY``; the two frames of a patient share the patient ``patientXXX`` and so stay on one side
of every split. ``--classes lv`` is the paper's LV-only binary task: LV (3) becomes 1, RV and MYO background; expert
scribbles on RV or MYO become background, unannotated voxels stay ignore. The shared writer
(:func:`~.writer.write_mixed_dataset`) chooses the full patients, simulates the weak labels and writes the dataset, its
manifest and ``splits_final.json``. ``--unlabeled`` leaves some of the non-full patients without any label. The
default dataset name is ``ACDC_<full>full_<weak>[_<n>unl][_LV]_s<seed>`` (fractions with ``p`` for the dot,
:func:`~.budget.default_name`), e.g. ``Dataset501_ACDC_7full_expert_s0``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from nnunetv2_confkd_conversion.acdc_layouts import HOLDOUT_DEFAULT, list_cases
from nnunetv2_confkd_conversion.amounts import parse_holdout
from nnunetv2_confkd_conversion.budget import default_name, make_budget
from nnunetv2_confkd_conversion.cases import EXPERT, DatasetSpec
from nnunetv2_confkd_conversion.options import add_budget_arguments, argument_type, budget_kwargs, run_converter
from nnunetv2_confkd_conversion.weak_labels import WEAK_KINDS
from nnunetv2_confkd_conversion.writer import write_mixed_dataset

from nnunetv2_confkd.checks import ConfKDInputError

logger = logging.getLogger(__name__)

LABELS_ALL = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
LABELS_LV = {"background": 0, "LV": 1}
CLASSES = ("all", "lv")
CHANNELS = {0: "cineMRI"}
KINDS = (*WEAK_KINDS, EXPERT)


def lv_only(label: np.ndarray) -> np.ndarray:
    """The paper's binary task: LV cavity (3) becomes 1, every other class 0.

    Example:
        >>> lv_only(np.array([0, 1, 2, 3])).tolist()
        [0, 0, 0, 1]
    """
    return (label == 3).astype(label.dtype)


def convert_acdc(source: Path, raw_root: Path, dataset_id: int, full: float, weak: str, classes: str = "all",
                 seed: int = 0, spacing: Sequence[float] | None = None, holdout: float | str | None = None,
                 preprocessed_root: Path | None = None, overwrite: bool = False, weak_params: dict | None = None,
                 background: bool = False, name: str | None = None, patients: Sequence[str] | None = None,
                 unlabeled: float = 0, simulation_spacing: Sequence[float] | None = None) -> Path:
    """Convert ACDC (official layout or WSL4MIS HDF5 copy) into ``raw_root/DatasetNNN_<name>``.

    Args:
        source: the ACDC source folder (see :mod:`~.acdc_layouts` for the layouts accepted).
        raw_root: the ``nnUNet_raw`` folder.
        dataset_id: nnU-Net dataset id (1..999).
        full: fully labeled training patients, a count (>= 1) or a fraction (< 1).
        weak: a kind of :data:`~.weak_labels.WEAK_KINDS` or ``"expert"`` (HDF5 source only).
        classes: ``"all"`` (RV 1, MYO 2, LV 3) or ``"lv"`` (LV 1).
        seed: seed of the full-patient draw and of the weak-label simulation.
        spacing: ``(z, y, x)`` voxel size in mm; required for the HDF5 source, refused for the official layout.
        holdout: test part of the official layout: a patient count (None: :data:`~.acdc_layouts.HOLDOUT_DEFAULT`),
            a fraction, or ``"testing"``; must be None for the HDF5 source (its ``split.json`` decides).
        preprocessed_root: ``nnUNet_preprocessed``; ``splits_final.json`` is also written there when given.
        overwrite: replace an existing ``DatasetNNN_<name>``.
        weak_params: keyword arguments of the weak-label simulator.
        background: annotate background too (simulated kinds).
        name: dataset name (default ``ACDC_<full>full_<weak>[_<n>unl][_LV]_s<seed>``).
        patients: convert only these patients (a subset of the source, e.g. for tests).
        unlabeled: of the patients that are not full, how many (>= 1) or which fraction (< 1) get no label at all
            (the others get ``weak`` labels).

    Returns:
        The dataset folder.

    Raises:
        ConfKDInputError: bad input, raised before anything is written (see :func:`~.acdc_layouts.list_cases`).
    """
    if classes not in CLASSES:
        raise ConfKDInputError(f"--classes must be one of {list(CLASSES)}, got {classes!r}")
    budget = make_budget(full, weak, seed, weak_params, background, unlabeled=unlabeled, kinds=KINDS,
                         simulation_spacing=simulation_spacing)
    name = name or default_name("ACDC", full, weak, seed, unlabeled, tag="LV" if classes == "lv" else "")
    train, test, layout = list_cases(Path(source), weak, spacing, holdout, patients)
    spec = DatasetSpec(dataset_id, name, LABELS_LV if classes == "lv" else LABELS_ALL, CHANNELS,
                       description=f"ACDC ({layout} layout), {classes} classes, {full:g} full patients, weak {weak}",
                       source=f"{layout}: {Path(source).resolve()}", spacing_setting=spacing,
                       label_map=lv_only if classes == "lv" else None)
    logger.info("ACDC %s layout: %d training and %d test cases", layout, len(train), len(test))
    return write_mixed_dataset(train, test, spec, budget, Path(raw_root), preprocessed_root, overwrite)


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------


def _holdout(value: str) -> float | str:
    """``--holdout``: a count, a fraction or ``testing``."""
    return value if value == "testing" else parse_holdout(value)


def build_parser() -> argparse.ArgumentParser:
    """The ``confkd_convert_acdc`` argument parser."""
    parser = argparse.ArgumentParser(prog="confkd_convert_acdc", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("-i", "--source", dest="source", type=Path, required=True,
        help="input ACDC folder: official layout or the WSL4MIS HDF5 copy")
    add("--classes", choices=CLASSES, default="all", help="all: RV/MYO/LV; lv: the paper's LV-only task")
    add("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
        help="voxel spacing in mm, required for the HDF5 source (e.g. 10 1.5 1.5); refused for the official layout")
    add("--holdout", type=argument_type(_holdout), default=None,
        help=f"official layout: held-out test patients, a count or a fraction (default {HOLDOUT_DEFAULT}) or "
             "'testing' for the testing/ folder")
    add("--patients", nargs="+", default=None, help="convert only these patients (patientXXX ...)")
    add_budget_arguments(parser, "ACDC_<full>full_<weak>[_<n>unl][_LV]_s<seed>", KINDS)
    return parser


def _convert(args: argparse.Namespace, raw: Path, preprocessed: Path | None) -> Path:
    return convert_acdc(args.source, raw, args.id, args.full, args.weak, classes=args.classes, spacing=args.spacing,
                        patients=args.patients, preprocessed_root=preprocessed, **budget_kwargs(args))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; prints :func:`~.reporting.summarize` of the written dataset."""
    print(run_converter(build_parser(), argv, _convert))


if __name__ == "__main__":
    main()
