"""``confkd_benchmark``: train, predict and evaluate a grid of (dataset, trainer, seed) runs through nnU-Net's own
console scripts, and report it.

Datasets are nnU-Net raw datasets of one source (supervision budgets written by the converters), each with a dense
held-out part in ``imagesTs``/``labelsTs``. For every dataset the runner plans (``nnUNetv2_plan_and_preprocess
--no_pp``) if no plans exist, adds the preset's configuration (presets.py) and preprocesses it if needed. Every run
(runner.py)

1. trains ``nnUNetv2_train DATASET CONFIG FOLD -tr TRAINER`` (through ``confkd_train``, which also seeds the run from
   ``$CONFKD_SEED``) with ``nnUNet_results`` pointing at ``OUT/nnUNet_results/seed_<s>``, so seeds never share a
   folder and the user's own results folder is never touched; the default fold is nnU-Net's ``all`` (every training
   case);
2. predicts the held-out images with ``nnUNetv2_predict`` (the class's inference head) and, for ConfKD trainers, the
   other head from the same checkpoint (``confkd_predict_head``);
3. evaluates them (evaluation.py: Dice, HD95, ASSD, NSD in mm) and writes one record per head,
   ``OUT/runs/<dataset>/<trainer>/seed_<s>/<head>.json``, through a temporary name.

``--cv`` evaluates instead each fold's validation cases (nnU-Net's own final-validation predictions of
``fold_<k>/validation``, the inference head) against their dense training labels: cross-validation inside the
training set, for choosing hyperparameters without looking at the held-out part (the converters' folds 0..K-1 are
patient-level folds over the full patients; without ``-f``, every fold of each dataset's split). Its records live in
``seed_<s>/v2_cv_fold_<k>/`` (``cv_fold_<k>/`` for a split of the converters' earlier format, folds.py).

On a cluster (docs/benchmark.md): ``--list-runs`` prints the grid, one numbered run per line, in the order the
runner uses; ``--run-index I`` runs only run ``I`` (one array task per run) and leaves the report to a later
``--report-only``. A run holds a lock in ``OUT/locks`` while it trains, predicts and evaluates (locks.py); a second
job for it stops with the holder's host, pid and start time and a non-zero status, and ``--break-lock`` removes a
lock of another host whose job is gone.

Resumable: a run whose records all exist is skipped. A training that was interrupted resumes from its latest
checkpoint (``--c``, nnU-Net's own resume) and is only evaluated once ``checkpoint_final.pth`` exists; predictions
are written to a temporary folder and renamed, so a killed prediction or evaluation is redone from scratch and
never counted. A failed run (or one held by another job) is reported and the others go on; the exit status is 1 if
any was not done.

The report (``results.csv/json/md`` and plots, report.py) is rebuilt from the records after every call but
``--run-index``, under a lock so that two jobs never write it at once; ``--report-only`` rebuilds it without running
anything. The command recorded in records and report writes the study folder as ``.`` and every other path relative
to it or as ``$nnUNet_raw/...`` (provenance.py).

Flags follow nnU-Net: ``-d`` datasets, ``-tr`` trainers, ``-c`` configuration, ``-f`` folds, ``-o`` study folder
(alias ``--out``), ``-device`` (default: cuda if available, else cpu), ``-num_gpus`` (passed to ``nnUNetv2_train``),
``-np`` processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import add_device_argument, resolve_device
from nnunetv2_confkd.study.folds import ALL, check_fold, cv_folds, read_splits, split_format
from nnunetv2_confkd.study.locks import LockHeld, StudyLock, describe, lock_path
from nnunetv2_confkd.study.presets import PRESETS
from nnunetv2_confkd.study.provenance import portable_command
from nnunetv2_confkd.study.report import write_report
from nnunetv2_confkd.study.runner import Runner, time_inference
from nnunetv2_confkd.study.runs import Run, heads_of, plan_runs, resolve_dataset

PATH_OPTIONS = ("-o", "--out")  # the options of this command whose value is a path
REPORT_WAIT_S = 600.0  # how long --report-only waits for another job writing the report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Arguments of ``confkd_benchmark``; ``device`` is resolved (:func:`nnunetv2_confkd.cli.resolve_device`)."""
    p = argparse.ArgumentParser(prog="confkd_benchmark", description=__doc__.splitlines()[0])
    p.add_argument("-d", nargs="+", default=[], help="dataset ids or names (budgets of one source)")
    p.add_argument("-tr", nargs="+", default=[], help="trainers run on every dataset given with -d "
                   "(base names, e.g. nnUNetTrainer nnUNetTrainerStrongOnly nnUNetTrainerConfKD)")
    p.add_argument("--extra", nargs="+", default=[], metavar="DATASET:TRAINER",
                   help="single runs outside the grid, e.g. the full-supervision upper bound 500:nnUNetTrainer")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("-c", default="2d", help="base nnU-Net configuration (default 2d)")
    p.add_argument("-f", nargs="+", default=None,
                   help="fold(s): default 'all' (nnU-Net's fold that trains on every training case); with --cv, "
                        "default every fold of each dataset's splits_final.json")
    p.add_argument("--cv", action="store_true",
                   help="cross-validation inside the training set, to choose hyperparameters: evaluate each fold's "
                        "validation cases (nnU-Net's own final validation, inference head) instead of the held-out "
                        "test part, e.g. -f 0 1 2 3 4 with the converters' patient-level folds")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpu",
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    p.add_argument("-o", "--out", dest="out", type=Path, required=True,
                   help="study folder (models, predictions, records, report)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2.0)")
    add_device_argument(p)
    p.add_argument("-num_gpus", type=int, default=1,
                   help="GPUs of one training (nnUNetv2_train -num_gpus: DDP inside the job; default 1)")
    p.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing")
    p.add_argument("--time-inference", type=int, default=0, metavar="N",
                   help="after the runs: predict the held-out part N times with each ConfKD model and the stock "
                        "nnU-Net model of the same dataset and seed, interleaved (inference_time.json)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the finished records")
    p.add_argument("--list-runs", action="store_true",
                   help="print the grid, one run per line (index, dataset, trainer, seed, fold, evaluation, state), "
                        "and exit without training")
    p.add_argument("--run-index", type=int, default=None, metavar="I",
                   help="run only run I of --list-runs (e.g. $SLURM_ARRAY_TASK_ID); the report is left to "
                        "--report-only")
    p.add_argument("--break-lock", action="store_true",
                   help="remove locks of this call's runs held on another host (only once that job is gone)")
    args = p.parse_args(argv)
    args.extra = [tuple(e.split(":", 1)) for e in args.extra]
    if any(len(e) != 2 for e in args.extra):
        p.error("--extra takes DATASET:TRAINER pairs")
    if not args.report_only and not ((args.d and args.tr) or args.extra):
        p.error("give -d and -tr (and/or --extra), or --report-only")
    if args.run_index is not None and (args.time_inference or args.list_runs):
        p.error("--run-index runs one run: time inference and list runs in calls of their own")
    if args.num_gpus < 1:
        p.error("-num_gpus must be >= 1")
    args.device = resolve_device(args)
    return args


def recorded_command(argv: list[str], out: Path) -> str:
    """The command line as records and report name it: paths relative to the study folder ``out`` or from nnU-Net's
    folder variables (:func:`nnunetv2_confkd.study.provenance.portable_command`)."""
    return portable_command(["confkd_benchmark", *argv], Path(os.path.abspath(out)), os.environ, cwd=Path.cwd(),
                            path_options=PATH_OPTIONS)


def plan(args: argparse.Namespace, runner: Runner) -> list[Run]:
    """The study's runs in the runner's order, after every check that needs no training: datasets, held-out parts,
    the folds against each dataset's split, trainer classes."""
    names = {d: resolve_dataset(runner.raw, d, not args.cv) for d in [*args.d, *[e[0] for e in args.extra]]}
    folds, splits = {}, {}
    for dataset in dict.fromkeys(names.values()):
        split, source = read_splits(runner.preprocessed, runner.raw, dataset)
        folds[dataset] = tuple(args.f or (cv_folds(split) if args.cv else [ALL]))
        if not folds[dataset]:
            raise ConfKDInputError(f"{dataset}: {source} holds no cross-validation fold")
        for fold in folds[dataset]:
            check_fold(split, source, dataset, fold, args.cv)
        splits[dataset] = split_format(split)
    runs = plan_runs([names[d] for d in args.d], list(args.tr), [(names[d], t) for d, t in args.extra],
                     args.seeds, runner.preset, folds, args.cv, splits)
    with contextlib.redirect_stdout(sys.stderr):  # nnU-Net's class search prints; stdout lists the runs
        for trainer in sorted({r.trainer for r in runs}):
            heads_of(trainer)
    return runs


def list_runs(runs: list[Run], runner: Runner) -> str:
    """One line per run: index, dataset, trainer, seed, fold, evaluation and whether its records exist."""
    return "\n".join(f"{i}\t{r.dataset}\t{r.trainer}\t{r.seed}\t{r.fold}\t{'cv' if r.cv else 'test'}\t"
                     f"{'finished' if runner.finished(r) else 'to run'}" for i, r in enumerate(runs))


def report(out: Path, command: str, wait: float) -> str:
    """:func:`~.report.write_report` under the study's report lock, waiting up to ``wait`` seconds for another
    job writing it."""
    def waiting(holder: dict | None) -> None:
        print(f"waiting for the report lock ({describe(holder)})", flush=True)

    try:
        with StudyLock(lock_path(out, "report"), "writing the report").acquire(wait, on_wait=waiting):
            return write_report(out, command)
    except LockHeld as e:
        return f"report not written: another job is writing it ({e}); rebuild it with --report-only"


@contextlib.contextmanager
def sigterm_as_exit():
    """Within the block, SIGTERM (a batch system's time limit, ``scancel``) raises ``SystemExit``, so that running
    commands are stopped and this job's locks removed; the previous handler is restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(args: argparse.Namespace, runner: Runner, runs: list[Run], command: str) -> None:
    """Prepare the runs' datasets, run them, then time inference and write the report (not for one ``--run-index``
    job); exits with status 1 naming the runs not done (failed, or held by another job)."""
    try:
        configs = {d: runner.prepare(d) for d in dict.fromkeys(r.dataset for r in runs)}
    except ConfKDInputError as e:
        raise SystemExit(f"confkd_benchmark: {e}") from None
    print(f"{len(runs)} runs, preset {runner.preset.name}, configuration(s) {sorted(set(configs.values()))}")
    failed = []
    for i, run in enumerate(runs, 1):
        try:
            status = runner.execute(run, configs[run.dataset])
        except LockHeld as e:
            failed.append(run.key)
            status = f"NOT RUN: {e}"
        except (RuntimeError, ConfKDInputError, FileNotFoundError, ValueError) as e:
            failed.append(run.key)
            status = f"FAILED: {str(e).splitlines()[0]}"
        print(f"[{i}/{len(runs)}] {run.key}: {status}", flush=True)
    if args.run_index is not None:
        print(f"run {args.run_index} of the grid: {'not done' if failed else 'done'}; merge the runs of every job "
              f"with confkd_benchmark --report-only -o {args.out}")
    else:
        if args.time_inference and not failed:
            time_inference(runner, args.time_inference)
        print(report(runner.out, command, 0.0))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) not done (see {runner.log}): {', '.join(failed)}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = recorded_command(argv, args.out)
    if args.report_only:
        print(report(args.out.resolve(), command, REPORT_WAIT_S))
        return
    try:  # every check before any training: paths, datasets, folds, held-out parts, trainer classes
        runner = Runner(args, command)
        runs = plan(args, runner)
        if args.list_runs:
            print(list_runs(runs, runner))
            return
        if args.run_index is not None:
            if not 0 <= args.run_index < len(runs):
                raise ConfKDInputError(f"--run-index {args.run_index} is out of range: the grid has {len(runs)} "
                                       f"run(s), indices 0..{len(runs) - 1} (see --list-runs)")
            runs = [runs[args.run_index]]
            runner.log = runner.out / "logs" / (runs[0].key.replace("/", "__") + ".log")
    except ConfKDInputError as e:
        raise SystemExit(f"confkd_benchmark: {e}") from None
    with sigterm_as_exit():
        execute(args, runner, runs, command)


if __name__ == "__main__":
    main()
