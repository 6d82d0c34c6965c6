"""The report of ``confkd_benchmark_cost``: per-trainer statistics of the workers' measurements, the time and memory
ratios against ``nnUNetTrainer`` and their targets (:data:`TARGETS`), the environment metadata, and the Markdown
table printed at the end.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from nnunetv2_confkd.study.provenance import cpu_model, git_commit, utc_now

BASELINE = "nnUNetTrainer"
TARGETS = {"time": 1.25, "memory": 1.30}  # a trainer meets a target when its ratio to the baseline is at most this


def summarize(trainer: str, runs: list[dict]) -> dict:
    """Median and IQR of all timed steps of ``trainer``, per-repeat medians and the median peak memory."""
    mine = sorted((r for r in runs if r["trainer"] == trainer), key=lambda r: r["repeat"])
    steps = np.concatenate([r["step_times_s"] for r in mine])
    q25, q50, q75 = np.percentile(steps, [25, 50, 75])
    memory = [r["peak_memory_mb"] for r in mine]
    extra = [k for k in ("absolute_peak_rss_mb", "ru_maxrss_increase_mb", "rss_before_first_step_mb",
                         "max_memory_reserved_mb") if k in mine[0]]
    return {"trainer": trainer, "median_step_s": float(q50), "iqr_step_s": float(q75 - q25),
            "repeat_medians_s": [float(np.median(r["step_times_s"])) for r in mine],
            "step_times_s": [r["step_times_s"] for r in mine],
            "peak_memory_mb": float(np.median(memory)), "peak_memory_mb_per_repeat": memory,
            "memory_measure": mine[0]["memory_measure"],
            **{k: [r[k] for r in mine] for k in extra},
            "n_parameters": mine[0]["environment"]["n_parameters"],
            "compiled": mine[0]["environment"]["compiled"]}


def _ratio(value: float, reference: float) -> float | None:
    return float(value / reference) if reference > 0 else None


def compute_ratios(results: list[dict]) -> dict:
    """Time and memory ratios of every trainer vs ``nnUNetTrainer`` (the first trainer if it was not run)."""
    by_name = {r["trainer"]: r for r in results}
    baseline = by_name.get(BASELINE, results[0])
    ratios = {"baseline": baseline["trainer"], "targets": dict(TARGETS)}
    for r in results:
        time_ratio = _ratio(r["median_step_s"], baseline["median_step_s"])
        memory_ratio = _ratio(r["peak_memory_mb"], baseline["peak_memory_mb"])
        ratios[r["trainer"]] = {
            "time": time_ratio, "memory": memory_ratio,
            "time_met": None if time_ratio is None else time_ratio <= TARGETS["time"],
            "memory_met": None if memory_ratio is None else memory_ratio <= TARGETS["memory"]}
    return ratios


def build_metadata(args: argparse.Namespace, command: str, plans_config: dict, runs: list[dict],
                   context: dict) -> dict:
    """Environment metadata of the report: date, commit, versions, device, threads, plans, protocol, machine load
    and ``command`` (the command line as recorded); ``context`` holds load averages and ``nnUNet_compile``."""
    env = runs[0]["environment"]
    return {
        "date_utc": utc_now(),
        "git_commit": git_commit(Path(__file__).resolve().parents[1]),
        "python": env["python"], "torch": env["torch"], "nnunetv2": env["nnunetv2"],
        "device": args.device, "device_name": env["device_name"], "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "cuda": env["cuda"], "cudnn": env["cudnn"],
        "torch_threads": env["torch_threads"], "torch_interop_threads": env["torch_interop_threads"],
        "nnUNet_compile": context["nnUNet_compile"],
        "dataset_id": args.dataset_id, "config": args.config,
        "plans_patch_size": plans_config["patch_size"], "plans_batch_size": plans_config["batch_size"],
        "patch_size": runs[0]["patch_size"], "batch_size": runs[0]["batch_size"],
        "trainers": list(args.trainers), "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
        "seed": args.seed, "scheme": "one fresh process per (trainer, repeat); trainer order reversed on odd repeats",
        "load_average_before": context["load_before"], "load_average_after": context["load_after"],
        "command": command,
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def format_table(report: dict) -> str:
    """Markdown table of step time, peak memory and the ratios against their targets."""
    ratios, t = report["ratios"], TARGETS
    yes = {True: "yes", False: "**no**", None: "n/a"}
    lines = [f"| trainer | median step (s) | IQR (s) | peak memory (MB) | time ratio (<= {t['time']}) | met "
             f"| memory ratio (<= {t['memory']}) | met |", "|---|---:|---:|---:|---:|---|---:|---|"]
    for r in report["results"]:
        q = ratios[r["trainer"]]
        lines.append(f"| {r['trainer']} | {r['median_step_s']:.4f} | {r['iqr_step_s']:.4f} | "
                     f"{r['peak_memory_mb']:.1f} | {_fmt(q['time'], '.3f')} | {yes[q['time_met']]} | "
                     f"{_fmt(q['memory'], '.3f')} | {yes[q['memory_met']]} |")
    meta = report["metadata"]
    lines.append(f"\nbaseline {ratios['baseline']}; {meta['device_name']} ({meta['device']}), batch "
                 f"{meta['batch_size']}, patch {meta['patch_size']}, {meta['repeats']} x {meta['steps']} steps "
                 f"(+{meta['warmup']} warm-up); memory: {report['results'][0]['memory_measure']}")
    return "\n".join(lines)
