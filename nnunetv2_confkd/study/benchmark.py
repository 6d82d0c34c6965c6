"""``confkd_benchmark``: train, predict and evaluate a grid of (dataset, trainer, seed) runs through nnU-Net's own
console scripts, and report it.

Datasets are nnU-Net raw datasets of one source (supervision budgets written by the converters), each with a dense
held-out part in ``imagesTs``/``labelsTs``. For every dataset the runner plans (``nnUNetv2_plan_and_preprocess
--no_pp``) if no plans exist, adds the preset's configuration (presets.py) and preprocesses it if needed. Every run
(runner.py)

1. trains ``nnUNetv2_train DATASET CONFIG FOLD -tr TRAINER`` (through ``confkd_train``, which also seeds the run from
   ``$CONFKD_SEED``) with ``nnUNet_results`` pointing at ``OUT/nnUNet_results/seed_<s>``, so seeds never share a
   folder and the user's own results folder is never touched;
2. predicts the held-out images with ``nnUNetv2_predict`` (the class's inference head) and, for ConfKD trainers, the
   other head from the same checkpoint (``confkd_predict_head``);
3. evaluates them (evaluation.py: Dice, HD95, ASSD, NSD in mm) and writes one record per head,
   ``OUT/runs/<dataset>/<trainer>/seed_<s>/<head>.json``, through a temporary name.

``--cv`` evaluates instead each fold's validation cases (nnU-Net's own final-validation predictions of
``fold_<k>/validation``, the inference head) against their dense training labels: cross-validation inside the
training set, for choosing hyperparameters without looking at the held-out part (the converters' folds 1..K are
patient-level folds over the full patients). Its records live in ``seed_<s>/cv_fold_<k>/``.

Resumable: a run whose records all exist is skipped. A training that was interrupted resumes from its latest
checkpoint (``--c``, nnU-Net's own resume) and is only evaluated once ``checkpoint_final.pth`` exists; predictions
are written to a temporary folder and renamed, so a killed prediction or evaluation is redone from scratch and
never counted. A failed run is reported and the others go on; the exit status is 1 if any failed.

The report (``results.csv/json/md`` and plots, report.py) is rebuilt from the records after every call;
``--report-only`` rebuilds it without running anything. The command recorded in records and report writes the study
folder as ``.`` and every other path relative to it or as ``$nnUNet_raw/...`` (provenance.py).

Flags follow nnU-Net: ``-d`` datasets, ``-tr`` trainers, ``-c`` configuration, ``-f`` folds, ``-o`` study folder
(alias ``--out``), ``-device`` (default: cuda if available, else cpu), ``-np`` processes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import add_device_argument, resolve_device
from nnunetv2_confkd.study.presets import PRESETS
from nnunetv2_confkd.study.provenance import portable_command
from nnunetv2_confkd.study.report import write_report
from nnunetv2_confkd.study.runner import Runner, time_inference
from nnunetv2_confkd.study.runs import heads_of, plan_runs, resolve_dataset

PATH_OPTIONS = ("-o", "--out")  # the options of this command whose value is a path


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
    p.add_argument("-f", nargs="+", default=["0"],
                   help="fold(s) (default 0: the converters' split trains on every training case)")
    p.add_argument("--cv", action="store_true",
                   help="cross-validation inside the training set, to choose hyperparameters: evaluate each fold's "
                        "validation cases (nnU-Net's own final validation, inference head) instead of the held-out "
                        "test part, e.g. -f 1 2 3 4 5 with the converters' patient-level folds")
    p.add_argument("--preset", choices=sorted(PRESETS), default="gpu",
                   help="; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()))
    p.add_argument("-o", "--out", dest="out", type=Path, required=True,
                   help="study folder (models, predictions, records, report)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2.0)")
    add_device_argument(p)
    p.add_argument("-np", type=int, default=2, help="processes for planning and preprocessing")
    p.add_argument("--time-inference", type=int, default=0, metavar="N",
                   help="after the runs: predict the held-out part N times with each ConfKD model and the stock "
                        "nnU-Net model of the same dataset and seed, interleaved (inference_time.json)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the finished records")
    args = p.parse_args(argv)
    args.extra = [tuple(e.split(":", 1)) for e in args.extra]
    if any(len(e) != 2 for e in args.extra):
        p.error("--extra takes DATASET:TRAINER pairs")
    if not args.report_only and not ((args.d and args.tr) or args.extra):
        p.error("give -d and -tr (and/or --extra), or --report-only")
    args.device = resolve_device(args)
    return args


def recorded_command(argv: list[str], out: Path) -> str:
    """The command line as records and report name it: paths relative to the study folder ``out`` or from nnU-Net's
    folder variables (:func:`nnunetv2_confkd.study.provenance.portable_command`)."""
    return portable_command(["confkd_benchmark", *argv], Path(os.path.abspath(out)), os.environ, cwd=Path.cwd(),
                            path_options=PATH_OPTIONS)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = recorded_command(argv, args.out)
    if args.report_only:
        print(write_report(args.out.resolve(), command))
        return
    try:  # every check before any training: paths, datasets, held-out parts, trainer classes, plans
        runner = Runner(args, command)
        names = {d: resolve_dataset(runner.raw, d, not args.cv) for d in [*args.d, *[e[0] for e in args.extra]]}
        runs = plan_runs([names[d] for d in args.d], list(args.tr), [(names[d], t) for d, t in args.extra],
                         args.seeds, runner.preset, tuple(args.f), args.cv)
        for trainer in sorted({r.trainer for r in runs}):
            heads_of(trainer)
        configs = {d: runner.prepare(d) for d in dict.fromkeys(r.dataset for r in runs)}
    except ConfKDInputError as e:
        raise SystemExit(f"confkd_benchmark: {e}") from None
    print(f"{len(runs)} runs, preset {runner.preset.name}, configuration(s) {sorted(set(configs.values()))}")
    failed = []
    for i, run in enumerate(runs, 1):
        try:
            status = runner.execute(run, configs[run.dataset])
        except (RuntimeError, ConfKDInputError, FileNotFoundError, ValueError) as e:
            failed.append(run.key)
            status = f"FAILED: {str(e).splitlines()[0]}"
        print(f"[{i}/{len(runs)}] {run.key}: {status}", flush=True)
    if args.time_inference and not failed:
        time_inference(runner, args.time_inference)
    print(write_report(runner.out, command))
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed (see {runner.log}): {', '.join(failed)}")


if __name__ == "__main__":
    main()
