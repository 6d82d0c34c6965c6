"""The two ACDC source layouts and their cases (:func:`list_cases`), for ``confkd_convert_acdc`` (:mod:`~.acdc`).

- **official** ACDC release: ``training/patientXXX/patientXXX_frameYY.nii.gz`` with ``patientXXX_frameYY_gt.nii.gz``
  and ``Info.cfg``. The source (``-i``/``--source``) may be the folder holding ``training/``, ``training/`` itself (any
  folder that holds ``patientXXX/`` folders), the ``database/`` folder of newer downloads, or the folder holding
  ``database/``. Frames are found by their file names: every ``patientXXX_frameYY.nii.gz`` (not ``_4d``, not ``_gt``)
  must have its ``_gt`` file. ``Info.cfg`` is optional; when present, the files of its ``ED`` and ``ES`` frames must
  exist, and its ``Group`` stratifies the held-out test patients. Images and labels are read with SimpleITK and keep
  their geometry. ``--spacing`` is refused for this layout: the NIfTI files carry their own spacing, and overriding it
  would silently change every distance. Held-out test part (``--holdout``): a count (default
  :data:`HOLDOUT_DEFAULT`) or a fraction of the patients, drawn with the fixed seed of every converter
  (:func:`~.holdout.split_holdout`), round-robin over the ``Info.cfg`` groups; or ``testing``, the patients of the
  ``testing/`` folder (their ``_gt`` files are then required).
- **WSL4MIS** HDF5 copy (``volumes/patientXXX_frameYY.h5`` with ``image``, ``label``, ``scribble``, and
  ``split.json``): it stores no spacing, so ``--spacing Z Y X`` (mm, numpy order) is required and recorded in
  ``dataset.json``. Its ``train`` patients are the training part, its ``val`` patients the held-out test part (dense
  labels in ``imagesTs``/``labelsTs``). Its expert scribbles are the weak-label kind ``expert`` (:data:`HDF5_IGNORE`
  = not annotated).

Cases are ``patientXXX_frameYY``; the frames of a patient share the patient ``patientXXX``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_confkd_conversion.cases import EXPERT, CaseData, SourceCase, read_case
from nnunetv2_confkd_conversion.holdout import split_holdout
from nnunetv2_confkd_conversion.weak_labels import WEAK_KINDS

from nnunetv2_confkd.checks import ConfKDInputError

HOLDOUT_DEFAULT = 20
HDF5_IGNORE = 4  # "not annotated" in the WSL4MIS scribbles
_PATIENT = re.compile(r"^patient\d{3}$")
_EXPECTED = ("Expected either the official ACDC layout (training/patientXXX/patientXXX_frameYY.nii.gz with "
             "patientXXX_frameYY_gt.nii.gz; --source may be the folder holding training/, training/ itself or "
             "database/) or the WSL4MIS HDF5 copy (volumes/patientXXX_frameYY.h5 and split.json).")


# ---------------------------------------------------------------------------------------------------------------------
# the official layout
# ---------------------------------------------------------------------------------------------------------------------


def find_official_root(source: Path) -> Path | None:
    """The ``training/`` folder of an official-layout source (``source`` itself when it holds ``patientXXX/``
    folders), or None when ``source`` is not one."""
    for candidate in (source, source / "training", source / "database" / "training"):
        if candidate.is_dir() and any(p.is_dir() and _PATIENT.match(p.name) for p in candidate.iterdir()):
            return candidate
    return None


def parse_info_cfg(path: Path) -> dict[str, str]:
    """``key: value`` lines of an ``Info.cfg`` (``ED``, ``ES``, ``Group``, ``Height``, ``Weight``, ``NbFrame``)."""
    info = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ConfKDInputError(f"{path}: line {number} is not 'key: value': {line!r}")
        info[key.strip()] = value.strip()
    return info


def _nifti_frames(patient_dir: Path) -> dict[int, tuple[Path, Path]]:
    """``{frame: (image, label)}`` of one patient folder, found by file name."""
    pattern = re.compile(rf"^{patient_dir.name}_frame(\d+)\.nii(\.gz)?$")
    frames = {}
    for image in sorted(patient_dir.iterdir()):
        match = pattern.match(image.name)
        if match is None:
            continue
        label = image.with_name(image.name.replace(f"_frame{match.group(1)}", f"_frame{match.group(1)}_gt"))
        if not label.is_file():
            raise ConfKDInputError(f"{image}: the frame has no label file {label.name}. {_EXPECTED}")
        frames[int(match.group(1))] = (image, label)
    if not frames:
        raise ConfKDInputError(f"{patient_dir}: no patientXXX_frameYY.nii.gz frame found. {_EXPECTED}")
    return frames


def _check_info(patient_dir: Path, frames: dict[int, tuple[Path, Path]]) -> str:
    """The patient's group from ``Info.cfg`` (``""`` without one); its ED and ES frames must have files."""
    cfg = patient_dir / "Info.cfg"
    if not cfg.is_file():
        return ""
    info = parse_info_cfg(cfg)
    for phase in ("ED", "ES"):
        if phase in info:
            try:
                frame = int(info[phase])
            except ValueError:
                raise ConfKDInputError(f"{cfg}: {phase} must be a frame number, got {info[phase]!r}") from None
            if frame not in frames:
                raise ConfKDInputError(f"{cfg}: {phase} frame {frame} has no file "
                                       f"{patient_dir.name}_frame{frame:02d}.nii.gz with its _gt label")
    return info.get("Group", "")


def list_official(folder: Path) -> tuple[list[SourceCase], dict[str, str]]:
    """Cases of an official ``training/`` (or ``testing/``) folder and the ``Info.cfg`` group of each patient."""
    cases, groups = [], {}
    for patient_dir in sorted(p for p in folder.iterdir() if p.is_dir() and _PATIENT.match(p.name)):
        frames = _nifti_frames(patient_dir)
        groups[patient_dir.name] = _check_info(patient_dir, frames)
        for frame, (image, label) in sorted(frames.items()):
            cases.append(SourceCase(f"{patient_dir.name}_frame{frame:02d}", patient_dir.name,
                                    partial(read_case, [image], label), str(image)))
    return cases, groups


def _official_cases(source: Path, training: Path, holdout: float | str | None, weak: str,
                    spacing: Sequence[float] | None,
                    patients: Sequence[str] | None) -> tuple[list[SourceCase], list[SourceCase]]:
    if weak == EXPERT:
        raise ConfKDInputError(f"--weak expert: the official ACDC layout at {source} has no expert scribbles; use "
                               f"the WSL4MIS HDF5 copy or a simulated kind {list(WEAK_KINDS)}")
    if spacing is not None:
        raise ConfKDInputError(f"--spacing is only for the HDF5 source; the official layout at {source} keeps the "
                               "spacing of its NIfTI files")
    holdout = HOLDOUT_DEFAULT if holdout is None else holdout
    cases, groups = list_official(training)
    if holdout == "testing":
        testing = training.parent / "testing"
        if not testing.is_dir():
            raise ConfKDInputError(f"--holdout testing: there is no folder {testing}")
        return _restrict(cases, list_official(testing)[0], patients, source)
    cases = _restrict(cases, [], patients, source)[0]
    return split_holdout(cases, holdout, groups=groups)


# ---------------------------------------------------------------------------------------------------------------------
# the WSL4MIS HDF5 copy
# ---------------------------------------------------------------------------------------------------------------------


def _sitk_from(array: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in reversed(spacing)))  # SimpleITK is (x, y, z), numpy (z, y, x)
    return image


def _h5py():
    """The h5py module, which only the HDF5 source needs (the ``acdc`` extra)."""
    try:
        import h5py
    except ImportError:
        raise ConfKDInputError('reading the WSL4MIS HDF5 copy needs h5py: pip install "nnunetv2-confkd[acdc]" (or '
                               "pip install h5py)") from None
    return h5py


def _read_h5(path: Path, spacing: Sequence[float]) -> CaseData:
    try:
        with _h5py().File(path, "r") as h5:
            image, label, scribble = (h5[k][()] for k in ("image", "label", "scribble"))
    except (OSError, KeyError) as error:
        raise ConfKDInputError(f"{path}: cannot read the datasets image, label, scribble ({error})") from error
    return CaseData(images=[_sitk_from(image.astype(np.float32), spacing)], label=_sitk_from(label, spacing),
                    expert=_sitk_from(scribble, spacing), expert_ignore=HDF5_IGNORE)


def _load_split(path: Path) -> dict[str, list[str]]:
    try:
        split = json.loads(path.read_text())
        parts = {part: [str(p) for p in split[part]] for part in ("train", "val")}
    except (ValueError, KeyError, TypeError) as error:
        raise ConfKDInputError(f"{path}: expected {{\"train\": [patients], \"val\": [patients]}} ({error})") from None
    return parts


def _hdf5_cases(source: Path, spacing: Sequence[float] | None, holdout: float | str | None,
                patients: Sequence[str] | None) -> tuple[list[SourceCase], list[SourceCase]]:
    if holdout is not None:
        raise ConfKDInputError(f"--holdout is only for the official layout; the HDF5 source {source} holds out the "
                               "'val' patients of its split.json")
    if spacing is None:
        raise ConfKDInputError(f"--spacing Z Y X is required for the HDF5 source {source}: its files store no "
                               "voxel spacing")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ConfKDInputError(f"--spacing must be three positive numbers (z y x, mm), got {list(spacing)}")
    split = _load_split(source / "split.json")
    _h5py()  # a missing h5py is reported before any case is read
    pattern = re.compile(r"^(patient\d{3})_frame\d+\.h5$")
    by_patient: dict[str, list[Path]] = {}
    for path in sorted((source / "volumes").glob("*.h5")):
        match = pattern.match(path.name)
        if match is None:
            raise ConfKDInputError(f"{path}: not named patientXXX_frameYY.h5")
        by_patient.setdefault(match.group(1), []).append(path)
    parts = []
    for part in ("train", "val"):
        missing = [p for p in split[part] if p not in by_patient]
        if missing:
            raise ConfKDInputError(f"{source / 'split.json'}: {part} patients {missing[:5]} have no volume in "
                                   f"{source / 'volumes'}")
        parts.append([SourceCase(path.name[:-3], patient, partial(_read_h5, path, tuple(spacing)), str(path))
                      for patient in sorted(split[part]) for path in by_patient[patient]])
    return _restrict(parts[0], parts[1], patients, source)


def _is_hdf5(source: Path) -> bool:
    return (source / "split.json").is_file() and any((source / "volumes").glob("*.h5"))


# ---------------------------------------------------------------------------------------------------------------------
# either layout
# ---------------------------------------------------------------------------------------------------------------------


def list_cases(source: Path, weak: str, spacing: Sequence[float] | None = None, holdout: float | str | None = None,
               patients: Sequence[str] | None = None) -> tuple[list[SourceCase], list[SourceCase], str]:
    """Training cases, held-out test cases and the layout name (``"official"`` or ``"hdf5"``) of ``source``.

    Args:
        source: the source folder; weak, spacing, holdout, patients: as in :func:`~.acdc.convert_acdc`.

    Raises:
        ConfKDInputError: missing source, unknown layout, a frame without its label, a bad ``Info.cfg`` or
            ``split.json``, ``--weak expert`` or ``--spacing`` with the official layout, no ``--spacing`` or a
            ``--holdout`` with the HDF5 source, unknown ``--patients``.
    """
    source = Path(source)
    if not source.is_dir():
        raise ConfKDInputError(f"--source {source} is not a folder. {_EXPECTED}")
    if _is_hdf5(source):
        return (*_hdf5_cases(source, spacing, holdout, patients), "hdf5")
    training = find_official_root(source)
    if training is None:
        raise ConfKDInputError(f"--source {source}: unknown layout. {_EXPECTED}")
    return (*_official_cases(source, training, holdout, weak, spacing, patients), "official")


def _restrict(train: list[SourceCase], test: list[SourceCase], patients: Sequence[str] | None,
              source: Path) -> tuple[list[SourceCase], list[SourceCase]]:
    if patients is None:
        return train, test
    wanted = set(patients)
    unknown = wanted - {c.patient for c in train + test}
    if unknown:
        raise ConfKDInputError(f"--patients {sorted(unknown)[:5]} are not among the patients of {source}")
    return [c for c in train if c.patient in wanted], [c for c in test if c.patient in wanted]
