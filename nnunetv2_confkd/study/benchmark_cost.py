"""``confkd_benchmark_cost``: cost of trainers per training step and per epoch, where the time of a step goes, and
peak memory, relative to stock ``nnUNetTrainer`` on the same plans.

It measures what the second decoder, the extra loss terms and the batch composition of ``nnUNetTrainerConfKD`` (or
any other trainer) cost per ``train_step`` and per epoch, and in peak memory, compared with ``nnUNetTrainer`` on the
same plans and patch size, and checks the ratios against the targets (cost_report.py): at most 1.30 x the step time
and the memory of stock nnU-Net on the same rows. Each trainer is timed on batches of its own data loader, so a ConfKD
``"add"`` step holds twice the plan's cases and a ``"replace"`` step the plan's batch; stock nnU-Net is also timed on
as many cases per step as each composition holds (``nnUNetTrainer@16`` beside an ``"add"`` step of a batch-8 plan;
``--no-same-rows`` skips it), so that the method's cost on the same rows and the cost of the composition are reported
apart.

Protocol:

1. **Data** (cost_dataset.py). ``-d ID_OR_NAME -c CONFIG [-p PLANS]``: any preprocessed dataset under
   ``$nnUNet_preprocessed``, checked first (plans, configuration, complete data folder; a missing piece is a clear
   error naming the fix) and read through a link folder in the work folder, so the dataset is never written. Without
   ``-d`` (or with ``--synthetic``), the project's synthetic dataset (id 991, or ``-d``) is generated in the work folder
   (:func:`nnunetv2_confkd_conversion.synthetic.make_synthetic_dataset`) and planned with
   ``nnUNetv2_plan_and_preprocess -d ID -c CONFIG -np NP -npfp NP``. ``nnUNet_raw``/``_preprocessed``/``_results`` of
   the workers point into the work folder; the user's own nnU-Net folders are never written.
2. **Interleaved fresh workers** (cost_workers.py). Every (trainer, repeat) pair runs in its own fresh process
   (``python -m nnunetv2_confkd.study.benchmark_cost --worker-trainer NAME ...``), one at a time. Repeat ``r`` runs the
   trainers in the given order for even ``r`` and in reverse order for odd ``r`` (A B, B A, A B, ...), so that a
   change of machine load during the benchmark hits every trainer alike, and so that the peak memory of one trainer
   (or of another repeat) never leaks into another measurement.
3. **One worker** measures one trainer once: :mod:`nnunetv2_confkd.study.step_cost` (how it builds the trainer,
   times the steps and measures memory), then profiles ``--profile-steps`` batches part by part
   (:mod:`nnunetv2_confkd.study.cost_profile`: encoder, decoders, seeds, loss terms, optimizer, data loading).
4. **Statistics** (cost_report.py). Per trainer: median and interquartile range of all ``repeats x steps`` timed
   steps, and the median of every repeat; the median milliseconds of every part of a step. Peak memory is the median
   over repeats of the per-worker peak (all repeats are listed).

The JSON report (``--json``, default ``OUT/cost.json``) records the command with the report's folder as ``.`` and
every other path relative to it or as ``$nnUNet_raw/...`` (provenance.py).

Flags follow nnU-Net: ``-d`` dataset id or name (alias ``--dataset``), ``-c`` configuration (alias ``--config``),
``-p`` plans identifier, ``-tr`` trainers (alias ``--trainers``), ``-device`` (default: cuda if available, else cpu),
``-o`` work folder (aliases ``--out``, ``--workdir``), ``-np`` processes.

Example:
    ``confkd_benchmark_cost -d 502 -c 2d_cpu -tr nnUNetTrainer nnUNetTrainerConfKD -device cpu -o cost``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import add_device_argument, resolve_device
from nnunetv2_confkd.study.cost_profile import format_profile_table
from nnunetv2_confkd.study.cost_report import (
    BASELINE,
    build_metadata,
    compute_ratios,
    format_table,
    ratio_lines,
    summarize,
)
from nnunetv2_confkd.study.cost_workers import (
    benchmark_environment,
    prepare_dataset,
    run_workers,
    same_rows_baselines,
    split_spec,
)
from nnunetv2_confkd.study.presets import PLANS
from nnunetv2_confkd.study.provenance import busy_warning, load_average, portable_command, write_json_atomic
from nnunetv2_confkd.study.step_cost import SEED, build_trainer, measure_trainer, set_threads

logger = logging.getLogger(__name__)

DEFAULT_TRAINERS = ("nnUNetTrainer", "nnUNetTrainerConfKD")
PATH_OPTIONS = ("--workdir", "-o", "--out", "--json")  # the options of this command whose value is a path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``confkd_benchmark_cost`` (and the hidden ``--worker-*`` ones of a worker process); ``device`` is
    resolved (:func:`nnunetv2_confkd.cli.resolve_device`)."""
    p = argparse.ArgumentParser(prog="confkd_benchmark_cost",
                                description="Step and epoch time, per-part profile and peak memory of nnU-Net "
                                            "trainers vs nnUNetTrainer (targets on the same rows: step ratio <= "
                                            "1.30, memory ratio <= 1.30)")
    p.add_argument("-o", "--out", "--workdir", dest="workdir", type=Path, default=Path("confkd_work/benchmark"),
                   help="work folder: report, worker results, log, nnU-Net folders of the workers "
                        "(default confkd_work/benchmark)")
    p.add_argument("-d", "--dataset", "--dataset-id", dest="dataset", default=None,
                   help="preprocessed dataset under $nnUNet_preprocessed: id, DatasetXXX_Name or Name (default: the "
                        "synthetic dataset, generated in the work folder)")
    p.add_argument("--synthetic", action="store_true",
                   help="time the synthetic dataset (id -d, default 991), generated and planned in the work folder")
    p.add_argument("-c", "--config", dest="config", default="2d", help="nnU-Net configuration (default 2d)")
    p.add_argument("-p", "--plans", dest="plans", default=PLANS, help=f"plans identifier (default {PLANS})")
    p.add_argument("-tr", "--trainers", dest="trainers", nargs="+", default=list(DEFAULT_TRAINERS),
                   help="trainers to time, each NAME or NAME@B (batch size B instead of the plans'); default "
                        f"{' '.join(DEFAULT_TRAINERS)}")
    p.add_argument("--no-same-rows", dest="same_rows", action="store_false",
                   help="do not add nnUNetTrainer@N, stock nnU-Net on the N cases per step of a trainer whose "
                        "composition changes the plan's batch (the reference of the same-rows ratio)")
    add_device_argument(p)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=5, help="fresh worker processes per trainer")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed ones, in every worker")
    p.add_argument("--profile-steps", type=int, default=2,
                   help="batches profiled part by part after the timed steps, in every worker (0: no profile)")
    p.add_argument("--json", type=Path, default=None, help="JSON report (default: OUT/cost.json)")
    p.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing (default 2)")
    p.add_argument("--batch-size", type=int, default=None, help="override the plans' batch size")
    p.add_argument("--patch-size", type=int, nargs="+", default=None, help="override the plans' patch size")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads per worker (default: as nnUNetv2_train, all cores on CPU, 1 on CUDA)")
    for hidden in ("--worker-trainer", "--worker-preprocessed", "--worker-out"):
        p.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if min(args.steps, args.repeats) < 1 or min(args.warmup, args.profile_steps) < 0:
        p.error("--steps and --repeats must be >= 1, --warmup and --profile-steps >= 0")
    args.synthetic = args.synthetic or args.dataset is None
    args.trainers = list(dict.fromkeys(args.trainers))  # a trainer named twice is measured once
    args.device = resolve_device(args)
    return args


def worker_main(args: argparse.Namespace) -> None:
    """Entry of a worker process: measure one trainer once and write the result json to ``--worker-out``."""
    set_threads(args.device, args.threads)
    trainer = build_trainer(args.worker_trainer, args.worker_preprocessed, args.config, args.device,
                            args.batch_size, args.patch_size, args.plans)
    result = measure_trainer(trainer, args.steps, args.warmup, args.device, args.seed, args.profile_steps)
    result["trainer"] = args.worker_trainer
    write_json_atomic(Path(args.worker_out), result)


def _check_overrides(args: argparse.Namespace, plans_config: dict) -> None:
    for trainer in args.trainers:
        split_spec(trainer)
    if args.patch_size is not None and len(args.patch_size) != len(plans_config["patch_size"]):
        raise ConfKDInputError(f"--patch-size needs {len(plans_config['patch_size'])} values for configuration "
                               f"{args.config!r} (plans: {plans_config['patch_size']})")


def main(argv: list[str] | None = None) -> None:
    """``confkd_benchmark_cost``: see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker_trainer is not None:
        worker_main(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(os.path.abspath(args.json or args.workdir / "cost.json"))
    command = portable_command(["confkd_benchmark_cost", *argv], out.parent, os.environ, cwd=Path.cwd(),
                               path_options=PATH_OPTIONS)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    env, log = benchmark_environment(args.workdir), args.workdir / "benchmark.log"
    try:
        dataset = prepare_dataset(args, env, log)
        _check_overrides(args, dataset.configuration)
    except ConfKDInputError as e:
        raise SystemExit(f"confkd_benchmark_cost: {e}") from None
    if args.same_rows:
        batch = args.batch_size or dataset.configuration["batch_size"]
        args.trainers += same_rows_baselines(args.trainers, batch, BASELINE)
    context = {"nnUNet_compile": env.get("nnUNet_compile"), "load_before": load_average()}
    busy = busy_warning(context["load_before"], os.cpu_count())
    if busy:
        logger.warning(busy)
    runs = run_workers(args, env, dataset.folder, log)
    context["load_after"] = load_average()
    results = [summarize(t, runs) for t in args.trainers]
    report = {"metadata": build_metadata(args, command, dataset, runs, context), "results": results,
              "ratios": compute_ratios(results)}
    write_json_atomic(out, report)
    print(format_table(report))
    print("\n" + ratio_lines(report))
    if args.profile_steps:
        print("\nWhere the time goes (median ms per step; load: getting a batch from the loader, beside the step; "
              "other: step minus its parts):\n\n" + format_profile_table(report))
    if busy:
        print(f"\nWARNING: {busy}")
    print(f"\nJSON: {out}\nworker output: {log}")


if __name__ == "__main__":
    main()
