"""The README's held-out results quote the committed study records: each quoted cell is recomputed from
``docs/acdc_study/runs`` with the report's own aggregation (study/records.py), so a new record or an edited number
that makes them disagree fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunetv2_confkd.study.records import aggregate, load_records
from nnunetv2_confkd.study.report import mean_pm_std

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "acdc_study"
A, B, C = ("Dataset501_ACDC_7full_expert_s0", "Dataset502_ACDC_3full_expert_67unl_s0",
           "Dataset503_ACDC_3full_erosion_LV_s0")
SELF_TRAINING = "Dataset508_ACDC_3full_expert_67unl_s0_pseudo0.9"
REPLACE = " [replace 0.5]"

#: (marker of the README line, dataset, method as the report keys it, head) of every number the table quotes
QUOTED = [
    ("(C:", C, "nnUNetTrainerStrongOnly", "nnunet"),
    ("(C:", C, "nnUNetTrainer", "nnunet"),
    ("(C:", C, "nnUNetTrainerIgnorePadding", "nnunet"),
    ("(C:", C, "nnUNetTrainerConfKD", "student"),
    ("(C:", C, "nnUNetTrainerConfKD", "teacher"),
    ("(C:", C, "nnUNetTrainerConfKDAuto", "student"),
    ("(A:", A, "nnUNetTrainerStrongOnly", "nnunet"),
    ("(A:", A, "nnUNetTrainer", "nnunet"),
    ("(A:", A, "nnUNetTrainerConfKD" + REPLACE, "student"),
    ("(A:", A, "nnUNetTrainerConfKD_pseudoMaskTeacher" + REPLACE, "student"),
    ("(B:", B, "nnUNetTrainerStrongOnly", "nnunet"),
    ("(B:", B, "nnUNetTrainer", "nnunet"),
    ("(B:", B, "nnUNetTrainerIgnorePadding", "nnunet"),
    ("(B:", B, "nnUNetTrainerConfKD", "student"),
    ("(B:", B, "nnUNetTrainerConfKD_cutMix", "student"),
    ("(B:", SELF_TRAINING, "nnUNetTrainerIgnorePadding", "nnunet"),
    ("Full supervision (", "Dataset500_ACDC_70full_expert_s0", "nnUNetTrainer", "nnunet"),
    ("Full supervision (", "Dataset504_ACDC_70full_erosion_LV_s0", "nnUNetTrainer", "nnunet"),
]


def quoted(row: dict) -> str:
    """A cell as the README writes it: the report's mean Dice (mean ± std over runs), then the number of runs."""
    return f"{mean_pm_std(row['mean']['dice'])} ({len(row['seeds'])})"


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str, str], dict]:
    return {(r["dataset"], r["method"], r["head"]): r for r in aggregate(load_records(STUDY))
            if r["evaluation"] == "test"}


@pytest.fixture(scope="module")
def readme_rows() -> dict[str, str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return {marker: next(line for line in lines if marker in line) for marker in {q[0] for q in QUOTED}}


@pytest.mark.parametrize("marker, dataset, method, head", QUOTED, ids=[f"{q[1][:10]}-{q[2]}-{q[3]}" for q in QUOTED])
def test_the_readme_quotes_the_records(rows, readme_rows, marker, dataset, method, head):
    assert (dataset, method, head) in rows, f"no held-out record of {method} ({head}) on {dataset}"
    cell = quoted(rows[(dataset, method, head)])
    assert cell in readme_rows[marker], f"README row {marker!r} should quote {method} ({head}) as {cell}"

