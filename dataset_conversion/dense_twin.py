"""The dense twin of a mixed dataset: ``Dataset<twin_id>_<name>Dense`` holds the same cases, split and test part with
every label dense and every case "full". CT datasets are planned on it, because nnU-Net's fingerprint counts the
ignore voxels of the mixed dataset as foreground (:func:`~.reporting.ct_fingerprint_hint`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from nnunetv2_confkd_conversion.atomic_output import atomic_json
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.cases import DatasetSpec, SourceCase, Verify
from nnunetv2_confkd_conversion.writer import check_output, write_mixed_dataset

from nnunetv2_confkd.checks import ConfKDInputError


def dense_twin_spec(spec: DatasetSpec, twin_id: int) -> DatasetSpec:
    """The spec of the dense twin ``Dataset<twin_id>_<name>Dense``; its labels keep the ignore value, unused, so that
    plans move between the two unchanged."""
    return replace(spec, dataset_id=twin_id, name=f"{spec.name}Dense",
                   description=f"dense twin of {spec.folder_name} (plan on it: nnU-Net's fingerprint counts the "
                               "ignore voxels of the mixed dataset as foreground)")


def twin_folder(mixed: Path, twin_id: int | None) -> Path | None:
    """The dense twin's folder of the dataset folder ``mixed``, or None without a twin id.

    Example:
        >>> twin_folder(Path("raw/Dataset501_LiTS_5full_points_s0"), 601).name
        'Dataset601_LiTS_5full_points_s0Dense'
    """
    return None if twin_id is None else mixed.parent / f"Dataset{twin_id:03d}_{mixed.name.split('_', 1)[1]}Dense"


def write_with_dense_twin(train: Sequence[SourceCase], test: Sequence[SourceCase], spec: DatasetSpec, budget: Budget,
                          raw_root: Path, preprocessed_root: Path | None = None, overwrite: bool = False,
                          verify: Verify | None = None, twin_id: int | None = None) -> tuple[Path, Path | None]:
    """:func:`~.writer.write_mixed_dataset`, then with ``twin_id`` its dense twin: the same cases, test part and
    ``splits_final.json``, every label dense and every case "full". Both outputs are checked before either is
    written.

    Returns:
        ``(mixed dataset folder, dense twin folder or None)``.
    """
    twin_spec = None if twin_id is None else dense_twin_spec(spec, twin_id)
    if twin_spec is not None:
        if twin_id == spec.dataset_id:
            raise ConfKDInputError(f"--dense-twin-id {twin_id} must differ from --id")
        check_output(raw_root, twin_spec.dataset_id, twin_spec.name, overwrite)
    mixed = write_mixed_dataset(train, test, spec, budget, raw_root, preprocessed_root, overwrite, verify)
    if twin_spec is None:
        return mixed, None
    patients = len({c.patient for c in train})
    twin = write_mixed_dataset(train, test, twin_spec, Budget(full=float(patients), weak="none"), raw_root, None,
                               overwrite)
    splits = json.loads((mixed / "splits_final.json").read_text())
    atomic_json(splits, twin / "splits_final.json")
    if preprocessed_root is not None:
        atomic_json(splits, Path(preprocessed_root) / twin.name / "splits_final.json")
    return mixed, twin
