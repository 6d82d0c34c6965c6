"""``confkd_decide`` (study/decision.py): the pre-registered rule on cross-validation records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunetv2_confkd.checks import ConfKDInputError
from nnunetv2_confkd.study.decision import decide, main

STUDY = Path(__file__).resolve().parents[1] / "docs" / "acdc_study"


def _cv(method: str, fold: str, dice: list[float], evaluation: str = "cv", split: str = "v2",
        head: str = "student") -> dict:
    """A cross-validation record with one volume per entry of ``dice`` (two classes, both at that Dice)."""
    return {"dataset": "D", "evaluation": evaluation, "fold": fold, "split": split, "method": method,
            "trainer": f"{method}_cpu", "head": head, "seed": 0, "batch_composition": "add 1",
            "supervision": {"full": 2, "weak": 2, "unlabeled": 0}, "label_names": {"1": "A", "2": "B"},
            "metrics": [{"case": f"f{fold}_c{i}", "label": lab, "dice": d, "hd95": 1.0, "assd": 1.0, "nsd": d,
                         "n_ref": 5, "n_pred": 5} for i, d in enumerate(dice) for lab in (1, 2)]}


def _arm(method: str, fold0: list[float], fold1: list[float]) -> list[dict]:
    return [_cv(method, "0", fold0), _cv(method, "1", fold1)]


DEFAULT = _arm("nnUNetTrainerConfKD", [0.70, 0.80], [0.60])
CHALLENGERS = {
    "nnUNetTrainerConfKD_kdAll": _arm("nnUNetTrainerConfKD_kdAll", [0.72, 0.82], [0.62]),  # +2 everywhere
    "nnUNetTrainerConfKD_weak01": _arm("nnUNetTrainerConfKD_weak01", [0.75, 0.85], [0.59]),  # loses fold 1
    "nnUNetTrainerConfKD_kd2": _arm("nnUNetTrainerConfKD_kd2", [0.704, 0.804], [0.605]),  # ahead by < 1 point
    "nnUNetTrainerConfKD_T2": _arm("nnUNetTrainerConfKD_T2", [0.60, 0.70], [0.50]),  # behind by 10
}


def test_each_challenger_gets_the_rules_verdict():
    result = decide(DEFAULT + [r for rs in CHALLENGERS.values() for r in rs], "D", "nnUNetTrainerConfKD",
                    list(CHALLENGERS), ["0", "1"])
    verdicts = {c["challenger"]: c["verdict"] for c in result["comparisons"]}
    assert verdicts == {"nnUNetTrainerConfKD_kdAll": "replaces", "nnUNetTrainerConfKD_weak01": "not distinguished",
                        "nnUNetTrainerConfKD_kd2": "not distinguished", "nnUNetTrainerConfKD_T2": "confirmed"}
    assert result["chosen"] == "nnUNetTrainerConfKD_kdAll"
    assert result["chosen_switches"] == {"kd_on": "all"}  # what nnUNetTrainerConfKDAuto would set for this kind
    default = result["arms"][0]
    assert default["arm"] == "nnUNetTrainerConfKD"
    # folds: mean over their volumes; pooled: mean over every volume of both folds
    assert default["folds"] == pytest.approx({"0": 0.75, "1": 0.60})
    assert default["pooled"] == pytest.approx(0.70) and default["volumes"] == 3
    kd_all = result["comparisons"][0]
    assert kd_all["fold_differences"] == pytest.approx({"0": 0.02, "1": 0.02})
    assert kd_all["pooled_difference"] == pytest.approx(0.02)


def test_of_several_winners_the_highest_pooled_mean_is_chosen():
    better = _arm("nnUNetTrainerConfKD_weak01", [0.80, 0.90], [0.70])
    result = decide(DEFAULT + CHALLENGERS["nnUNetTrainerConfKD_kdAll"] + better, "D", "nnUNetTrainerConfKD",
                    ["nnUNetTrainerConfKD_kdAll", "nnUNetTrainerConfKD_weak01"], ["0", "1"])
    assert [c["verdict"] for c in result["comparisons"]] == ["replaces", "replaces"]
    assert result["chosen"] == "nnUNetTrainerConfKD_weak01"


def test_an_arm_is_scored_with_the_inference_head_unless_it_names_one():
    """Cross-validation records hold both heads of a ConfKD model; an arm without a head is its class's inference
    head (the student, or the teacher for ``_teacherHead``), and ``METHOD:teacher`` compares the heads."""
    teacher = [_cv("nnUNetTrainerConfKD", f, d, head="teacher") for f, d in (("0", [0.8, 0.9]), ("1", [0.7]))]
    result = decide(DEFAULT + teacher, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD:teacher"], ["0", "1"])
    assert result["arms"][0]["pooled"] == pytest.approx(0.70) and result["arms"][1]["pooled"] == pytest.approx(0.80)
    assert result["chosen"] == "nnUNetTrainerConfKD:teacher"
    assert result["chosen_switches"] == {"inference_head": "teacher"}
    head = [_cv("nnUNetTrainerConfKD_teacherHead", f, d, head=h) for f, d in (("0", [0.8, 0.9]), ("1", [0.7]))
            for h in ("teacher", "student")]
    scored = decide(DEFAULT + head, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD_teacherHead"], ["0", "1"])
    assert [a["volumes"] for a in scored["arms"]] == [3, 3]  # one record per fold: the class's inference head
    # a model whose trainer chose its head from its data records it; that head is the arm's
    auto = [{**_cv("nnUNetTrainerConfKDAuto", f, d, head=h), "inference_head": "teacher"}
            for f, d, h in (("0", [0.9, 0.9], "teacher"), ("0", [0.1, 0.1], "student"), ("1", [0.9], "teacher"),
                            ("1", [0.1], "student"))]
    scored = decide(DEFAULT + auto, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKDAuto"], ["0", "1"])
    assert scored["arms"][1]["pooled"] == pytest.approx(0.9)


def test_a_fold_with_records_of_both_split_formats_needs_split():
    both = DEFAULT + [_cv("nnUNetTrainerConfKD", "1", [0.1], split="v1")] + CHALLENGERS["nnUNetTrainerConfKD_T2"]
    with pytest.raises(ConfKDInputError, match="fold 1 has two records .*split v2; D, split v1.*--split"):
        decide(both, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD_T2"], ["0", "1"])
    result = decide(both, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD_T2"], ["0", "1"], split="v2")
    assert result["arms"][0]["pooled"] == pytest.approx(0.70) and result["chosen"] == "nnUNetTrainerConfKD"


def test_a_two_stage_arm_takes_each_folds_record_from_its_own_dataset():
    """Self-training trains its second stage on a dataset pseudo-labeled by the first stage of the same fold, so each
    fold lives in its own dataset; the arm names them and is compared on the same validation volumes."""
    stage2 = [{**_cv("nnUNetTrainerIgnorePadding", f, d, head="nnunet"), "dataset": name}
              for f, d, name in (("0", [0.8, 0.9], "Dataset537_P0"), ("1", [0.7], "Dataset547_P1"))]
    result = decide(DEFAULT + stage2, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerIgnorePadding@537,547"], ["0", "1"])
    assert result["arms"][1]["folds"] == pytest.approx({"0": 0.85, "1": 0.70})
    assert result["chosen"] == "nnUNetTrainerIgnorePadding@537,547"
    assert result["chosen_switches"] is None  # a recipe, not a set of switches
    with pytest.raises(ConfKDInputError, match=r"537 nnUNetTrainerIgnorePadding@537 seed 0: no .* fold\(s\) 1"):
        decide(DEFAULT + stage2, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerIgnorePadding@537"], ["0", "1"])


def test_held_out_records_never_enter_a_decision():
    held_out = [_cv("nnUNetTrainerConfKD_kdAll", f, [0.99], evaluation="test") for f in ("0", "1")]
    with pytest.raises(ConfKDInputError, match="nnUNetTrainerConfKD_kdAll seed 0: no cross-validation record of fold"):
        decide(DEFAULT + held_out, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD_kdAll"], ["0", "1"])


def test_missing_folds_and_other_volumes_are_refused_naming_the_fix():
    with pytest.raises(ConfKDInputError, match=r"fold\(s\) 1; run confkd_benchmark -d D -tr nnUNetTrainerConfKD_T2 "
                                               r"--seeds 0 -f 1 --cv first \(arms .*: nnUNetTrainerConfKD, "):
        decide(DEFAULT + CHALLENGERS["nnUNetTrainerConfKD_T2"][:1], "D", "nnUNetTrainerConfKD",
               ["nnUNetTrainerConfKD_T2"], ["0", "1"])
    other = _arm("nnUNetTrainerConfKD_T2", [0.6], [0.5])  # one volume fewer in fold 0
    with pytest.raises(ConfKDInputError, match="validated on other volumes"):
        decide(DEFAULT + other, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD_T2"], ["0", "1"])
    old_split = [_cv("nnUNetTrainerConfKD_T2", f, d, split="v1") for f, d in (("0", [0.6, 0.7]), ("1", [0.5]))]
    with pytest.raises(ConfKDInputError, match="another split format"):
        decide(DEFAULT + old_split, "D", "nnUNetTrainerConfKD", ["nnUNetTrainerConfKD_T2"], ["0", "1"])


def test_the_committed_records_give_the_recorded_decisions(capsys):
    """The study's first pre-registered decisions, recomputed from the committed cross-validation records: the
    default (half-strong batches, as all those records) against the paper's temperature and the three provisional
    challengers on budget A, folds 1 and 2 of the earlier split."""
    replace = " [replace 0.5]"
    challengers = ["_T2", "_entropyWeak", "_seeds5", "_entropyRamp"]
    main(["-o", str(STUDY), "-d", "501", "--default", "nnUNetTrainerConfKD" + replace, "--challengers",
          *[f"nnUNetTrainerConfKD{c}{replace}" for c in challengers], "-f", "1", "2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "v1" and result["arms"][0]["pooled"] == pytest.approx(0.733, abs=5e-4)
    assert [c["verdict"] for c in result["comparisons"]] == ["confirmed", "confirmed", "confirmed",
                                                            "not distinguished"]
    assert result["chosen"] == "nnUNetTrainerConfKD" + replace
    assert result["chosen_switches"] is None  # runs of an earlier composition are no class of today


#: each decided rule of the Auto trainer: (kind of weak labels, development dataset, folds, the switch arms'
#: challengers against nnUNetTrainerConfKD, their verdicts, the verdict of the chosen arm's teacher head)
DECIDED_RULES = [
    ("foreground_only", "505", ["0", "1"], ["nnUNetTrainerConfKD_kdAll", "nnUNetTrainerConfKD_weak01"],
     ["not distinguished", "replaces"], "not distinguished"),
    ("background_annotated", "501", ["1", "2"], ["nnUNetTrainerConfKD_pseudoMaskTeacher"], ["confirmed"], "confirmed"),
]


@pytest.mark.parametrize("kind, dataset, folds, challengers, verdicts, head_verdict", DECIDED_RULES,
                         ids=[r[0] for r in DECIDED_RULES])
def test_each_rule_of_the_auto_trainer_is_what_the_committed_records_decide(capsys, kind, dataset, folds,
                                                                             challengers, verdicts, head_verdict):
    """A pre-registered decision recomputed from the committed cross-validation records: the switch arm, then its
    teacher head against its student head. The Auto trainer's entry for that kind must be what the second decision
    chose (the arm's switches, and its head where the teacher head won)."""
    from nnunetv2_confkd.training.auto_settings import nnUNetTrainerConfKDAuto

    def decided(default: str, arms: list[str]) -> dict:
        main(["-o", str(STUDY), "-d", dataset, "--default", default, "--challengers", *arms, "-f", *folds, "--json"])
        return json.loads(capsys.readouterr().out)

    arms = decided("nnUNetTrainerConfKD", challengers)
    assert [c["verdict"] for c in arms["comparisons"]] == verdicts
    head = decided(arms["chosen"], [arms["chosen"] + ":teacher"])
    assert head["comparisons"][0]["verdict"] == head_verdict
    assert nnUNetTrainerConfKDAuto.settings_by_labels[kind] == head["chosen_switches"]


def test_a_kind_without_a_decided_rule_keeps_the_defaults():
    from nnunetv2_confkd.training.auto_settings import KINDS, nnUNetTrainerConfKDAuto

    undecided = set(KINDS) - {r[0] for r in DECIDED_RULES}
    assert {k: nnUNetTrainerConfKDAuto.settings_by_labels[k] for k in undecided} == dict.fromkeys(undecided, {})


def test_the_command_stops_with_the_reason_on_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="confkd_decide: dataset '999': no matching folder"):
        main(["-o", str(tmp_path), "-d", "999", "--default", "a", "--challengers", "b", "-f", "0"])
