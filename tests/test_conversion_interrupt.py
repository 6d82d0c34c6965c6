"""Converters leave no partial output when interrupted: a conversion killed with SIGKILL (no chance to clean up)
leaves neither a partial ``DatasetNNN_Name`` nor a ``splits_final.json``, an existing dataset converted over with
``overwrite=True`` stays complete and unchanged, and the next conversion removes the stale temporary folder and writes
exactly what an uninterrupted conversion writes.

The killed conversion runs :func:`~.writer.write_mixed_dataset` in a subprocess (its own process
group) on synthetic cases whose ``read()`` sleeps; it is killed once its hidden temporary folder holds a written label.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from nnunetv2_confkd_conversion import atomic_output
from nnunetv2_confkd_conversion.budget import Budget
from nnunetv2_confkd_conversion.cases import DatasetSpec, SourceCase
from nnunetv2_confkd_conversion.synthetic import LABELS, _source_case, make_case
from nnunetv2_confkd_conversion.writer import write_mixed_dataset

from nnunetv2_confkd.checks import ConfKDInputError

DATASET_ID = 321
NAME = "Interrupt"
FOLDER = f"Dataset{DATASET_ID:03d}_{NAME}"
SHAPE = (3, 40, 40)
N_TRAIN, N_TEST = 16, 4
SLEEP = 0.3  # seconds per case read in the killed conversion: 20 cases take 6 s, the kill comes after the first
START_TIMEOUT = 60.0  # seconds for the subprocess to import and write its first label (a loaded 2-core machine)
WAIT_TIMEOUT = 30.0

SCRIPT = """
import sys
tests_dir, raw, pre, seed, overwrite, sleep = sys.argv[1:]
sys.path.insert(0, tests_dir)
from test_conversion_interrupt import convert
convert(raw, pre, seed=int(seed), overwrite=overwrite == "1", sleep=float(sleep))
"""


def source_cases(sleep: float = 0.0) -> tuple[list[SourceCase], list[SourceCase]]:
    """``N_TRAIN`` training and ``N_TEST`` held-out synthetic cases (one patient each); ``read()`` sleeps ``sleep``."""
    rng = np.random.default_rng(0)
    cases = [_source_case(f"case_{i:03d}", *make_case(rng, SHAPE)) for i in range(N_TRAIN + N_TEST)]
    if sleep:
        def slow(case: SourceCase) -> SourceCase:
            def read():
                time.sleep(sleep)
                return case.read()
            return replace(case, read=read)

        cases = [slow(c) for c in cases]
    return cases[:N_TRAIN], cases[N_TRAIN:]


def convert(raw: str | Path, pre: str | Path | None, seed: int = 0, overwrite: bool = False,
            sleep: float = 0.0) -> Path:
    """The conversion under test: 4 full, 3 unlabeled, the rest weak (random points, so the seed matters)."""
    train, test = source_cases(sleep)
    spec = DatasetSpec(DATASET_ID, NAME, {k: v for k, v in LABELS.items() if k != "ignore"}, {0: "MRI"},
                       source="tests/test_conversion_interrupt.py")
    budget = Budget(full=4, weak="points", unlabeled=3, seed=seed, params={"k": 2})
    return write_mixed_dataset(train, test, spec, budget, Path(raw), None if pre is None else Path(pre), overwrite)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_same_dataset(folder: Path, reference: Path) -> None:
    """Every file byte for byte, except dataset.json, compared as parsed JSON."""
    ours, theirs = files(folder), files(reference)
    assert sorted(ours) == sorted(theirs)
    assert json.loads(ours.pop("dataset.json")) == json.loads(theirs.pop("dataset.json"))
    different = [name for name in ours if ours[name] != theirs[name]]
    assert different == []


def temporaries(raw: Path) -> list[Path]:
    return sorted(raw.glob(f".{FOLDER}.*"))


def _written_label(raw: Path) -> bool:
    return any(any(t.glob("labelsT*/*.nii.gz")) for t in temporaries(raw) if t.is_dir())


def kill_mid_conversion(tmp_path: Path, raw: Path, pre: Path, seed: int = 0, overwrite: bool = False) -> None:
    """Start the slow conversion in a subprocess, SIGKILL its process group once a label file is written, and check
    that it was still running (so the kill did interrupt it)."""
    log = tmp_path / f"killed_conversion_{seed}.log"
    tests_dir = str(Path(__file__).resolve().parent)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, tests_dir, str(raw), str(pre), str(seed),
                                 "1" if overwrite else "0", str(SLEEP)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _written_label(raw):
            if proc.poll() is not None:
                pytest.fail(f"the conversion exited ({proc.returncode}) before it could be killed:\n"
                            f"{log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no label file written within {START_TIMEOUT} s:\n"
                            f"{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=WAIT_TIMEOUT) == -signal.SIGKILL, "the conversion finished before the kill"
    finally:
        if proc.poll() is None:  # a failed check above: never leave the subprocess behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=WAIT_TIMEOUT)


def test_killed_conversion_leaves_no_partial_dataset_and_the_next_one_recovers(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    kill_mid_conversion(tmp_path, raw, pre)

    assert not (raw / FOLDER).exists(), "a killed conversion left a partial dataset"
    assert not pre.exists() or list(pre.rglob("splits_final.json")) == []
    stale = temporaries(raw)
    assert len(stale) == 1 and stale[0].is_dir()  # the killed conversion's temporary folder, hidden
    assert not (stale[0] / "dataset.json").exists()  # killed mid-way, not after finishing its writes
    assert sorted(p.name for p in raw.iterdir()) == [stale[0].name]

    folder = convert(raw, pre)  # the same conversion again, uninterrupted
    assert folder == raw / FOLDER
    assert temporaries(raw) == [], "the stale temporary folder was not removed"
    assert sorted(p.name for p in raw.iterdir()) == [FOLDER]

    reference = convert(tmp_path / "ref" / "raw", tmp_path / "ref" / "pre")
    assert_same_dataset(folder, reference)
    assert files(pre) == files(tmp_path / "ref" / "pre") == {f"{FOLDER}/splits_final.json":
                                                              (folder / "splits_final.json").read_bytes()}


def test_killed_overwrite_keeps_the_existing_dataset(tmp_path):
    raw, pre = tmp_path / "raw", tmp_path / "pre"
    folder = convert(raw, pre, seed=0)
    before, splits_before = files(folder), files(pre)

    kill_mid_conversion(tmp_path, raw, pre, seed=1, overwrite=True)  # another seed: a different dataset

    assert files(folder) == before, "the existing dataset changed"
    assert files(pre) == splits_before
    assert not (raw / f".{FOLDER}.old").exists()
    assert len(temporaries(raw)) == 1

    # the interrupted request, repeated, does replace the dataset, and removes the stale temporary folder
    convert(raw, pre, seed=1, overwrite=True)
    assert temporaries(raw) == [] and files(folder) != before
    assert_same_dataset(folder, convert(tmp_path / "ref" / "raw", None, seed=1))


def test_converting_twice_with_the_same_seed_gives_identical_files(tmp_path):
    raw = tmp_path / "raw"
    folder = convert(raw, tmp_path / "pre", seed=3)
    first, splits = files(folder), files(tmp_path / "pre")
    assert convert(raw, tmp_path / "pre", seed=3, overwrite=True) == folder
    assert files(folder) == first and files(tmp_path / "pre") == splits
    assert sorted(p.name for p in raw.iterdir()) == [FOLDER]


def test_interrupt_between_the_renames_of_an_overwrite_keeps_the_existing_dataset(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    folder = convert(raw, None, seed=0)
    before = files(folder)
    real_replace = os.replace

    def interrupted_replace(src, dst):
        if Path(dst) == folder and not str(src).endswith(".old"):  # the new dataset moving into place
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(atomic_output.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        convert(raw, None, seed=1, overwrite=True)
    monkeypatch.undo()
    assert folder.is_dir() and files(folder) == before


def test_a_kill_between_the_renames_is_recovered_by_the_next_conversion(tmp_path):
    """SIGKILL cannot be caught: if it lands after the previous dataset moved aside, the next conversion restores it."""
    raw = tmp_path / "raw"
    folder = convert(raw, None, seed=0)
    before = files(folder)
    os.replace(folder, folder.with_name(f".{folder.name}.old"))  # the state such a kill leaves
    with pytest.raises(ConfKDInputError, match="exists; pass --overwrite"):
        convert(raw, None, seed=1)
    assert files(folder) == before
