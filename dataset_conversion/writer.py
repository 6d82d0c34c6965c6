"""Writing a mixed-supervision dataset in nnU-Net's raw format: the part every converter shares.

A converter (``acdc.py``, ``lits.py``, ``mixed.py``) only lists its source cases as :class:`~.cases.SourceCase`
objects; :func:`write_mixed_dataset` then

1. checks the request before anything is written (:func:`check_output`: name, id, another dataset with the same id,
   an existing output without ``overwrite``; ``--full`` against the number of patients),
2. chooses the fully labeled training patients at patient level with a seeded generator
   (:func:`~.splits.assign_levels`),
3. reads every case (in case-identifier order, which fixes the per-case seeds), checks image/label shape and spacing
   and the label values, simulates (or takes the expert) weak labels, runs the converter's ``verify`` hook (e.g.
   :func:`~.component_policy.component_check`) and writes images and labels into a temporary folder beside the output
   (:func:`~.case_writer.write_case`),
4. writes ``dataset.json`` with the ``"ignore"`` label, the ``"supervision"`` manifest and ``"weak_label"`` (kind,
   parameters, seed, source, spacing setting, annotated voxels per case and class),
5. renames the temporary folder to ``DatasetNNN_Name`` (:mod:`~.atomic_output`): an interrupted or failed conversion (a
   failed ``verify`` included) leaves no partial dataset and leaves an existing one untouched, and
6. writes ``splits_final.json`` (:func:`~.splits.make_splits`) into ``nnUNet_preprocessed/DatasetNNN_Name`` (and a copy
   into the raw dataset).

:func:`~.dense_twin.write_with_dense_twin` also writes the dense twin. The command-line side (budget flags, held-out
draw, names) is :mod:`~.options`.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2_confkd_conversion.atomic_output import (
    atomic_json,
    recover_interrupted_overwrite,
    remove_stale_temporaries,
    replace_dir,
)
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.case_writer import write_case
from nnunetv2_confkd_conversion.cases import TEST, CaseData, DatasetSpec, SourceCase, Verify
from nnunetv2_confkd_conversion.splits import assign_levels, make_splits
from tqdm import tqdm

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY

# Budget, CaseData, DatasetSpec, SourceCase and assign_levels are re-exported: other modules import them from here
__all__ = ["Budget", "CaseData", "DatasetSpec", "SourceCase", "assign_levels", "check_output", "write_mixed_dataset"]

logger = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_output(raw_root: Path, dataset_id: int, name: str, overwrite: bool) -> Path:
    """The output folder ``raw_root/DatasetNNN_name``, after checking name, id and overwrite.

    Raises:
        ConfKDInputError: an invalid name or id, another dataset folder with the same id (nnU-Net could not tell
            them apart), or an existing output without ``overwrite``.
    """
    if not _NAME.match(name):
        raise ConfKDInputError(f"--name {name!r}: a dataset name holds only letters, digits, '_' and '-'")
    if not 1 <= dataset_id <= 999:
        raise ConfKDInputError(f"the dataset id (--id) must lie in 1..999, got {dataset_id}")
    out = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    clash = sorted(p.name for p in Path(raw_root).glob(f"Dataset{dataset_id:03d}_*") if p.name != out.name)
    if clash:
        raise ConfKDInputError(f"--id {dataset_id} is already used by {Path(raw_root) / clash[0]}; choose another id")
    if out.exists() and not overwrite:
        raise ConfKDInputError(f"{out} exists; pass --overwrite to replace it, or choose another --id")
    return out


def _check_request(train: Sequence[SourceCase], test: Sequence[SourceCase], spec: DatasetSpec, raw_root: Path,
                   overwrite: bool) -> Path:
    out = check_output(raw_root, spec.dataset_id, spec.name, overwrite)
    ids = [c.case_id for c in list(train) + list(test)]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ConfKDInputError(f"case identifiers occur twice: {duplicated[:5]}")
    if not train:
        raise ConfKDInputError("the source has no training case")
    shared = {c.patient for c in train} & {c.patient for c in test}
    if shared:
        raise ConfKDInputError(f"patients {sorted(shared)[:5]} are both in training and in the held-out test part")
    return out


def write_mixed_dataset(train: Sequence[SourceCase], test: Sequence[SourceCase], spec: DatasetSpec, budget: Budget,
                        raw_root: Path, preprocessed_root: Path | None = None, overwrite: bool = False,
                        verify: Verify | None = None) -> Path:
    """Write the mixed dataset (see the module docstring); returns its raw folder.

    ``verify(case, dense, written_label, level)`` is called for every case before it is written; whatever it raises
    aborts the conversion inside the temporary folder, so an existing dataset (``overwrite``) stays as it was.
    """
    recover_interrupted_overwrite(Path(raw_root) / spec.folder_name)
    out = _check_request(train, test, spec, Path(raw_root), overwrite)
    train = sorted(train, key=lambda c: c.case_id)  # the per-case seeds follow this order: keep it canonical
    test = sorted(test, key=lambda c: c.case_id)
    manifest = assign_levels(train, budget)
    Path(raw_root).mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(Path(raw_root), spec.folder_name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder_name}.", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        levels = [(c, manifest[c.case_id]) for c in train] + [(c, TEST) for c in test]
        counts = {}
        for index, (case, level) in enumerate(tqdm(levels, desc=spec.folder_name, unit="case")):
            counted = write_case(case, level, spec, budget, tmp, index, verify)
            if level == "weak" and not any(counted["annotated"].values()):
                manifest[case.case_id] = "unlabeled"  # the written label is all ignore: say so in the manifest
                warnings.warn(f"case {case.case_id}: its simulated weak label has no annotated voxel (the dense "
                              "label has no structure this simulator annotates); marked \"unlabeled\"", stacklevel=2)
            if level != TEST:
                counts[case.case_id] = counted
        _write_dataset_json(tmp, spec, budget, manifest, counts)
        splits = make_splits(manifest, {c.case_id: c.patient for c in train})
        atomic_json(splits, tmp / "splits_final.json")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preprocessed_root is not None:
        atomic_json(splits, Path(preprocessed_root) / spec.folder_name / "splits_final.json")
    logger.info("wrote %s", out)
    return out


def _write_dataset_json(folder: Path, spec: DatasetSpec, budget: Budget, manifest: dict[str, str],
                        counts: dict[str, dict[str, dict[int, int]]]) -> None:
    labels = {**spec.labels, "ignore": spec.ignore_label}
    weak_info = {"kind": budget.weak, "params": budget.params, "seed": budget.seed, "full": budget.full,
                 "unlabeled": budget.unlabeled,
                 "background": budget.background,
                 "simulation_spacing": list(budget.simulation_spacing) if budget.simulation_spacing else None,
                 "background_annotated": any(c["annotated"].get(0, 0) > 0 for case, c in counts.items()
                                             if manifest[case] == "weak"),
                 "component_classes": list(budget.component_classes),
                 "source": spec.source, "spacing_setting": list(spec.spacing_setting) if spec.spacing_setting else None,
                 "annotated_voxels": {case: {str(k): v for k, v in c["annotated"].items()}
                                      for case, c in counts.items()},
                 "dense_voxels_of_weak_cases": {case: {str(k): v for k, v in c["dense"].items()}
                                                for case, c in counts.items() if manifest[case] == "weak"}}
    generate_dataset_json(str(folder), spec.channel_names, labels, len(manifest), spec.file_ending,
                          dataset_name=spec.folder_name, description=spec.description,
                          converted_by="nnunetv2_confkd", **{MANIFEST_KEY: manifest, WEAK_LABEL_KEY: weak_info})
