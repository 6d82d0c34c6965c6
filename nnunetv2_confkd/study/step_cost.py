"""One trainer measured once, in its own process: step times and peak memory (worker of ``confkd_benchmark_cost``).

A worker builds the trainer as ``nnunetv2.run.run_training.get_trainer_from_args`` does (trainer class by
name, including the package's trainers through ``nnUNet_extTrainer``; plans json ``-p`` with
``plans["continue_training"] = False``; ``dataset.json``; fold 0), optionally with the plans' batch size and patch
size overridden. Threads as ``nnUNetv2_train`` sets them (CPU: all cores; CUDA: one) unless ``--threads``.
``nnUNet_n_proc_DA=0``, so both loaders are a ``SingleThreadedAugmenter`` and no augmentation worker runs beside
the timed steps.
Seeds ``random``/``numpy``/``torch``, calls ``trainer.on_train_start()`` (initialize and the trainer's own data
loaders, ``trainer.get_dataloaders()``, so every trainer is timed on batches of its own composition and size: a
ConfKD ``"add"`` batch holds the plan's batch of full cases plus as many other cases), pre-fetches
``warmup + steps + profile_steps`` batches from ``trainer.dataloader_train`` (each fetch timed apart from the steps:
``load_times_s``), calls ``trainer.network.train()``, runs
``warmup`` untimed steps and then ``steps`` timed calls of ``trainer.train_step(batch)``, each on its own batch,
each bracketed by ``torch.cuda.synchronize()`` on CUDA, and then profiles ``profile_steps`` more batches part by part
(cost_profile.py). ``on_train_end`` is not called: it would write a
``checkpoint_final.pth`` of an untrained network; the worker shuts its loaders down and exits instead.

Memory measures (the JSON names the one used):

* ``cuda_max_memory_allocated``: ``torch.cuda.max_memory_allocated()`` over the timed steps, after
  ``torch.cuda.reset_peak_memory_stats()`` (parameters, gradients, optimizer state and activations).
* ``cpu_peak_rss_increase``: peak resident set size during the training steps (warm-up included) minus the RSS right
  before the first step (after the batches were fetched), i.e. gradients, optimizer state and activations. The peak is
  Linux's ``VmHWM``, reset to the current RSS before the first step by writing ``5`` to ``/proc/self/clear_refs``:
  ``getrusage(RUSAGE_SELF).ru_maxrss`` is a lifetime peak that cannot be reset, so a higher peak during start-up would
  hide the steps. Where the reset is not possible, the ``ru_maxrss`` increase is used (``cpu_ru_maxrss_increase``).
  Both increases and the absolute ``ru_maxrss`` are reported.

Timing is done by hand rather than with ``torch.utils.benchmark.Timer``: every step must consume a new
batch and changes the optimizer state, and the fixed ``warmup``/``steps``/``repeats`` keep the trainers comparable.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import random
import resource
import time
from pathlib import Path

import numpy as np

from nnunetv2_confkd.cli import with_ext_trainers
from nnunetv2_confkd.study.presets import PLANS
from nnunetv2_confkd.study.provenance import cpu_model

FOLD = 0
SEED = 12345
MB = 1024.0 * 1024.0


def build_trainer(trainer_name: str, preprocessed: Path, config: str, device: str,
                  batch_size: int | None = None, patch_size: list[int] | None = None, plans_name: str = PLANS):
    """A trainer built like ``nnunetv2.run.run_training.get_trainer_from_args`` (fold 0).

    Args:
        trainer_name: any trainer nnU-Net or this package knows (``nnUNet_extTrainer`` is extended here).
        preprocessed: preprocessed dataset folder holding the plans and ``dataset.json``.
        config: configuration name, e.g. ``"2d"``.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: overrides the plans' batch size of ``config`` when given.
        patch_size: overrides the plans' patch size of ``config`` when given.
        plans_name: plans identifier (``PLANS.json`` in ``preprocessed``).

    Returns:
        The trainer instance (not initialized).
    """
    import torch
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with_ext_trainers()
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    plans = json.loads((Path(preprocessed) / f"{plans_name}.json").read_text())
    plans["continue_training"] = False
    if batch_size is not None:
        plans["configurations"][config]["batch_size"] = int(batch_size)
    if patch_size is not None:
        plans["configurations"][config]["patch_size"] = [int(p) for p in patch_size]
    dataset_json = json.loads((Path(preprocessed) / "dataset.json").read_text())
    return trainer_class(plans=plans, configuration=config, fold=FOLD, dataset_json=dataset_json,
                         device=torch.device(device))


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (nnU-Net's loaders draw from ``np.random``)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(device: str, threads: int | None = None) -> None:
    """Thread counts as ``nnUNetv2_train -device {cpu,cuda}`` sets them (``run_training_entry``): all cores on CPU,
    one on CUDA; ``threads`` overrides the intra-op count (``--threads``, e.g. on a machine shared with other jobs,
    where the busy-waiting OpenMP threads of an oversubscribed CPU can inflate step times)."""
    import torch

    if device == "cpu":
        torch.set_num_threads(threads or os.cpu_count() or 1)
    else:
        torch.set_num_threads(threads or 1)
        torch.set_num_interop_threads(1)


def _proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or ``None`` where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset Linux's ``VmHWM`` to the current RSS (``clear_refs`` value 5); ``False`` where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Peak memory over a stretch of training steps; see the module docstring for the two measures."""

    def __init__(self, device: str):
        self.device = device

    def start(self) -> None:
        """Call right before the first measured step."""
        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        self.hwm_reset = _reset_peak_rss()
        self.rss_before_kb = _proc_status_kb("VmRSS")
        self.maxrss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def stop(self) -> dict:
        """Call after the last measured step; returns ``peak_memory_mb``, ``memory_measure`` and details."""
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return {"peak_memory_mb": torch.cuda.max_memory_allocated() / MB,
                    "memory_measure": "cuda_max_memory_allocated",
                    "max_memory_reserved_mb": torch.cuda.max_memory_reserved() / MB}
        maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        rss_before = self.rss_before_kb if self.rss_before_kb is not None else self.maxrss_before_kb
        hwm_kb = _proc_status_kb("VmHWM") if self.hwm_reset else None
        ru_increase = max(0, maxrss_kb - rss_before) / 1024.0
        out = {"rss_before_first_step_mb": rss_before / 1024.0, "absolute_peak_rss_mb": maxrss_kb / 1024.0,
               "ru_maxrss_increase_mb": ru_increase}
        if hwm_kb is not None:
            out.update(peak_memory_mb=max(0, hwm_kb - rss_before) / 1024.0, memory_measure="cpu_peak_rss_increase")
        else:
            out.update(peak_memory_mb=ru_increase, memory_measure="cpu_ru_maxrss_increase")
        return out


def _synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(trainer, batches: list[dict], device: str) -> list[float]:
    """Seconds of ``trainer.train_step(batch)`` for each batch, each step bracketed by a device sync."""
    times = []
    for batch in batches:
        _synchronize(device)
        t0 = time.perf_counter()
        trainer.train_step(batch)
        _synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def _shutdown(trainer) -> None:
    """Stop multi-threaded augmenters (none with ``nnUNet_n_proc_DA=0``) and free cached device memory."""
    from nnunetv2.utilities.helpers import empty_cache

    for loader in (trainer.dataloader_train, trainer.dataloader_val):
        finish = getattr(loader, "_finish", None)
        if callable(finish):
            finish()
    empty_cache(trainer.device)


def _worker_environment_info(trainer, device: str) -> dict:
    """Versions, device and threads as seen by a worker (goes into the JSON metadata)."""
    from importlib.metadata import version

    import torch

    from nnunetv2_confkd.training.mixed_loading import unwrap

    cuda = device == "cuda"
    return {"python": platform.python_version(), "torch": torch.__version__, "nnunetv2": version("nnunetv2"),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
            "device_name": torch.cuda.get_device_name() if cuda else cpu_model(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "compiled": unwrap(trainer.network) is not trainer.network,
            "n_parameters": sum(p.numel() for p in trainer.network.parameters())}


def _fetch(trainer, n: int) -> tuple[list[dict], list[float]]:
    """``n`` batches of ``trainer.dataloader_train`` and the seconds each fetch took."""
    batches, seconds = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        batches.append(next(trainer.dataloader_train))
        seconds.append(time.perf_counter() - t0)
    return batches, seconds


def _composition(trainer, batch: dict) -> dict:
    """Cases per step as the loader delivered them, full cases among them (where the trainer reads a supervision
    manifest), the batch composition and the iterations of an epoch."""
    from nnunetv2_confkd.supervision import full_mask

    manifest = getattr(trainer, "supervision", None)
    name = getattr(type(trainer), "composition_name", None)
    return {"cases_per_step": int(batch["data"].shape[0]),
            "full_per_step": int(full_mask(batch["keys"], manifest).sum()) if manifest else None,
            "composition": name() if callable(name) else "stock",
            "iterations_per_epoch": int(trainer.num_iterations_per_epoch)}


def measure_trainer(trainer, steps: int, warmup: int, device: str, seed: int = SEED, profile_steps: int = 0) -> dict:
    """Start ``trainer``, pre-fetch ``warmup + steps + profile_steps`` batches, time the steps, measure peak memory,
    then profile the parts of a step (cost_profile.py).

    Args:
        trainer: a trainer from :func:`build_trainer`.
        steps: timed steps.
        warmup: untimed steps before them.
        device: ``"cpu"`` or ``"cuda"`` (the trainer's device).
        seed: seed of every global random generator, set before start-up and again before the steps.
        profile_steps: batches profiled part by part after the timed steps (0: no profile).

    Returns:
        ``step_times_s``, ``warmup_times_s``, ``load_times_s``, memory fields of :class:`MemoryProbe`,
        ``profile_s`` (seconds per part and batch, or ``None``), cases per step, composition, the plans' batch
        size (``batch_size``) and the worker's environment.
    """
    from nnunetv2_confkd.study.cost_profile import profile_batches

    seed_everything(seed)
    trainer.on_train_start()
    config = trainer.configuration_manager
    batches, load_times = _fetch(trainer, warmup + steps + profile_steps)
    seed_everything(seed)
    trainer.network.train()
    probe = MemoryProbe(device)
    if device == "cpu":
        probe.start()  # CPU: the increase over the RSS right before the first step, warm-up included
    warm = time_steps(trainer, batches[:warmup], device)
    if device == "cuda":
        probe.start()  # CUDA: the allocator's peak over the timed steps
    timed = time_steps(trainer, batches[warmup:warmup + steps], device)
    result = {"step_times_s": timed, "warmup_times_s": warm, "load_times_s": load_times, **probe.stop(),
              "batch_size": int(trainer.batch_size), **_composition(trainer, batches[0]),
              "patch_size": [int(p) for p in config.patch_size],
              "profile_s": profile_batches(trainer, batches[warmup + steps:], device) if profile_steps else None,
              "environment": _worker_environment_info(trainer, device)}
    _shutdown(trainer)
    return result
