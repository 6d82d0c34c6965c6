"""The report of a ``confkd_benchmark`` study, rebuilt from its per-run records (``OUT/runs/**/<head>.json``):

- ``results.csv``: one row per (dataset, evaluation, fold, trainer, head, seed, case, class) with Dice, HD95, ASSD
  and NSD;
- ``results.json``: machine, versions, git commit, command, the preset check, the inference-time ratio, and per
  (dataset, evaluation, method, head) the statistics over runs;
- ``results.md``: the same as Markdown tables; ``dice_<dataset>[_cv].png`` / ``hd95_<dataset>[_cv].png``: per class
  and method, the mean over runs (bar) and every run (dots).

Aggregation: a run's value for a class is the mean over its evaluated volumes (finite values; the empty-mask
conventions of evaluation.py); ``mean`` is the unweighted mean over classes. Across runs (seeds on the test part;
seeds x folds for cross-validation): mean ± std (population) of the run values. ``vol. std`` is the std over
volumes of the per-volume class-mean Dice, pooled over runs. Cross-validation rows (``evaluation == "cv"``) are kept
apart from the test rows and never enter the preset check or the inference ratio.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from nnunetv2_confkd.provenance import machine_metadata, utc_now, write_json_atomic

METHOD_LABELS = {
    "nnUNetTrainerStrongOnly": "strong-only",
    "nnUNetTrainerConfKD": "ConfKD (KL+Ent)",
    "nnUNetTrainerConfKD_noEntropy": "KL only",
    "nnUNetTrainerConfKD_noKD": "entropy only",
    "nnUNetTrainerConfKD_decoupled": "decoupled",
    "nnUNetTrainerConfKD_pseudoMask": "pseudo-mask (self)",
    "nnUNetTrainerConfKD_pseudoMaskTeacher": "pseudo-mask (teacher)",
    "nnUNetTrainerConfKD_legacy": "released-script arithmetic",
    "nnUNetTrainerConfKD_kdAll": "ConfKD, KL on all cases",
    "nnUNetTrainerConfKD_studentFull": "ConfKD, student sees dense strong masks",
    "nnUNetTrainerConfKD_strong75": "ConfKD, 3/4 strong cases per batch",
    "nnUNetTrainerConfKD_entropyRamp": "ConfKD, entropy ramped up over the first quarter",
    "nnUNetTrainerConfKD_kd2": "ConfKD, kd_weight 2",
    "nnUNetTrainerConfKD_weakHalf": "ConfKD, weak_weight 0.5",
    "nnUNetTrainerConfKD_T2": "ConfKD, temperature 2",
    "nnUNetTrainerConfKD_entropyWeak": "ConfKD, entropy on weak cases only",
    "nnUNetTrainerConfKD_seeds5": "ConfKD, seeds from 5 erosions",
}
METRICS = ("dice", "hd95", "assd", "nsd")
CLEAR_MARGIN = 0.05  # Dice points (as a fraction) by which full supervision must beat strong-only in the preset check


def is_stock(method: str) -> bool:
    """Stock nnU-Net (``nnUNetTrainer`` or one of the package's schedule variants of it)."""
    return method == "nnUNetTrainer" or method.startswith("nnUNetTrainer_confkd")


def all_full(supervision: dict) -> bool:
    return not supervision["weak"] + supervision["unlabeled"]


def method_label(method: str, supervision: dict) -> str:
    """Readable name of a method; stock nnU-Net is the upper bound on an all-full dataset, else nnU-Net + ignore."""
    if is_stock(method):
        return "full supervision (nnU-Net)" if all_full(supervision) else "nnU-Net + ignore label"
    return METHOD_LABELS.get(method, method)


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
        groups.setdefault((r["dataset"], r["evaluation"], r["method"], r["head"]), []).append(r)
    rows = []
    for (dataset, evaluation, method, head), recs in groups.items():
        recs = sorted(recs, key=lambda r: (r["seed"], str(r["fold"])))
        summaries = [run_summary(r) for r in recs]
        labels = sorted(summaries[0]["per_class"], key=int)
        rows.append({
            "dataset": dataset, "evaluation": evaluation, "method": method, "trainer": recs[0]["trainer"],
            "head": head, "folds": sorted({str(r["fold"]) for r in recs}),
            "label": method_label(method, recs[0]["supervision"]), "supervision": recs[0]["supervision"],
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


def _pm(stats: dict, digits: int = 3) -> str:
    if not math.isfinite(stats["mean"]):
        return "n/a"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" if len(stats["seeds"]) > 1 \
        else f"{stats['mean']:.{digits}f}"


def markdown(rows: list[dict], check: dict | None, ratio: dict | None, meta: dict) -> str:
    lines = [f"# confkd_benchmark results ({meta['date_utc']})", "",
             f"Preset(s) {', '.join(meta['presets'])}; {meta['cpu_model']} ({meta['cpu_count']} cores), "
             f"device {', '.join(meta['devices'])}; torch {meta['versions']['torch']}, nnunetv2 "
             f"{meta['versions']['nnunetv2']}; commit {meta['git_commit']}.", f"Command: `{meta['command']}`", "",
             "Runs made by:", ""]
    lines += [f"- `{p['command']}`: {p['records']} record(s), commit {p['git_commit']}, {p['cpu_model']} "
              f"({p['cpu_count']} cores), {p['first_utc']} to {p['last_utc']}" if p["first_utc"] else
              f"- {p['records']} record(s) written before records named their command and machine (commit 5583bc0)"
              for p in meta["run_provenance"]]
    lines.append("")
    if check is not None:
        verdict = "VALID" if check["valid"] else "NOT VALID"
        lines += [f"**Preset check ({verdict})**: full supervision ({check['full_dataset']}) vs strong-only "
                  f"({check['strong_only_dataset']}), mean Dice by seed: "
                  + ", ".join(f"seed {s}: {f:.3f} vs {o:.3f}" for s, f, o in
                              zip(check["seeds"], check["full"], check["strong_only"], strict=True))
                  + f"; mean margin {check['mean_margin']:+.4f} (needs ≥ 2 seeds, every seed won, mean ≥ "
                  f"{check['clear_margin']:.2f}).", ""]
    for dataset, evaluation in dict.fromkeys((r["dataset"], r["evaluation"]) for r in rows):
        drows = [r for r in rows if r["dataset"] == dataset and r["evaluation"] == evaluation]
        names = list(drows[0]["class_names"].values())
        sup = drows[0]["supervision"]
        where = (f"{drows[0]['n_test_cases']} held-out volumes" if evaluation == "test" else
                 f"cross-validation on the training set, folds {', '.join(drows[0]['folds'])}: runs = seeds x folds")
        lines += [f"## {dataset} (training cases: {sup['full']} full, {sup['weak']} weak, {sup['unlabeled']} "
                  f"unlabeled; {where})", "",
                  "| method | head | runs | " + " | ".join(f"Dice {n}" for n in names)
                  + " | mean Dice | vol. std | mean HD95 (mm) | mean ASSD (mm) | mean NSD |",
                  "|---" * (len(names) + 8) + "|"]
        for r in drows:
            lines.append(f"| {r['label']} | {r['head']} | {len(r['seeds'])} | "
                         + " | ".join(_pm(r["per_class"][lab]["dice"]) for lab in r["class_names"])
                         + f" | {_pm(r['mean']['dice'])} | {r['volume_dice_std']:.3f} | {_pm(r['mean']['hd95'], 2)}"
                         f" | {_pm(r['mean']['assd'], 2)} | {_pm(r['mean']['nsd'])} |")
        lines.append("")
    if ratio is not None:
        lines += [f"Inference wall time, ConfKD student (nnUNetv2_predict) / stock nnU-Net, same dataset and seed: "
                  f"median ratio {ratio['median_ratio']:.2f} over {ratio['n_pairs']} pair(s); source: "
                  f"{ratio['source']}.", ""]
    lines.append(f"NSD tolerance {', '.join(str(t) for t in meta['nsd_tolerance_mm'])} mm. HD95/ASSD exclude volumes "
                 "where exactly one mask is empty (counted in results.json as n_nan_hd95).")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> list[Path]:
    """Per dataset and metric (Dice, HD95): one panel per class, a bar per method (mean over seeds), dots per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset, evaluation in dict.fromkeys((r["dataset"], r["evaluation"]) for r in rows):
        drows = [r for r in rows if r["dataset"] == dataset and r["evaluation"] == evaluation]
        labels = list(drows[0]["class_names"])
        name = dataset if evaluation == "test" else f"{dataset}_cv"
        for metric, title in (("dice", "Dice"), ("hd95", "HD95 (mm)")):
            fig, axes = plt.subplots(1, len(labels), figsize=(max(3.2 * len(labels) + 1, 5.0), 3.8), squeeze=False)
            for ax, lab in zip(axes[0], labels, strict=True):
                for x, r in enumerate(drows):
                    s = r["per_class"][lab][metric]
                    ax.bar(x, s["mean"], color=f"C{x % 10}", alpha=0.6)
                    ax.scatter([x] * len(s["seeds"]), s["seeds"], color="k", s=10, zorder=3)
                ax.set_xticks(range(len(drows)))
                ax.set_xticklabels([f"{r['label']}\n({r['head']})" for r in drows], rotation=60, ha="right",
                                   fontsize=7)
                ax.set_title(f"{drows[0]['class_names'][lab]}: {title}")
            fig.suptitle(f"{name}\nmean over runs (bars), each run (dots)", fontsize=9)
            fig.tight_layout()
            path = out / f"{metric}_{name}.png"
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, dpi=110)
            plt.close(fig)
            os.replace(tmp, path)
            written.append(path)
    return written


def run_provenance(records: list[dict]) -> list[dict]:
    """The (command, commit, CPU) combinations that made the records, with how many records each and their dates: a
    study folder collects runs of several invocations, sessions or machines."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for r in records:
        p = r.get("provenance") or {}
        key = (p.get("command", "not recorded"), p.get("git_commit"), p.get("cpu_model"), p.get("cpu_count"))
        groups[key].append(p.get("date_utc") or "")
    return [{"command": c, "git_commit": g, "cpu_model": m, "cpu_count": n, "records": len(dates),
             "first_utc": min(dates) or None, "last_utc": max(dates) or None}
            for (c, g, m, n), dates in groups.items()]


def write_csv(records: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "evaluation", "fold", "method", "trainer", "head", "seed", "case", "label", "class",
                    *METRICS, "n_ref", "n_pred"])
        for r in records:
            for m in r["metrics"]:
                w.writerow([r["dataset"], r["evaluation"], r["fold"], r["method"], r["trainer"], r["head"], r["seed"],
                            m["case"], m["label"],
                            r["label_names"][str(m["label"])], *[m[k] for k in METRICS], m["n_ref"], m["n_pred"]])
    os.replace(tmp, path)


def write_report(out: Path, command: str) -> str:
    """Rebuild every report file of ``out`` from its records; return the Markdown."""
    records = load_records(out)
    if not records:
        return f"no finished runs in {out / 'runs'} yet"
    rows = aggregate(records)
    timing_file = out / "inference_time.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else None
    check, ratio = preset_check(records), inference_ratio(records, timing)
    meta = {"date_utc": utc_now(), "command": command, **machine_metadata(),
            "run_provenance": run_provenance(records),
            "presets": sorted({r["preset"] for r in records}),
            "devices": sorted({r.get("device", "?") for r in records}),
            "configurations": sorted({r["configuration"] for r in records}),
            "nsd_tolerance_mm": sorted({r["nsd_tolerance_mm"] for r in records})}
    write_csv(records, out / "results.csv")
    write_json_atomic(out / "results.json", {"metadata": meta, "preset_check": check, "inference_time": ratio,
                                             "rows": rows})
    text = markdown(rows, check, ratio, meta)
    tmp = out / ".results.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "results.md")
    plot(rows, out)
    return text
