"""Writing mixed-supervision datasets in nnU-Net's raw format (method.md §4, §5): the part every converter shares.

A converter (``dataset_conversion/acdc.py``, ``lits.py``, ``mixed.py``) only lists its source cases as
:class:`SourceCase` objects; :func:`write_mixed_dataset` then

1. checks the request before anything is written (:func:`check_output`: name, id, another dataset with the same id,
   an existing output without ``overwrite``; ``--full`` against the number of patients),
2. chooses the fully labeled training patients at patient level with a seeded generator,
3. reads every case (in case-identifier order, which fixes the per-case seeds), checks image/label shape and spacing
   and the label values, simulates (or takes the expert) weak labels, runs the converter's ``verify`` hook (e.g.
   :func:`~nnunetv2_confkd.conversion_options.component_check`) and writes images and labels into a temporary
   folder beside the output,
4. writes ``dataset.json`` with the ``"ignore"`` label, the ``"supervision"`` manifest and ``"weak_label"`` (kind,
   parameters, seed, source, spacing setting, annotated voxels per case and class),
5. renames the temporary folder to ``DatasetNNN_Name``: an interrupted or failed conversion (a failed ``verify``
   included) leaves no partial dataset and leaves an existing one untouched, and
6. writes ``splits_final.json`` into ``nnUNet_preprocessed/DatasetNNN_Name`` (and a copy into the raw dataset).

:func:`write_with_dense_twin` also writes the dense twin (same cases, split and test part, every label dense), on
which CT datasets are planned. The command-line side (budget flags, held-out draw, names) is
:mod:`nnunetv2_confkd.conversion_options`.

Splits (project choice): fold 0 trains on every training case and validates on the full cases (which it also trains
on; nnU-Net warns and carries on): the fold to train a final model on every case of a budget, with its validation
only monitoring. Folds 1..K are a patient-level cross-validation over the full patients: each validates on one group of
full patients that it does not train on. Weak and unlabeled cases never validate: their dense labels are not in the
dataset.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from tqdm import tqdm

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY
from nnunetv2_confkd.weak_labels import annotated_voxels_per_class, simulate_weak_label

logger = logging.getLogger(__name__)
EXPERT = "expert"
TEST = "test"  # the level passed to ``verify`` for a held-out case (dense label)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class CaseData:
    """One case in memory: image channels, dense label and, for sources that have one, an expert weak label whose
    unannotated voxels already carry the ignore label."""

    images: list[sitk.Image]
    label: sitk.Image
    expert: sitk.Image | None = None
    expert_ignore: int | None = None  # the source's "not annotated" value in ``expert``


def read_case(images: Sequence[Path], label: Path) -> CaseData:
    """A case from its channel files and label file (read with SimpleITK; an unreadable file is named)."""
    read = []
    for path in (*images, label):
        try:
            read.append(sitk.ReadImage(str(path)))
        except RuntimeError as error:
            raise ConfKDInputError(f"{path}: SimpleITK cannot read it ({str(error).strip()[-200:]})") from None
    return CaseData(images=read[:-1], label=read[-1])


@dataclass(frozen=True)
class SourceCase:
    """A case of the source, read lazily. ``patient`` groups cases that must stay on one side of every split."""

    case_id: str
    patient: str
    read: Callable[[], CaseData]
    origin: str = ""  # file or folder named in error messages


@dataclass(frozen=True)
class Budget:
    """How much supervision the training cases get."""

    full: float  # number of fully labeled patients (>= 1) or a fraction of the training patients (< 1)
    weak: str  # a kind of weak_labels.WEAK_KINDS, or "expert"
    unlabeled: float = 0  # of the other patients, how many (>= 1) or which fraction (< 1) get no label at all
    seed: int = 0
    params: dict = field(default_factory=dict)  # keyword arguments of the simulator
    background: bool = False
    component_classes: tuple[int, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """What the output dataset is."""

    dataset_id: int
    name: str
    labels: dict[str, int]  # without "ignore"; it is added as the highest integer
    channel_names: dict[int, str]
    file_ending: str = ".nii.gz"
    description: str = ""
    source: str = ""
    spacing_setting: Sequence[float] | None = None
    label_map: Callable[[np.ndarray], np.ndarray] | None = None  # applied to dense (and expert) labels

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    @property
    def ignore_label(self) -> int:
        return max(self.labels.values()) + 1


Verify = Callable[[SourceCase, np.ndarray, np.ndarray, str], None]
"""A per-case check ``verify(case, dense, written_label, level)`` of :func:`write_mixed_dataset`, called before the case
is written (``level``: ``"full"``, ``"weak"``, ``"unlabeled"`` or ``"test"``); an exception aborts the conversion."""


def choose_patients(patients: Sequence[str], amount: float, seed: int, flag: str = "--full",
                    at_least_one: bool = True) -> list[str]:
    """``amount`` patients (a count >= 1 or a fraction < 1), drawn with ``seed`` from the sorted list (idempotent)."""
    patients = sorted(set(patients))
    count = int(amount) if amount >= 1 else int(round(amount * len(patients)))
    count = max(count, 1) if at_least_one else count
    if count > len(patients):
        raise ConfKDInputError(f"{flag} {count} asks for more patients than the {len(patients)} available")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(patients, count, replace=False).tolist())


def assign_levels(train: Sequence[SourceCase], budget: Budget) -> dict[str, str]:
    """Supervision level of every training case, chosen per patient: full, then unlabeled, then weak."""
    patients = [c.patient for c in train]
    full = set(choose_patients(patients, budget.full, budget.seed, "--full"))
    rest = sorted(set(patients) - full)
    none = set(choose_patients(rest, budget.unlabeled, budget.seed + 1, "--unlabeled", at_least_one=False)
               if budget.unlabeled else [])
    if budget.weak == "unlabeled":
        none = set(rest)
    return {c.case_id: "full" if c.patient in full else ("unlabeled" if c.patient in none else "weak")
            for c in train}


def make_splits(manifest: dict[str, str], patient_of: dict[str, str], n_folds: int = 5) -> list[dict]:
    """Fold 0: train on all, validate on the full cases; folds 1..K: cross-validation over full patients."""
    cases = sorted(manifest)
    full = [c for c in cases if manifest[c] == "full"]
    splits = [{"train": cases, "val": full}]
    full_patients = sorted({patient_of[c] for c in full})
    k = min(n_folds, len(full_patients)) if len(full_patients) > 1 else 0
    for fold in range(k):
        held = set(full_patients[fold::k])
        val = [c for c in full if patient_of[c] in held]
        splits.append({"train": [c for c in cases if c not in val], "val": val})
    return splits


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


def _atomic_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _array(image: sitk.Image, origin: str) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        rounded = np.rint(array)
        if not np.array_equal(rounded, array):
            raise ConfKDInputError(f"{origin}: label image holds non-integer values")
        array = rounded.astype(np.int16)
    return array


def _check_geometry(data: CaseData, origin: str) -> None:
    ref = data.label
    for i, image in enumerate(data.images + ([data.expert] if data.expert is not None else [])):
        what = f"channel {i}" if i < len(data.images) else "expert label"
        if image.GetSize() != ref.GetSize():
            raise ConfKDInputError(f"{origin}: {what} has size {image.GetSize()} but the label has {ref.GetSize()}")
        if not np.allclose(image.GetSpacing(), ref.GetSpacing(), rtol=1e-3, atol=1e-4):
            raise ConfKDInputError(f"{origin}: {what} has spacing {image.GetSpacing()} but the label has "
                                   f"{ref.GetSpacing()}")


def _dense_label(data: CaseData, spec: DatasetSpec, origin: str) -> np.ndarray:
    dense = _array(data.label, origin)
    if spec.label_map is not None:
        dense = spec.label_map(dense)
    allowed = set(spec.labels.values())
    found = set(np.unique(dense).tolist())
    if not found <= allowed:
        raise ConfKDInputError(f"{origin}: label values {sorted(found - allowed)} are not among the declared labels "
                               f"{spec.labels}")
    return dense.astype(np.uint8 if max(allowed) < 255 else np.int16)


def _weak_label(level: str, dense: np.ndarray, data: CaseData, spec: DatasetSpec, budget: Budget,
                rng: np.random.Generator, origin: str) -> np.ndarray:
    ignore = spec.ignore_label
    if level in ("full", TEST):
        return dense
    if level == "unlabeled":
        return np.full_like(dense, ignore)
    if budget.weak == EXPERT:
        if data.expert is None:
            raise ConfKDInputError(f"{origin}: --weak expert needs a source with expert weak labels")
        expert = _array(data.expert, origin + " (expert label)")
        annotated = expert != (ignore if data.expert_ignore is None else data.expert_ignore)
        mapped = np.full_like(dense, ignore)
        raw = expert if spec.label_map is None else spec.label_map(np.where(annotated, expert, 0))
        mapped[annotated] = raw[annotated]
        return mapped
    spacing = data.label.GetSpacing()[::-1]  # numpy axis order
    return simulate_weak_label(budget.weak, dense, spacing, rng, ignore, background=budget.background,
                               component_classes=budget.component_classes, **budget.params)


def _to_image(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


def _write_case(case: SourceCase, level: str, spec: DatasetSpec, budget: Budget, folder: Path, index: int,
                verify: Verify | None) -> dict[str, dict[int, int]]:
    """Write one case (``level`` :data:`TEST`: a held-out case with its dense label) after ``verify``. Returns the
    voxels per class of the written label (``"annotated"``) and of the dense label (``"dense"``)."""
    origin = case.origin or case.case_id
    data = case.read()
    _check_geometry(data, origin)
    dense = _dense_label(data, spec, origin)
    rng = np.random.default_rng([budget.seed, index])  # per case: independent of reading order, idempotent
    label = _weak_label(level, dense, data, spec, budget, rng, origin)
    if verify is not None:
        verify(case, dense, label, level)
    part = "Ts" if level == TEST else "Tr"
    for channel, image in enumerate(data.images):
        sitk.WriteImage(image, str(folder / f"images{part}" / f"{case.case_id}_{channel:04d}{spec.file_ending}"),
                        useCompression=True)
    sitk.WriteImage(_to_image(label, data.label), str(folder / f"labels{part}" / f"{case.case_id}{spec.file_ending}"),
                    useCompression=True)
    return {"annotated": annotated_voxels_per_class(label, spec.ignore_label),
            "dense": annotated_voxels_per_class(dense, spec.ignore_label)}


def write_mixed_dataset(train: Sequence[SourceCase], test: Sequence[SourceCase], spec: DatasetSpec, budget: Budget,
                        raw_root: Path, preprocessed_root: Path | None = None, overwrite: bool = False,
                        verify: Verify | None = None) -> Path:
    """Write the mixed dataset (see the module docstring); returns its raw folder.

    ``verify(case, dense, written_label, level)`` is called for every case before it is written; whatever it raises
    aborts the conversion inside the temporary folder, so an existing dataset (``overwrite``) stays as it was.
    """
    _recover_interrupted_overwrite(Path(raw_root) / spec.folder_name)
    out = _check_request(train, test, spec, Path(raw_root), overwrite)
    train = sorted(train, key=lambda c: c.case_id)  # the per-case seeds follow this order: keep it canonical
    test = sorted(test, key=lambda c: c.case_id)
    manifest = assign_levels(train, budget)
    Path(raw_root).mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(Path(raw_root), spec.folder_name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder_name}.", dir=raw_root))
    try:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        levels = [(c, manifest[c.case_id]) for c in train] + [(c, TEST) for c in test]
        counts = {}
        for index, (case, level) in enumerate(tqdm(levels, desc=spec.folder_name, unit="case")):
            counted = _write_case(case, level, spec, budget, tmp, index, verify)
            if level == "weak" and not any(counted["annotated"].values()):
                manifest[case.case_id] = "unlabeled"  # the written label is all ignore: say so in the manifest
                warnings.warn(f"case {case.case_id}: its simulated weak label has no annotated voxel (the dense "
                              "label has no structure this simulator annotates); marked \"unlabeled\"", stacklevel=2)
            if level != TEST:
                counts[case.case_id] = counted
        _write_dataset_json(tmp, spec, budget, manifest, counts)
        splits = make_splits(manifest, {c.case_id: c.patient for c in train})
        _atomic_json(splits, tmp / "splits_final.json")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if preprocessed_root is not None:
        _atomic_json(splits, Path(preprocessed_root) / spec.folder_name / "splits_final.json")
    logger.info("wrote %s", out)
    return out


def _remove_stale_temporaries(raw_root: Path, folder_name: str) -> None:
    """Temporary folders of a conversion that was killed (SIGKILL leaves no chance to clean up) are removed by the next
    conversion of the same dataset; they never hold a finished dataset."""
    for stale in raw_root.glob(f".{folder_name}.*"):
        if stale.is_dir() and stale.name != f".{folder_name}.old":
            logger.warning("removing %s, left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _old_copy(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def _recover_interrupted_overwrite(out: Path) -> None:
    """A conversion killed between moving the previous dataset aside and moving the new one in leaves only
    ``.<name>.old``: put it back before anything else happens."""
    old = _old_copy(out)
    if old.is_dir() and not out.exists():
        logger.warning("restoring %s from %s, left by an interrupted --overwrite", out, old)
        os.replace(old, out)


def _replace_dir(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = _old_copy(out)  # only reached with overwrite=True
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


def _write_dataset_json(folder: Path, spec: DatasetSpec, budget: Budget, manifest: dict[str, str],
                        counts: dict[str, dict[str, dict[int, int]]]) -> None:
    labels = {**spec.labels, "ignore": spec.ignore_label}
    weak_info = {"kind": budget.weak, "params": budget.params, "seed": budget.seed, "full": budget.full,
                 "unlabeled": budget.unlabeled,
                 "background": budget.background, "component_classes": list(budget.component_classes),
                 "source": spec.source, "spacing_setting": list(spec.spacing_setting) if spec.spacing_setting else None,
                 "annotated_voxels": {case: {str(k): v for k, v in c["annotated"].items()}
                                      for case, c in counts.items()},
                 "dense_voxels_of_weak_cases": {case: {str(k): v for k, v in c["dense"].items()}
                                                for case, c in counts.items() if manifest[case] == "weak"}}
    generate_dataset_json(str(folder), spec.channel_names, labels, len(manifest), spec.file_ending,
                          dataset_name=spec.folder_name, description=spec.description,
                          converted_by="nnunetv2_confkd", **{MANIFEST_KEY: manifest, WEAK_LABEL_KEY: weak_info})


# ---------------------------------------------------------------------------------------------------------------------
# the dense twin
# ---------------------------------------------------------------------------------------------------------------------


def dense_twin_spec(spec: DatasetSpec, twin_id: int) -> DatasetSpec:
    """The spec of the dense twin ``Dataset<twin_id>_<name>Dense``; its labels keep the ignore value, unused, so that
    plans move between the two unchanged."""
    return replace(spec, dataset_id=twin_id, name=f"{spec.name}Dense",
                   description=f"dense twin of {spec.folder_name} (plan on it, see nnunet_notes.md 6.3)")


def twin_folder(mixed: Path, twin_id: int | None) -> Path | None:
    """The dense twin's folder of the dataset folder ``mixed``, or None without a twin id."""
    return None if twin_id is None else mixed.parent / f"Dataset{twin_id:03d}_{mixed.name.split('_', 1)[1]}Dense"


def write_with_dense_twin(train: Sequence[SourceCase], test: Sequence[SourceCase], spec: DatasetSpec, budget: Budget,
                          raw_root: Path, preprocessed_root: Path | None = None, overwrite: bool = False,
                          verify: Verify | None = None, twin_id: int | None = None) -> tuple[Path, Path | None]:
    """:func:`write_mixed_dataset`, then with ``twin_id`` its dense twin: the same cases, test part and
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
    _atomic_json(splits, twin / "splits_final.json")
    if preprocessed_root is not None:
        _atomic_json(splits, Path(preprocessed_root) / twin.name / "splits_final.json")
    return mixed, twin


def summarize(dataset_folder: Path) -> str:
    """Cases per level and, over the weak cases, the fraction of each class's voxels that is annotated."""
    dj = json.loads((Path(dataset_folder) / "dataset.json").read_text())
    manifest, weak = dj[MANIFEST_KEY], dj.get(WEAK_LABEL_KEY, {})
    lines = [f"{Path(dataset_folder).name}: " + ", ".join(
        f"{lvl} {sum(v == lvl for v in manifest.values())}" for lvl in ("full", "weak", "unlabeled")) + " cases"]
    annotated: dict[str, int] = {}
    dense: dict[str, int] = {}
    for case, counts in weak.get("dense_voxels_of_weak_cases", {}).items():
        for cls, n in counts.items():
            dense[cls] = dense.get(cls, 0) + n
            annotated[cls] = annotated.get(cls, 0) + weak["annotated_voxels"][case].get(cls, 0)
    names = {str(v): k for k, v in dj["labels"].items()}
    if dense:
        lines.append("weak cases, annotated share of each class: " + ", ".join(
            f"{names.get(c, c)} {annotated[c] / n:.2%}" for c, n in sorted(dense.items()) if n))
    return "\n".join(lines)
