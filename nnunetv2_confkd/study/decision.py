"""``confkd_decide``: the study's pre-registered decision rule applied to cross-validation records.

An arm is a method as the report names it, optionally with a head (``nnUNetTrainerConfKD:teacher``; without one, the
class's inference head) and with the datasets that hold its records (``nnUNetTrainerIgnorePadding@537,547``: a
two-stage recipe whose second stage has one dataset per fold; without them, the decision's dataset).

The rule (the same for every decision of the study): each arm is scored per validation volume by the mean Dice over
its classes; per fold by the mean over that fold's volumes; pooled by the mean over the volumes of all folds. A
challenger *replaces* the default only if it is ahead in every fold and in the pooled mean by at least ``margin``
Dice points; the default is *confirmed* against a challenger if it is ahead in every fold and in the pooled mean by
at least ``margin``; otherwise the two are *not distinguished* and the default stays. Of several challengers that
replace the default, the one with the highest pooled mean is chosen.

Only records with ``"evaluation": "cv"`` are read (the held-out patients never enter a decision). Every arm must have
the same folds of one split format, with the same validation volumes, for the same seed; otherwise the command stops
and names what is missing.

    confkd_decide -o STUDY_FOLDER -d 505 --default nnUNetTrainerConfKD \\
        --challengers nnUNetTrainerConfKD_kdAll nnUNetTrainerConfKD_weak01 -f 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.dataset_lookup import dataset_folder, names
from nnunetv2_confkd.study.folds import record_split
from nnunetv2_confkd.study.records import load_records, method_key, run_summary

DEFAULT_MARGIN = 0.01


@dataclass(frozen=True)
class ArmScores:
    """One arm's scores: per fold the mean over its validation volumes, and the pooled mean over all of them."""

    arm: str
    folds: dict[str, float]
    pooled: float
    volumes: int
    split: str = ""
    cases: dict[str, list[str]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Comparison:
    """A challenger against the default: per-fold and pooled differences (challenger minus default) and the verdict,
    one of ``"replaces"``, ``"confirmed"`` (the default) and ``"not distinguished"``."""

    challenger: str
    fold_differences: dict[str, float]
    pooled_difference: float
    verdict: str


def split_arm(arm: str) -> tuple[str, str | None, list[str] | None]:
    """``"METHOD[:HEAD][@DATASET,...]"`` -> ``(METHOD, HEAD, DATASETS)``; without a head, None (the inference head of
    the record's class); without datasets, None (the decision's dataset).

    Example:
        >>> split_arm("nnUNetTrainerConfKD:teacher"), split_arm("nnUNetTrainerIgnorePadding@537,547")
        (('nnUNetTrainerConfKD', 'teacher', None), ('nnUNetTrainerIgnorePadding', None, ['537', '547']))
    """
    arm, _, datasets = arm.partition("@")
    method, _, head = arm.partition(":")
    return method, head or None, datasets.split(",") if datasets else None


def _is_head(record: dict, head: str | None) -> bool:
    """Whether ``record`` is of ``head``, or of its model's inference head when ``head`` is None (as recorded; records
    that do not name it: their class's, ``"nnunet"`` for single-decoder trainers)."""
    from nnunetv2_confkd.training.registry import TRAINERS

    inference = record.get("inference_head") or getattr(TRAINERS.get(record["method"]), "inference_head", "nnunet")
    return record["head"] == (head or inference)


def arm_scores(records: list[dict], dataset: str, arm: str, folds: list[str], seed: int,
               split: str | None = None) -> ArmScores:
    """Score one arm, ``"METHOD[:HEAD][@DATASET,...]"``, from its cross-validation records of the split format
    ``split`` (None: the only one there is), see the module docstring. An arm with datasets takes each fold's record
    from whichever of them holds it (a two-stage recipe whose second stage has one dataset per fold)."""
    method, head, datasets = split_arm(arm)
    datasets = datasets or [dataset]
    by_fold, splits = {}, set()
    for r in records:
        if (r["evaluation"], method_key(r), r["seed"]) == ("cv", method, seed) \
                and any(names(r["dataset"], d) for d in datasets) \
                and str(r["fold"]) in folds and _is_head(r, head) and split in (None, record_split(r)):
            if str(r["fold"]) in by_fold:
                other = by_fold[str(r["fold"])]
                raise ConfKDInputError(f"{arm} seed {seed}: fold {r['fold']} has two records ({other['dataset']}, "
                                       f"split {record_split(other)}; {r['dataset']}, split {record_split(r)}); "
                                       "choose the split with --split, or give the arm one dataset per fold")
            by_fold[str(r["fold"])] = r
            splits.add(record_split(r))
    missing = [f for f in folds if f not in by_fold]
    if missing:
        known = sorted({method_key(r) for r in records if r["evaluation"] == "cv"
                        and any(names(r["dataset"], d) for d in datasets)})
        raise ConfKDInputError(f"{','.join(datasets)} {arm} seed {seed}: no cross-validation record of fold(s) "
                               f"{' '.join(missing)}; run confkd_benchmark -d {datasets[0]} -tr {method} --seeds "
                               f"{seed} -f {' '.join(missing)} --cv first (arms with cross-validation records there: "
                               f"{', '.join(known) or 'none'})")
    if len(splits) > 1:
        raise ConfKDInputError(f"{dataset} {arm}: folds of several split formats ({sorted(splits)}); choose one "
                               "with --split")
    per_fold = {f: run_summary(by_fold[f])["volume_dice"] for f in folds}
    pooled = [v for f in folds for v in per_fold[f]]
    return ArmScores(arm, {f: statistics.fmean(per_fold[f]) for f in folds}, statistics.fmean(pooled), len(pooled),
                     splits.pop(), {f: sorted({m["case"] for m in by_fold[f]["metrics"]}) for f in folds})


def verdict(default: ArmScores, challenger: ArmScores, margin: float = DEFAULT_MARGIN) -> Comparison:
    """The rule for one challenger against the default (see the module docstring)."""
    diffs = {f: challenger.folds[f] - default.folds[f] for f in default.folds}
    pooled = challenger.pooled - default.pooled
    if all(d > 0 for d in diffs.values()) and pooled >= margin:
        outcome = "replaces"
    elif all(d < 0 for d in diffs.values()) and -pooled >= margin:
        outcome = "confirmed"
    else:
        outcome = "not distinguished"
    return Comparison(challenger.arm, diffs, pooled, outcome)


def decide(records: list[dict], dataset: str, default: str, challengers: list[str], folds: list[str], seed: int = 0,
           margin: float = DEFAULT_MARGIN, split: str | None = None) -> dict:
    """Apply the rule to every challenger; returns the arms' scores, the comparisons and the chosen arm."""
    arms = [arm_scores(records, dataset, m, folds, seed, split) for m in [default, *challengers]]
    for arm in arms[1:]:
        if arm.cases != arms[0].cases or arm.split != arms[0].split:
            raise ConfKDInputError(f"{dataset}: {arm.arm} was validated on other volumes or another split format "
                                   f"than {default}; compare arms of the same folds of the same split")
    comparisons = [verdict(arms[0], arm, margin) for arm in arms[1:]]
    winners = [a for a, c in zip(arms[1:], comparisons, strict=True) if c.verdict == "replaces"]
    chosen = max(winners, key=lambda a: a.pooled).arm if winners else default
    return {"dataset": dataset, "seed": seed, "folds": folds, "split": arms[0].split, "margin": margin,
            "arms": [{k: v for k, v in asdict(a).items() if k != "cases"} for a in arms],
            "comparisons": [asdict(c) for c in comparisons], "chosen": chosen, "chosen_switches": _switches(chosen)}


def _switches(arm: str) -> dict | None:
    """The switches ``nnUNetTrainerConfKDAuto`` would set for ``arm`` (a variant of ``nnUNetTrainerConfKD`` on the
    decision's dataset), with ``inference_head`` where the arm names a head; None for anything else (stock trainers,
    runs of an earlier composition, two-stage recipes)."""
    from nnunetv2_confkd.training.auto_settings import switches_of
    from nnunetv2_confkd.training.registry import TRAINERS
    from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD

    method, head, datasets = split_arm(arm)
    cls = TRAINERS.get(method)
    if datasets or cls is None or not issubclass(cls, nnUNetTrainerConfKD):
        return None
    return {**switches_of(cls), **({"inference_head": head} if head and head != cls.inference_head else {})}


def format_decision(result: dict) -> str:
    lines = [f"{result['dataset']}, seed {result['seed']}, folds {' '.join(result['folds'])} "
             f"(split {result['split']}), margin {100 * result['margin']:.1f} Dice points",
             "arm | " + " | ".join(f"fold {f}" for f in result["folds"]) + " | pooled | volumes"]
    for a in result["arms"]:
        lines.append(f"{a['arm']} | " + " | ".join(f"{a['folds'][f]:.3f}" for f in result["folds"])
                     + f" | {a['pooled']:.3f} | {a['volumes']}")
    for c in result["comparisons"]:
        diffs = ", ".join(f"fold {f} {100 * d:+.1f}" for f, d in c["fold_differences"].items())
        lines.append(f"{c['challenger']}: {diffs}, pooled {100 * c['pooled_difference']:+.1f} -> {c['verdict']}")
    lines.append(f"chosen: {result['chosen']}")
    if result["chosen_switches"] is not None:
        lines.append(f"its switches (against nnUNetTrainerConfKD): {result['chosen_switches'] or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Apply the study's pre-registered rule to cross-validation records: "
                                "does a challenger replace the default?")
    p.add_argument("-o", required=True, type=Path, help="study folder (the -o of confkd_benchmark)")
    p.add_argument("-d", required=True, help="dataset id or name")
    p.add_argument("--default", required=True,
                   help="the default arm as the report names methods: the trainer class without schedule suffix, "
                        "plus ' [<composition>]' for runs of a batch composition the class no longer has, and "
                        "optionally ':student' or ':teacher' (else the class's inference head)")
    p.add_argument("--challengers", nargs="+", required=True)
    p.add_argument("-f", nargs="+", required=True, help="the cross-validation folds that decide")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", help="split format of the folds (v1, v2); needed only where a fold has records of both")
    p.add_argument("--margin", type=float, default=100 * DEFAULT_MARGIN, help="pooled margin in Dice points")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    try:
        dataset = dataset_folder(a.o / "runs", a.d, f"the study's records ({a.o / 'runs'})",
                                 "Give the dataset of the cross-validation records.").name
        result = decide(load_records(a.o), dataset, a.default, a.challengers, [str(f) for f in a.f], a.seed,
                        a.margin / 100, a.split)
    except ConfKDInputError as e:
        raise SystemExit(f"confkd_decide: {e}") from None
    print(json.dumps(result, indent=2) if a.json else format_decision(result))
