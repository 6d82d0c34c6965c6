"""The report of ``confkd_benchmark_cost``: per-trainer statistics of the workers' measurements (and their profile,
cost_profile.py), the ratios against ``nnUNetTrainer`` and their targets (:data:`TARGETS`), the environment metadata,
and the Markdown tables and ratio lines printed at the end.

Ratios of a trainer against the baseline: ``time`` (median step), ``epoch`` (median step x iterations per epoch:
the training part of an epoch; validation runs one decoder and costs every trainer the same), ``per_case`` (median
step per case of a batch: an ``"add"`` batch holds twice the plan's cases) and ``memory`` (peak memory increase);
``vs_strong_only`` is the epoch ratio against ``nnUNetTrainerStrongOnly`` where it was run. ``same_rows`` and
``memory_same_rows`` compare the epoch and the memory with stock nnU-Net on as many cases per step (the baseline
itself, or ``nnUNetTrainer@N``, measured beside it): what the method costs on the same data, apart from what the
composition adds. The targets (:data:`TARGETS`) are judged on the same rows (``epoch_met``, ``memory_met``) where such
a measurement exists, else against the baseline.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.study.cost_profile import summarize_profile
from nnunetv2_confkd.study.provenance import cpu_model, git_commit, utc_now

BASELINE = "nnUNetTrainer"
STRONG_ONLY = "nnUNetTrainerStrongOnly"
TARGETS = {"epoch": 1.30, "memory": 1.30}  # a trainer meets a target when its ratio to the baseline is at most this


def split_spec(spec: str) -> tuple[str, int | None]:
    """``"NAME@B"`` -> ``("NAME", B)``; ``"NAME"`` -> ``("NAME", None)``.

    Example:
        >>> split_spec("nnUNetTrainer@16"), split_spec("nnUNetTrainerConfKD")
        (('nnUNetTrainer', 16), ('nnUNetTrainerConfKD', None))
    """
    name, at, batch = spec.partition("@")
    if at and not (batch.isdigit() and int(batch) > 0):
        raise ConfKDInputError(f"trainer {spec!r}: the batch size after '@' must be a positive integer")
    return name, int(batch) if at else None


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
            "compiled": mine[0]["environment"]["compiled"],
            **{k: mine[0][k] for k in ("cases_per_step", "full_per_step", "composition", "iterations_per_epoch")},
            "profile": summarize_profile(mine) if mine[0].get("profile_s") else None}


def _ratio(value: float, reference: float) -> float | None:
    return float(value / reference) if reference > 0 else None


def compute_ratios(results: list[dict]) -> dict:
    """Ratios of every trainer vs ``nnUNetTrainer`` (the first trainer if it was not run); see the module docstring."""
    by_name = {r["trainer"]: r for r in results}
    baseline = by_name.get(BASELINE, results[0])
    strong_only = by_name.get(STRONG_ONLY)

    def epoch(r):
        return r["median_step_s"] * r.get("iterations_per_epoch", 1)

    def per_case(r):
        return r["median_step_s"] / r.get("cases_per_step", 1)

    ratios = {"baseline": baseline["trainer"], "targets": dict(TARGETS)}
    for r in results:
        same = same_rows_reference(r, results, baseline)
        epoch_ratio = _ratio(epoch(r), epoch(baseline))
        memory_ratio = _ratio(r["peak_memory_mb"], baseline["peak_memory_mb"])
        judged = (epoch_ratio, memory_ratio) if same is None else (
            _ratio(epoch(r), epoch(same)), _ratio(r["peak_memory_mb"], same["peak_memory_mb"]))
        ratios[r["trainer"]] = {
            "time": _ratio(r["median_step_s"], baseline["median_step_s"]), "epoch": epoch_ratio,
            "per_case": _ratio(per_case(r), per_case(baseline)), "memory": memory_ratio,
            "vs_strong_only": None if strong_only is None else _ratio(epoch(r), epoch(strong_only)),
            "same_rows_baseline": None if same is None else same["trainer"],
            "same_rows": None if same is None else judged[0],
            "memory_same_rows": None if same is None else judged[1],
            "epoch_met": None if judged[0] is None else judged[0] <= TARGETS["epoch"],
            "memory_met": None if judged[1] is None else judged[1] <= TARGETS["memory"]}
    return ratios


def same_rows_reference(result: dict, results: list[dict], baseline: dict) -> dict | None:
    """The stock measurement on as many cases per step as ``result``: the baseline itself, or ``nnUNetTrainer@N``;
    None where there is none."""
    cases = result.get("cases_per_step")
    if cases is None or cases == baseline.get("cases_per_step"):
        return baseline if cases is not None else None
    return next((r for r in results if split_spec(r["trainer"])[0] == baseline["trainer"]
                 and r.get("cases_per_step") == cases), None)


def build_metadata(args: argparse.Namespace, command: str, dataset, runs: list[dict], context: dict) -> dict:
    """Environment metadata of the report: date, commit, versions, device, threads, dataset and plans
    (``dataset``: a :class:`~nnunetv2_confkd.study.cost_dataset.BenchmarkDataset`), protocol, machine load and
    ``command`` (the command line as recorded); ``context`` holds load averages and ``nnUNet_compile``."""
    env, plans_config = runs[0]["environment"], dataset.configuration
    return {
        "date_utc": utc_now(),
        "git_commit": git_commit(Path(__file__).resolve().parents[1]),
        "python": env["python"], "torch": env["torch"], "nnunetv2": env["nnunetv2"],
        "device": args.device, "device_name": env["device_name"], "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(), "cuda": env["cuda"], "cudnn": env["cudnn"],
        "torch_threads": env["torch_threads"], "torch_interop_threads": env["torch_interop_threads"],
        "nnUNet_compile": context["nnUNet_compile"],
        "dataset_id": dataset.dataset_id, "dataset": dataset.name, "synthetic": dataset.synthetic,
        "plans": dataset.plans, "config": dataset.config,
        "plans_patch_size": plans_config["patch_size"], "plans_batch_size": plans_config["batch_size"],
        "patch_size": runs[0]["patch_size"], "batch_size": runs[0]["batch_size"],
        "trainers": list(args.trainers), "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
        "seed": args.seed, "profile_steps": args.profile_steps,
        "scheme": "one fresh process per (trainer, repeat); trainer order reversed on odd repeats",
        "load_average_before": context["load_before"], "load_average_after": context["load_after"],
        "command": command,
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def format_table(report: dict) -> str:
    """Markdown table of cases per step, step time, peak memory and the ratios; the same-rows ratios (against stock
    nnU-Net on as many cases per step) are judged against their targets.

    Example:
        >>> results = [{"trainer": "A", "cases_per_step": 8, "full_per_step": None, "median_step_s": 1.0,
        ...             "iqr_step_s": 0.1, "peak_memory_mb": 100.0, "memory_measure": "m"},
        ...            {"trainer": "B", "cases_per_step": 16, "full_per_step": 8, "median_step_s": 2.5,
        ...             "iqr_step_s": 0.2, "peak_memory_mb": 240.0, "memory_measure": "m"},
        ...            {"trainer": "A@16", "cases_per_step": 16, "full_per_step": None, "median_step_s": 2.0,
        ...             "iqr_step_s": 0.1, "peak_memory_mb": 200.0, "memory_measure": "m"}]
        >>> meta = {"device_name": "CPU", "device": "cpu", "dataset": "Dataset991_S", "config": "2d",
        ...         "batch_size": 8, "patch_size": [64, 64], "repeats": 2, "steps": 3, "warmup": 1}
        >>> print(format_table({"results": results, "ratios": compute_ratios(results), "metadata": meta}))
        | trainer | cases/step (full) | median step (s) | IQR (s) | peak memory (MB) | step ratio | epoch ratio | same rows | epoch ratio, same rows (<= 1.3) | met | memory ratio, same rows (<= 1.3) | met |
        |---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|
        | A | 8 | 1.0000 | 0.1000 | 100.0 | 1.000 | 1.000 | A | 1.000 | yes | 1.000 | yes |
        | B | 16 (8) | 2.5000 | 0.2000 | 240.0 | 2.500 | 2.500 | A@16 | 1.250 | yes | 1.200 | yes |
        | A@16 | 16 | 2.0000 | 0.1000 | 200.0 | 2.000 | 2.000 | A@16 | 1.000 | yes | 1.000 | yes |
        <BLANKLINE>
        baseline A; Dataset991_S 2d, plans batch 8, patch [64, 64]; CPU (cpu), 2 x 3 steps (+1 warm-up); memory: m
    """  # noqa: E501
    ratios, t = report["ratios"], TARGETS
    yes = {True: "yes", False: "**no**", None: "n/a"}
    lines = [f"| trainer | cases/step (full) | median step (s) | IQR (s) | peak memory (MB) | step ratio | epoch ratio "
             f"| same rows | epoch ratio, same rows (<= {t['epoch']}) | met | memory ratio, same rows "
             f"(<= {t['memory']}) | met |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|---|"]
    for r in report["results"]:
        q = ratios[r["trainer"]]
        full = "" if r["full_per_step"] is None else f" ({r['full_per_step']})"
        lines.append(f"| {r['trainer']} | {r['cases_per_step']}{full} | {r['median_step_s']:.4f} | "
                     f"{r['iqr_step_s']:.4f} | {r['peak_memory_mb']:.1f} | {_fmt(q['time'], '.3f')} | "
                     f"{_fmt(q['epoch'], '.3f')} | {q['same_rows_baseline'] or 'n/a'} | "
                     f"{_fmt(q['same_rows'], '.3f')} | {yes[q['epoch_met']]} | "
                     f"{_fmt(q['memory_same_rows'], '.3f')} | {yes[q['memory_met']]} |")
    meta = report["metadata"]
    lines.append(f"\nbaseline {ratios['baseline']}; {meta['dataset']} {meta['config']}, plans batch "
                 f"{meta['batch_size']}, patch {meta['patch_size']}; {meta['device_name']} ({meta['device']}), "
                 f"{meta['repeats']} x {meta['steps']} steps (+{meta['warmup']} warm-up); memory: "
                 f"{report['results'][0]['memory_measure']}")
    return "\n".join(lines)


def ratio_lines(report: dict) -> str:
    """One line per trainer other than the stock ones: its epoch ratio against the baseline (and the strong-only
    baseline), its cases per step and composition, its ratio on the same rows and whether that meets the target.

    Example:
        >>> results = [{"trainer": "nnUNetTrainer", "median_step_s": 1.0, "peak_memory_mb": 1.0, "cases_per_step": 8,
        ...             "composition": "stock"},
        ...            {"trainer": "nnUNetTrainerStrongOnly", "median_step_s": 1.0, "peak_memory_mb": 1.0,
        ...             "cases_per_step": 8, "composition": "replace 1"},
        ...            {"trainer": "C", "median_step_s": 2.5, "peak_memory_mb": 1.0, "cases_per_step": 16,
        ...             "composition": "add 1"},
        ...            {"trainer": "nnUNetTrainer@16", "median_step_s": 1.9, "peak_memory_mb": 1.0,
        ...             "cases_per_step": 16, "composition": "stock"}]
        >>> print(ratio_lines({"results": results, "ratios": compute_ratios(results)}))
        nnUNetTrainerStrongOnly (replace 1, 8 cases/step): epoch 1.000 x nnUNetTrainer: meets the 1.3 target
        C (add 1, 16 cases/step): epoch 2.500 x nnUNetTrainer, 2.500 x nnUNetTrainerStrongOnly; same rows 1.316 x nnUNetTrainer@16: misses the 1.3 target
    """  # noqa: E501
    ratios, lines = report["ratios"], []
    base, target = ratios["baseline"], ratios["targets"]["epoch"]
    for r in report["results"]:
        q = ratios[r["trainer"]]
        if split_spec(r["trainer"])[0] == base or q["epoch"] is None:
            continue
        strong = "" if q["vs_strong_only"] is None or r["trainer"] == STRONG_ONLY else \
            f", {q['vs_strong_only']:.3f} x {STRONG_ONLY}"
        same = q["same_rows_baseline"]
        if same is None:
            judged = f", per case {q['per_case']:.3f} (no stock run on {r['cases_per_step']} cases per step)"
        elif same != base:
            judged = f"; same rows {q['same_rows']:.3f} x {same}"
        else:
            judged = ""
        verdict = "meets" if q["epoch_met"] else "misses"
        lines.append(f"{r['trainer']} ({r['composition']}, {r['cases_per_step']} cases/step): epoch {q['epoch']:.3f} x "
                     f"{base}{strong}{judged}: {verdict} the {target} target")
    return "\n".join(lines)
