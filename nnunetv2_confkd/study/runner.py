"""The runner of ``confkd_benchmark``: prepares each dataset, trains, predicts and evaluates every run through
nnU-Net's console scripts and writes one record per (run, head); and the interleaved inference timing.

Each record (``OUT/runs/<dataset>/<trainer>/seed_<s>[/<fold>]/<head>.json``, :attr:`~.runs.Run.subfolder`) holds
the run's settings (its fold and the format of the split the fold number refers to, folds.py), its training and
prediction times, the per-volume metrics, and its provenance: date, the command (paths written by
:func:`nnunetv2_confkd.study.provenance.portable_command`), commit, CPU and package versions.

Jobs of one study may run side by side (a SLURM array, several machines on a shared folder): a run trains and is
evaluated under the lock of its model, a dataset is prepared under the dataset's lock (locks.py), and everything a
run writes (records, predictions, references, logs) has a name of its own or is written through a temporary name of
its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.cli import SEED_VARIABLE, with_ext_trainers
from nnunetv2_confkd.study.demo import run as run_logged
from nnunetv2_confkd.study.evaluation import evaluate_folder, metrics_to_records
from nnunetv2_confkd.study.folds import V1, read_splits, record_split
from nnunetv2_confkd.study.locks import LockHeld, StudyLock, describe, lock_path
from nnunetv2_confkd.study.presets import PLANS, PRESETS, Preset, ensure_configuration
from nnunetv2_confkd.study.provenance import machine_metadata, utc_now, write_json_atomic
from nnunetv2_confkd.study.records import load_records, stock_pairs
from nnunetv2_confkd.study.runs import (
    Run,
    check_model_composition,
    composition_of,
    dataset_id,
    heads_of,
    supervision_counts,
    write_model_composition,
)
from nnunetv2_confkd.training.heads import model_inference_head

# how a record's model came about (its "training" field); train_seconds covers only the training done by the call
# that wrote the record
FROM_SCRATCH = "from scratch"
RESUMED = "resumed from checkpoint_latest.pth"
FOUND_FINISHED = "found finished"


class Runner:
    """Runs a study's grid into the study folder ``args.out``: models in ``OUT/nnUNet_results/seed_<s>`` (folds of a
    split of another format than ``v1`` in ``OUT/nnUNet_results/split_<format>/seed_<s>``, so that a fold number never
    finds a model of another split), predictions in ``OUT/predictions``, records in ``OUT/runs``, the output of every
    console script in ``OUT/benchmark.log`` (or the log a job sets); ``command`` is what each record names as the
    command that made it."""

    def __init__(self, args: argparse.Namespace, command: str):
        self.args = args
        self.preset: Preset = PRESETS[args.preset]
        self.out: Path = args.out.resolve()
        self.env = with_ext_trainers(dict(os.environ))
        for var in ("nnUNet_raw", "nnUNet_preprocessed"):
            if not self.env.get(var):
                raise ConfKDInputError(f"${var} is not set; point it at the nnU-Net folder holding the datasets")
        self.env.setdefault("nnUNet_compile", "t" if args.device == "cuda" else "f")
        self.raw = Path(self.env["nnUNet_raw"])
        self.preprocessed = Path(self.env["nnUNet_preprocessed"])
        self.log = self.out / "benchmark.log"
        self.command = command  # recorded in every record it writes, with the machine and commit
        self.machine = machine_metadata()
        self.break_lock = bool(getattr(args, "break_lock", False))

    # --- commands ---------------------------------------------------------------------------------------------------
    def run(self, cmd: list[str], env: dict | None = None) -> float:
        """Run a console script with its output appended to the log (:func:`nnunetv2_confkd.study.demo.run`); return its
        wall time."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        run_logged(cmd, env or self.env, self.log)
        return time.time() - t0

    # --- datasets ---------------------------------------------------------------------------------------------------
    def lock(self, name: str, what: str) -> StudyLock:
        return StudyLock(lock_path(self.out, name), what, self.break_lock)

    def prepare(self, dataset: str) -> str:
        """Under the dataset's lock (other jobs of the study wait): plan if needed, add the preset configuration,
        preprocess it if incomplete, and copy the converters' ``splits_final.json`` from the raw dataset if
        ``nnUNet_preprocessed`` has none (else nnU-Net would draw its own folds); return the configuration."""
        def waiting(holder: dict | None) -> None:
            print(f"{dataset}: waiting for the job preparing it ({describe(holder)})", flush=True)

        with self.lock(f"prepare/{dataset}", f"preparing {dataset}").acquire(float("inf"), on_wait=waiting):
            return self._prepare(dataset)

    def _prepare(self, dataset: str) -> str:
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
        raw_splits = self.raw / dataset / "splits_final.json"
        if raw_splits.is_file() and not (folder / "splits_final.json").is_file():
            print(f"{dataset}: copying the raw dataset's splits_final.json to nnUNet_preprocessed")
            tmp = folder / f".splits_final.json.{os.getpid()}.tmp"
            shutil.copyfile(raw_splits, tmp)
            os.replace(tmp, folder / "splits_final.json")
        return config

    # --- runs -------------------------------------------------------------------------------------------------------
    @staticmethod
    def heads(run: Run) -> tuple[str, ...]:
        """The heads a run is evaluated with (cross-validation too, so that the head can be chosen on the folds like
        any other setting), the class's inference head first."""
        return heads_of(run.trainer)

    def model_heads(self, run: Run, config: str) -> tuple[str, ...]:
        """:meth:`heads` with the trained model's inference head first: the one its plans name, where its trainer
        chose it from its data (``nnUNetv2_predict`` and nnU-Net's validation run that one)."""
        heads = self.heads(run)
        first = model_inference_head(self.model_folder(run, config)) or heads[0]
        return (first, *[h for h in heads if h != first])

    def record_path(self, run: Run, head: str) -> Path:
        return self.out / "runs" / run.key / f"{head}.json"

    def results_root(self, seed: int, split: str | None = None) -> Path:
        """``nnUNet_results`` of a seed; folds of a split format other than ``v1`` have their own (class docstring)."""
        root = self.out / "nnUNet_results"
        return root / f"seed_{seed}" if split in (None, V1) else root / f"split_{split}" / f"seed_{seed}"

    def seed_env(self, run: Run) -> dict:
        env = dict(self.env)
        env["nnUNet_results"] = str(self.results_root(run.seed, run.fold_split))
        env[SEED_VARIABLE] = str(run.seed)
        return env

    def model_folder(self, run: Run, config: str) -> Path:
        return self.results_root(run.seed, run.fold_split) / run.dataset / f"{run.trainer}__{PLANS}__{config}"

    def train_command(self, run: Run, config: str, resume: bool = False, validate_only: bool = False) -> list[str]:
        """``confkd_train DATASET CONFIG FOLD -tr TRAINER -p PLANS -device D`` with ``-num_gpus N`` (N > 1: nnU-Net's
        DDP inside the job), ``--c`` to resume, ``--val`` to run only the final validation."""
        gpus = int(getattr(self.args, "num_gpus", 1) or 1)
        return (["confkd_train", dataset_id(run.dataset), config, run.fold, "-tr", run.trainer, "-p", PLANS,
                 "-device", self.args.device] + (["-num_gpus", str(gpus)] if gpus > 1 and not validate_only else [])
                + (["--c"] if resume else []) + (["--val"] if validate_only else []))

    def train(self, run: Run, config: str) -> tuple[float | None, str]:
        """Train unless ``checkpoint_final.pth`` exists; resume an interrupted run. Returns the wall time of this
        call's training (None if none ran) and how the model came about (:data:`FROM_SCRATCH`, :data:`RESUMED` or
        :data:`FOUND_FINISHED`, recorded with it)."""
        fold = self.model_folder(run, config) / f"fold_{run.fold}"
        check_model_composition(fold, run.trainer)
        if (fold / "checkpoint_final.pth").is_file():
            return None, FOUND_FINISHED
        resume = (fold / "checkpoint_latest.pth").is_file()
        write_model_composition(fold, run.trainer)
        print(f"  {run.key}: training" + (" (resuming from checkpoint_latest.pth)" if resume else ""), flush=True)
        seconds = self.run(self.train_command(run, config, resume), self.seed_env(run))
        return seconds, RESUMED if resume else FROM_SCRATCH

    def predict(self, run: Run, config: str, head: str, first: bool, out: Path) -> float:
        images = self.raw / run.dataset / "imagesTs"
        if first:
            cmd = ["nnUNetv2_predict", "-i", str(images), "-o", str(out), "-d", run.dataset, "-c", config,
                   "-f", run.fold, "-tr", run.trainer, "-p", PLANS, "-device", self.args.device,
                   "-npp", "1", "-nps", "1", "--disable_progress_bar"]
        else:
            cmd = ["confkd_predict_head", "-i", str(images), "-o", str(out), "-m", str(self.model_folder(run, config)),
                   "-f", run.fold, "--head", head, "-device", self.args.device]
        return self.run(cmd, self.seed_env(run))

    def validation_metrics(self, run: Run, config: str, dataset_json: dict, labels: list[int], head: str,
                           inference_head: bool) -> list:
        """Cross-validation: the fold's validation cases against their dense training labels. The inference head's
        predictions are nnU-Net's own final validation (its ``--val`` is run if they are missing); another head
        predicts the same cases from their raw images with ``confkd_predict_head``."""
        model = self.model_folder(run, config)
        fold, ending = model / f"fold_{run.fold}", dataset_json["file_ending"]
        if inference_head and not (fold / "validation" / "summary.json").is_file():
            self.run(self.train_command(run, config, validate_only=True), self.seed_env(run))
        splits, _ = read_splits(self.preprocessed, self.raw, run.dataset)
        work = self.out / ".cv" / f"{run.key.replace('/', '__')}__{head}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "references").mkdir(parents=True)
        (work / "images").mkdir()
        raw = self.raw / run.dataset
        cases = splits[int(run.fold)]["val"]
        for case in cases:
            os.symlink(raw / "labelsTr" / f"{case}{ending}", work / "references" / f"{case}{ending}")
        if not inference_head:  # only the other head is predicted here, from the raw images
            for name in (f"{c}_{int(ch):04d}{ending}" for c in cases for ch in dataset_json["channel_names"]):
                os.symlink(raw / "imagesTr" / name, work / "images" / name)
        try:
            predictions = fold / "validation"
            if not inference_head:
                predictions = work / "predictions"
                self.run(["confkd_predict_head", "-i", str(work / "images"), "-o", str(predictions), "-m", str(model),
                          "-f", run.fold, "--head", head, "-device", self.args.device], self.seed_env(run))
            return evaluate_folder(work / "references", predictions, labels, self.args.nsd_tolerance, ending)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def evaluate(self, run: Run, config: str, train_seconds: float | None, training: str) -> None:
        dataset_json = json.loads((self.raw / run.dataset / "dataset.json").read_text())
        labels = [v for k, v in dataset_json["labels"].items() if k not in ("background", "ignore")]
        label_names = {str(v): k for k, v in dataset_json["labels"].items()}
        heads = self.model_heads(run, config)
        for i, head in enumerate(heads):
            record = self.record_path(run, head)
            if record.is_file():
                continue
            if run.cv:
                seconds = None
                metrics = self.validation_metrics(run, config, dataset_json, labels, head, i == 0)
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
                **composition_of(run.trainer), "head": head, "inference_head": heads[0], "configuration": config,
                "fold": run.fold,
                "split": run.fold_split, "preset": self.preset.name,
                "evaluation": "cv" if run.cv else "test", "device": self.args.device,
                "supervision": supervision_counts(dataset_json), "label_names": label_names,
                "nsd_tolerance_mm": self.args.nsd_tolerance, "train_seconds": train_seconds, "training": training,
                "predict_seconds": seconds, "n_test_cases": len({m.case for m in metrics}),
                "provenance": {"date_utc": utc_now(), "command": self.command, **self.machine},
                "metrics": metrics_to_records(metrics)})

    def finished(self, run: Run) -> bool:
        return all(self.record_path(run, h).is_file() for h in self.heads(run))

    def execute(self, run: Run, config: str) -> str:
        """Train and evaluate ``run`` under the locks of its records and of its model (a test run and a
        cross-validation run of one fold train the same model); raises :class:`~.locks.LockHeld`, touching nothing,
        when another job holds either."""
        if self.finished(run):
            return "skipped (finished)"
        with self.lock(f"run/{run.key}", f"run {run.key}"), self.lock(f"model/{run.model_key}", f"run {run.key}"):
            if self.finished(run):
                return "skipped (finished by another job)"
            seconds, training = self.train(run, config)
            self.evaluate(run, config, seconds, training)
        return "evaluated (training found finished)" if training == FOUND_FINISHED else "done"


def time_inference(runner: Runner, repeats: int) -> dict | None:
    """Inference cost of the exported model: ``nnUNetv2_predict`` of the held-out part with each finished ConfKD
    model (its default head) and with stock nnU-Net of the same dataset and seed, ``repeats`` times, interleaved
    (order alternating), median wall time of each (process start-up included). Written to
    ``OUT/inference_time.json``; ``None`` without such a pair, or when another job holds the timing lock."""
    pairs = stock_pairs(load_records(runner.out))
    if not pairs:
        return None
    try:
        with runner.lock("inference_time", "--time-inference"):
            return _time_pairs(runner, pairs, repeats)
    except LockHeld as e:
        print(f"--time-inference skipped: {e}")
        return None


def _time_pairs(runner: Runner, pairs: list[tuple[dict, dict]], repeats: int) -> dict:
    results = []
    for base, confkd in pairs:
        times: dict[str, list[float]] = {base["trainer"]: [], confkd["trainer"]: []}
        for i in range(repeats):
            for rec in (base, confkd) if i % 2 == 0 else (confkd, base):
                out = runner.out / ".timing" / rec["trainer"]
                shutil.rmtree(out, ignore_errors=True)
                run = Run(rec["dataset"], rec["method"], rec["trainer"], rec["seed"], str(rec["fold"]),
                          split=record_split(rec))
                times[rec["trainer"]].append(runner.predict(run, rec["configuration"], "student", True, out))
                shutil.rmtree(out, ignore_errors=True)
        medians = {k: statistics.median(v) for k, v in times.items()}
        results.append({"dataset": base["dataset"], "seed": base["seed"], "stock": base["trainer"],
                        "confkd": confkd["trainer"], "seconds": times, "median_seconds": medians,
                        "ratio": medians[confkd["trainer"]] / medians[base["trainer"]]})
    payload = {"repeats": repeats, "device": runner.args.device, "pairs": results}
    write_json_atomic(runner.out / "inference_time.json", payload)
    return payload
