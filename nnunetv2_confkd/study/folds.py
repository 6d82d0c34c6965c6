"""Folds of a ``confkd_benchmark`` study: which ``splits_final.json`` a fold number refers to, and the checks of a
fold before any training.

A run on nnU-Net's fold ``all`` trains on every training case and uses no split. A numbered fold refers to the
dataset's ``splits_final.json`` (``$nnUNet_preprocessed/DatasetXXX/``, else the converters' copy in the raw dataset),
in one of two formats (:func:`split_format`):

- ``"v2"``: cross-validation folds only; no fold validates on a case it trains on. The converters write this: folds
  ``0..K-1`` over the full patients. nnU-Net's own 5-fold split (drawn at the first training when no file exists) is
  of this kind too.
- ``"v1"``: the converters' earlier format: fold 0 trains on every case and validates on the full cases it also trains
  on; folds ``1..K`` are the cross-validation over the full patients.

Fold ``k`` of one format is a different set of cases than fold ``k`` of the other: runs and records keep the format
(:attr:`nnunetv2_confkd.study.runs.Run.split`, the records' ``"split"``), and records without it are ``"v1"``.
"""

from __future__ import annotations

import json
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError

V1, V2 = "v1", "v2"
ALL = "all"
NNUNET_DEFAULT_FOLDS = 5  # folds of the split nnU-Net draws itself when a dataset has no splits_final.json


def read_splits(preprocessed: Path, raw: Path, dataset: str) -> tuple[list[dict] | None, Path | None]:
    """The dataset's folds and the file they came from: nnU-Net's copy in ``preprocessed`` first, else the
    converters' copy in ``raw``; ``(None, None)`` without either."""
    for folder in (Path(preprocessed) / dataset, Path(raw) / dataset):
        path = folder / "splits_final.json"
        if path.is_file():
            return json.loads(path.read_text()), path
    return None, None


def _trains_on_its_validation(fold: dict) -> bool:
    return bool(set(fold["val"]) & set(fold["train"]))


def split_format(splits: list[dict] | None) -> str:
    """``"v1"`` when fold 0 trains on its validation cases (the converters' earlier format), else ``"v2"``."""
    return V1 if splits and _trains_on_its_validation(splits[0]) else V2


def cv_folds(splits: list[dict] | None) -> list[str]:
    """The cross-validation folds of a split: ``1..K`` in the ``v1`` format, every fold in ``v2``, nnU-Net's own
    five folds where there is no file yet."""
    if splits is None:
        return [str(k) for k in range(NNUNET_DEFAULT_FOLDS)]
    return [str(k) for k in range(len(splits)) if not _trains_on_its_validation(splits[k])]


def check_fold(splits: list[dict] | None, source: Path | None, dataset: str, fold: str, cv: bool) -> None:
    """Refuse a numbered fold that the dataset's split does not hold, and, for cross-validation, a fold whose
    validation cases are also training cases.

    Raises:
        ConfKDInputError: naming the dataset, the fold and what to use instead.
    """
    if fold == ALL:
        if cv:
            raise ConfKDInputError("--cv needs numbered folds: fold 'all' validates on the cases it trains on")
        return
    if not fold.isdigit():
        raise ConfKDInputError(f"fold {fold!r}: give 'all' or a fold number of splits_final.json")
    if splits is None:
        if int(fold) >= NNUNET_DEFAULT_FOLDS:
            raise ConfKDInputError(f"{dataset}: no splits_final.json; nnU-Net draws folds 0..4 itself, not {fold}")
        return
    if int(fold) >= len(splits):
        folds = f"folds 0..{len(splits) - 1}" if splits else "no fold (fewer than two full patients: use -f all)"
        raise ConfKDInputError(f"{dataset}: fold {fold} is not in {source}, which holds {folds}; nnU-Net would train "
                               "a random 80:20 split instead")
    if cv and not splits[int(fold)]["val"]:
        raise ConfKDInputError(f"{dataset}: fold {fold} of {source} has no validation case")
    if cv and _trains_on_its_validation(splits[int(fold)]):
        hint = (" (the converters' earlier format, whose fold 0 trains on every case: its cross-validation folds "
                f"are {' '.join(cv_folds(splits)) or 'none'}; converting the dataset again writes folds 0..K-1)"
                if split_format(splits) == V1 else "")
        raise ConfKDInputError(f"{dataset}: fold {fold} of {source} trains on its validation cases{hint}")


def record_split(record: dict) -> str | None:
    """The split format a record's fold number refers to: its ``"split"``, ``"v1"`` for records that do not name one
    (they were made with the converters' earlier split), ``None`` for fold ``all``."""
    if str(record["fold"]) == ALL:
        return None
    return record.get("split") or V1


def fold_label(record: dict) -> str:
    """How the report names a record's fold: the number for ``v1`` folds and ``all`` (as reports always did), the
    format and the number otherwise (``"v2/0"``)."""
    split = record_split(record)
    return str(record["fold"]) if split in (None, V1) else f"{split}/{record['fold']}"
