"""Any fully labeled nnU-Net raw dataset into a mixed-supervision one: ``confkd_convert_mixed``.

The source (``-s``/``--source``) is a raw dataset folder, or a dataset id or name resolved under ``$nnUNet_raw``; the
target is ``-d``/``--id`` (the new dataset id) under ``-o``/``--out`` (default ``$nnUNet_raw``). The source's
``dataset.json`` gives the labels, channels and file ending; region-based labels and datasets that already declare an
``"ignore"`` label are refused (the mixed dataset adds its own ignore label, and dense labels are needed to simulate
weak ones). How cases are found and which file endings are read: :mod:`~.mixed_source`.

Patients (cases that stay on one side of every split): ``--groups REGEX`` (the first capture group of ``re.search``
on the case identifier is the patient, e.g. ``^(patient\\d+)_``; a training case that does not match is an error),
``--groups-file JSON`` (``{case: patient}``; a missing training case is an error), or by default every case its own
patient.

Held-out test part: the source's own labeled test cases (``imagesTs`` with a label in ``labelsTs``) are copied as test
cases with their dense labels; test images without a label are skipped with a warning. On top, ``--holdout`` (a
patient count or a fraction, default 0) carves training patients into ``imagesTs``/``labelsTs``, drawn with
``--holdout-seed`` (default :data:`~.holdout.HOLDOUT_SEED`, independent of ``--seed``, so that every budget and every
seed is scored on the same patients).

``--component-classes`` lists classes whose every 2D connected component (8-connected, per slice) keeps at least one
annotated voxel in erosion, points and scribble labels (a small lesion next to a large one is not lost). Every weak
case is checked against its dense label before it is written (:func:`~.component_policy.component_check`); a
component without annotation raises a ``RuntimeError`` naming the case, and nothing is written.

``--dense-twin-id`` also writes the dense twin (the same cases, split and test part with dense labels everywhere, for
planning CT datasets, see :func:`~.reporting.ct_fingerprint_hint`). The budget flags, the held-out draw and the checks
are those of every converter (:mod:`~.options`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from nnunetv2_confkd_conversion.budget import default_name, make_budget
from nnunetv2_confkd_conversion.cases import DatasetSpec
from nnunetv2_confkd_conversion.component_policy import component_check
from nnunetv2_confkd_conversion.dense_twin import write_with_dense_twin
from nnunetv2_confkd_conversion.holdout import HOLDOUT_SEED, split_holdout
from nnunetv2_confkd_conversion.mixed_source import list_source, read_source_json, resolve_source
from nnunetv2_confkd_conversion.options import (
    add_budget_arguments,
    add_dense_twin_argument,
    add_holdout_arguments,
    budget_kwargs,
    env_path,
    run_converter,
)

from nnunetv2_confkd.checks import ConfKDInputError


def make_mixed_dataset(source: Path, raw_root: Path, dataset_id: int, full: float, weak: str, *,
                       name: str | None = None, seed: int = 0, groups: str | None = None,
                       groups_file: Path | None = None, holdout: float = 0.0, holdout_seed: int = HOLDOUT_SEED,
                       component_classes: Sequence[int] = (), weak_params: dict | None = None,
                       background: bool = False, preprocessed_root: Path | None = None, overwrite: bool = False,
                       dense_twin_id: int | None = None, unlabeled: float = 0,
                       simulation_spacing: Sequence[float] | None = None) -> Path:
    """Turn the fully labeled raw dataset ``source`` into ``raw_root/DatasetNNN_<name>`` with mixed supervision.

    Args:
        source: the source raw dataset folder (``dataset.json``, ``imagesTr``, ``labelsTr``).
        raw_root: the ``nnUNet_raw`` folder of the output.
        dataset_id: output dataset id (1..999; no other folder of ``raw_root`` may use it).
        full: fully labeled training patients, a count (>= 1) or a fraction (< 1).
        weak: a kind of :data:`~.weak_labels.WEAK_KINDS`.
        name: output name (default :func:`~.budget.default_name` of the source's name).
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
    budget = make_budget(full, weak, seed, weak_params, background, component_classes, unlabeled,
                         simulation_spacing=simulation_spacing)
    verify = component_check(budget.component_classes) if budget.component_classes else None
    return write_with_dense_twin(train, [*held, *test], spec, budget, Path(raw_root), preprocessed_root, overwrite,
                                 verify, dense_twin_id)[0]


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``confkd_convert_mixed`` argument parser."""
    parser = argparse.ArgumentParser(prog="confkd_convert_mixed", description=__doc__.splitlines()[0],
                                     epilog="Held-out part: the source's labeled imagesTs/labelsTs cases are copied; "
                                            "--holdout carves training patients on top.")
    parser.add_argument("-s", "--source", dest="source", required=True,
                        help="the fully labeled source dataset: its raw folder, or its id or name under $nnUNet_raw")
    grouping = parser.add_mutually_exclusive_group()
    grouping.add_argument("--groups", default=None,
                          help=r"regex whose first capture group is the patient of a case, e.g. '^(patient\d+)_'")
    grouping.add_argument("--groups-file", type=Path, default=None, help="JSON file {case: patient}")
    parser.add_argument("--component-classes", type=int, nargs="+", default=[],
                        help="classes whose every 2D connected component keeps annotation (checked before writing)")
    add_budget_arguments(parser, "<source name>_<full>full_<weak>_s<seed>")
    add_holdout_arguments(parser, 0.0)
    add_dense_twin_argument(parser)
    return parser


def _convert(args: argparse.Namespace, raw: Path, preprocessed: Path | None) -> Path:
    source = resolve_source(args.source, env_path(None, "nnUNet_raw"))
    return make_mixed_dataset(source, raw, args.id, args.full, args.weak, groups=args.groups,
                              groups_file=args.groups_file, component_classes=args.component_classes,
                              preprocessed_root=preprocessed, **budget_kwargs(args))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; prints the summary of the written dataset (and twin; the planning hint for CT)."""
    print(run_converter(build_parser(), argv, _convert))


if __name__ == "__main__":
    main()
