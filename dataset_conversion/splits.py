"""Supervision levels and folds of a mixed dataset: which training patients are full, weak or unlabeled
(:func:`assign_levels`), and the folds of ``splits_final.json`` (:func:`make_splits`).

``splits_final.json`` holds a patient-level cross-validation over the full patients and nothing else: folds
``0..K-1`` with ``K = min(5, number of full patients)``. Each fold validates on one group of full patients (every
case of a patient, e.g. both ACDC frames, on the same side) and trains on every other case; every full patient is
validated in exactly one fold, and weak and unlabeled cases are always in training (their dense labels are not in the
dataset, so they are never scored). With fewer than two full patients there is no fold and the file holds ``[]``.

The model of a whole budget trains on nnU-Net's own fold ``all`` (``nnUNetv2_train ... all``), which needs no split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from nnunetv2_confkd_conversion.amounts import choose_patients
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.cases import SourceCase

logger = logging.getLogger(__name__)


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
    """Patient-level cross-validation folds over the full patients (see the module docstring).

    The sorted full patients are dealt to the folds in turn (patient ``i`` is validated in fold ``i mod K``).

    Example:
        >>> splits = make_splits({"a": "full", "b": "weak", "c": "full"}, {"a": "p1", "b": "p2", "c": "p3"})
        >>> splits
        [{'train': ['b', 'c'], 'val': ['a']}, {'train': ['a', 'b'], 'val': ['c']}]
        >>> make_splits({"a": "full", "b": "weak"}, {"a": "p1", "b": "p2"})
        []
    """
    cases = sorted(manifest)
    full = [c for c in cases if manifest[c] == "full"]
    full_patients = sorted({patient_of[c] for c in full})
    k = min(n_folds, len(full_patients))
    if k < 2:
        logger.warning("%d full patient(s): splits_final.json holds no cross-validation fold (it needs two); train "
                       "on nnU-Net's fold 'all'", len(full_patients))
        return []
    splits = []
    for fold in range(k):
        held = set(full_patients[fold::k])
        val = [c for c in full if patient_of[c] in held]
        splits.append({"train": [c for c in cases if patient_of[c] not in held], "val": val})
    return splits
