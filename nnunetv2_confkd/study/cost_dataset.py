"""Which preprocessed dataset ``confkd_benchmark_cost`` times, checked before any worker starts.

Two sources:

* **A preprocessed dataset** (``-d ID_OR_NAME -c CONFIG [-p PLANS]``): ``$nnUNet_preprocessed/DatasetXXX_Name``, found
  by id (``502``), full name (``Dataset502_ACDC``) or the part after the id (``ACDC``). Its plans file
  ``PLANS.json`` must hold ``CONFIG`` (inheritance, e.g. ``2d_cpu`` inheriting ``2d``, resolved by nnU-Net's
  ``PlansManager``), and the configuration's data folder must hold every training case of ``dataset.json``. A
  missing piece raises :class:`~nnunetv2_confkd.checks.ConfKDInputError` naming the folder or configuration and the
  command that makes it. The workers read the dataset through a *link folder*,
  ``WORKDIR/preprocessed/DatasetXXX_Name``, which holds a symbolic link to every entry of the real folder: nnU-Net's
  path variables point into the work folder, so what a trainer writes (``splits_final.json`` where there is none, its
  output folder) lands in the work folder, and the real dataset is only read.
* **The project's synthetic dataset** (no ``-d``, or ``--synthetic``): generated and planned inside the work folder
  (:func:`nnunetv2_confkd.study.cost_workers.ensure_dataset`), id ``-d`` (default 991).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.dataset_lookup import dataset_folder

SYNTHETIC_ID = 991
DATA_SUFFIXES = (".b2nd", ".npz")  # nnU-Net's preprocessed case files (blosc2 since 2.6, npz before)


@dataclass(frozen=True)
class BenchmarkDataset:
    """The dataset the workers train on: ``folder`` is what they read (a link folder for a real dataset), ``source``
    the folder it comes from, ``configuration`` the resolved plans entry of ``config``."""

    name: str
    folder: Path
    source: Path
    plans: str
    config: str
    configuration: dict
    synthetic: bool

    @property
    def dataset_id(self) -> int:
        return int(self.name[len("Dataset"):len("Dataset") + 3])


def find_preprocessed(root: Path, dataset: str) -> Path:
    """The folder ``DatasetXXX_Name`` of ``dataset`` (an id, a full name or the name after the id) under ``root``.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "Dataset502_ACDC").mkdir()
        >>> [find_preprocessed(root, d).name for d in ("502", "Dataset502_ACDC", "ACDC")]
        ['Dataset502_ACDC', 'Dataset502_ACDC', 'Dataset502_ACDC']
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfKDInputError(f"$nnUNet_preprocessed ({root}) is not a folder; point it at the folder holding "
                               "DatasetXXX_Name, or leave out -d to time the synthetic dataset")
    return dataset_folder(root, dataset, f"$nnUNet_preprocessed ({root})",
                          "Convert and preprocess it first (nnUNetv2_plan_and_preprocess -d ID -c CONFIG), give a full "
                          "DatasetXXX_Name, or time the synthetic dataset (no -d, or --synthetic)")


def resolved_configuration(plans_file: Path, config: str) -> dict:
    """The plans entry of ``config`` with ``inherits_from`` resolved (nnU-Net's ``PlansManager``)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = json.loads(Path(plans_file).read_text())
    configs = plans.get("configurations", {})
    if config not in configs:
        raise ConfKDInputError(
            f"configuration {config!r} is not in {plans_file} (has {sorted(configs)}); preprocess it with "
            f"nnUNetv2_plan_and_preprocess -d ID -c {config}, or, for a preset's reduced configuration such as "
            "2d_cpu, let confkd_benchmark --preset cpu add and preprocess it")
    return dict(PlansManager(plans).get_configuration(config).configuration)


def check_complete(folder: Path, data_folder: Path, config: str, plans: str) -> None:
    """Refuse a data folder that is missing or holds fewer preprocessed cases than ``dataset.json`` lists."""
    fix = f"nnUNetv2_preprocess -d {folder.name[len('Dataset'):len('Dataset') + 3]} -c {config} -plans_name {plans}"
    if not data_folder.is_dir():
        raise ConfKDInputError(f"{data_folder} is missing: configuration {config!r} is planned but not preprocessed; "
                               f"run {fix}")
    dataset_json = json.loads((folder / "dataset.json").read_text())
    cases = {p.name[:-len(".pkl")] for p in data_folder.glob("*.pkl")
             if any((data_folder / (p.name[:-len(".pkl")] + s)).is_file() for s in DATA_SUFFIXES)}
    expected = int(dataset_json.get("numTraining", 0))
    if len(cases) >= max(expected, 1):
        return
    ending = dataset_json.get("file_ending", ".nii.gz")
    listed = {p.name[:-len(ending)] for p in (folder / "gt_segmentations").glob(f"*{ending}")}
    missing = sorted(listed - cases)
    example = f" (missing e.g. {', '.join(missing[:3])})" if missing else ""
    raise ConfKDInputError(f"{data_folder} holds {len(cases)} of the {expected} preprocessed training cases"
                           f"{example}: preprocessing is unfinished or was interrupted; run {fix}")


def link_folder(source: Path, root: Path) -> Path:
    """``root/<source name>`` holding a symbolic link to every entry of ``source`` (made or refreshed); returns it."""
    target = Path(root) / source.name
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(source.iterdir()):
        link = target / entry.name
        if link.is_symlink():
            if Path(os.readlink(link)) == entry.resolve():
                continue
            link.unlink()
        elif link.exists():
            continue  # a file nnU-Net wrote into the link folder (e.g. a split of its own) stays
        link.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return target


def preprocessed_dataset(dataset: str, config: str, plans: str, source_root: str | None,
                         work_root: Path) -> BenchmarkDataset:
    """Resolve and check ``dataset`` under ``source_root`` (``$nnUNet_preprocessed``) and build its link folder in
    ``work_root`` (the workers' ``nnUNet_preprocessed``)."""
    if not source_root:
        raise ConfKDInputError("$nnUNet_preprocessed is not set; point it at the folder holding the preprocessed "
                               "DatasetXXX_Name, or leave out -d to time the synthetic dataset")
    source = find_preprocessed(Path(source_root), dataset)
    plans_file = source / f"{plans}.json"
    if not plans_file.is_file():
        others = sorted(p.stem for p in source.glob("*.json") if "Plans" in p.stem)
        raise ConfKDInputError(f"{plans_file} is missing (plans found: {others or 'none'}); plan the dataset with "
                               f"nnUNetv2_plan_and_preprocess -d ID -c {config}, or name other plans with -p")
    configuration = resolved_configuration(plans_file, config)
    check_complete(source, source / configuration["data_identifier"], config, plans)
    if Path(work_root).resolve() == source.parent.resolve():
        return BenchmarkDataset(source.name, source, source, plans, config, configuration, False)
    folder = link_folder(source, work_root)
    return BenchmarkDataset(source.name, folder, source, plans, config, configuration, False)
