"""The source of ``confkd_convert_mixed`` (:mod:`~.mixed`): a fully labeled nnU-Net raw dataset, found from the
``-s``/``--source`` value (:func:`resolve_source`), its checked ``dataset.json`` (:func:`read_source_json`), its
training and labeled test cases (:func:`list_source`) and their patients (:func:`patient_groups`).

Cases are the ``imagesTr/<case>_XXXX<ending>`` files (one per channel) with ``labelsTr/<case><ending>``, or the files
listed under a ``"dataset"`` key. Images are read with SimpleITK, so the file ending must be one that SimpleITK reads
(:data:`SITK_ENDINGS`).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from nnunetv2_confkd_conversion.cases import SourceCase, read_case

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.dataset_lookup import dataset_folder

SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def read_source_json(source: Path) -> dict:
    """The source's ``dataset.json``, checked: integer consecutive labels without ``"ignore"``, channels, an ending
    that SimpleITK reads.

    Raises:
        ConfKDInputError: a missing or unreadable file, region-based labels, an ``"ignore"`` label, non-consecutive
            labels, no channels, or an unsupported file ending.
    """
    path = Path(source) / "dataset.json"
    if not path.is_file():
        raise ConfKDInputError(f"--source {source}: no dataset.json; expected an nnU-Net raw dataset folder "
                               "(dataset.json, imagesTr/, labelsTr/)")
    try:
        dj = json.loads(path.read_text())
        labels, ending = dict(dj["labels"]), str(dj["file_ending"])
        channels = dj.get("channel_names", dj.get("modality"))
    except (ValueError, KeyError, TypeError) as error:
        raise ConfKDInputError(f"{path}: not an nnU-Net dataset.json with labels and file_ending ({error})") from None
    if "regions_class_order" in dj or any(not isinstance(v, int) or isinstance(v, bool) for v in labels.values()):
        raise ConfKDInputError(f"{path}: region-based labels are not supported (weak labels and the ignore label "
                               "need one integer per class)")
    if "ignore" in labels:
        raise ConfKDInputError(f'{path} already declares an "ignore" label ({labels["ignore"]}): the source must be '
                               "fully labeled (convert its dense original instead)")
    if sorted(labels.values()) != list(range(len(labels))):
        raise ConfKDInputError(f"{path}: labels {labels} must be consecutive integers 0, 1, 2, ... with background 0")
    if not channels:
        raise ConfKDInputError(f"{path}: no channel_names")
    if ending not in SITK_ENDINGS:
        raise ConfKDInputError(f"{path}: file ending {ending!r} is not supported yet (SimpleITK endings only: "
                               f"{', '.join(SITK_ENDINGS)})")
    return dj


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "_"))


def list_folder(images: Path, labels: Path, ending: str, n_channels: int,
                require_labels: bool = True) -> dict[str, tuple[list[Path], Path | None]]:
    """``{case: (channel files, label file or None)}`` of an ``imagesXx``/``labelsXx`` pair of folders.

    Raises:
        ConfKDInputError: an image file not named ``<case>_XXXX<ending>``, a missing channel, a label without
            images, or (``require_labels``) images without a label.
    """
    channels: dict[str, dict[int, Path]] = {}
    for path in sorted(p for p in images.glob(f"*{ending}") if _visible(p)):
        match = _CHANNEL.match(path.name[:-len(ending)])
        if match is None:
            raise ConfKDInputError(f"{path}: image files must be named <case>_XXXX{ending} (XXXX = channel)")
        channels.setdefault(match.group(1), {})[int(match.group(2))] = path
    cases = {}
    for case, files in channels.items():
        missing = [f"{case}_{i:04d}{ending}" for i in range(n_channels) if i not in files]
        if missing or len(files) != n_channels:
            raise ConfKDInputError(f"{images}: case {case} needs channels 0..{n_channels - 1} "
                                   f"(missing {missing or 'none'}, found {sorted(files)})")
        label = labels / f"{case}{ending}"
        if require_labels and not label.is_file():
            raise ConfKDInputError(f"{label}: missing label file of case {case} ({files[0]})")
        cases[case] = ([files[i] for i in range(n_channels)], label if label.is_file() else None)
    if labels.is_dir():
        orphans = sorted(p for p in labels.glob(f"*{ending}") if _visible(p) and p.name[:-len(ending)] not in cases)
        if orphans:
            raise ConfKDInputError(f"{orphans[0]}: label file without images in {images} ({len(orphans)} in all)")
    return cases


def _listed_cases(source: Path, dj: dict) -> dict[str, tuple[list[Path], Path | None]]:
    """Cases named under the ``"dataset"`` key (paths relative to the dataset folder or absolute)."""
    cases = {}
    for case, entry in dj["dataset"].items():
        files = [Path(os.path.expandvars(p)) for p in entry["images"]]
        files = [p if p.is_absolute() else source / p for p in files]
        label = Path(os.path.expandvars(entry["label"]))
        label = label if label.is_absolute() else source / label
        for path in [*files, label]:
            if not path.is_file():
                raise ConfKDInputError(f"{path}: listed for case {case} in {source / 'dataset.json'} but missing")
        cases[case] = (files, label)
    return cases


def patient_groups(cases: Sequence[str], groups: str | None = None, groups_file: Path | None = None,
                   extra: Sequence[str] = ()) -> dict[str, str]:
    """``{case: patient}`` for ``cases`` (every one must be grouped) and ``extra`` cases (own patient by default).

    Example:
        >>> patient_groups(["p1_a", "p1_b", "p2_a"], r"^(p\\d+)_")
        {'p1_a': 'p1', 'p1_b': 'p1', 'p2_a': 'p2'}
    """
    if groups is not None and groups_file is not None:
        raise ConfKDInputError("give --groups or --groups-file, not both")
    if groups is not None:
        try:
            pattern = re.compile(groups)
        except re.error as error:
            raise ConfKDInputError(f"--groups {groups!r} is not a regular expression ({error})") from None
        if pattern.groups < 1:
            raise ConfKDInputError(f"--groups {groups!r} needs a capture group (the patient), e.g. '^(patient\\d+)_'")
        matches = {c: pattern.search(c) for c in [*cases, *extra]}
        unmatched = [c for c in cases if matches[c] is None or not matches[c].group(1)]
        if unmatched:
            raise ConfKDInputError(f"--groups {groups!r} does not match case(s) {unmatched[:10]} "
                                   f"({len(unmatched)} in all)")
        return {c: m.group(1) if m is not None and m.group(1) else c for c, m in matches.items()}
    if groups_file is not None:
        try:
            mapping = {str(k): str(v) for k, v in json.loads(Path(groups_file).read_text()).items()}
        except (OSError, ValueError, AttributeError) as error:
            raise ConfKDInputError(f"--groups-file {groups_file}: expected a JSON object {{case: patient}} "
                                   f"({error})") from None
        missing = [c for c in cases if c not in mapping]
        if missing:
            raise ConfKDInputError(f"--groups-file {groups_file} has no patient for case(s) {missing[:10]} "
                                   f"({len(missing)} in all)")
        return {c: mapping.get(c, c) for c in [*cases, *extra]}
    return {c: c for c in [*cases, *extra]}


def list_source(source: Path, dj: dict, groups: str | None = None, groups_file: Path | None = None
                ) -> tuple[list[SourceCase], list[SourceCase]]:
    """Training cases and the source's own labeled test cases, grouped into patients."""
    ending, n_channels = dj["file_ending"], len(dj.get("channel_names", dj.get("modality")))
    if "dataset" in dj:
        train = _listed_cases(source, dj)
    else:
        if not (source / "imagesTr").is_dir() or not (source / "labelsTr").is_dir():
            raise ConfKDInputError(f"--source {source}: expected imagesTr/ and labelsTr/ folders")
        train = list_folder(source / "imagesTr", source / "labelsTr", ending, n_channels)
    test = {}
    if (source / "imagesTs").is_dir():
        found = list_folder(source / "imagesTs", source / "labelsTs", ending, n_channels, require_labels=False)
        test = {c: v for c, v in found.items() if v[1] is not None}
        if len(test) < len(found):
            warnings.warn(f"{source / 'imagesTs'}: {len(found) - len(test)} test case(s) have no label in labelsTs "
                          "and are not copied (predict them from the source folder)", stacklevel=2)
    patient = patient_groups(sorted(train), groups, groups_file, extra=sorted(test))

    def cases(found: dict) -> list[SourceCase]:
        return [SourceCase(c, patient[c], partial(read_case, files, label), str(label))
                for c, (files, label) in sorted(found.items())]
    return cases(train), cases(test)


def resolve_dataset(dataset: str, raw_root: Path | None) -> Path:
    """A dataset id (``4``, ``004``) or a folder name (``Dataset004_Hippocampus``) under ``raw_root``."""
    if raw_root is None:
        raise ConfKDInputError(f"-s {dataset}: not a folder; set nnUNet_raw to look it up as a dataset id or name, "
                               "or pass the dataset folder")
    return dataset_folder(raw_root, dataset, f"$nnUNet_raw ({raw_root})",
                          "Give the dataset folder itself, its id or its full DatasetXXX_Name.")


def resolve_source(value: str | Path, raw_root: Path | None) -> Path:
    """``-s``/``--source``: a dataset folder, else (a value without a path separator that is not a folder) a dataset id
    or name under ``raw_root`` (:func:`resolve_dataset`).

    Example:
        >>> resolve_source(".", None) == Path(".")
        True
    """
    text = str(value)
    if Path(text).is_dir() or os.sep in text or (os.altsep and os.altsep in text):
        return Path(text)
    return resolve_dataset(text, raw_root)
