"""The report of a ``confkd_benchmark`` study, rebuilt from its per-run records (records.py):

- ``results.csv``: one row per (dataset, evaluation, fold, trainer, head, seed, case, class) with Dice, HD95, ASSD
  and NSD; ``method`` is the method the row counts for in the tables (with the batch composition in brackets where it
  is not the class's current one) and ``split`` the split format of a cross-validation fold;
- ``results.json``: machine, versions, git commit, command, the preset check, the inference-time ratio, and per
  (dataset, evaluation, method, head) the statistics over runs;
- ``results.md``: the same as Markdown tables; ``dice_<dataset>[_cv].png`` / ``hd95_<dataset>[_cv].png``: per class
  and method, the mean over runs (bar) and every run (dots).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from nnunetv2_confkd.study.folds import record_split
from nnunetv2_confkd.study.provenance import machine_metadata, utc_now, write_json_atomic
from nnunetv2_confkd.study.records import (
    METRICS,
    aggregate,
    inference_ratio,
    load_records,
    method_key,
    preset_check,
    run_provenance,
)


def mean_pm_std(stats: dict, digits: int = 3) -> str:
    """Statistics over runs as the report writes them: ``mean ± std``, or the mean alone for one run."""
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
                         + " | ".join(mean_pm_std(r["per_class"][lab]["dice"]) for lab in r["class_names"])
                         + f" | {mean_pm_std(r['mean']['dice'])} | {r['volume_dice_std']:.3f}"
                         f" | {mean_pm_std(r['mean']['hd95'], 2)} | {mean_pm_std(r['mean']['assd'], 2)}"
                         f" | {mean_pm_std(r['mean']['nsd'])} |")
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
            # horizontal bars: one row per method and head, so that long method names stay readable
            height = 1.2 + 0.24 * len(drows)
            fig, axes = plt.subplots(1, len(labels), figsize=(3.0 * len(labels) + 3.6, height), squeeze=False,
                                     sharey=True)
            for ax, lab in zip(axes[0], labels, strict=True):
                for y, r in enumerate(drows):
                    s = r["per_class"][lab][metric]
                    ax.barh(y, s["mean"], color=f"C{y % 10}", alpha=0.6)
                    ax.scatter(s["seeds"], [y] * len(s["seeds"]), color="k", s=8, zorder=3)
                ax.set_yticks(range(len(drows)))
                ax.set_yticklabels([f"{r['label']} ({r['head']})" for r in drows], fontsize=7)
                ax.invert_yaxis()
                ax.grid(axis="x", alpha=0.3)
                ax.set_title(f"{drows[0]['class_names'][lab]}: {title}", fontsize=9)
            fig.suptitle(f"{name}\nmean over runs (bars), each run (dots)", fontsize=9)
            fig.tight_layout()
            path = out / f"{metric}_{name}.png"
            tmp = path.with_name(f".{path.name}.tmp.png")
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
            plt.close(fig)
            os.replace(tmp, path)
            written.append(path)
    return written


def write_csv(records: list[dict], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "evaluation", "split", "fold", "method", "trainer", "head", "seed", "case", "label",
                    "class", *METRICS, "n_ref", "n_pred"])
        for r in records:
            split = (record_split(r) or "") if r["evaluation"] == "cv" else ""
            for m in r["metrics"]:
                w.writerow([r["dataset"], r["evaluation"], split, r["fold"], method_key(r), r["trainer"], r["head"],
                            r["seed"], m["case"], m["label"],
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
