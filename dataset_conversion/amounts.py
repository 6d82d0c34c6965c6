"""Amounts of patients: the count-or-fraction values of ``--full``, ``--unlabeled`` and ``--holdout``, and the seeded
draw of that many patients (:func:`choose_patients`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnunetv2_confkd.checks import ConfKDInputError


def parse_amount(value: str | float, flag: str, zero: bool) -> float:
    """A count of patients (a positive integer) or a fraction in (0, 1); 0 too where ``zero``.

    Raises:
        ConfKDInputError: naming ``flag``, for anything else.

    Example:
        >>> parse_amount("3", "--full", zero=False), parse_amount(0, "--unlabeled", zero=True)
        (3.0, 0.0)
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number < 0 or (number == 0 and not zero) or (number >= 1 and number != int(number)):
        allowed = "0, " if zero else ""
        raise ConfKDInputError(f"{flag} must be {allowed}a positive integer number of patients or a fraction in "
                               f"(0, 1), got {value!r}")
    return number


def parse_full(value: str | float) -> float:
    """``--full``: a count of patients (``"7"``) or a fraction (``"0.1"``).

    Example:
        >>> parse_full("7"), parse_full("0.1")
        (7.0, 0.1)
    """
    return parse_amount(value, "--full", zero=False)


def parse_unlabeled(value: str | float) -> float:
    """``--unlabeled``: 0, a count of the patients that are not full, or a fraction of them in (0, 1)."""
    return parse_amount(value, "--unlabeled", zero=True)


def parse_holdout(value: str | float) -> float:
    """``--holdout``: 0 (none), a count of patients or a fraction in (0, 1).

    Example:
        >>> parse_holdout("0.2"), parse_holdout("5"), parse_holdout("0")
        (0.2, 5.0, 0.0)
    """
    return parse_amount(value, "--holdout", zero=True)


def choose_patients(patients: Sequence[str], amount: float, seed: int, flag: str = "--full",
                    at_least_one: bool = True) -> list[str]:
    """``amount`` patients (a count >= 1 or a fraction < 1), drawn with ``seed`` from the sorted list (idempotent).

    Example:
        >>> choose_patients(["b", "a", "c"], 2, seed=0) == choose_patients(["c", "a", "b"], 2, seed=0)
        True
    """
    patients = sorted(set(patients))
    count = int(amount) if amount >= 1 else int(round(amount * len(patients)))
    count = max(count, 1) if at_least_one else count
    if count > len(patients):
        raise ConfKDInputError(f"{flag} {count} asks for more patients than the {len(patients)} available")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(patients, count, replace=False).tolist())
