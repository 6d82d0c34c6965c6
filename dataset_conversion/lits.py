"""LiTS liver and tumor CT into a mixed-supervision nnU-Net dataset: ``confkd_convert_lits``.

The target is ``-d``/``--id`` (the new dataset id) under ``-o``/``--out`` (default ``$nnUNet_raw``). Two source
layouts are recognised from ``-i``/``--source``:

- **official** LiTS release: ``volume-N.nii`` with ``segmentation-N.nii`` (also ``.nii.gz``), searched recursively,
  so ``Training Batch 1/`` and ``Training Batch 2/`` (or any other sub-folders) may hold them. Cases are
  ``lits_NNN`` (``N`` zero-padded to three digits). Test volumes (``test-volume-N.nii``) have no public labels and
  are not read.
- **MSD** ``Task03_Liver``: ``imagesTr/liver_N.nii.gz`` with ``labelsTr/liver_N.nii.gz``. Cases are ``liver_NNN``: the
  MSD indices are not assumed to equal the LiTS indices, so the two layouts get distinct names. Its ``imagesTs`` has
  no labels and is not read.

Files and folders starting with ``.`` or ``_`` (macOS ``._*``, ``__MACOSX``) are skipped. Labels: background 0,
liver 1, tumor 2 (the writer adds ignore 3); any other value is an error naming the file. One channel, ``CT``.

**Patients.** LiTS publishes no patient identifiers, so every volume is assumed to be its own patient (a patient
scanned twice could then sit on both sides of a split; nothing in the data allows a better grouping).

**Held-out test part.** The 70 LiTS test volumes have no public labels, so ``--holdout`` (a count or a fraction of
the labeled volumes, default 0.2) is carved out into ``imagesTs``/``labelsTs`` with dense labels, drawn with
``--holdout-seed`` (default 1234, independent of ``--seed`` and ``--full``: every budget and every seed is scored on
the same volumes).

**Tumor policy.** Weak labels are simulated with ``component_classes=(2,)``: every tumor connected component of every
2D slice (8-connected) of a weak case keeps at least one annotated voxel for erosion, points and scribble, so that no
small tumor next to a large one silently loses its annotation (``--no-tumor-components`` treats tumor as one
structure per slice, as the liver). Every weak case is checked against its dense segmentation before it is written
(:func:`~.component_policy.component_check`): with the policy on, a tumor component without annotation raises
``RuntimeError`` naming the case, and nothing is written (an existing dataset stays as it was); with it off, the same
finding is a warning.

**CT fingerprint trap**: nnU-Net's fingerprint counts ignore voxels as foreground, so the CTNormalization statistics
(clipping percentiles, mean, std) of a mixed dataset come largely from unannotated voxels.
Fix: plan on a dense twin and move the plans. ``--dense-twin-id N`` also writes that twin (same cases, split and test
part, dense labels, every case "full"); ``main`` prints the commands at the end.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from nnunetv2_confkd_conversion.budget import default_name, make_budget
from nnunetv2_confkd_conversion.cases import DatasetSpec, SourceCase, read_case
from nnunetv2_confkd_conversion.component_policy import component_check
from nnunetv2_confkd_conversion.dense_twin import write_with_dense_twin
from nnunetv2_confkd_conversion.holdout import HOLDOUT_SEED, split_holdout
from nnunetv2_confkd_conversion.options import (
    add_budget_arguments,
    add_dense_twin_argument,
    add_holdout_arguments,
    budget_kwargs,
    run_converter,
)

from nnunetv2_confkd.checks import ConfKDInputError

logger = logging.getLogger(__name__)

LABELS = {"background": 0, "liver": 1, "tumor": 2}
TUMOR = LABELS["tumor"]
CHANNELS = {0: "CT"}
HOLDOUT_DEFAULT = 0.2
_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")
_SEGMENTATION = re.compile(r"^segmentation-(\d+)\.nii(\.gz)?$")
_MSD = re.compile(r"^liver_(\d+)\.nii(\.gz)?$")
_EXPECTED = ("Expected the official LiTS layout (volume-N.nii with segmentation-N.nii, .nii or .nii.gz, in any "
             "sub-folders such as 'Training Batch 1') or MSD Task03_Liver (imagesTr/liver_N.nii.gz with "
             "labelsTr/liver_N.nii.gz).")


# ---------------------------------------------------------------------------------------------------------------------
# listing the source
# ---------------------------------------------------------------------------------------------------------------------


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def _indexed(files: list[Path], pattern: re.Pattern) -> dict[int, Path]:
    """``{N: file}`` of the files whose name matches ``pattern``; the same N twice is an error."""
    found: dict[int, Path] = {}
    for path in sorted(files):
        match = pattern.match(path.name)
        if match is None:
            continue
        index = int(match.group(1))
        if index in found:
            raise ConfKDInputError(f"{path}: index {index} also in {found[index]}; keep one of the two files")
        found[index] = path
    return found


def _pairs(images: dict[int, Path], labels: dict[int, Path], label_name: str, image_name: str) -> list[int]:
    """The indices present on both sides; an image without a label (or the reverse) is an error naming it."""
    for missing_in, present, what in ((labels, images, label_name), (images, labels, image_name)):
        lonely = sorted(set(present) - set(missing_in))
        if lonely:
            extra = f" ({len(lonely)} such files)" if len(lonely) > 1 else ""
            raise ConfKDInputError(f"{present[lonely[0]]}: no matching {what.format(n=lonely[0])} found{extra}")
    return sorted(images)


def detect_layout(source: Path) -> str:
    """``"msd"`` or ``"official"``.

    Raises:
        ConfKDInputError: ``source`` is not a folder, holds both layouts, or neither.
    """
    if not source.is_dir():
        raise ConfKDInputError(f"--source {source} is not a folder. {_EXPECTED}")
    files = [p for p in source.rglob("*.nii*") if p.is_file() and _visible(p, source)]
    official = any(_VOLUME.match(p.name) or _SEGMENTATION.match(p.name) for p in files)
    msd = any(_MSD.match(p.name) and p.parent.name in ("imagesTr", "labelsTr") for p in files)
    if official and msd:
        raise ConfKDInputError(f"--source {source} holds both the official LiTS files and MSD Task03_Liver; point "
                               "--source at one of them")
    if not official and not msd:
        raise ConfKDInputError(f"--source {source}: unknown layout, no LiTS files found. {_EXPECTED}")
    return "official" if official else "msd"


def list_official(source: Path) -> dict[str, tuple[Path, Path]]:
    """``{lits_NNN: (volume, segmentation)}`` of the official layout (searched recursively)."""
    files = [p for p in source.rglob("*.nii*") if p.is_file() and _visible(p, source)]
    volumes, segmentations = _indexed(files, _VOLUME), _indexed(files, _SEGMENTATION)
    indices = _pairs(volumes, segmentations, "segmentation-{n}.nii[.gz]", "volume-{n}.nii[.gz]")
    return {f"lits_{n:03d}": (volumes[n], segmentations[n]) for n in indices}


def list_msd(source: Path) -> dict[str, tuple[Path, Path]]:
    """``{liver_NNN: (image, label)}`` of MSD ``Task03_Liver``."""
    folders = [source / "imagesTr", source / "labelsTr"]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        raise ConfKDInputError(f"--source {source}: MSD layout without {missing[0].name}/. {_EXPECTED}")
    images, labels = ([p for p in f.iterdir() if p.is_file() and _visible(p, source)] for f in folders)
    images, labels = _indexed(images, _MSD), _indexed(labels, _MSD)
    indices = _pairs(images, labels, "labelsTr/liver_{n}.nii.gz", "imagesTr/liver_{n}.nii.gz")
    return {f"liver_{n:03d}": (images[n], labels[n]) for n in indices}


def list_cases(source: Path) -> tuple[list[SourceCase], str]:
    """All labeled cases of ``source`` (each volume its own patient) and its layout (``"official"`` or ``"msd"``).

    Raises:
        ConfKDInputError: unknown or ambiguous layout, a volume without its segmentation or the reverse, the same
            index twice.
    """
    layout = detect_layout(Path(source))
    pairs = (list_official if layout == "official" else list_msd)(Path(source))
    # the origin names the label file first: label-value and geometry errors are about the pair
    return [SourceCase(case, case, partial(read_case, [volume], label), f"{label} (image {volume})")
            for case, (volume, label) in pairs.items()], layout


# ---------------------------------------------------------------------------------------------------------------------
# conversion
# ---------------------------------------------------------------------------------------------------------------------


def convert_lits(source: Path, raw_root: Path, dataset_id: int, full: float, weak: str, *, name: str | None = None,
                 seed: int = 0, holdout: float = HOLDOUT_DEFAULT, holdout_seed: int = HOLDOUT_SEED,
                 tumor_components: bool = True, weak_params: dict | None = None, background: bool = False,
                 preprocessed_root: Path | None = None, overwrite: bool = False,
                 dense_twin_id: int | None = None, unlabeled: float = 0,
                 simulation_spacing: Sequence[float] | None = None) -> Path:
    """Convert LiTS (official layout or MSD Task03_Liver) into ``raw_root/DatasetNNN_<name>``.

    Args:
        source: the LiTS folder (see the module docstring for the layouts accepted).
        raw_root: the ``nnUNet_raw`` folder.
        dataset_id: nnU-Net dataset id (1..999).
        full: fully labeled training volumes (patients), a count (>= 1) or a fraction (< 1).
        weak: a kind of :data:`~.weak_labels.WEAK_KINDS`.
        name: dataset name (default ``LiTS_<full>full_<weak>_s<seed>``).
        seed: seed of the full-patient draw and of the weak-label simulation.
        holdout: volumes held out as the test part, a count or a fraction (0: none).
        holdout_seed: seed of the held-out draw.
        tumor_components: the tumor policy of the module docstring (annotate and check every tumor component).
        weak_params: keyword arguments of the weak-label simulator (e.g. ``{"iterations": 10}``).
        background: annotate background too.
        preprocessed_root: ``nnUNet_preprocessed``; ``splits_final.json`` is also written there when given.
        overwrite: replace an existing ``DatasetNNN_<name>`` (and the twin's folder).
        dense_twin_id: also write the dense twin ``Dataset<dense_twin_id>_<name>Dense``.
        unlabeled: of the volumes that are not full, how many (>= 1) or which fraction (< 1) get no label at all.

    Returns:
        The dataset folder.

    Raises:
        ConfKDInputError: bad input, raised before anything is written; a bad case file (label values outside
            {0, 1, 2}, image/label size or spacing mismatch) fails while writing and leaves nothing behind.
        RuntimeError: a weak case lost a tumor component although the tumor policy is on (nothing is written).
    """
    cases, layout = list_cases(Path(source))
    train, test = split_holdout(cases, holdout, holdout_seed)
    budget = make_budget(full, weak, seed, weak_params, background, (TUMOR,) if tumor_components else (), unlabeled,
                         simulation_spacing=simulation_spacing)
    name = name or default_name("LiTS", full, weak, seed, unlabeled)
    spec = DatasetSpec(dataset_id, name, LABELS, CHANNELS,
                       description=f"LiTS ({layout} layout), {full:g} full volumes, weak {weak}, "
                                   f"tumor components {'kept' if tumor_components else 'not enforced'}",
                       source=f"{layout}: {Path(source).resolve()}")
    logger.info("LiTS %s layout: %d training and %d held-out volumes", layout, len(train), len(test))
    return write_with_dense_twin(train, test, spec, budget, Path(raw_root), preprocessed_root, overwrite,
                                 component_check((TUMOR,), strict=tumor_components), dense_twin_id)[0]


# ---------------------------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``confkd_convert_lits`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="confkd_convert_lits", description=__doc__.splitlines()[0],
        epilog="Tumor policy: every tumor connected component (2D, per slice) of a weak case keeps at least one "
               "annotated voxel for erosion, points and scribble; this is checked before each case is written (error, "
               "nothing written). Each volume is treated as one patient (LiTS publishes no patient ids). CT: plan on "
               "the dense twin (--dense-twin-id), see the hint printed at the end.")
    parser.add_argument("-i", "--source", dest="source", type=Path, required=True,
                        help="input: official LiTS folder (volume-N.nii/segmentation-N.nii, searched recursively) "
                             "or MSD Task03_Liver (imagesTr/labelsTr)")
    parser.add_argument("--no-tumor-components", dest="tumor_components", action="store_false",
                        help="treat tumor as one structure per slice (small tumors may lose all annotation; the "
                             "check then only warns)")
    add_budget_arguments(parser, "LiTS_<full>full_<weak>_s<seed>")
    add_holdout_arguments(parser, HOLDOUT_DEFAULT)
    add_dense_twin_argument(parser)
    return parser


def _convert(args: argparse.Namespace, raw: Path, preprocessed: Path | None) -> Path:
    return convert_lits(args.source, raw, args.id, args.full, args.weak, tumor_components=args.tumor_components,
                        preprocessed_root=preprocessed, **budget_kwargs(args))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; prints the summary of the written dataset (and twin) and the CT planning hint."""
    print(run_converter(build_parser(), argv, _convert))


if __name__ == "__main__":
    main()
