"""Any fully labeled nnU-Net raw dataset into a mixed-supervision one (method.md §4, §5): ``confkd_mixed_dataset``.

The source is a raw dataset folder (``--source``) or a dataset id or name resolved under ``$nnUNet_raw`` (``-d``).
Its ``dataset.json`` gives the labels, channels and file ending; region-based labels and datasets that already declare
an ``"ignore"`` label are refused (the mixed dataset adds its own ignore label, and dense labels are needed to simulate
weak ones). Cases are the ``imagesTr/<case>_XXXX<ending>`` files (one per channel) with ``labelsTr/<case><ending>``,
or the files listed under a ``"dataset"`` key. Images are read with SimpleITK, so the file ending must be one that
SimpleITK reads (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``); other endings (``.png``, ``.tif``) are not supported yet.

Patients (cases that stay on one side of every split): ``--groups REGEX`` (the first capture group of ``re.search``
on the case identifier is the patient, e.g. ``^(patient\\d+)_``; a training case that does not match is an error),
``--groups-file JSON`` (``{case: patient}``; a missing training case is an error), or by default every case its own
patient.

Held-out test part (project choice): the source's own labeled test cases (``imagesTs`` with a label in ``labelsTs``)
are copied as test cases with their dense labels; test images without a label are skipped with a warning. On top,
``--holdout`` (a patient count or a fraction, default 0) carves training patients into ``imagesTs``/``labelsTs``,
drawn with ``--holdout-seed`` (default :data:`HOLDOUT_SEED`, independent of ``--seed``, so that every budget and every
seed is scored on the same patients).

``--component-classes`` lists classes whose every 2D connected component (8-connected, per slice) keeps at least one
annotated voxel in erosion, points and scribble labels (a small lesion next to a large one is not lost). Every weak
case is checked against its dense label before it is written
(:func:`~nnunetv2_confkd.conversion_options.component_check`); a component without annotation raises a
``RuntimeError`` naming the case, and nothing is written (it would break the stated policy).

``--dense-twin-id`` also writes the dense twin (the same cases, split and test part with dense labels everywhere, for
planning CT datasets, see :func:`~nnunetv2_confkd.conversion_options.ct_fingerprint_hint`). The budget flags, the
held-out draw and the checks are those of every converter (:mod:`nnunetv2_confkd.conversion_options`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.conversion import DatasetSpec, SourceCase, read_case, write_with_dense_twin
from nnunetv2_confkd.conversion_options import (
    HOLDOUT_SEED,
    add_budget_arguments,
    add_dense_twin_argument,
    add_holdout_arguments,
    budget_kwargs,
    component_check,
    default_name,
    env_path,
    make_budget,
    run_converter,
    split_holdout,
)

SITK_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


# ---------------------------------------------------------------------------------------------------------------------
# the source dataset
# ---------------------------------------------------------------------------------------------------------------------


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
    """``-d``: a dataset id (``4``, ``004``) or a folder name (``Dataset004_Hippocampus``) under ``raw_root``."""
    if raw_root is None:
        raise ConfKDInputError(f"-d {dataset}: set nnUNet_raw or pass --source with the dataset folder")
    pattern = f"Dataset{int(dataset):03d}_*" if dataset.isdigit() else dataset
    found = sorted(p for p in Path(raw_root).glob(pattern) if p.is_dir())
    if len(found) != 1:
        raise ConfKDInputError(f"-d {dataset}: expected one dataset folder {pattern} in {raw_root}, found "
                               f"{[p.name for p in found]}")
    return found[0]


# ---------------------------------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------------------------------


def make_mixed_dataset(source: Path, raw_root: Path, dataset_id: int, full: float, weak: str, *,
                       name: str | None = None, seed: int = 0, groups: str | None = None,
                       groups_file: Path | None = None, holdout: float = 0.0, holdout_seed: int = HOLDOUT_SEED,
                       component_classes: Sequence[int] = (), weak_params: dict | None = None,
                       background: bool = False, preprocessed_root: Path | None = None, overwrite: bool = False,
                       dense_twin_id: int | None = None, unlabeled: float = 0) -> Path:
    """Turn the fully labeled raw dataset ``source`` into ``raw_root/DatasetNNN_<name>`` with mixed supervision.

    Args:
        source: the source raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``).
        raw_root: the ``nnUNet_raw`` folder of the output.
        dataset_id: output dataset id (1..999; no other folder of ``raw_root`` may use it).
        full: fully labeled training patients, a count (>= 1) or a fraction (< 1).
        weak: a kind of :data:`~nnunetv2_confkd.weak_labels.WEAK_KINDS`.
        name: output name (default :func:`default_name` of the source's name).
        seed: seed of the full-patient draw and of the weak-label simulation.
        groups: regular expression whose first group is the patient of a case.
        groups_file: JSON file ``{case: patient}``.
        holdout: training patients carved into the test part (count or fraction; 0: none).
        holdout_seed: seed of the held-out draw.
        component_classes: classes annotated (and checked) per 2D connected component.
        weak_params: keyword arguments of the simulator.
        background: annotate background too.
        preprocessed_root: ``nnUNet_preprocessed``; ``splits_final.json`` is also written there when given.
        overwrite: replace an existing output of the same id and name.
        dense_twin_id: also write a dense twin with this id (module docstring).
        unlabeled: of the patients that are not full, how many (>= 1) or which fraction (< 1) get no label at all.

    Returns:
        The output dataset folder.

    Raises:
        ConfKDInputError: bad input, before anything is written (a bad case file fails during writing, leaving
            nothing behind).
    """
    source = Path(source)
    if not source.is_dir():
        raise ConfKDInputError(f"--source {source} is not a folder")
    dj = read_source_json(source)
    base = source.name.split("_", 1)[1] if re.match(r"^Dataset\d{3}_.", source.name) else source.name
    name = name or default_name(re.sub(r"[^A-Za-z0-9_-]", "", base) or "Dataset", full, weak, seed, unlabeled)
    if (Path(raw_root) / f"Dataset{dataset_id:03d}_{name}").resolve() == source.resolve():
        raise ConfKDInputError(f"--id {dataset_id} and --name {name} name the source {source} itself")
    labels = {str(k): int(v) for k, v in dj["labels"].items()}
    bad = [c for c in component_classes if c not in labels.values() or c == 0]
    if bad:
        raise ConfKDInputError(f"--component-classes {bad} are not foreground labels of {source} ({labels})")
    train, test = list_source(source, dj, groups, groups_file)
    train, held = split_holdout(train, holdout, holdout_seed)
    channels = {int(k): str(v) for k, v in dj.get("channel_names", dj.get("modality")).items()}
    spec = DatasetSpec(dataset_id, name, labels, channels, dj["file_ending"],
                       f"mixed-supervision version of {source.name}: {full:g} full patients, weak {weak}",
                       str(source.resolve()))
    budget = make_budget(full, weak, seed, weak_params, background, component_classes, unlabeled)
    verify = component_check(budget.component_classes) if budget.component_classes else None
    return write_with_dense_twin(train, [*held, *test], spec, budget, Path(raw_root), preprocessed_root, overwrite,
                                 verify, dense_twin_id)[0]


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``confkd_mixed_dataset`` argument parser."""
    parser = argparse.ArgumentParser(prog="confkd_mixed_dataset", description=__doc__.splitlines()[0],
                                     epilog="Held-out part: the source's labeled imagesTs/labelsTs cases are copied; "
                                            "--holdout carves training patients on top.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--source", type=Path, help="the fully labeled raw dataset folder")
    which.add_argument("-d", dest="dataset", help="the source dataset id or name under $nnUNet_raw")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--groups", default=None,
                          help=r"regex whose first capture group is the patient of a case, e.g. '^(patient\d+)_'")
    grouping.add_argument("--groups-file", type=Path, default=None, help="JSON file {case: patient}")
    parser.add_argument("--component-classes", type=int, nargs="+", default=[],
                        help="classes whose every 2D connected component keeps annotation (checked after writing)")
    add_budget_arguments(parser, "<source name>_<full>full_<weak>_s<seed>")
    add_holdout_arguments(parser, 0.0)
    add_dense_twin_argument(parser)
    return parser


def _convert(args: argparse.Namespace, raw: Path, preprocessed: Path | None) -> Path:
    source = args.source or resolve_dataset(args.dataset, env_path(None, "nnUNet_raw"))
    return make_mixed_dataset(source, raw, args.id, args.full, args.weak, groups=args.groups,
                              groups_file=args.groups_file, component_classes=args.component_classes,
                              preprocessed_root=preprocessed, **budget_kwargs(args))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; prints the summary of the written dataset (and twin; the planning hint for CT)."""
    print(run_converter(build_parser(), argv, _convert))


if __name__ == "__main__":
    main()
