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
3. **One worker.** Builds the trainer as ``nnunetv2.run.run_training.get_trainer_from_args`` does (trainer class by
   name, including the package's trainers through ``nnUNet_extTrainer``; plans json with
   ``plans["continue_training"] = False``; ``dataset.json``; fold 0), optionally with the plans' batch size and patch
   size overridden. Threads as ``nnUNetv2_train`` sets them (CPU: all cores; CUDA: one) unless ``--threads``.
   ``nnUNet_n_proc_DA=0``, so both loaders are a ``SingleThreadedAugmenter`` and no augmentation worker runs beside
   the timed steps.
   Seeds ``random``/``numpy``/``torch``, calls ``trainer.on_train_start()`` (initialize and data loaders), pre-fetches
   ``warmup + steps`` batches from ``trainer.dataloader_train`` (not timed), calls ``trainer.network.train()``, runs
   ``warmup`` untimed steps and then ``steps`` timed calls of ``trainer.train_step(batch)``, each on its own batch,
   each bracketed by ``torch.cuda.synchronize()`` on CUDA. ``on_train_end`` is not called: it would write a
   ``checkpoint_final.pth`` of an untrained network; the worker shuts its loaders down and exits instead.
4. **Statistics.** Per trainer: median and interquartile range of all ``repeats x steps`` timed steps, and the
   median of every repeat. Peak memory is the median over repeats of the per-worker peak (all repeats are listed).

Memory measures (the JSON names the one used):

* ``cuda_max_memory_allocated``: ``torch.cuda.max_memory_allocated()`` over the timed steps, after
  ``torch.cuda.reset_peak_memory_stats()`` (parameters, gradients, optimizer state and activations).
* ``cpu_peak_rss_increase``: peak resident set size during the training steps (warm-up included) minus the RSS right
  before the first step (after the batches were fetched), i.e. gradients, optimizer state and activations. The peak is
  Linux's ``VmHWM``, reset to the current RSS before the first step by writing ``5`` to ``/proc/self/clear_refs``:
  ``getrusage(RUSAGE_SELF).ru_maxrss`` is a lifetime peak that cannot be reset, so a higher peak during start-up would
  hide the steps. Where the reset is not possible, the ``ru_maxrss`` increase is used (``cpu_ru_maxrss_increase``).
  Both increases and the absolute ``ru_maxrss`` are reported.

Timing is done by hand rather than with ``torch.utils.benchmark.Timer`` (style.md §11): every step must consume a new
batch and changes the optimizer state, and the fixed ``warmup``/``steps``/``repeats`` keep the trainers comparable.

Example:
    ``confkd_benchmark_cost --device cpu --steps 5 --repeats 5 --warmup 2``
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from nnunetv2_confkd.cli import with_ext_trainers
from nnunetv2_confkd.demo import demo_environment, run
from nnunetv2_confkd.presets import PLANS
from nnunetv2_confkd.provenance import busy_warning, cpu_model, git_commit, load_average, utc_now, write_json_atomic
from nnunetv2_confkd.synthetic import SyntheticSpec, make_synthetic_dataset

logger = logging.getLogger(__name__)

BASELINE = "nnUNetTrainer"
DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerConfKD")
TARGETS = {"time": 1.25, "memory": 1.30}
FOLD = 0
SEED = 12345
MB = 1024.0 * 1024.0


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


# ======================================================================================================================
# worker: one trainer, one repeat, in a fresh process
# ======================================================================================================================

def build_trainer(trainer_name: str, preprocessed: Path, config: str, device: str,
                  batch_size: int | None = None, patch_size: list[int] | None = None):
    """A trainer built like ``nnunetv2.run.run_training.get_trainer_from_args`` (fold 0, plans ``nnUNetPlans``).

    Args:
        trainer_name: any trainer nnU-Net or this package knows (``nnUNet_extTrainer`` is extended here).
        preprocessed: preprocessed dataset folder holding the plans and ``dataset.json``.
        config: configuration name, e.g. ``"2d"``.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: overrides the plans' batch size of ``config`` when given.
        patch_size: overrides the plans' patch size of ``config`` when given.

    Returns:
        The trainer instance (not initialized).
    """
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with_ext_trainers()
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    plans = json.loads((Path(preprocessed) / f"{PLANS}.json").read_text())
    plans["continue_training"] = False
    if batch_size is not None:
        plans["configurations"][config]["batch_size"] = int(batch_size)
    if patch_size is not None:
        plans["configurations"][config]["patch_size"] = [int(p) for p in patch_size]
    dataset_json = json.loads((Path(preprocessed) / "dataset.json").read_text())
    return trainer_class(plans=plans, configuration=config, fold=FOLD, dataset_json=dataset_json,
                         device=torch.device(device))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (nnU-Net's loaders draw from ``np.random``)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(device: str, threads: int | None = None) -> None:
    """Thread counts as ``nnUNetv2_train -device {cpu,cuda}`` sets them (``run_training_entry``): all cores on CPU,
    one on CUDA; ``threads`` overrides the intra-op count (``--threads``, e.g. on a machine shared with other jobs,
    where the busy-waiting OpenMP threads of an oversubscribed CPU can inflate step times)."""
    import torch

    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    else:
        torch.set_num_threads(threads or 1)
        torch.set_num_interop_threads(1)


def _proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or ``None`` where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset Linux's ``VmHWM`` to the current RSS (``clear_refs`` value 5); ``False`` where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory over a stretch of training steps; see the module docstring for the two measures."""

    def __init__(self, device: str):
        self.device = device

    def start(self) -> None:
        """Call right before the first measured step."""
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        self.hwm_reset = _reset_peak_rss()
        self.rss_before_kb = _proc_status_kb("VmRSS")
        self.maxrss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> dict:
        """Call after the last measured step; returns ``peak_memory_mb``, ``memory_measure`` and details."""
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return {"peak_memory_mb": torch.cuda.max_memory_allocated() / MB,
                    "memory_measure": "cuda_max_memory_allocated",
                    "max_memory_reserved_mb": torch.cuda.max_memory_reserved() / MB}
        maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        rss_before = self.rss_before_kb if self.rss_before_kb is not None else self.maxrss_before_kb
        hwm_kb = _proc_status_kb("VmHWM") if self.hwm_reset else None
        ru_increase = max(0, maxrss_kb - rss_before) / 1024.0
        out = {"rss_before_first_step_mb": rss_before / 1024.0, "absolute_peak_rss_mb": maxrss_kb / 1024.0,
               "ru_maxrss_increase_mb": ru_increase}
        if hwm_kb is not None:
            out.update(peak_memory_mb=max(0, hwm_kb - rss_before) / 1024.0, memory_measure="cpu_peak_rss_increase")
        else:
            out.update(peak_memory_mb=ru_increase, memory_measure="cpu_ru_maxrss_increase")
        return out


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(trainer, batches: list[dict], device: str) -> list[float]:
    """Seconds of ``trainer.train_step(batch)`` for each batch, each step bracketed by a device sync."""
    times = []
    for batch in batches:
        _synchronize(device)
        t0 = time.perf_counter()
        trainer.train_step(batch)
        _synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _shutdown(trainer) -> None:
    """Stop multi-threaded augmenters (none with ``nnUNet_n_proc_DA=0``) and free cached device memory."""
    from nnunetv2.utilities.helpers import empty_cache

    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        finish = getattr(loader, "_finish", None)
        if callable(finish):
            finish()
    empty_cache(trainer.device)


def _worker_environment_info(trainer, device: str) -> dict:
    """Versions, device and threads as seen by a worker (goes into the JSON metadata)."""
    from importlib.metadata import version

    import torch

    from nnunetv2_confkd.mixed_trainer import unwrap

    cuda = device == "cuda"
    return {"python": platform.python_version(), "torch": torch.__version__, "nnunetv2": version("nnunetv2"),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "device_name": torch.cuda.get_device_name() if cuda else cpu_model(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "compiled": unwrap(trainer.network) is not trainer.network,
            "n_parameters": sum(p.numel() for p in trainer.network.parameters())}


def measure_trainer(trainer, steps: int, warmup: int, device: str, seed: int = SEED) -> dict:
    """Start ``trainer``, pre-fetch ``warmup + steps`` batches, time the steps and measure peak memory.

    Args:
        trainer: a trainer from :func:`build_trainer`.
        steps: timed steps.
        warmup: untimed steps before them.
        device: ``"cpu"`` or ``"cuda"`` (the trainer's device).
        seed: seed of every global random generator, set before start-up and again before the steps.

    Returns:
        ``step_times_s``, ``warmup_times_s``, memory fields of :class:`MemoryProbe`, and the worker's environment.
    """
    seed_everything(seed)
    trainer.on_train_start()
    config = trainer.configuration_manager
    batches = [next(trainer.dataloader_train) for _ in range(warmup + steps)]
    seed_everything(seed)
    trainer.network.train()
    probe = MemoryProbe(device)
    if device == "cpu":
        probe.start()  # CPU: the increase over the RSS right before the first step, warm-up included
    warm = time_steps(trainer, batches[:warmup], device)
    if device == "cuda":
        probe.start()  # CUDA: the allocator's peak over the timed steps
    timed = time_steps(trainer, batches[warmup:], device)
    result = {"step_times_s": timed, "warmup_times_s": warm, **probe.stop(),
              "batch_size": int(trainer.batch_size), "patch_size": [int(p) for p in config.patch_size],
              "environment": _worker_environment_info(trainer, device)}
    _shutdown(trainer)
    return result


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
