"""The README's main job: ConfKD end to end through nnU-Net's own console scripts, on the project's synthetic dataset.

1. generate the synthetic mixed-label dataset (4 full, 14 weak, 4 unlabeled training cases, 6 held-out test cases),
2. ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` (2d),
3. ``nnUNetv2_train DATASET 2d 0 -tr <trainer> -device cpu`` for ConfKD and the baselines (``--c`` resumes a run
   that was interrupted; finished runs are reused),
4. ``nnUNetv2_predict`` on the held-out cases (the student head of ConfKD), plus the teacher head from the same
   checkpoint,
5. ``nnUNetv2_evaluate_folder`` against the dense test labels, and a per-class Dice table.

Everything lives under ``--workdir`` (default ``./confkd_work``); the demo never touches the user's own nnU-Net folders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from nnunetv2_confkd.cli import with_ext_trainers
from nnunetv2_confkd.synthetic import LABELS, SyntheticSpec, make_synthetic_dataset

DATASET_ID = 990
CONFIG = "2d"
DEFAULT_TRAINERS = ("nnUNetTrainerConfKD_demo", "nnUNetTrainerStrongOnly_demo", "nnUNetTrainer_confkdDemo")
LABEL_NAMES = {v: k for k, v in LABELS.items() if k not in ("background", "ignore")}


def demo_environment(workdir: Path) -> dict:
    env = dict(os.environ)
    for var, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        env[var] = str(workdir / sub)
    # small machines: few workers (each imports torch), no torch.compile
    env.setdefault("nnUNet_n_proc_DA", "2")
    env.setdefault("nnUNet_def_n_proc", "1")
    env.setdefault("nnUNet_compile", "f")
    return with_ext_trainers(env)


def run(cmd: list[str], env: dict, log: Path) -> None:
    """Run a console script, its output appended to ``log``; a failure shows the log's tail."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(open(log).readlines()[-30:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- last lines of {log} ---\n{tail}")


def train(trainer: str, env: dict, results: Path, dataset: str, log: Path, device: str) -> Path:
    model = results / dataset / f"{trainer}__nnUNetPlans__{CONFIG}"
    fold = model / "fold_0"
    if (fold / "checkpoint_final.pth").is_file():
        print(f"  {trainer}: finished run found, reused")
        return model
    resume = any((fold / c).is_file() for c in ("checkpoint_latest.pth", "checkpoint_best.pth"))
    cmd = ["nnUNetv2_train", str(DATASET_ID), CONFIG, "0", "-tr", trainer, "-device", device] + (["--c"] if resume
                                                                                                  else [])
    t0 = time.time()
    run(cmd, env, log)
    print(f"  {trainer}: trained in {time.time() - t0:.0f} s" + (" (resumed)" if resume else ""))
    return model


def predict_and_evaluate(model: Path, head: str | None, raw: Path, out: Path, env: dict, log: Path,
                         device: str) -> dict:
    """Predict the test images (``head=None``: plain ``nnUNetv2_predict``) and evaluate; returns summary.json."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if head is None:
        trainer = model.name.split("__")[0]
        run(["nnUNetv2_predict", "-i", str(raw / "imagesTs"), "-o", str(tmp), "-d", str(DATASET_ID), "-c", CONFIG,
             "-f", "0", "-tr", trainer, "-device", device, "-npp", "1", "-nps", "1", "--disable_progress_bar"],
            env, log)
    else:
        run(["confkd_predict_head", "-i", str(raw / "imagesTs"), "-o", str(tmp),
             "-m", str(model), "-f", "0", "--head", head, "-device", device], env, log)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ConfKD demo on the synthetic dataset (CPU, a few minutes)")
    parser.add_argument("--workdir", type=Path, default=Path("confkd_work"))
    parser.add_argument("--trainers", nargs="+", default=list(DEFAULT_TRAINERS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = demo_environment(workdir)
    raw, pre, results = (Path(env[v]) for v in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
    log = workdir / "demo.log"
    dataset = f"Dataset{DATASET_ID:03d}_ConfKDSynthetic"
    t0 = time.time()
    if not (raw / dataset).is_dir():
        make_synthetic_dataset(raw, DATASET_ID, SyntheticSpec(), pre)
        print(f"generated {raw / dataset}")
    if not (pre / dataset / f"nnUNetPlans_{CONFIG}").is_dir():
        run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", CONFIG, "-np", "2", "-npfp", "2",
             "--verify_dataset_integrity"], env, log)
        print("planned and preprocessed (nnUNetv2_plan_and_preprocess)")
    rows = []
    for trainer in args.trainers:
        model = train(trainer, env, results, dataset, log, args.device)
        heads = [None, "teacher"] if "ConfKD" in trainer else [None]
        for head in heads:
            label = trainer + (" (student)" if "ConfKD" in trainer and head is None else "")
            label += f" ({head})" if head else ""
            out = workdir / "predictions" / (trainer + (f"_{head}" if head else ""))
            rows.append((label, predict_and_evaluate(model, head, raw / dataset, out, env, log, args.device)))
    print(f"\nDice on {len(list((raw / dataset / 'labelsTs').glob('*.nii.gz')))} held-out synthetic cases "
          f"(nnUNetv2_evaluate_folder), total {time.time() - t0:.0f} s; log: {log}\n")
    print(format_table(rows))


if __name__ == "__main__":
    main()
