"""Every trainer of the package in one namespace, re-exported to nnU-Net through ``EXT_TRAINER_DIR``.

The variants are enumerated from :mod:`nnunetv2_confkd.training.variants`; each of them, the two base trainers and
stock ``nnUNetTrainer`` get one generated twin per schedule of :data:`~nnunetv2_confkd.training.schedules.SCHEDULES`.
``__all__`` lists every class, so ``nnUNetv2_train -tr NAME`` resolves each of them.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunetv2_confkd.training import variants as _variants
from nnunetv2_confkd.training.auto_settings import nnUNetTrainerConfKDAuto
from nnunetv2_confkd.training.baselines import nnUNetTrainerIgnorePadding
from nnunetv2_confkd.training.schedules import SCHEDULES, schedule_twin
from nnunetv2_confkd.training.trainer import nnUNetTrainerConfKD, nnUNetTrainerStrongOnly

#: The package's trainers under nnU-Net's own schedule: the base trainers and baselines, then every variant.
VARIANTS: tuple[type, ...] = (nnUNetTrainerConfKD, nnUNetTrainerConfKDAuto, nnUNetTrainerStrongOnly,
                              nnUNetTrainerIgnorePadding) + tuple(
    obj for obj in vars(_variants).values()
    if isinstance(obj, type) and issubclass(obj, nnUNetTrainer) and obj.__module__ == _variants.__name__
)

#: Every trainer class by name: the variants and the schedule twins of the variants and of stock ``nnUNetTrainer``.
TRAINERS: dict[str, type] = {cls.__name__: cls for cls in VARIANTS}
for _base in (nnUNetTrainer, *VARIANTS):
    for _schedule in SCHEDULES.values():
        _twin = schedule_twin(_base, _schedule, __name__)
        TRAINERS[_twin.__name__] = _twin

globals().update(TRAINERS)
__all__ = sorted(TRAINERS)


def base_variant(name: str) -> type | None:
    """The variant (or stock ``nnUNetTrainer``) that the trainer ``name`` trains under some schedule, or None.

    Example:
        >>> base_variant("nnUNetTrainerConfKD_kdAll_cpu").__name__
        'nnUNetTrainerConfKD_kdAll'
    """
    cls = TRAINERS.get(name)
    if cls is None:
        return nnUNetTrainer if name == "nnUNetTrainer" else None
    return next(c for c in cls.__mro__ if c in VARIANTS or c is nnUNetTrainer)
