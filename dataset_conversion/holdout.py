"""The held-out test part of a converted dataset: whole patients drawn with the fixed :data:`HOLDOUT_SEED` (as
nnU-Net's ``create_ACDC_split``), independent of ``--seed`` and ``--full``, so that every budget and every seed is
scored on the same patients; optional groups stratify the draw round-robin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from nnunetv2_confkd_conversion.amounts import parse_holdout
from nnunetv2_confkd_conversion.cases import SourceCase

from nnunetv2_confkd.checks import ConfKDInputError

HOLDOUT_SEED = 1234  # fixed (as nnU-Net's create_ACDC_split): the test part never depends on --seed or --full


def choose_holdout(patients: Sequence[str], holdout: str | float, seed: int = HOLDOUT_SEED,
                   groups: Mapping[str, str] | None = None) -> list[str]:
    """Held-out test patients: ``holdout`` patients (a count, or a fraction of the patients if < 1), drawn with
    ``seed``; with ``groups`` (patient -> group), round-robin over the groups (stratified).

    Raises:
        ConfKDInputError: an invalid amount, or one that leaves no training patient.

    Example:
        >>> choose_holdout(["a", "b", "c", "d"], 0), len(choose_holdout(["a", "b", "c", "d"], 0.5))
        ([], 2)
        >>> choose_holdout(["p1", "p2", "p3", "p4"], 2, groups={"p1": "A", "p2": "A", "p3": "B", "p4": "B"}) in (
        ...     ["p1", "p3"], ["p1", "p4"], ["p2", "p3"], ["p2", "p4"])
        True
    """
    patients = sorted(set(patients))
    holdout = parse_holdout(holdout)
    count = int(holdout) if holdout >= 1 or holdout == 0 else max(1, int(round(holdout * len(patients))))
    if count >= len(patients) and count > 0:
        raise ConfKDInputError(f"--holdout {holdout:g} asks for {count} of the {len(patients)} patients and leaves "
                               "none for training")
    group_of = {p: (groups or {}).get(p, "") for p in patients}
    rng = np.random.default_rng(seed)
    strata = [rng.permutation([p for p in patients if group_of[p] == g]).tolist()
              for g in sorted(set(group_of.values()))]
    order = [stratum[i] for i in range(max(map(len, strata), default=0)) for stratum in strata if i < len(stratum)]
    return sorted(order[:count])


def split_holdout(cases: Sequence[SourceCase], holdout: str | float, seed: int = HOLDOUT_SEED,
                  groups: Mapping[str, str] | None = None) -> tuple[list[SourceCase], list[SourceCase]]:
    """``(training, held-out)`` cases, held out by patient (:func:`choose_holdout`)."""
    held = set(choose_holdout([c.patient for c in cases], holdout, seed, groups))
    return [c for c in cases if c.patient not in held], [c for c in cases if c.patient in held]
