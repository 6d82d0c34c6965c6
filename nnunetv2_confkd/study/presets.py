"""Benchmark presets: which nnU-Net configuration and which training schedule a study runs (``confkd_benchmark
--preset``).

- ``gpu``: nnU-Net's own plans and schedule (1000 epochs of 250 iterations), the trainers as named.
- ``smoke``: the ``cpu`` preset's reduction with batch size 2 and the ``_smoke`` schedule (3 x 6 iterations).
- ``cpu``: a reduced plans configuration ``<base>_cpu`` added to ``nnUNetPlans.json`` beside the base configuration
  (nnU-Net's ``inherits_from``): every axis of the base spacing times ``spacing_factor``, the patch divided by it and
  rounded to what the network topology needs (nnU-Net's own ``get_pool_and_conv_props``), batch size 8 and feature
  widths 16 doubling up to 128; and the trainers' ``_cpu`` schedule variants (48 epochs of 50 iterations, 2400 in
  all). For ACDC 2D at 1.5 mm this gives 3 mm, patch 128x112, 5 stages of 16-128 features.

A reduced schedule is only valid if it ranks the supervision budgets correctly (full supervision above strong-only):
``confkd_benchmark`` reports that check (``preset_check`` in records.py) with every report.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

from nnunetv2_confkd.checks import ConfKDInputError

PLANS = "nnUNetPlans"


@dataclass(frozen=True)
class Preset:
    """A benchmark preset: ``reduced`` is ``None`` for nnU-Net's plans, else the parameters of the reduced
    configuration; ``trainer_suffix`` maps a trainer to its schedule variant (``""``: the trainer as named)."""

    name: str
    description: str
    trainer_suffix: str = ""
    stock_trainer: str = "nnUNetTrainer"
    spacing_factor: float = 1.0
    batch_size: int | None = None
    base_features: int = 16
    max_features: int = 128
    reduced: bool = False

    def configuration(self, base: str) -> str:
        return f"{base}_{self.name}" if self.reduced else base

    def trainer(self, trainer: str) -> str:
        """The class that runs ``trainer`` under this preset: its schedule twin (``nnUNetTrainer`` has its own), or
        ``trainer`` itself where the preset keeps nnU-Net's schedule or ``trainer`` already names a schedule twin."""
        from nnunetv2_confkd.training.registry import TRAINERS
        from nnunetv2_confkd.training.schedules import ScheduleMixin

        if not self.trainer_suffix or issubclass(TRAINERS.get(trainer, object), ScheduleMixin):
            return trainer
        if trainer == "nnUNetTrainer":
            return self.stock_trainer
        return trainer + self.trainer_suffix


PRESETS = {
    "gpu": Preset("gpu", "nnU-Net's default plans and schedule (1000 x 250 iterations)"),
    "cpu": Preset("cpu", "reduced plans (spacing x2, patch /2, batch 8, features 16-128), 48 x 50 iterations",
                  trainer_suffix="_cpu", stock_trainer="nnUNetTrainer_confkdCPU", spacing_factor=2.0, batch_size=8,
                  reduced=True),
    "smoke": Preset("smoke", "the cpu preset's reduced plans with batch 2 and 3 x 6 iterations (tests, smoke runs)",
                    trainer_suffix="_smoke", stock_trainer="nnUNetTrainer_confkdSmoke", spacing_factor=2.0,
                    batch_size=2, reduced=True),
}


def reduced_configuration(base_config: dict, base: str, preset: Preset) -> dict:
    """The plans entry of ``<base>_<preset>``: a configuration that inherits ``base`` and overrides spacing, patch,
    batch size, data identifier and architecture (topology from nnU-Net's planner function)."""
    spacing = [float(s) * preset.spacing_factor for s in base_config["spacing"]]
    patch = [max(8, int(round(p / preset.spacing_factor))) for p in base_config["patch_size"]]
    _, pool, conv, patch, _ = get_pool_and_conv_props(spacing, patch, 4, 999999)
    n_stages = len(pool)
    arch = copy.deepcopy(base_config["architecture"])
    kw = arch["arch_kwargs"]
    if "n_blocks_per_stage" in kw or "n_conv_per_stage" not in kw:
        raise ConfKDInputError(f"the {preset.name} preset supports PlainConvUNet plans; configuration {base!r} uses "
                               f"{arch['network_class_name']}")
    kw.update(n_stages=n_stages,
              features_per_stage=[min(preset.base_features * 2 ** i, preset.max_features) for i in range(n_stages)],
              kernel_sizes=[list(k) for k in conv], strides=[list(s) for s in pool],
              n_conv_per_stage=[kw["n_conv_per_stage"][0]] * n_stages,
              n_conv_per_stage_decoder=[kw["n_conv_per_stage_decoder"][0]] * (n_stages - 1))
    median = [m / preset.spacing_factor for m in base_config["median_image_size_in_voxels"]]
    return {"inherits_from": base, "data_identifier": f"{PLANS}_{preset.configuration(base)}",
            "spacing": spacing, "patch_size": [int(p) for p in np.asarray(patch)],
            "median_image_size_in_voxels": median, "batch_size": preset.batch_size or base_config["batch_size"],
            "architecture": arch}


def ensure_configuration(plans_file: Path, base: str, preset: Preset) -> str:
    """Add the preset's configuration to ``plans_file`` if it is not there yet; return the configuration name.

    An existing entry of that name is kept if it equals what the preset writes, otherwise refused (the user's
    plans are never changed behind their back). The file is rewritten through a temporary name."""
    name = preset.configuration(base)
    if not preset.reduced:
        return name
    plans = json.loads(Path(plans_file).read_text())
    configs = plans["configurations"]
    if base not in configs:
        raise ConfKDInputError(f"{plans_file} has no configuration {base!r} to reduce (has {sorted(configs)})")
    entry = reduced_configuration(configs[base], base, preset)
    if name in configs:
        if configs[name] != json.loads(json.dumps(entry)):
            raise ConfKDInputError(f"{plans_file} already has a configuration {name!r} that differs from the "
                                   f"{preset.name} preset's; rename or remove it, or use another --preset")
        return name
    configs[name] = entry
    tmp = Path(str(plans_file) + ".tmp")
    tmp.write_text(json.dumps(plans, indent=4))
    os.replace(tmp, plans_file)
    return name
