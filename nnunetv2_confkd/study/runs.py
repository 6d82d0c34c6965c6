"""What a ``confkd_benchmark`` study runs: the (dataset, trainer, seed, fold) grid, and the checks of its inputs.

A dataset is an nnU-Net raw dataset (``DatasetXXX_Name``, given by id or name) with, for evaluation on the test part,
dense held-out labels in ``labelsTs`` and their images in ``imagesTs``. A trainer is a class nnU-Net finds by name
(with the package's trainers on ``nnUNet_extTrainer``); its heads are the decoders a run is evaluated with.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import with_ext_trainers
from nnunetv2_confkd.study.presets import Preset
from nnunetv2_confkd.supervision import LEVELS, MANIFEST_KEY

HEADS = ("student", "teacher")


@dataclass(frozen=True)
class Run:
    """One training run: ``trainer`` is the class trained (the preset's variant of ``method``)."""

    dataset: str
    method: str
    trainer: str
    seed: int
    fold: str = "0"
    cv: bool = False

    @property
    def subfolder(self) -> str:
        """Where the run's records live below ``seed_<s>/`` (fold 0 on the test part: directly there)."""
        return f"cv_fold_{self.fold}" if self.cv else "" if self.fold == "0" else f"fold_{self.fold}"

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.dataset, self.trainer, f"seed_{self.seed}", self.subfolder) if p)


def trainer_class(name: str) -> type:
    """The trainer class ``nnUNetv2_train`` would load for ``name`` (nnU-Net's lookup, ``nnUNet_extTrainer`` set)."""
    with_ext_trainers()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        cls = recursive_find_trainer_class_by_name(name)
    except RuntimeError:  # nnU-Net 2.8.1 raises (after printing its search) when the class is nowhere
        cls = None
    if cls is None:
        raise ConfKDInputError(f"trainer {name!r} not found by nnU-Net in its trainer folder or $nnUNet_extTrainer "
                               "(which includes nnunetv2_confkd's trainers); check the name (-tr) and the preset's "
                               "schedule suffix")
    return cls


def composition_of(trainer: str) -> dict:
    """``{"batch_composition": ...}`` for a trainer that composes its batches, else ``{}``: what a record stores."""
    cls = trainer_class(trainer)
    return {"batch_composition": cls.composition_name()} if hasattr(cls, "composition_name") else {}


@functools.cache
def heads_of(trainer: str) -> tuple[str, ...]:
    """The heads a run is evaluated with: the class's inference head first (``nnUNetv2_predict``), then the other
    head of a ConfKD model; a single-decoder trainer has the one head ``"nnunet"``."""
    from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD

    cls = trainer_class(trainer)
    if not issubclass(cls, nnUNetTrainerConfKD):
        return ("nnunet",)
    first = cls.inference_head
    return (first, *[h for h in HEADS if h != first])


def resolve_dataset(raw: Path, dataset: str, need_test: bool = True) -> str:
    """``DatasetXXX_Name`` of an id or name in ``raw``; with ``need_test`` its dense held-out part is checked."""
    prefix = f"Dataset{int(dataset):03d}_" if dataset.isdigit() else None
    candidates = sorted(p.name for p in raw.glob("Dataset*")
                        if p.is_dir() and (p.name == dataset or (prefix and p.name.startswith(prefix))))
    if len(candidates) != 1:
        raise ConfKDInputError(f"dataset {dataset!r}: {'no' if not candidates else 'several'} matching folder(s) in "
                               f"{raw} {candidates or ''}; give an id or a full DatasetXXX_Name")
    folder = raw / candidates[0]
    if not need_test:
        return candidates[0]
    images, labels = folder / "imagesTs", folder / "labelsTs"
    if not labels.is_dir() or not any(labels.glob("*")):
        raise ConfKDInputError(f"{folder}: no dense held-out labels in labelsTs/; the benchmark evaluates on them "
                               "(the converters write imagesTs/labelsTs)")
    ending = json.loads((folder / "dataset.json").read_text())["file_ending"]
    missing = [f.name for f in labels.glob(f"*{ending}")
               if not (images / f.name.replace(ending, f"_0000{ending}")).is_file()]
    if missing:
        raise ConfKDInputError(f"{images}: no image for held-out label(s) {missing[:5]}")
    return candidates[0]


def dataset_id(dataset: str) -> str:
    """``"501"`` of ``"Dataset501_Name"`` (nnU-Net's planning and preprocessing scripts take ids only)."""
    return dataset[len("Dataset"):len("Dataset") + 3]


def supervision_counts(dataset_json: dict) -> dict:
    """Counts of full, weak and unlabeled training cases from the manifest (all full without one)."""
    manifest = dataset_json.get(MANIFEST_KEY) or {}
    counts = {level: sum(v == level for v in manifest.values()) for level in LEVELS}
    if not manifest:
        counts["full"] = int(dataset_json.get("numTraining", 0))
    return counts


def plan_runs(datasets: list[str], methods: list[str], extra: list[tuple[str, str]], seeds: list[int],
              preset: Preset, folds: tuple[str, ...] = ("0",), cv: bool = False) -> list[Run]:
    """Seed-major order (then fold): every (dataset, method) of seed 0 first, so that a partial study has whole
    comparisons."""
    grid = [(d, m) for d in datasets for m in methods]
    pairs = grid + [p for p in extra if p not in grid]
    return [Run(d, m, preset.trainer(m), s, f, cv) for s in seeds for f in folds for d, m in pairs]
