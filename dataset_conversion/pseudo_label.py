"""``confkd_pseudo_label``: the two-stage self-training recipe as a dataset conversion.

A model trained on a mixed dataset (typically nnU-Net or ``nnUNetTrainerStrongOnly`` on its fully labeled cases)
predicts the dataset's unlabeled training cases; every voxel whose highest class probability reaches ``threshold``
keeps the predicted class as its label, every other voxel is *ignore*. The result is a new raw dataset in which those
cases are weak cases (``"weak"`` in the manifest, ``weak_label["kind"] == "pseudo"``), ready for any trainer of this
package or for stock nnU-Net with the ignore label. Full and weak cases, the held-out part and the split are copied
unchanged; a case whose prediction is confident nowhere stays unlabeled.

The new dataset is written to a hidden temporary folder and renamed into place; an existing dataset is replaced only
with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2_confkd_conversion.atomic_output import (
    atomic_json,
    recover_interrupted_overwrite,
    remove_stale_temporaries,
    replace_dir,
)

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.supervision import MANIFEST_KEY, WEAK_LABEL_KEY

KIND = "pseudo"


def pseudo_label(probabilities: np.ndarray, threshold: float, ignore_label: int) -> np.ndarray:
    """The argmax of ``probabilities`` (``(C, *spatial)``, summing to one over ``C``) where its probability reaches
    ``threshold``, ``ignore_label`` elsewhere.

    Example:
        >>> pseudo_label(np.array([[0.9, 0.4, 0.2], [0.1, 0.6, 0.8]]), 0.7, 9).tolist()
        [0, 9, 1]
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    labels = np.argmax(probabilities, axis=0).astype(np.uint8)
    labels[np.max(probabilities, axis=0) < threshold] = ignore_label
    return labels


def unlabeled_cases(dataset_json: dict, source: str) -> list[str]:
    """The training cases that the manifest of ``dataset_json`` marks ``"unlabeled"`` (an error if there is none)."""
    manifest = dataset_json.get(MANIFEST_KEY)
    if not isinstance(manifest, dict):
        raise ConfKDInputError(f'{source} has no "{MANIFEST_KEY}" manifest; pseudo-labels are made for the cases it '
                               'marks "unlabeled" (convert the dataset with one of the confkd_convert_* commands)')
    cases = sorted(c for c, level in manifest.items() if level == "unlabeled")
    if not cases:
        raise ConfKDInputError(f'{source}: no case is "unlabeled"; nothing to pseudo-label')
    return cases


def image_files(raw_dataset: Path, dataset_json: dict, case: str) -> list[str]:
    """The channel files ``imagesTr/<case>_XXXX<ending>`` of ``case``, in channel order."""
    ending = dataset_json["file_ending"]
    files = [raw_dataset / "imagesTr" / f"{case}_{int(c):04d}{ending}" for c in dataset_json["channel_names"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ConfKDInputError(f"case {case}: image file(s) {missing} are missing")
    return [str(f) for f in files]


def write_pseudo_labeled_dataset(source: Path, target: Path, predictions: Path, threshold: float,
                                 provenance: dict, overwrite: bool = False) -> Path:
    """Copy the raw dataset ``source`` to ``target`` with the unlabeled cases pseudo-labeled from ``predictions``
    (nnU-Net's prediction folder with ``--save_probabilities``: ``<case><ending>`` and ``<case>.npz``).

    Returns ``target``. ``provenance`` (model, head, checkpoint) goes into ``weak_label``.
    """
    dataset_json = json.loads((source / "dataset.json").read_text())
    ignore = int(dataset_json["labels"].get("ignore", -1))
    if ignore < 0:
        raise ConfKDInputError(f'{source / "dataset.json"} declares no "ignore" label')
    cases = unlabeled_cases(dataset_json, str(source / "dataset.json"))
    recover_interrupted_overwrite(target)
    if target.exists() and not overwrite:
        raise ConfKDInputError(f"{target} exists; choose another dataset id or pass --overwrite to replace it")
    remove_stale_temporaries(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        ending, manifest = dataset_json["file_ending"], dict(dataset_json[MANIFEST_KEY])
        counts, class_voxels, total = {}, np.zeros(ignore + 1, np.int64), 0
        for case in cases:
            probabilities = np.load(predictions / f"{case}.npz")["probabilities"]
            like = sitk.ReadImage(str(predictions / f"{case}{ending}"))
            label = pseudo_label(probabilities, threshold, ignore)
            image = sitk.GetImageFromArray(label)
            image.CopyInformation(like)
            sitk.WriteImage(image, str(tmp / "labelsTr" / f"{case}{ending}"), useCompression=True)
            counts[case] = int(np.sum(label != ignore))
            class_voxels += np.bincount(label.ravel(), minlength=ignore + 1)[:ignore + 1]
            total += label.size
            manifest[case] = "weak" if counts[case] else "unlabeled"
        dataset_json.update({
            "name": target.name.split("_", 1)[1], MANIFEST_KEY: manifest,
            WEAK_LABEL_KEY: {"kind": KIND, "threshold": threshold, "background_annotated": True,
                             "source_dataset": source.name, "annotated_voxels": counts,
                             "pseudo_labeled_voxels": {name: int(class_voxels[value])
                                                       for name, value in dataset_json["labels"].items()
                                                       if int(value) != ignore},
                             "pseudo_label_case_voxels": int(total), **provenance,
                             "source_weak_label": dataset_json.get(WEAK_LABEL_KEY)},
        })
        atomic_json(dataset_json, tmp / "dataset.json")
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target



def predict_with_probabilities(model: Path, fold: str, head: str | None, checkpoint: str, cases: dict[str, list[str]],
                               out: Path, device: str, num_processes: int) -> None:
    """nnU-Net's prediction of ``cases`` (``{case: channel files}``) into ``out`` with ``--save_probabilities``;
    ``head`` picks the decoder of a ConfKD model (None: the model's own inference network)."""
    import torch

    from nnunetv2_confkd.cli import with_ext_trainers
    from nnunetv2_confkd.training.heads import head_predictor

    with_ext_trainers()
    predictor = head_predictor(model, fold if fold == "all" else int(fold), head, checkpoint, torch.device(device))
    predictor.predict_from_files(list(cases.values()), [str(out / c) for c in cases], save_probabilities=True,
                                 overwrite=True, num_processes_preprocessing=num_processes,
                                 num_processes_segmentation_export=num_processes)


def build_parser() -> argparse.ArgumentParser:
    """The ``confkd_pseudo_label`` argument parser."""
    from nnunetv2_confkd.cli import add_device_argument

    parser = argparse.ArgumentParser(prog="confkd_pseudo_label", description=__doc__.splitlines()[0])
    parser.add_argument("-s", "--source", dest="source", required=True,
                        help="mixed dataset with unlabeled cases: its raw folder, or its id or name under $nnUNet_raw")
    parser.add_argument("-d", "--id", dest="id", type=int, required=True, help="output dataset id (1..999)")
    parser.add_argument("--name", default=None, help="output dataset name (default: <source name>_pseudo<threshold>)")
    parser.add_argument("-m", "--model", dest="model", type=Path, required=True,
                        help="trained model folder, e.g. "
                             "$nnUNet_results/DatasetXXX/nnUNetTrainerStrongOnly__nnUNetPlans__2d")
    parser.add_argument("-f", default="0", help="fold of the model (default 0)")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file (default checkpoint_final.pth)")
    parser.add_argument("--head", choices=("student", "teacher"), default=None,
                        help="decoder of a ConfKD model (default: the model's inference head)")
    parser.add_argument("-t", "--threshold", dest="threshold", type=float, default=0.9,
                        help="keep voxels whose highest class probability reaches this (default 0.9)")
    parser.add_argument("-o", "--out", dest="out", type=Path, default=None,
                        help="nnUNet_raw folder of the output (default: $nnUNet_raw)")
    parser.add_argument("-np", dest="np", type=int, default=1, help="processes for nnU-Net's prediction (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    add_device_argument(parser)
    return parser


def summary(weak_label: dict) -> str:
    """One line on what the pseudo-labels hold: the share of the pseudo-labeled cases' voxels that reached the
    threshold, per class and in all, and how many cases stayed unlabeled.

    Example:
        >>> print(summary({"threshold": 0.9, "annotated_voxels": {"a": 9, "b": 0}, "pseudo_label_case_voxels": 20,
        ...                "pseudo_labeled_voxels": {"background": 6, "LV": 3}}))
        threshold 0.9: 45.0 % of the voxels of 2 cases labeled (background 30.0 %, LV 15.0 %); 1 case(s) left unlabeled
    """
    total = max(weak_label["pseudo_label_case_voxels"], 1)
    per_class = ", ".join(f"{name} {100 * n / total:.1f} %" for name, n in weak_label["pseudo_labeled_voxels"].items())
    counts = weak_label["annotated_voxels"]
    return (f"threshold {weak_label['threshold']:g}: {100 * sum(counts.values()) / total:.1f} % of the voxels of "
            f"{len(counts)} cases labeled ({per_class}); {sum(n == 0 for n in counts.values())} case(s) left unlabeled")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: predict the unlabeled cases, write the pseudo-labeled dataset, print its path."""
    from nnunetv2_confkd_conversion.mixed_source import resolve_source

    from nnunetv2_confkd.cli import resolve_device
    from nnunetv2_confkd.study.provenance import portable_path

    parser = build_parser()
    args = parser.parse_args(argv)
    raw = args.out or (Path(os.environ["nnUNet_raw"]) if os.environ.get("nnUNet_raw") else None)
    if raw is None:
        parser.error("give -o/--out or set nnUNet_raw")
    try:
        source = resolve_source(args.source, Path(os.environ["nnUNet_raw"]) if os.environ.get("nnUNet_raw") else None)
        dataset_json = json.loads((source / "dataset.json").read_text())
        cases = {c: image_files(source, dataset_json, c) for c in unlabeled_cases(dataset_json, str(source))}
        if not 1 <= args.id <= 999:
            raise ConfKDInputError(f"-d {args.id}: dataset ids run from 1 to 999")
        name = args.name or f"{source.name.split('_', 1)[1]}_pseudo{args.threshold:g}"
        target = raw / f"Dataset{args.id:03d}_{name}"
        if target.exists() and not args.overwrite:
            raise ConfKDInputError(f"{target} exists; choose another dataset id or pass --overwrite to replace it")
        with tempfile.TemporaryDirectory() as predictions:
            predict_with_probabilities(args.model, args.f, args.head, args.chk, cases, Path(predictions),
                                       resolve_device(args), args.np)
            model = portable_path(args.model.resolve(), target, os.environ)  # e.g. $nnUNet_results/Dataset...
            provenance = {"model": model, "fold": args.f, "checkpoint": args.chk, "head": args.head}
            write_pseudo_labeled_dataset(source, target, Path(predictions), args.threshold, provenance,
                                         args.overwrite)
    except ConfKDInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(summary(json.loads((target / "dataset.json").read_text())[WEAK_LABEL_KEY]))
    print(target)


if __name__ == "__main__":
    main()
