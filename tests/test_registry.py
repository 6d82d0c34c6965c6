"""The trainer registry: every variant is one class with a report label, its schedule twins are generated, and every
trainer that the committed study records name still resolves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_confkd.training import registry, variants
from nnunetv2_confkd.training.auto_settings import nnUNetTrainerConfKDAuto
from nnunetv2_confkd.training.baselines import nnUNetTrainerIgnorePadding
from nnunetv2_confkd.training.schedules import SCHEDULES, ScheduleMixin, twin_name
from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD, nnUNetTrainerStrongOnly

RECORDS = Path(__file__).resolve().parents[1] / "docs" / "acdc_study" / "runs"
SWITCHES = ("weak_weight", "kd_weight", "entropy_weight", "temperature", "kd_alpha", "detach_teacher", "kd_direction",
            "entropy_on", "kd_on", "student_strong_labels", "weak_loss", "confidence_term", "pseudo_threshold",
            "seed_iterations", "legacy", "entropy_rampup_fraction", "inference_head", "strong_fraction",
            "batch_composition", "weak_ratio")
BASES = (nnUNetTrainerConfKD, nnUNetTrainerConfKDAuto, nnUNetTrainerStrongOnly, nnUNetTrainerIgnorePadding)
VARIANT_CLASSES = [v for v in registry.VARIANTS if v not in BASES]


def test_every_class_of_the_variants_module_is_registered():
    defined = {name for name, obj in vars(variants).items()
               if isinstance(obj, type) and issubclass(obj, nnUNetTrainer) and obj.__module__ == variants.__name__}
    assert defined == {v.__name__ for v in VARIANT_CLASSES}
    assert len(defined) >= 16


@pytest.mark.parametrize("variant", VARIANT_CLASSES, ids=lambda c: c.__name__)
def test_a_variant_changes_a_switch_and_has_its_own_label(variant):
    changed = [s for s in SWITCHES if getattr(variant, s) != getattr(nnUNetTrainerConfKD, s)]
    assert changed, f"{variant.__name__} changes no switch of nnUNetTrainerConfKD"
    assert "report_label" in vars(variant), f"{variant.__name__} inherits its report label"
    labels = [v.report_label for v in registry.VARIANTS]
    assert labels.count(variant.report_label) == 1


@pytest.mark.parametrize("base", [nnUNetTrainer, *registry.VARIANTS], ids=lambda c: c.__name__)
@pytest.mark.parametrize("schedule", list(SCHEDULES.values()), ids=lambda s: s.name)
def test_every_trainer_has_a_generated_twin_per_schedule(base, schedule):
    twin = registry.TRAINERS[twin_name(base, schedule)]
    assert issubclass(twin, base) and issubclass(twin, ScheduleMixin)
    assert (twin.schedule_epochs, twin.schedule_iterations) == (schedule.epochs, schedule.iterations)
    assert twin.__module__ == registry.__name__ and getattr(registry, twin.__name__) is twin
    assert all(getattr(twin, s, None) == getattr(base, s, None) for s in SWITCHES)
    assert registry.base_variant(twin.__name__) is base


def test_twin_names_follow_the_historical_pattern():
    assert twin_name(nnUNetTrainerConfKD, SCHEDULES["cpu"]) == "nnUNetTrainerConfKD_cpu"
    assert twin_name(variants.nnUNetTrainerConfKD_kdAll, SCHEDULES["smoke"]) == "nnUNetTrainerConfKD_kdAll_smoke"
    assert twin_name(nnUNetTrainer, SCHEDULES["demo"]) == "nnUNetTrainer_confkdDemo"
    assert registry.base_variant("nnUNetTrainer") is nnUNetTrainer
    assert registry.base_variant("nnUNetTrainerDoesNotExist") is None


def test_every_trainer_of_the_committed_records_resolves():
    records = sorted(RECORDS.rglob("*.json"))
    assert records, f"no study records below {RECORDS}"
    names = set()
    for path in records:
        record = json.loads(path.read_text())
        names.update((record["trainer"], record["method"]))
    missing = sorted(n for n in names if n != "nnUNetTrainer" and n not in registry.TRAINERS)
    assert missing == []
    assert len(names) > 20
