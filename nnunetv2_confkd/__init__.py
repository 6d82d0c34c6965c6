"""nnunetv2-confkd: ConfKD mixed-supervision training for nnU-Net v2.

Importing the package has no side effects; trainers live in :mod:`nnunetv2_confkd.training.registry`.
"""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

#: Folder to put in ``nnUNet_extTrainer``: it holds only the one-line re-export module of the trainers.
EXT_TRAINER_DIR: str = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "ext_trainers")

__all__ = ["EXT_TRAINER_DIR", "__version__"]
