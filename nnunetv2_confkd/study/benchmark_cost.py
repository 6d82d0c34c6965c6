"""``confkd_benchmark_cost``: cost of trainers per training step and in peak memory, relative to stock
``nnUNetTrainer`` on the same plans.

It measures what the second decoder and the extra loss terms of ``nnUNetTrainerConfKD`` (or any other trainer) cost
per ``train_step`` and in peak memory, compared with ``nnUNetTrainer`` on the same plans, patch size and batch size,
and checks the ratios against the targets time ratio <= 1.25 and memory ratio <= 1.30 (cost_report.py).

Protocol:

1. **Data.** If ``--workdir`` holds no dataset ``-d``, the project's synthetic dataset is generated there
   (:func:`nnunetv2_confkd_conversion.synthetic.make_synthetic_dataset`) and planned with
   ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG -np NP -npfp NP``. ``nnUNet_raw``/``_preprocessed``/``_results``
   point into the workdir; the user's own nnU-Net folders are never touched.
2. **Interleaved fresh workers** (cost_workers.py). Every (trainer, repeat) pair runs in its own fresh process
   (``python -m nnunetv2_confkd.study.benchmark_cost --worker-trainer NAME ...``), one at a time. Repeat ``r`` runs the
   trainers in the given order for even ``r`` and in reverse order for odd ``r`` (A B, B A, A B, ...), so that a
   change of machine load during the benchmark hits every trainer alike, and so that the peak memory of one trainer
   (or of another repeat) never leaks into another measurement.
3. **One worker** measures one trainer once: :mod:`nnunetv2_confkd.study.step_cost` (how it builds the trainer,
   times the steps and measures memory).
4. **Statistics** (cost_report.py). Per trainer: median and interquartile range of all ``repeats x steps`` timed
   steps, and the median of every repeat. Peak memory is the median over repeats of the per-worker peak (all repeats
   are listed).

The JSON report (``-o``, default ``WORKDIR/cost.json``) records the command with the report's folder as ``.`` and
every other path relative to it or as ``$nnUNet_raw/...`` (provenance.py).

Flags follow nnU-Net: ``-d`` dataset id (alias ``--dataset-id``), ``-c`` configuration (alias ``--config``),
``-tr`` trainers (alias ``--trainers``), ``-device`` (default: cuda if available, else cpu), ``-o`` report file
(alias ``--out``), ``-np`` processes.

Example:
    ``confkd_benchmark_cost -device cpu --steps 5 --repeats 5 --warmup 2``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from nnunetv2_confkd.cli import add_device_argument, resolve_device
from nnunetv2_confkd.study.cost_report import build_metadata, compute_ratios, format_table, summarize
from nnunetv2_confkd.study.cost_workers import (
    benchmark_environment,
    ensure_dataset,
    plans_configuration,
    run_workers,
)
from nnunetv2_confkd.study.presets import PLANS
from nnunetv2_confkd.study.provenance import busy_warning, load_average, portable_command, write_json_atomic
from nnunetv2_confkd.study.step_cost import SEED, build_trainer, measure_trainer, set_threads

logger = logging.getLogger(__name__)

DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerConfKD")
PATH_OPTIONS = ("--workdir", "-o", "--out")  # the options of this command whose value is a path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``confkd_benchmark_cost`` (and the hidden ``--worker-*`` ones of a worker process); ``device`` is
    resolved (:func:`nnunetv2_confkd.cli.resolve_device`)."""
    p = argparse.ArgumentParser(prog="confkd_benchmark_cost",
                                description="Step time and peak memory of nnU-Net trainers vs nnUNetTrainer "
                                            "(targets: time ratio <= 1.25, memory ratio <= 1.30)")
    p.add_argument("--workdir", type=Path, default=Path("confkd_work/benchmark"))
    p.add_argument("-d", "--dataset-id", dest="dataset_id", type=int, default=991,
                   help="dataset id in the workdir (generated as the synthetic dataset if missing; default 991)")
    p.add_argument("-c", "--config", dest="config", default="2d", help="nnU-Net configuration (default 2d)")
    p.add_argument("-tr", "--trainers", dest="trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    add_device_argument(p)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5, help="fresh worker processes per trainer")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones, in every worker")
    p.add_argument("-o", "--out", dest="out", type=Path, default=None,
                   help="JSON report (default: WORKDIR/cost.json)")
    p.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing (default 2)")
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
    args.device = resolve_device(args)
    return args


def worker_main(args: argparse.Namespace) -> None:
    """Entry of a worker process: measure one trainer once and write the result json to ``--worker-out``."""
    set_threads(args.device, args.threads)
    trainer = build_trainer(args.worker_trainer, args.worker_preprocessed, args.config, args.device,
                            args.batch_size, args.patch_size)
    result = measure_trainer(trainer, args.steps, args.warmup, args.device, args.seed)
    result["trainer"] = args.worker_trainer
    write_json_atomic(Path(args.worker_out), result)


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
    command = portable_command(["confkd_benchmark_cost", *argv],
                               Path(os.path.abspath(args.out or args.workdir / "cost.json")).parent, os.environ,
                               cwd=Path.cwd(), path_options=PATH_OPTIONS)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = (args.out or args.workdir / "cost.json").resolve()
    env, log = benchmark_environment(args.workdir), args.workdir / "benchmark.log"
    preprocessed = ensure_dataset(env, args.dataset_id, args.config, log, args.np)
    plans_config = plans_configuration(preprocessed / f"{PLANS}.json", args.config)
    _check_overrides(args, plans_config)
    context = {"nnUNet_compile": env.get("nnUNet_compile"), "load_before": load_average()}
    busy = busy_warning(context["load_before"], os.cpu_count())
    if busy:
        logger.warning(busy)
    runs = run_workers(args, env, preprocessed, log)
    context["load_after"] = load_average()
    results = [summarize(t, runs) for t in args.trainers]
    report = {"metadata": build_metadata(args, command, plans_config, runs, context), "results": results,
              "ratios": compute_ratios(results)}
    write_json_atomic(out, report)
    print(format_table(report))
    if busy:
        print(f"\nWARNING: {busy}")
    print(f"\nJSON: {out}\nworker output: {log}")


if __name__ == "__main__":
    main()
