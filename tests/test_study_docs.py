"""The README's held-out results quote the committed study records: each quoted cell, and each difference in Dice
points the README derives from them, is recomputed from ``docs/acdc_study/runs`` with the report's own aggregation
(study/records.py), so a new record or an edited number that makes them disagree fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnunetv2_confkd.study.records import aggregate, load_records
from nnunetv2_confkd.study.report import mean_pm_std

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "docs" / "acdc_study"
A, B, C = ("Dataset501_ACDC_7full_expert_s0", "Dataset502_ACDC_3full_expert_67unl_s0",
           "Dataset503_ACDC_3full_erosion_LV_s0")
#: the self-training baseline's stage-2 datasets, one per seed (each pseudo-labeled by that seed's strong-only model);
#: their records are pooled as one method over seeds
SELF_TRAINING = "self-training on B (Dataset508, 518, 528)"
SELF_TRAINING_DATASET = re.compile(r"Dataset5[012]8_ACDC_3full_expert_67unl_s0_pseudo0\.9")
REPLACE = " [replace 0.5]"
AUTO_C, CONFKD_C = (C, "nnUNetTrainerConfKDAuto", "student"), (C, "nnUNetTrainerConfKD", "student")
STRONG_ONLY, STOCK_IGNORE = "nnUNetTrainerStrongOnly", "nnUNetTrainer"

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
    ("(A:", A, "nnUNetTrainerConfKD", "student"),
    ("(A:", A, "nnUNetTrainerConfKD", "teacher"),
    ("(B:", B, "nnUNetTrainerStrongOnly", "nnunet"),
    ("(B:", B, "nnUNetTrainer", "nnunet"),
    ("(B:", B, "nnUNetTrainerIgnorePadding", "nnunet"),
    ("(B:", B, "nnUNetTrainerConfKD", "student"),
    ("(B:", B, "nnUNetTrainerConfKD_cutMix", "student"),
    ("(B:", SELF_TRAINING, "nnUNetTrainerIgnorePadding", "nnunet"),
    ("Full supervision (", "Dataset500_ACDC_70full_expert_s0", "nnUNetTrainer", "nnunet"),
    ("Full supervision (", "Dataset504_ACDC_70full_erosion_LV_s0", "nnUNetTrainer", "nnunet"),
]


#: (README phrase with ``{}`` for a difference in Dice points, minuend, subtrahend, over what: "mean" of the means,
#: "min" over the seeds both have, or one seed); the phrase carries the sign, the number is the absolute value
DIFFERENCES = [
    ("beats strong-only by {} and", AUTO_C, (C, STRONG_ONLY, "nnunet"), "mean"),
    ("stock nnU-Net + ignore by {} points", AUTO_C, (C, STOCK_IGNORE, "nnunet"), "mean"),
    ("at least +{} and", AUTO_C, (C, STRONG_ONLY, "nnunet"), "min"),
    ("and +{} in every seed", AUTO_C, (C, STOCK_IGNORE, "nnunet"), "min"),
    ("three seeds (+{} points)", CONFKD_C, (C, "nnUNetTrainerConfKD", "teacher"), "mean"),
    ("(seed 2: {} points below)", CONFKD_C, (C, "nnUNetTrainerConfKD", "teacher"), 2),
    ("first held-out seed is +{} points over strong-only", (A, "nnUNetTrainerConfKD", "student"),
     (A, STRONG_ONLY, "nnunet"), "mean"),
    ("strong-only and +{} over nnU-Net + ignore (against", (A, "nnUNetTrainerConfKD", "student"),
     (A, STOCK_IGNORE, "nnunet"), "mean"),
    ("ConfKD was +{} over nnU-Net + ignore", (A, "nnUNetTrainerConfKD" + REPLACE, "student"),
     (A, STOCK_IGNORE, "nnunet"), "mean"),
    ("ignore and +{} over strong-only (two seeds)", (A, "nnUNetTrainerConfKD" + REPLACE, "student"),
     (A, STRONG_ONLY, "nnunet"), "mean"),
    ("`_pseudoMaskTeacher` +{} and", (A, "nnUNetTrainerConfKD_pseudoMaskTeacher" + REPLACE, "student"),
     (A, STOCK_IGNORE, "nnunet"), "mean"),
    ("and +{} over them (three seeds", (A, "nnUNetTrainerConfKD_pseudoMaskTeacher" + REPLACE, "student"),
     (A, STRONG_ONLY, "nnunet"), "mean"),
    ("does (+{} points on two seeds", (SELF_TRAINING, "nnUNetTrainerIgnorePadding", "nnunet"),
     (B, STRONG_ONLY, "nnunet"), "mean"),
]


def quoted(row: dict) -> str:
    """A cell as the README writes it: the report's mean Dice (mean ± std over runs), then the number of runs."""
    return f"{mean_pm_std(row['mean']['dice'])} ({len(row['seeds'])})"


@pytest.fixture(scope="module")
def rows() -> dict[tuple[str, str, str], dict]:
    records = [{**r, "dataset": SELF_TRAINING} if SELF_TRAINING_DATASET.fullmatch(r["dataset"]) else r
               for r in load_records(STUDY)]
    return {(r["dataset"], r["method"], r["head"]): r for r in aggregate(records) if r["evaluation"] == "test"}


@pytest.fixture(scope="module")
def readme() -> str:
    return (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def readme_rows(readme) -> dict[str, str]:
    lines = readme.splitlines()
    return {marker: next(line for line in lines if marker in line) for marker in {q[0] for q in QUOTED}}


@pytest.mark.parametrize("marker, dataset, method, head", QUOTED, ids=[f"{q[1][:10]}-{q[2]}-{q[3]}" for q in QUOTED])
def test_the_readme_quotes_the_records(rows, readme_rows, marker, dataset, method, head):
    assert (dataset, method, head) in rows, f"no held-out record of {method} ({head}) on {dataset}"
    cell = quoted(rows[(dataset, method, head)])
    assert cell in readme_rows[marker], f"README row {marker!r} should quote {method} ({head}) as {cell}"


def difference(rows: dict, minuend: tuple, subtrahend: tuple, over: str | int) -> float:
    """Minuend minus subtrahend in Dice points: of the means over runs, the smallest over the seeds both have, or on
    one seed."""
    a, b = rows[minuend], rows[subtrahend]
    if over == "mean":
        return 100 * (a["mean"]["dice"]["mean"] - b["mean"]["dice"]["mean"])
    per_seed = [dict(zip(r["seeds"], r["mean"]["dice"]["seeds"], strict=True)) for r in (a, b)]
    paired = {seed: 100 * (per_seed[0][seed] - per_seed[1][seed]) for seed in per_seed[0] if seed in per_seed[1]}
    return min(paired.values()) if over == "min" else paired[over]


@pytest.mark.parametrize("phrase, minuend, subtrahend, over", DIFFERENCES, ids=[d[0] for d in DIFFERENCES])
def test_the_readme_derives_its_differences_from_the_records(rows, readme, phrase, minuend, subtrahend, over):
    expected = phrase.format(f"{abs(difference(rows, minuend, subtrahend, over)):.1f}")
    assert expected in " ".join(readme.split()), f"the README should read {expected!r}"
