"""Cost of a trainer per training step and in peak memory, relative to stock ``nnUNetTrainer`` on the same plans.

The question (style.md §11): what do the second decoder and the extra loss terms of ``nnUNetTrainerConfKD`` cost per
``train_step`` and in peak memory, compared with ``nnUNetTrainer`` on the same plans, patch size and batch size?
Targets of the issue: time ratio <= 1.25, memory ratio <= 1.30.

Protocol:

1. **Data.** If ``--workdir`` holds no dataset ``--dataset-id``, the project's synthetic dataset is generated there
   (:func:`nnunetv2_confkd.synthetic.make_synthetic_dataset`) and planned with
   ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG -np 2 -npfp 2``. ``nnUNet_raw``/``_preprocessed``/``_results``
   point into the workdir; the user's own nnU-Net folders are never touched.
2. **Interleaved fresh workers.** Every (trainer, repeat) pair runs in its own fresh process
   (``python -m nnunetv2_confkd.benchmark --worker-trainer NAME ...``), one at a time. Repeat ``r`` runs the
   trainers in the given order for even ``r`` and in reverse order for odd ``r`` (A B, B A, A B, ...), so that a
   change of machine load during the benchmark hits every trainer alike, and so that the peak memory of one trainer
   (or of an earlier repeat) never leaks into another measurement.
3. **One worker** measures one trainer once: :mod:`nnunetv2_confkd.step_cost` (how it builds the trainer,
   times the steps and measures memory).
4. **Statistics.** Per trainer: median and interquartile range of all ``repeats x steps`` timed steps, and the
   median of every repeat. Peak memory is the median over repeats of the per-worker peak (all repeats are listed).

Example:
    ``confkd_benchmark_cost --device cpu --steps 5 --repeats 5 --warmup 2``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from nnunetv2_confkd.demo import demo_environment, run
from nnunetv2_confkd.presets import PLANS
from nnunetv2_confkd.provenance import busy_warning, cpu_model, git_commit, load_average, utc_now, write_json_atomic
from nnunetv2_confkd.step_cost import SEED, build_trainer, measure_trainer, set_threads
from nnunetv2_confkd.synthetic import SyntheticSpec, make_synthetic_dataset

logger = logging.getLogger(__name__)

BASELINE = "nnUNetTrainer"
DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerConfKD")
TARGETS = {"time": 1.25, "memory": 1.30}


# ======================================================================================================================
# environment and dataset (orchestrator side)
# ======================================================================================================================

def benchmark_environment(workdir: Path) -> dict:
    """Environment for planning: nnU-Net folders inside ``workdir``, package trainers discoverable.

    ``nnUNet_n_proc_DA`` is at least 1 here, because planning passes it to ``torch.set_num_threads``.
    """
    env = demo_environment(workdir)
    if int(env.get("nnUNet_n_proc_DA", "0") or 0) < 1:
        env["nnUNet_n_proc_DA"] = "1"
    return env


def worker_environment(env: dict) -> dict:
    """``env`` with ``nnUNet_n_proc_DA=0``: single-threaded augmenters, no worker processes beside the steps."""
    return {**env, "nnUNet_n_proc_DA": "0"}


def find_dataset(root: Path, dataset_id: int) -> Path | None:
    """The folder ``DatasetNNN_*`` of ``dataset_id`` under ``root``, or ``None``."""
    hits = sorted(Path(root).glob(f"Dataset{dataset_id:03d}_*")) if Path(root).is_dir() else []
    return hits[0] if hits else None


def ensure_dataset(env: dict, dataset_id: int, config: str, log: Path) -> Path:
    """Generate (synthetic) and plan/preprocess ``dataset_id`` in the workdir when missing.

    Args:
        env: environment from :func:`benchmark_environment`.
        dataset_id: nnU-Net dataset id.
        config: nnU-Net configuration to preprocess, e.g. ``"2d"``.
        log: file that receives the output of ``nnUNetv2_plan_and_preprocess``.

    Returns:
        The preprocessed dataset folder (holding ``nnUNetPlans.json``).
    """
    raw, pre = Path(env["nnUNet_raw"]), Path(env["nnUNet_preprocessed"])
    if find_dataset(raw, dataset_id) is None:
        path = make_synthetic_dataset(raw, dataset_id, SyntheticSpec(), pre)
        logger.info("generated synthetic dataset %s", path)
    name = find_dataset(raw, dataset_id).name
    plans_file = pre / name / f"{PLANS}.json"
    planned = plans_file.is_file() and config in json.loads(plans_file.read_text())["configurations"]
    if not planned or not (pre / name / _configuration(plans_file, config)["data_identifier"]).is_dir():
        logger.info("nnUNetv2_plan_and_preprocess -d %d -c %s (log: %s)", dataset_id, config, log)
        run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", config, "-np", "2", "-npfp", "2"], env, log)
    return pre / name


def _configuration(plans_file: Path, config: str) -> dict:
    """The configuration ``config`` of a plans file, with ``inherits_from`` resolved (one level is enough here)."""
    configs = json.loads(Path(plans_file).read_text())["configurations"]
    if config not in configs:
        raise KeyError(f"configuration {config!r} not in {plans_file} (has {sorted(configs)})")
    parent = configs[config].get("inherits_from")
    return {**(configs[parent] if parent else {}), **configs[config]}


def worker_main(args: argparse.Namespace) -> None:
    """Entry of a worker process: measure one trainer once and write the result json to ``--worker-out``."""
    set_threads(args.device, args.threads)
    trainer = build_trainer(args.worker_trainer, args.worker_preprocessed, args.config, args.device,
                            args.batch_size, args.patch_size)
    result = measure_trainer(trainer, args.steps, args.warmup, args.device, args.seed)
    result["trainer"] = args.worker_trainer
    write_json_atomic(Path(args.worker_out), result)


# ======================================================================================================================
# orchestration, statistics, report
# ======================================================================================================================

def interleaved_order(trainers: list[str], repeats: int) -> list[tuple[int, str]]:
    """``(repeat, trainer)`` pairs: the given order on even repeats, reversed on odd ones.

    Example:
        >>> interleaved_order(["A", "B"], 3)
        [(0, 'A'), (0, 'B'), (1, 'B'), (1, 'A'), (2, 'A'), (2, 'B')]
    """
    order = []
    for r in range(repeats):
        order += [(r, t) for t in (trainers if r % 2 == 0 else trainers[::-1])]
    return order


def worker_command(args: argparse.Namespace, trainer: str, preprocessed: Path, out: Path) -> list[str]:
    """Command line of one worker process (same interpreter, ``python -m nnunetv2_confkd.benchmark``)."""
    cmd = [sys.executable, "-m", "nnunetv2_confkd.benchmark", "--worker-trainer", trainer,
           "--worker-preprocessed", str(preprocessed), "--worker-out", str(out), "--config", args.config,
           "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if args.batch_size is not None:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.patch_size is not None:
        cmd += ["--patch-size", *map(str, args.patch_size)]
    return cmd


def run_workers(args: argparse.Namespace, env: dict, preprocessed: Path, log: Path) -> list[dict]:
    """Run every (repeat, trainer) worker in turn (:func:`interleaved_order`); returns their results."""
    runs_dir = args.workdir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for repeat, trainer in interleaved_order(args.trainers, args.repeats):
        out = runs_dir / f"{trainer}_r{repeat}.json"
        out.unlink(missing_ok=True)
        t0 = time.time()
        run(worker_command(args, trainer, preprocessed, out), worker_environment(env), log)
        result = json.loads(out.read_text())
        result["repeat"] = repeat
        results.append(result)
        logger.info("repeat %d %s: median step %.4f s, peak memory %.1f MB (worker %.0f s)", repeat, trainer,
                    float(np.median(result["step_times_s"])), result["peak_memory_mb"], time.time() - t0)
    return results


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


def build_metadata(args: argparse.Namespace, argv: list[str], plans_config: dict, runs: list[dict],
                   context: dict) -> dict:
    """Environment metadata of the report (style.md §11); ``context`` holds load averages and ``nnUNet_compile``."""
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
        "command": " ".join(shlex.quote(a) for a in ["confkd_benchmark_cost", *argv]),
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


# ======================================================================================================================
# command line
# ======================================================================================================================

def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``confkd_benchmark_cost`` (and the hidden ``--worker-*`` ones of a worker process)."""
    p = argparse.ArgumentParser(description="Step time and peak memory of nnU-Net trainers vs nnUNetTrainer "
                                            "(targets: time ratio <= 1.25, memory ratio <= 1.30)")
    p.add_argument("--workdir", type=Path, default=Path("confkd_work/benchmark"))
    p.add_argument("--dataset-id", type=int, default=991)
    p.add_argument("--config", default="2d")
    p.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available, else cpu")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5, help="fresh worker processes per trainer")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones, in every worker")
    p.add_argument("--out", type=Path, default=None, help="JSON report (default: WORKDIR/cost.json)")
    p.add_argument("--batch-size", type=int, default=None, help="override the plans' batch size")
    p.add_argument("--patch-size", type=int, nargs="+", default=None, help="override the plans' patch size")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads per worker (default: as nnUNetv2_train, all cores on CPU, 1 on CUDA)")
    for hidden in ("--worker-trainer", "--worker-preprocessed", "--worker-out"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        p.error("--steps and --repeats must be >= 1, --warmup >= 0")
    args.trainers = list(dict.fromkeys(args.trainers))  # a trainer named twice is measured once
    if args.device is None:
        args.device = _default_device()
    return args


def _check_overrides(args: argparse.Namespace, plans_config: dict) -> None:
    if args.patch_size is not None and len(args.patch_size) != len(plans_config["patch_size"]):
        raise SystemExit(f"--patch-size needs {len(plans_config['patch_size'])} values for configuration "
                         f"{args.config!r} (plans: {plans_config['patch_size']})")


def main(argv: list[str] | None = None) -> None:
    """``confkd_benchmark_cost``: see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker_trainer is not None:
        worker_main(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = (args.out or args.workdir / "cost.json").resolve()
    env, log = benchmark_environment(args.workdir), args.workdir / "benchmark.log"
    preprocessed = ensure_dataset(env, args.dataset_id, args.config, log)
    plans_config = _configuration(preprocessed / f"{PLANS}.json", args.config)
    _check_overrides(args, plans_config)
    context = {"nnUNet_compile": env.get("nnUNet_compile"), "load_before": load_average()}
    busy = busy_warning(context["load_before"], os.cpu_count())
    if busy:
        logger.warning(busy)
    runs = run_workers(args, env, preprocessed, log)
    context["load_after"] = load_average()
    results = [summarize(t, runs) for t in args.trainers]
    report = {"metadata": build_metadata(args, argv, plans_config, runs, context), "results": results,
              "ratios": compute_ratios(results)}
    write_json_atomic(out, report)
    print(format_table(report))
    if busy:
        print(f"\nWARNING: {busy}")
    print(f"\nJSON: {out}\nworker output: {log}")


if __name__ == "__main__":
    main()
