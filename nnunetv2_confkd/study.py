"""``confkd_benchmark``: train, predict and evaluate a grid of (dataset, trainer, seed) runs through nnU-Net's own
console scripts, and report it (study_report.py).

Datasets are nnU-Net raw datasets of one source (supervision budgets written by the converters), each with a dense
held-out part in ``imagesTs``/``labelsTs``. For every dataset the runner plans (``nnUNetv2_plan_and_preprocess
--no_pp``) if no plans exist, adds the preset's configuration (presets.py) and preprocesses it if needed. Every run

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
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import SEED_VARIABLE, with_ext_trainers
from nnunetv2_confkd.demo import run as run_logged
from nnunetv2_confkd.evaluation import evaluate_folder, metrics_to_records
from nnunetv2_confkd.presets import PLANS, PRESETS, Preset, ensure_configuration
from nnunetv2_confkd.provenance import machine_metadata, utc_now, write_json_atomic
from nnunetv2_confkd.study_report import load_records, stock_pairs, write_report
from nnunetv2_confkd.supervision import LEVELS, MANIFEST_KEY

HEADS = ("student", "teacher")
# how a record's model came about (its "training" field); train_seconds covers only the training done by the call
# that wrote the record
FROM_SCRATCH = "from scratch"
RESUMED = "resumed from checkpoint_latest.pth"
FOUND_FINISHED = "found finished"


@dataclass(frozen=True)
class Run:
    """One training run: ``trainer`` is the class trained (the preset's variant of ``method``)."""

    dataset: str
    method: str
    trainer: str
    seed: int
    fold: str = "0"
    cv: bool = False

    @property
    def subfolder(self) -> str:
        """Where the run's records live below ``seed_<s>/`` (fold 0 on the test part: directly there)."""
        return f"cv_fold_{self.fold}" if self.cv else "" if self.fold == "0" else f"fold_{self.fold}"

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.dataset, self.trainer, f"seed_{self.seed}", self.subfolder) if p)


def trainer_class(name: str) -> type:
    """The trainer class ``nnUNetv2_train`` would load for ``name`` (nnU-Net's lookup, ``nnUNet_extTrainer`` set)."""
    with_ext_trainers()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        cls = recursive_find_trainer_class_by_name(name)
    except RuntimeError:  # nnU-Net 2.8.1 raises (after printing its search) when the class is nowhere
        cls = None
    if cls is None:
        raise ConfKDInputError(f"trainer {name!r} not found by nnU-Net in its trainer folder or $nnUNet_extTrainer "
                               "(which includes nnunetv2_confkd's trainers); check the name (-tr) and the preset's "
                               "schedule suffix")
    return cls


@functools.cache
def heads_of(trainer: str) -> tuple[str, ...]:
    """The heads a run is evaluated with: the class's inference head first (``nnUNetv2_predict``), then the other
    head of a ConfKD model; a single-decoder trainer has the one head ``"nnunet"``."""
    from nnunetv2_confkd.trainer import nnUNetTrainerConfKD

    cls = trainer_class(trainer)
    if not issubclass(cls, nnUNetTrainerConfKD):
        return ("nnunet",)
    first = cls.inference_head
    return (first, *[h for h in HEADS if h != first])


def resolve_dataset(raw: Path, dataset: str, need_test: bool = True) -> str:
    """``DatasetXXX_Name`` of an id or name in ``raw``; with ``need_test`` its dense held-out part is checked."""
    prefix = f"Dataset{int(dataset):03d}_" if dataset.isdigit() else None
    candidates = sorted(p.name for p in raw.glob("Dataset*")
                        if p.is_dir() and (p.name == dataset or (prefix and p.name.startswith(prefix))))
    if len(candidates) != 1:
        raise ConfKDInputError(f"dataset {dataset!r}: {'no' if not candidates else 'several'} matching folder(s) in "
                               f"{raw} {candidates or ''}; give an id or a full DatasetXXX_Name")
    folder = raw / candidates[0]
    if not need_test:
        return candidates[0]
    images, labels = folder / "imagesTs", folder / "labelsTs"
    if not labels.is_dir() or not any(labels.glob("*")):
        raise ConfKDInputError(f"{folder}: no dense held-out labels in labelsTs/; the benchmark evaluates on them "
                               "(the converters write imagesTs/labelsTs)")
    ending = json.loads((folder / "dataset.json").read_text())["file_ending"]
    missing = [f.name for f in labels.glob(f"*{ending}")
               if not (images / f.name.replace(ending, f"_0000{ending}")).is_file()]
    if missing:
        raise ConfKDInputError(f"{images}: no image for held-out label(s) {missing[:5]}")
    return candidates[0]


def dataset_id(dataset: str) -> str:
    """``"501"`` of ``"Dataset501_Name"`` (nnU-Net's planning and preprocessing scripts take ids only)."""
    return dataset[len("Dataset"):len("Dataset") + 3]


def supervision_counts(dataset_json: dict) -> dict:
    """Counts of full, weak and unlabeled training cases from the manifest (all full without one)."""
    manifest = dataset_json.get(MANIFEST_KEY) or {}
    counts = {level: sum(v == level for v in manifest.values()) for level in LEVELS}
    if not manifest:
        counts["full"] = int(dataset_json.get("numTraining", 0))
    return counts


class Runner:
    def __init__(self, args: argparse.Namespace, command: str):
        self.args = args
        self.preset: Preset = PRESETS[args.preset]
        self.out: Path = args.out.resolve()
        self.env = with_ext_trainers(dict(os.environ))
        for var in ("nnUNet_raw", "nnUNet_preprocessed"):
            if not self.env.get(var):
                raise ConfKDInputError(f"${var} is not set; point it at the nnU-Net folder holding the datasets")
        self.env.setdefault("nnUNet_compile", "f" if args.device == "cpu" else "t")
        self.raw = Path(self.env["nnUNet_raw"])
        self.preprocessed = Path(self.env["nnUNet_preprocessed"])
        self.log = self.out / "benchmark.log"
        self.command = command  # recorded in every record it writes, with the machine and commit
        self.machine = machine_metadata()

    # --- commands ---------------------------------------------------------------------------------------------------
    def run(self, cmd: list[str], env: dict | None = None) -> float:
        """Run a console script with its output appended to the log (:func:`nnunetv2_confkd.demo.run`); return its
        wall time."""
        self.out.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        run_logged(cmd, env or self.env, self.log)
        return time.time() - t0

    # --- datasets ---------------------------------------------------------------------------------------------------
    def prepare(self, dataset: str) -> str:
        """Plan if needed, add the preset configuration, preprocess it if incomplete; return the configuration."""
        folder = self.preprocessed / dataset
        plans = folder / f"{PLANS}.json"
        if not plans.is_file():
            print(f"{dataset}: planning (nnUNetv2_plan_and_preprocess --no_pp)")
            self.run(["nnUNetv2_plan_and_preprocess", "-d", dataset_id(dataset), "--verify_dataset_integrity",
                      "--no_pp", "-np", str(self.args.np), "-npfp", str(self.args.np)])
        config = ensure_configuration(plans, self.args.c, self.preset)
        data_identifier = json.loads(plans.read_text())["configurations"][config].get("data_identifier",
                                                                                        f"{PLANS}_{config}")
        n_cases = int(json.loads((self.raw / dataset / "dataset.json").read_text())["numTraining"])
        done = len(list((folder / data_identifier).glob("*.pkl"))) if (folder / data_identifier).is_dir() else 0
        if done < n_cases:
            print(f"{dataset}: preprocessing {config} ({done}/{n_cases} cases present)")
            self.run(["nnUNetv2_preprocess", "-d", dataset_id(dataset), "-c", config, "-plans_name", PLANS,
                      "-np", str(self.args.np)])
        return config

    # --- runs -------------------------------------------------------------------------------------------------------
    @staticmethod
    def heads(run: Run) -> tuple[str, ...]:
        """The heads a run is evaluated with; cross-validation has nnU-Net's validation, of the inference head only."""
        return heads_of(run.trainer)[:1] if run.cv else heads_of(run.trainer)

    def record_path(self, run: Run, head: str) -> Path:
        return self.out / "runs" / run.key / f"{head}.json"

    def results_root(self, seed: int) -> Path:
        return self.out / "nnUNet_results" / f"seed_{seed}"

    def seed_env(self, seed: int) -> dict:
        env = dict(self.env)
        env["nnUNet_results"] = str(self.results_root(seed))
        env[SEED_VARIABLE] = str(seed)
        return env

    def model_folder(self, run: Run, config: str) -> Path:
        return self.results_root(run.seed) / run.dataset / f"{run.trainer}__{PLANS}__{config}"

    def train(self, run: Run, config: str) -> tuple[float | None, str]:
        """Train unless ``checkpoint_final.pth`` exists; resume an interrupted run. Returns the wall time of this
        call's training (None if none ran) and how the model came about (:data:`FROM_SCRATCH`, :data:`RESUMED` or
        :data:`FOUND_FINISHED`, recorded with it)."""
        fold = self.model_folder(run, config) / f"fold_{run.fold}"
        if (fold / "checkpoint_final.pth").is_file():
            return None, FOUND_FINISHED
        resume = (fold / "checkpoint_latest.pth").is_file()
        print(f"  {run.key}: training" + (" (resuming from checkpoint_latest.pth)" if resume else ""), flush=True)
        cmd = ["confkd_train", dataset_id(run.dataset), config, run.fold,
               "-tr", run.trainer, "-p", PLANS, "-device", self.args.device] + (["--c"] if resume else [])
        return self.run(cmd, self.seed_env(run.seed)), RESUMED if resume else FROM_SCRATCH

    def predict(self, run: Run, config: str, head: str, first: bool, out: Path) -> float:
        images = self.raw / run.dataset / "imagesTs"
        if first:
            cmd = ["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", run.dataset, "-c", config,
                   "-f", run.fold, "-tr", run.trainer, "-p", PLANS, "-device", self.args.device,
                   "-npp", "1", "-nps", "1", "--disable_progress_bar"]
        else:
            cmd = ["confkd_predict_head", "-i", str(images), "-o", str(out), "-m", str(self.model_folder(run, config)),
                   "-f", run.fold, "--head", head, "-device", self.args.device]
        return self.run(cmd, self.seed_env(run.seed))

    def validation_metrics(self, run: Run, config: str, labels: list[int], file_ending: str) -> list:
        """Cross-validation: nnU-Net's own final-validation predictions of the fold (its ``--val`` is run if they
        are missing) against the dense training labels of the fold's validation cases."""
        fold = self.model_folder(run, config) / f"fold_{run.fold}"
        if not (fold / "validation" / "summary.json").is_file():
            self.run(["confkd_train", dataset_id(run.dataset), config, run.fold, "-tr",
                      run.trainer, "-p", PLANS, "-device", self.args.device, "--val"], self.seed_env(run.seed))
        splits = json.loads((self.preprocessed / run.dataset / "splits_final.json").read_text())
        refs = self.out / ".references" / run.key.replace("/", "__")
        shutil.rmtree(refs, ignore_errors=True)
        refs.mkdir(parents=True)
        for case in splits[int(run.fold)]["val"]:
            os.symlink(self.raw / run.dataset / "labelsTr" / f"{case}{file_ending}", refs / f"{case}{file_ending}")
        try:
            return evaluate_folder(refs, fold / "validation", labels, self.args.nsd_tolerance, file_ending)
        finally:
            shutil.rmtree(refs, ignore_errors=True)

    def evaluate(self, run: Run, config: str, train_seconds: float | None, training: str) -> None:
        dataset_json = json.loads((self.raw / run.dataset / "dataset.json").read_text())
        labels = [v for k, v in dataset_json["labels"].items() if k not in ("background", "ignore")]
        label_names = {str(v): k for k, v in dataset_json["labels"].items()}
        for i, head in enumerate(self.heads(run)):
            record = self.record_path(run, head)
            if record.is_file():
                continue
            if run.cv:
                seconds = None
                metrics = self.validation_metrics(run, config, labels, dataset_json["file_ending"])
            else:
                pred = self.out / "predictions" / run.key / head
                tmp = pred.with_name(pred.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                seconds = self.predict(run, config, head, i == 0, tmp)
                metrics = evaluate_folder(self.raw / run.dataset / "labelsTs", tmp, labels, self.args.nsd_tolerance,
                                          dataset_json["file_ending"])
                shutil.rmtree(pred, ignore_errors=True)
                os.replace(tmp, pred)
            write_json_atomic(record, {
                "dataset": run.dataset, "method": run.method, "trainer": run.trainer, "seed": run.seed,
                "head": head, "configuration": config, "fold": run.fold, "preset": self.preset.name,
                "evaluation": "cv" if run.cv else "test", "device": self.args.device,
                "supervision": supervision_counts(dataset_json), "label_names": label_names,
                "nsd_tolerance_mm": self.args.nsd_tolerance, "train_seconds": train_seconds, "training": training,
                "predict_seconds": seconds, "n_test_cases": len({m.case for m in metrics}),
                "provenance": {"date_utc": utc_now(), "command": self.command, **self.machine},
                "metrics": metrics_to_records(metrics)})

    def execute(self, run: Run, config: str) -> str:
        if all(self.record_path(run, h).is_file() for h in self.heads(run)):
            return "skipped (finished)"
        seconds, training = self.train(run, config)
        self.evaluate(run, config, seconds, training)
        return "evaluated (training found finished)" if training == FOUND_FINISHED else "done"


def time_inference(runner: Runner, repeats: int) -> dict | None:
    """Inference cost of the exported model: ``nnUNetv2_predict`` of the held-out part with each finished ConfKD
    model (its default head) and with stock nnU-Net of the same dataset and seed, ``repeats`` times, interleaved
    (order alternating), median wall time of each (process start-up included). Written to
    ``OUT/inference_time.json``; ``None`` without such a pair."""
    pairs = stock_pairs(load_records(runner.out))
    if not pairs:
        return None
    results = []
    for base, confkd in pairs:
        times: dict[str, list[float]] = {base["trainer"]: [], confkd["trainer"]: []}
        for i in range(repeats):
            for rec in (base, confkd) if i % 2 == 0 else (confkd, base):
                out = runner.out / ".timing" / rec["trainer"]
                shutil.rmtree(out, ignore_errors=True)
                run = Run(rec["dataset"], rec["method"], rec["trainer"], rec["seed"], str(rec["fold"]))
                times[rec["trainer"]].append(runner.predict(run, rec["configuration"], "student", True, out))
                shutil.rmtree(out, ignore_errors=True)
        medians = {k: statistics.median(v) for k, v in times.items()}
        results.append({"dataset": base["dataset"], "seed": base["seed"], "stock": base["trainer"],
                        "confkd": confkd["trainer"], "seconds": times, "median_seconds": medians,
                        "ratio": medians[confkd["trainer"]] / medians[base["trainer"]]})
    payload = {"repeats": repeats, "device": runner.args.device, "pairs": results}
    write_json_atomic(runner.out / "inference_time.json", payload)
    return payload


def plan_runs(datasets: list[str], methods: list[str], extra: list[tuple[str, str]], seeds: list[int],
              preset: Preset, folds: tuple[str, ...] = ("0",), cv: bool = False) -> list[Run]:
    """Seed-major order (then fold): every (dataset, method) of seed 0 first, so that a partial study has whole
    comparisons."""
    grid = [(d, m) for d in datasets for m in methods]
    pairs = grid + [p for p in extra if p not in grid]
    return [Run(d, m, preset.trainer(m), s, f, cv) for s in seeds for f in folds for d, m in pairs]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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
    p.add_argument("--out", type=Path, required=True, help="study folder (models, predictions, records, report)")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="NSD tolerance in mm (default 2.0)")
    p.add_argument("-device", default="cuda", choices=("cuda", "cpu"))
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
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = shlex.join(["confkd_benchmark", *argv])
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
