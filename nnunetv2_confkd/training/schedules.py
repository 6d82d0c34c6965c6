"""Training schedules: nnU-Net's parent-owned schedule values (epochs, iterations, checkpoint interval) set from class
attributes, and the twin of a trainer under a named schedule.

The twins are generated, never written by hand: :func:`schedule_twin` makes ``<trainer>_<schedule>`` (stock
``nnUNetTrainer`` keeps its historical twin names, ``nnUNetTrainer_confkdCPU`` and friends, which study records name).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class ScheduleMixin:
    """Sets nnU-Net's parent-owned schedule values from class attributes (exact ``__init__`` signature)."""

    schedule_epochs: int = 1000
    schedule_iterations: int = 250
    schedule_val_iterations: int = 50
    schedule_save_every: int = 50

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.schedule_epochs
        self.num_iterations_per_epoch = self.schedule_iterations
        self.num_val_iterations_per_epoch = self.schedule_val_iterations
        self.save_every = self.schedule_save_every


@dataclass(frozen=True)
class Schedule:
    """A named schedule: ``epochs`` x ``iterations`` training iterations, ``val_iterations`` online-validation
    iterations per epoch, a checkpoint every ``save_every`` epochs; ``stock_name`` is the twin name of stock
    ``nnUNetTrainer``."""

    name: str
    epochs: int
    iterations: int
    val_iterations: int
    save_every: int
    stock_name: str
    description: str
    label_suffix: str = ""


SCHEDULES = {
    s.name: s for s in (
        Schedule("smoke", 3, 6, 2, 1, "nnUNetTrainer_confkdSmoke", "tests and smoke runs on CPU"),
        Schedule("demo", 12, 25, 4, 4, "nnUNetTrainer_confkdDemo", "the demo on its synthetic dataset"),
        Schedule("cpu", 48, 50, 5, 4, "nnUNetTrainer_confkdCPU", "the cpu benchmark preset (2400 iterations)"),
        Schedule("cpu2x", 48, 100, 5, 4, "nnUNetTrainer_confkdCPU2x",
                 "the cpu preset at twice the iterations (4800), for comparisons at equal compute", ", 2x iterations"),
    )
}


def twin_name(trainer: type, schedule: Schedule) -> str:
    """Class name of ``trainer`` under ``schedule``.

    Example:
        >>> from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        >>> twin_name(nnUNetTrainer, SCHEDULES["cpu"])
        'nnUNetTrainer_confkdCPU'
    """
    if trainer.__name__ == "nnUNetTrainer":
        return schedule.stock_name
    return f"{trainer.__name__}_{schedule.name}"


def schedule_twin(trainer: type, schedule: Schedule, module: str) -> type:
    """A subclass of ``trainer`` that trains under ``schedule``, named :func:`twin_name` and placed in ``module``
    (where it must be bound under that name, so that it pickles and nnU-Net's lookup by name finds it)."""
    name = twin_name(trainer, schedule)
    attributes = {
        "__module__": module, "__qualname__": name,
        "__doc__": f"``{trainer.__name__}`` with the {schedule.name} schedule ({schedule.epochs} epochs of "
                   f"{schedule.iterations} iterations): {schedule.description}.",
        "schedule_epochs": schedule.epochs, "schedule_iterations": schedule.iterations,
        "schedule_val_iterations": schedule.val_iterations, "schedule_save_every": schedule.save_every,
    }
    if schedule.label_suffix and hasattr(trainer, "report_label"):
        attributes["report_label"] = trainer.report_label + schedule.label_suffix
    return type(name, (ScheduleMixin, trainer), attributes)
