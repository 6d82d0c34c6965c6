"""What a ``confkd_benchmark`` study runs: the (dataset, trainer, seed, fold) grid, and the checks of its inputs.

A dataset is an nnU-Net raw dataset (``DatasetXXX_Name``, given by id or name) with, for evaluation on the test part,
dense held-out labels in ``labelsTs`` and their images in ``imagesTs``. A trainer is a class nnU-Net finds by name
(with the package's trainers on ``nnUNet_extTrainer``); its heads are the decoders a run is evaluated with.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import with_ext_trainers
from nnunetv2_confkd.dataset_lookup import dataset_folder
from nnunetv2_confkd.study.folds import ALL, V1
from nnunetv2_confkd.study.presets import Preset
from nnunetv2_confkd.supervision import LEVELS, MANIFEST_KEY

HEADS = ("student", "teacher")


@dataclass(frozen=True)
class Run:
    """One training run: ``trainer`` is the class trained (the preset's variant of ``method``); ``fold`` is nnU-Net's
    ``all`` or a fold number of the split of format ``split`` (folds.py; ``None`` for ``all``, ``"v1"`` when a
    numbered fold names none)."""

    dataset: str
    method: str
    trainer: str
    seed: int
    fold: str = ALL
    cv: bool = False
    split: str | None = None

    @property
    def fold_split(self) -> str | None:
        """The split format the fold number refers to (``None`` for ``all``)."""
        return None if self.fold == ALL else self.split or V1

    @property
    def subfolder(self) -> str:
        """Where the run's records live below ``seed_<s>/``: directly there for a model trained on every case (fold
        ``all``, or fold 0 of a ``v1`` split, which trained on every case too), else ``[cv_]fold_<k>`` for ``v1``
        folds and ``<split>_[cv_]fold_<k>`` for other formats."""
        split = self.fold_split
        if not self.cv and (split is None or (split == V1 and self.fold == "0")):
            return ""
        name = f"cv_fold_{self.fold}" if self.cv else f"fold_{self.fold}"
        return name if split == V1 else f"{split}_{name}"

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.dataset, self.trainer, f"seed_{self.seed}", self.subfolder) if p)

    @property
    def model_key(self) -> str:
        """The model the run trains (test and cross-validation runs of one fold share it): its lock's name."""
        split = self.fold_split
        fold = f"fold_{self.fold}" if split in (None, V1) else f"{split}_fold_{self.fold}"
        return "/".join((self.dataset, self.trainer, f"seed_{self.seed}", fold))


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


COMPOSITION_FILE = "batch_composition.json"


def write_model_composition(fold: Path, trainer: str) -> None:
    """Note in a model's fold folder the batch composition it trains with (:data:`COMPOSITION_FILE`)."""
    composition = composition_of(trainer)
    if composition:
        fold.mkdir(parents=True, exist_ok=True)
        (fold / COMPOSITION_FILE).write_text(json.dumps(composition))


def check_model_composition(fold: Path, trainer: str) -> None:
    """Refuse to reuse or resume a model trained with another batch composition than ``trainer`` has now (a model
    folder without the note counts as ``"replace <strong_fraction>"``, the composition every trainer had before
    ``batch_composition`` existed)."""
    composition = composition_of(trainer).get("batch_composition")
    if composition is None or not any((fold / c).is_file() for c in ("checkpoint_final.pth", "checkpoint_latest.pth")):
        return
    note = fold / COMPOSITION_FILE
    unnoted = trainer_class(trainer).unnoted_composition_name()
    found = json.loads(note.read_text())["batch_composition"] if note.is_file() else unnoted
    if found != composition:
        raise ConfKDInputError(f"{fold} holds a model of {trainer} trained with batch composition {found!r}; the class "
                               f"now composes {composition!r}. Move that model folder away (or use a new study "
                               "folder) so that the run trains anew.")


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
    folder = dataset_folder(raw, dataset, f"$nnUNet_raw ({raw})",
                            "Give an id or a full DatasetXXX_Name of a converted dataset (confkd_convert_*).")
    if not need_test:
        return folder.name
    images, labels = folder / "imagesTs", folder / "labelsTs"
    if not labels.is_dir() or not any(labels.glob("*")):
        raise ConfKDInputError(f"{folder}: no dense held-out labels in labelsTs/; the benchmark evaluates on them "
                               "(the converters write imagesTs/labelsTs)")
    ending = json.loads((folder / "dataset.json").read_text())["file_ending"]
    missing = [f.name for f in labels.glob(f"*{ending}")
               if not (images / f.name.replace(ending, f"_0000{ending}")).is_file()]
    if missing:
        raise ConfKDInputError(f"{images}: no image for held-out label(s) {missing[:5]}")
    return folder.name


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
              preset: Preset, folds: tuple[str, ...] | Mapping[str, tuple[str, ...]] = (ALL,), cv: bool = False,
              splits: Mapping[str, str] | None = None) -> list[Run]:
    """Seed-major order (then fold): every (dataset, method) of seed 0 first, so that a partial study has whole
    comparisons. ``folds`` is one tuple for every dataset or a tuple per dataset (then the folds run in numeric
    order); ``splits`` maps a dataset to the format of its split (folds.py) for numbered folds."""
    grid = [(d, m) for d in datasets for m in methods]
    pairs = grid + [p for p in extra if p not in grid]
    per_dataset = folds if isinstance(folds, Mapping) else {d: tuple(folds) for d, _ in pairs}
    order = list(dict.fromkeys(f for d, _ in pairs for f in per_dataset[d]))
    if isinstance(folds, Mapping):
        order.sort(key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    splits = splits or {}
    return [Run(d, m, preset.trainer(m), s, f, cv, None if f == ALL else splits.get(d, V1))
            for s in seeds for f in order for d, m in pairs if f in per_dataset[d]]
