"""The README's main job: ConfKD end to end through nnU-Net's own console scripts, on the project's synthetic dataset.

1. generate the demo's synthetic mixed-label dataset (:data:`~nnunetv2_confkd_conversion.synthetic.DEMO_SPEC`: 4 full,
   14 weak, 4 unlabeled training cases, 8 held-out test cases). The full cases come from one protocol with typical
   anatomy; the weak, unlabeled and held-out cases also show a second contrast and a wider range of sizes and
   positions, which only the weak labels annotate,
2. ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` (2d),
3. ``nnUNetv2_train DATASET 2d all -tr <trainer> -device DEVICE`` (every training case) for ConfKD and the baselines
   (``--c`` resumes a run that was interrupted; finished runs are reused), printing one line per epoch from nnU-Net's
   training log (losses, ConfKD's loss terms, estimated time left),
4. ``nnUNetv2_predict`` on the held-out cases (the student head of ConfKD), plus the teacher head from the same
   checkpoint,
5. ``nnUNetv2_evaluate_folder`` against the dense test labels, a per-class Dice table, and ``predictions.png``: every
   held-out case (middle slice) beside its reference and each method's prediction.

Everything lives under ``-o`` (default ``./confkd_work``); the demo never touches the user's own nnU-Net folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from nnunetv2_confkd_conversion.synthetic import DEMO_SPEC, LABELS, description, make_synthetic_dataset

from nnunetv2_confkd.cli import add_device_argument, resolve_device, with_ext_trainers
from nnunetv2_confkd.study.demo_report import EpochMonitor, write_prediction_figure

DATASET_ID = 990
CONFIG = "2d"
FOLD = "all"  # nnU-Net's fold all: every training case (the converters' folds 0..K-1 cross-validate)
DEFAULT_TRAINERS = ("nnUNetTrainerConfKD_demo", "nnUNetTrainerStrongOnly_demo", "nnUNetTrainer_confkdDemo")
LABEL_NAMES = {v: k for k, v in LABELS.items() if k not in ("background", "ignore")}
FIGURE_NAME = "predictions.png"


def method_name(trainer: str, head: str | None = None) -> str:
    """Short name of a trainer's method (and ConfKD head) for the figure and the table's note.

    Example:
        >>> method_name("nnUNetTrainerConfKD_demo", "teacher"), method_name("nnUNetTrainer_confkdDemo")
        ('ConfKD teacher', 'nnU-Net + ignore')
    """
    if "ConfKD" in trainer:
        return f"ConfKD {head or 'student'}"
    if "StrongOnly" in trainer:
        return "strong-only"
    if trainer.startswith("nnUNetTrainer_confkd") or trainer == "nnUNetTrainer":
        return "nnU-Net + ignore"
    return trainer


METHOD_NOTES = {"ConfKD": "student and teacher decoders of one checkpoint (student: weak labels of all cases, "
                          "distillation and entropy; teacher: full cases)",
                "strong-only": "stock nnU-Net objective on the full cases only",
                "nnU-Net + ignore": "stock nnU-Net on all cases with unannotated voxels ignored"}


def demo_environment(workdir: Path) -> dict:
    env = dict(os.environ)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        env[var] = str(workdir / sub)
    # small machines: few workers (each imports torch), no torch.compile
    env.setdefault("nnUNet_n_proc_DA", "2")
    env.setdefault("nnUNet_def_n_proc", "1")
    env.setdefault("nnUNet_compile", "f")
    return with_ext_trainers(env)


def run(cmd: list[str], env: dict, log: Path, monitor: Callable[[], None] | None = None, poll: float = 2.0) -> None:
    """Run a console script, its output appended to ``log``; ``monitor`` is called every ``poll`` seconds while it runs
    and once after it ended. A failure shows the log's tail."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        try:
            while True:
                try:
                    proc.wait(timeout=poll if monitor else None)
                    break
                except subprocess.TimeoutExpired:
                    monitor()
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
    if monitor is not None:
        monitor()
    if proc.returncode != 0:
        tail = "".join(open(log).readlines()[-30:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- last lines of {log} ---\n{tail}")


def train(trainer: str, env: dict, results: Path, dataset: str, log: Path, device: str) -> Path:
    model = results / dataset / f"{trainer}__nnUNetPlans__{CONFIG}"
    fold = model / f"fold_{FOLD}"
    if (fold / "checkpoint_final.pth").is_file():
        print(f"  {trainer}: finished run found, reused")
        return model
    resume = any((fold / c).is_file() for c in ("checkpoint_latest.pth", "checkpoint_best.pth"))
    cmd = ["nnUNetv2_train", str(DATASET_ID), CONFIG, FOLD, "-tr", trainer, "-device", device] + (["--c"] if resume
                                                                                                  else [])
    print(f"  {trainer}: training on {device}" + (" (resumed)" if resume else ""), flush=True)
    t0 = time.time()
    run(cmd, env, log, EpochMonitor(trainer, fold, since=t0))
    print(f"  {trainer}: trained in {time.time() - t0:.0f} s (final validation included)", flush=True)
    return model


def predict_and_evaluate(model: Path, head: str | None, raw: Path, out: Path, env: dict, log: Path,
                         device: str) -> dict:
    """Predict the test images (``head=None``: plain ``nnUNetv2_predict``) and evaluate; returns summary.json."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if head is None:
        trainer = model.name.split("__")[0]
        run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(tmp), "-d", str(DATASET_ID), "-c", CONFIG,
             "-f", FOLD, "-tr", trainer, "-device", device, "-npp", "1", "-nps", "1", "--disable_progress_bar"],
            env, log)
    else:
        run(["confkd_predict_head", "-i", str(raw / "imagesTs"), "-o", str(tmp),
             "-m", str(model), "-f", FOLD, "--head", head, "-device", device], env, log)
    run(["nnUNetv2_evaluate_folder", str(raw / "labelsTs"), str(tmp), "-djfile", str(model / "dataset.json"),
         "-pfile", str(model / "plans.json"), "-np", "1"], env, log)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return json.loads((out / "summary.json").read_text())


def format_table(rows: list[tuple[str, dict]]) -> str:
    names = [LABEL_NAMES[i] for i in sorted(LABEL_NAMES)]
    lines = ["| method | " + " | ".join(names) + " | mean |", "|---" * (len(names) + 2) + "|"]
    for method, summary in rows:
        dice = [summary["mean"][str(i)]["Dice"] for i in sorted(LABEL_NAMES)]
        lines.append(f"| {method} | " + " | ".join(f"{d:.3f}" for d in dice)
                     + f" | {summary['foreground_mean']['Dice']:.3f} |")
    return "\n".join(lines)


def table_note(trainers: list[str]) -> str:
    """One line naming the method behind each trainer of the table."""
    parts = []
    for trainer in trainers:
        name = method_name(trainer).split()[0] if "ConfKD" in trainer else method_name(trainer)
        parts.append(f"{trainer} = {name}" + (f", {METHOD_NOTES[name]}" if name in METHOD_NOTES else ""))
    return "Rows: " + " | ".join(parts) + "."


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def figure_cases(raw: Path, predictions: dict[str, Path]) -> tuple[list[tuple[str, np.ndarray, np.ndarray]],
                                                                     dict[str, list[np.ndarray]]]:
    """The middle slice (most reference foreground) of every held-out case: image, reference and each prediction."""
    cases, columns = [], {name: [] for name in predictions}
    for label_file in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        reference = _read(label_file)
        z = int(np.argmax((reference > 0).sum(axis=(1, 2))))
        cases.append((case, _read(raw / "imagesTs" / f"{case}_0000.nii.gz")[z], reference[z]))
        for name, folder in predictions.items():
            columns[name].append(_read(folder / label_file.name)[z])
    return cases, columns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ConfKD demo on the synthetic dataset (CPU, a few minutes)")
    parser.add_argument("-o", "--out", "--workdir", dest="out", type=Path, default=Path("confkd_work"),
                        help="output folder: nnU-Net folders, predictions, log and figure (default: ./confkd_work)")
    parser.add_argument("-tr", "--trainers", dest="trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    add_device_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args)
    workdir = args.out.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = demo_environment(workdir)
    raw, pre, results = (Path(env[v]) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
    log = workdir / "demo.log"
    dataset = f"Dataset{DATASET_ID:03d}_ConfKDSynthetic"
    t0 = time.time()
    if not (raw / dataset).is_dir():
        make_synthetic_dataset(raw, DATASET_ID, DEMO_SPEC, pre)
        print(f"generated {raw / dataset}")
    elif json.loads((raw / dataset / "dataset.json").read_text()).get("description") != description(DEMO_SPEC):
        raise SystemExit(f"{raw / dataset} holds another synthetic dataset (an earlier version of the demo's); "
                         "choose another -o or remove that folder")
    print(f"data: {DEMO_SPEC.n_full} full cases (one protocol, typical anatomy), {DEMO_SPEC.n_weak} weak (erosion "
          f"seeds), {DEMO_SPEC.n_unlabeled} unlabeled, {DEMO_SPEC.n_test} held-out; weak, unlabeled and held-out cases "
          "also show a second contrast and wider sizes and positions", flush=True)
    if not (pre / dataset / f"nnUNetPlans_{CONFIG}").is_dir():
        run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIG, "-np", "2", "-npfp", "2",
             "--verify_dataset_integrity"], env, log)
        print("planned and preprocessed (nnUNetv2_plan_and_preprocess)", flush=True)
    rows, predictions = [], {}
    for trainer in args.trainers:
        model = train(trainer, env, results, dataset, log, device)
        heads = [None, "teacher"] if "ConfKD" in trainer else [None]
        for head in heads:
            label = trainer + (" (student)" if "ConfKD" in trainer and head is None else "")
            label += f" ({head})" if head else ""
            out = workdir / "predictions" / (trainer + (f"_{head}" if head else ""))
            rows.append((label, predict_and_evaluate(model, head, raw / dataset, out, env, log, device)))
            predictions[method_name(trainer, head)] = out
    figure = write_prediction_figure(workdir / FIGURE_NAME, *figure_cases(raw / dataset, predictions),
                                     [n for i, n in sorted(LABEL_NAMES.items())])
    print(f"\nDice on {len(list((raw / dataset / 'labelsTs').glob('*.nii.gz')))} held-out synthetic cases "
          f"(nnUNetv2_evaluate_folder), total {time.time() - t0:.0f} s; log: {log}\n")
    print(format_table(rows))
    print(table_note(args.trainers))
    print(f"\nheld-out predictions (image, reference, each method): {figure}")


if __name__ == "__main__":
    main()
