"""Atomic output of a conversion: a dataset is written into a hidden temporary folder beside its final place and
renamed into place (:func:`replace_dir`), so that an interrupted or failed conversion leaves no partial dataset and
leaves an existing one untouched. What a killed conversion leaves behind (a stale temporary folder, or a previous
dataset moved aside to ``.<name>.old``) is cleaned up or restored by the next conversion of the same dataset."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)


def atomic_json(obj, path: Path) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename (creating the parent folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def remove_stale_temporaries(raw_root: Path, folder_name: str) -> None:
    """Temporary folders of a conversion that was killed (SIGKILL leaves no chance to clean up) are removed by the next
    conversion of the same dataset; they never hold a finished dataset."""
    for stale in raw_root.glob(f".{folder_name}.*"):
        if stale.is_dir() and stale.name != f".{folder_name}.old":
            logger.warning("removing %s, left by an interrupted conversion", stale)
            shutil.rmtree(stale, ignore_errors=True)


def old_copy(out: Path) -> Path:
    """Where :func:`replace_dir` moves an existing dataset ``out`` while the new one moves in."""
    return out.with_name(f".{out.name}.old")


def recover_interrupted_overwrite(out: Path) -> None:
    """A conversion killed between moving the previous dataset aside and moving the new one in leaves only
    ``.<name>.old``: put it back before anything else happens."""
    old = old_copy(out)
    if old.is_dir() and not out.exists():
        logger.warning("restoring %s from %s, left by an interrupted --overwrite", out, old)
        os.replace(old, out)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``; an existing ``out`` is moved aside first and put back if the move
    fails, and removed once the new folder is in place."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = old_copy(out)  # only reached with overwrite=True
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)
