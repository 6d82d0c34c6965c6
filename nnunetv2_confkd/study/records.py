"""The per-run records of a ``confkd_benchmark`` study (``OUT/runs/**/<head>.json``), loaded and aggregated.

Aggregation: a run's value for a class is the mean over its evaluated volumes (finite values; the empty-mask
conventions of evaluation.py); ``mean`` is the unweighted mean over classes. Across runs (seeds on the test part;
seeds x folds for cross-validation): mean ± std (population) of the run values. ``vol. std`` is the std over
volumes of the per-volume class-mean Dice, pooled over runs. Cross-validation rows (``evaluation == "cv"``) are kept
apart from the test rows and never enter the preset check or the inference ratio.

Folds (folds.py): test records of a model trained on every case, fold ``all`` or fold 0 of the converters' earlier
(``v1``) split, are the same kind of run and pooled. Cross-validation records are pooled only within one split format
(fold ``k`` of one format holds other cases than fold ``k`` of another); a row names its folds by format
(:func:`~.folds.fold_label`: ``"1"`` for a ``v1`` fold, ``"v2/0"`` otherwise), and where a dataset has
cross-validation rows of several formats their labels say which (``[split v1]``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from nnunetv2_confkd.study.folds import fold_label, record_split

METRICS = ("dice", "hd95", "assd", "nsd")
CLEAR_MARGIN = 0.05  # Dice points (as a fraction) by which full supervision must beat strong-only in the preset check


def is_stock(method: str) -> bool:
    """Stock nnU-Net (``nnUNetTrainer`` or one of the package's schedule variants of it)."""
    return method == "nnUNetTrainer" or method.startswith("nnUNetTrainer_confkd")


def all_full(supervision: dict) -> bool:
    return not supervision["weak"] + supervision["unlabeled"]


def recorded_composition(record: dict) -> tuple[str | None, str | None]:
    """The batch composition a record's trainer trained with, and the one its class has now (both None for trainers
    without a composition, such as stock nnU-Net). Records that do not name their composition were made when every
    trainer of the package replaced part of the plan's batch (``"replace <strong_fraction>"``)."""
    from nnunetv2_confkd.training.registry import TRAINERS

    cls = TRAINERS.get(record["method"])
    if cls is None or not hasattr(cls, "composition_name"):
        return None, None
    return record.get("batch_composition", cls.unnoted_composition_name()), cls.composition_name()


def record_location(record: dict) -> str:
    """Where a record lies below ``OUT/runs``: its run's key and head, as the runner writes it; a record of a batch
    composition its class no longer has lies in a folder named after that composition below ``seed_<s>/`` (e.g.
    ``seed_0/replace_0.5/student.json``), so that a run of today's composition neither overwrites it nor takes it for
    its own."""
    from nnunetv2_confkd.study.runs import Run

    run = Run(record["dataset"], record["method"], record["trainer"], record["seed"], str(record["fold"]),
              record.get("evaluation") == "cv", record_split(record))
    recorded, current = recorded_composition(record)
    if recorded == current:
        return f"{run.key}/{record['head']}.json"
    seed = f"{run.dataset}/{run.trainer}/seed_{run.seed}"
    return "/".join(p for p in (seed, recorded.replace(" ", "_"), run.subfolder, f"{record['head']}.json") if p)


def method_key(record: dict) -> str:
    """The method a record counts for: its ``method``, marked with the composition it trained with where that is not
    the composition its class has now (such runs are a different method and are never pooled with today's)."""
    recorded, current = recorded_composition(record)
    return record["method"] if recorded == current else f"{record['method']} [{recorded}]"


def method_label(method: str, supervision: dict) -> str:
    """Readable name of a method; stock nnU-Net is the upper bound on an all-full dataset, else nnU-Net + ignore."""
    if is_stock(method):
        return "full supervision (nnU-Net)" if all_full(supervision) else "nnU-Net + ignore label"
    from nnunetv2_confkd.training.registry import TRAINERS

    name, _, composition = method.partition(" [")
    label = getattr(TRAINERS.get(name), "report_label", name)
    return f"{label} [{composition}" if composition else label


def load_records(out: Path) -> list[dict]:
    """Every finished record below ``OUT/runs`` (temporary files never end in ``.json``); ``evaluation`` defaults to
    ``"test"``."""
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").rglob("*.json"))]
    for r in records:
        r.setdefault("evaluation", "test")
    return records


def _finite_mean(values) -> float:
    arr = np.asarray(list(values), dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def run_summary(record: dict) -> dict:
    """Per-class means over volumes of one (run, head), the class mean, and the per-volume class-mean Dice."""
    by_label = defaultdict(list)
    by_case = defaultdict(list)
    for m in record["metrics"]:
        by_label[m["label"]].append(m)
        by_case[m["case"]].append(m["dice"])
    per_class = {str(label): {k: _finite_mean(m[k] for m in ms) for k in METRICS} for label, ms in by_label.items()}
    mean = {k: _finite_mean(c[k] for c in per_class.values()) for k in METRICS}
    return {"per_class": per_class, "mean": mean, "volume_dice": [float(np.mean(v)) for v in by_case.values()],
            "n_nan_hd95": sum(not math.isfinite(m["hd95"]) for m in record["metrics"])}


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    return {"mean": statistics.fmean(finite) if finite else math.nan,
            "std": statistics.pstdev(finite) if len(finite) > 1 else 0.0 if finite else math.nan,
            "seeds": values}


def aggregate(records: list[dict]) -> list[dict]:
    """One row per (dataset, evaluation, method, head), in first-seen order: statistics over the runs (seeds, and
    folds for cross-validation) of the run summaries."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        split = record_split(r) if r["evaluation"] == "cv" else None
        groups.setdefault((r["dataset"], r["evaluation"], method_key(r), r["head"], split), []).append(r)
    cv_splits = defaultdict(set)
    for dataset, evaluation, _, _, split in groups:
        if evaluation == "cv":
            cv_splits[dataset].add(split)
    rows = []
    for (dataset, evaluation, method, head, split), recs in groups.items():
        recs = sorted(recs, key=lambda r: (r["seed"], str(r["fold"])))
        summaries = [run_summary(r) for r in recs]
        labels = sorted(summaries[0]["per_class"], key=int)
        rows.append({
            "dataset": dataset, "evaluation": evaluation, "method": method, "trainer": recs[0]["trainer"],
            "head": head, "folds": sorted({fold_label(r) for r in recs}),
            "label": method_label(method, recs[0]["supervision"])
            + (f" [split {split}]" if len(cv_splits[dataset]) > 1 and evaluation == "cv" else ""),
            **({"split": split} if evaluation == "cv" else {}), "supervision": recs[0]["supervision"],
            "seeds": [r["seed"] for r in recs], "n_test_cases": recs[0]["n_test_cases"],
            "class_names": {lab: recs[0]["label_names"][lab] for lab in labels},
            "per_class": {lab: {k: _stats([s["per_class"][lab][k] for s in summaries]) for k in METRICS}
                          for lab in labels},
            "mean": {k: _stats([s["mean"][k] for s in summaries]) for k in METRICS},
            "volume_dice_std": float(np.std([v for s in summaries for v in s["volume_dice"]])),
            "n_nan_hd95": sum(s["n_nan_hd95"] for s in summaries),
            "train_seconds": [r["train_seconds"] for r in recs],
            "predict_seconds": [r["predict_seconds"] for r in recs],
        })
    return rows


def _classes(record: dict) -> frozenset[str]:
    return frozenset(name for name in record["label_names"].values() if name not in ("background", "ignore"))


def _closest_to_full(records: list[dict]) -> str:
    """The dataset with the most fully labeled training cases (ties: the first name)."""
    return min(records, key=lambda r: (-r["supervision"]["full"], r["dataset"]))["dataset"]


def preset_check(records: list[dict]) -> dict | None:
    """Does the preset rank the budgets? Stock nnU-Net on an all-full dataset against strong-only, seed by seed.

    Strong-only runs count only with the full runs' classes (a budget scored on the LV alone is not comparable), and
    only those of the budget with the most full cases: the strong-only baseline closest to full supervision, the
    hardest pair to separate. Valid when at least two seeds are paired, full wins every pair, and the mean margin is
    at least ``CLEAR_MARGIN``. ``None`` when the study has no such pair of runs."""
    records = [r for r in records if r["evaluation"] == "test"]
    full_runs = [r for r in records if is_stock(r["method"]) and all_full(r["supervision"])]
    if not full_runs:
        return None
    full_dataset = _closest_to_full(full_runs)
    full_runs = [r for r in full_runs if r["dataset"] == full_dataset]
    strong_runs = [r for r in records if r["method"].startswith("nnUNetTrainerStrongOnly")
                   and _classes(r) == _classes(full_runs[0])]
    if not strong_runs:
        return None
    strong_dataset = _closest_to_full(strong_runs)
    full = {r["seed"]: run_summary(r)["mean"]["dice"] for r in full_runs}
    strong = {r["seed"]: run_summary(r)["mean"]["dice"] for r in strong_runs if r["dataset"] == strong_dataset}
    seeds = sorted(set(full) & set(strong))
    if not seeds:
        return None
    margins = [full[s] - strong[s] for s in seeds]
    return {"full_dataset": full_dataset, "strong_only_dataset": strong_dataset, "seeds": seeds,
            "full": [full[s] for s in seeds], "strong_only": [strong[s] for s in seeds],
            "margins": margins, "mean_margin": statistics.fmean(margins), "clear_margin": CLEAR_MARGIN,
            "valid": len(seeds) >= 2 and all(m > 0 for m in margins) and statistics.fmean(margins) >= CLEAR_MARGIN}


def stock_pairs(records: list[dict]) -> list[tuple[dict, dict]]:
    """(stock nnU-Net, ConfKD student) test records of the same dataset and seed, one pair per ConfKD model."""
    records = [r for r in records if r["evaluation"] == "test"]
    stock = {(r["dataset"], r["seed"]): r for r in records if is_stock(r["method"])}
    return [(stock[(r["dataset"], r["seed"])], r) for r in records
            if r["method"].startswith("nnUNetTrainerConfKD") and r["head"] == "student"
            and (r["dataset"], r["seed"]) in stock]


def inference_ratio(records: list[dict], timing: dict | None = None) -> dict | None:
    """ConfKD's default head (``nnUNetv2_predict``) against stock nnU-Net of the same dataset and seed: from
    ``inference_time.json`` (``--time-inference``, interleaved repeats) if present, else from the single timed
    prediction of each run (process start-up included, load not controlled)."""
    if timing:
        ratios = [p["ratio"] for p in timing["pairs"]]
        return {"median_ratio": statistics.median(ratios), "n_pairs": len(ratios), "ratios": ratios,
                "source": f"--time-inference {timing['repeats']} (interleaved repeats, median)"}
    pairs = stock_pairs(records)
    if not pairs:
        return None
    ratios = [confkd["predict_seconds"] / stock["predict_seconds"] for stock, confkd in pairs]
    return {"median_ratio": statistics.median(ratios), "n_pairs": len(pairs), "ratios": ratios,
            "source": "one timed prediction per run (rough; use --time-inference N)"}


def run_provenance(records: list[dict]) -> list[dict]:
    """The (command, commit, CPU) combinations that made the records, with how many records each and their dates: a
    study folder collects runs of several invocations and machines."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in records:
        p = r.get("provenance") or {}
        key = (p.get("command", "not recorded"), p.get("git_commit"), p.get("cpu_model"), p.get("cpu_count"))
        groups[key].append(p.get("date_utc") or "")
    return [{"command": c, "git_commit": g, "cpu_model": m, "cpu_count": n, "records": len(dates),
             "first_utc": min(dates) or None, "last_utc": max(dates) or None}
            for (c, g, m, n), dates in groups.items()]
