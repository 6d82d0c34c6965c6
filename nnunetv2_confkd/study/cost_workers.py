"""The measuring side of ``confkd_benchmark_cost``: the work folder's nnU-Net environment, the dataset the workers
train on (cost_dataset.py; the synthetic one is generated and planned here), and the fresh worker processes, one per
(repeat, trainer), run one at a time in interleaved order.

Each worker (``python -m nnunetv2_confkd.study.benchmark_cost --worker-trainer NAME ...``) measures one trainer once
(:mod:`nnunetv2_confkd.study.step_cost`) and writes its result to ``WORKDIR/runs/<trainer>_r<repeat>.json``; its
output goes to the log. A trainer is named as ``NAME`` or ``NAME@B`` (``NAME`` with batch size ``B`` instead of the
plans'): ``nnUNetTrainer@16`` is stock nnU-Net on as many cases per step as an ``"add"`` ConfKD step of a batch-8 plan
(:func:`same_rows_baselines`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from nnunetv2_confkd_conversion.synthetic import SyntheticSpec, make_synthetic_dataset

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.dataset_lookup import matching_datasets
from nnunetv2_confkd.study.cost_dataset import (
    SYNTHETIC_ID,
    BenchmarkDataset,
    check_complete,
    preprocessed_dataset,
    resolved_configuration,
)
from nnunetv2_confkd.study.cost_report import split_spec
from nnunetv2_confkd.study.demo import demo_environment, run
from nnunetv2_confkd.study.presets import PLANS

NNUNET_CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres")  # what nnUNetv2_plan_and_preprocess plans

logger = logging.getLogger(__name__)


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
    hits = matching_datasets(root, str(dataset_id))
    return hits[0] if hits else None


def ensure_dataset(env: dict, dataset_id: int, config: str, log: Path, processes: int = 2) -> Path:
    """Generate (synthetic) and plan/preprocess ``dataset_id`` in the workdir when missing.

    Args:
        env: environment from :func:`benchmark_environment`.
        dataset_id: nnU-Net dataset id.
        config: nnU-Net configuration to preprocess, e.g. ``"2d"``.
        log: file that receives the output of ``nnUNetv2_plan_and_preprocess``.
        processes: its ``-np`` and ``-npfp``.

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
    if not planned or not (pre / name / resolved_configuration(plans_file, config)["data_identifier"]).is_dir():
        logger.info("nnUNetv2_plan_and_preprocess -d %d -c %s (log: %s)", dataset_id, config, log)
        run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", config, "-np", str(processes),
             "-npfp", str(processes)], env, log)
    return pre / name


def prepare_dataset(args: argparse.Namespace, env: dict, log: Path) -> BenchmarkDataset:
    """The dataset of ``args``: ``-d`` under ``$nnUNet_preprocessed`` (of this process's environment), or the
    synthetic dataset in the work folder when ``-d`` is not given or ``--synthetic`` is."""
    if not args.synthetic:
        return preprocessed_dataset(args.dataset, args.config, args.plans, os.environ.get("nnUNet_preprocessed"),
                                    Path(env["nnUNet_preprocessed"]))
    if args.plans != PLANS or args.config not in NNUNET_CONFIGURATIONS:
        raise ConfKDInputError(f"the synthetic dataset is planned by nnUNetv2_plan_and_preprocess, which writes "
                               f"{PLANS} with {', '.join(NNUNET_CONFIGURATIONS)}; got -p {args.plans} -c "
                               f"{args.config} (give -d to time another preprocessed dataset)")
    if args.dataset is not None and not str(args.dataset).isdigit():
        raise ConfKDInputError(f"--synthetic needs a numeric -d (the id to generate), got {args.dataset!r}")
    dataset_id = int(args.dataset) if args.dataset is not None else SYNTHETIC_ID
    folder = ensure_dataset(env, dataset_id, args.config, log, args.np)
    configuration = resolved_configuration(folder / f"{PLANS}.json", args.config)
    check_complete(folder, folder / configuration["data_identifier"], args.config, PLANS)
    return BenchmarkDataset(folder.name, folder, folder, PLANS, args.config, configuration, True)


def cases_per_step(trainer: str, batch_size: int) -> int:
    """Cases in one training step of ``trainer`` on a plan of ``batch_size`` (one rank): the plan's batch, or what the
    class's batch composition adds to it."""
    from nnunetv2_confkd.supervision import batch_counts
    from nnunetv2_confkd.training.mixed_loading import MixedSupervisionMixin
    from nnunetv2_confkd.training.registry import TRAINERS

    name, own = split_spec(trainer)
    batch_size = own or batch_size
    cls = TRAINERS.get(name)
    if cls is None or not issubclass(cls, MixedSupervisionMixin):
        return batch_size
    return sum(batch_counts(batch_size, 1, cls.batch_composition, cls.strong_fraction, cls.weak_ratio))


def same_rows_baselines(trainers: list[str], batch_size: int, baseline: str) -> list[str]:
    """``baseline@N`` for every ``N`` cases per step of a trainer in ``trainers`` that differs from ``batch_size``
    (and is not measured already): stock nnU-Net on as many cases per step, the reference of its same-rows ratio.

    Example:
        >>> same_rows_baselines(["nnUNetTrainer", "nnUNetTrainerConfKD", "nnUNetTrainerConfKD_replaceHalf"], 8,
        ...                     "nnUNetTrainer")
        ['nnUNetTrainer@16']
    """
    sizes = {cases_per_step(t, batch_size) for t in trainers} - {batch_size}
    return [f"{baseline}@{n}" for n in sorted(sizes) if f"{baseline}@{n}" not in trainers]


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
    """Command line of one worker process (same interpreter, ``python -m nnunetv2_confkd.study.benchmark_cost``);
    ``trainer`` is ``NAME`` or ``NAME@B`` (:func:`split_spec`)."""
    name, batch_size = split_spec(trainer)
    batch_size = batch_size or args.batch_size
    cmd = [sys.executable, "-m", "nnunetv2_confkd.study.benchmark_cost", "--worker-trainer", name,
           "--worker-preprocessed", str(preprocessed), "--worker-out", str(out), "-c", args.config, "-p", args.plans,
           "-device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed),
           "--profile-steps", str(args.profile_steps)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    if batch_size is not None:
        cmd += ["--batch-size", str(batch_size)]
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
        result["trainer"], result["repeat"] = trainer, repeat
        results.append(result)
        logger.info("repeat %d %s: %d cases per step, median step %.4f s, peak memory %.1f MB (worker %.0f s)",
                    repeat, trainer, result["cases_per_step"], float(np.median(result["step_times_s"])),
                    result["peak_memory_mb"], time.time() - t0)
    return results
