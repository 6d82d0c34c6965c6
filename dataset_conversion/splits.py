"""Supervision levels and folds of a mixed dataset: which training patients are full, weak or unlabeled
(:func:`assign_levels`), and the folds of ``splits_final.json`` (:func:`make_splits`).

Fold 0 trains on every training case and validates on the full cases (which it also trains on; nnU-Net warns and
carries on): the fold to train a final model on every case of a budget, with its validation only monitoring. Folds
1..K are a patient-level cross-validation over the full patients: each validates on one group of full patients that it
does not train on. Weak and unlabeled cases never validate: their dense labels are not in the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

from nnunetv2_confkd_conversion.amounts import choose_patients
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.cases import SourceCase


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
    """Fold 0: train on all, validate on the full cases; folds 1..K: cross-validation over full patients.

    Example:
        >>> splits = make_splits({"a": "full", "b": "weak", "c": "full"}, {"a": "p1", "b": "p2", "c": "p3"})
        >>> splits[0], splits[1]
        ({'train': ['a', 'b', 'c'], 'val': ['a', 'c']}, {'train': ['b', 'c'], 'val': ['a']})
        >>> len(splits)
        3
    """
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
