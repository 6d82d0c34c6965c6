"""Two-process CPU DDP (gloo) training steps of the dual network with the ConfKD objective.

nnU-Net wraps the network in ``DistributedDataParallel`` with ``find_unused_parameters=False``: every parameter of both
decoders, every ``seg_layer`` included, needs a gradient in every step on every rank, whatever the batch composition.
Each rank draws different data; the number of fully labeled cases is the same on both ranks within a step (the
trainer guarantees it, and the all-gathered batch Dice needs it) and changes from step to step. A negative control
(the teacher term skipped by a Python ``if``) shows that the setup does catch an unused parameter.

Two kinds of runs:

* Hand-built batches (``conftest.mixed_batch``) through a bare ``DistributedDataParallel`` of the dual network and the
  objective as the trainer builds it: compositions the trainer's loader rarely draws (all full, one full case, weak
  cases without any labeled voxel).
* The trainer's own data path: in each rank a real trainer (``*_smoke`` twins) on the planned synthetic dataset
  (``planned_dataset``, 2d), built after ``init_process_group``, so nnU-Net's DDP code runs (``is_ddp``, the batch size
  split over ranks in ``_set_batch_size_and_oversample``, the DDP wrapping in ``initialize``); then
  ``initialize()``, ``get_dataloaders()`` (in-process loaders, ``nnUNet_n_proc_DA=0``) and ``train_step`` on batches
  of the trainer's own training loader. Per step it checks the number of fully labeled cases in each rank's batch
  (equal on both ranks, and the count of :func:`~nnunetv2_confkd.supervision.batch_counts`), that the ranks drew
  different batches, that every parameter got a gradient and the gradients are identical on both ranks, that the loss
  terms are finite, and that the weights are identical on both ranks before the first and after every optimizer step
  (the ranks start from different random weights: the DDP wrapper's broadcast must make them equal). The synthetic
  plans' batch of 7 splits into nnU-Net's per-rank batches of 4 and 3; every rank still draws the same number of cases
  (that of the smallest rank), which nnU-Net's DDP batch Dice needs.

  How the trainer is made to run DDP on CPU, in the worker, without touching the package: nnunetv2 2.8.1 wraps with
  ``DDP(self.network, device_ids=[self.local_rank])`` (``DDP`` is ``DistributedDataParallel`` imported under that name
  in ``nnunetv2.training.nnUNetTrainer.nnUNetTrainer``), which refuses a CPU module; the worker rebinds that module's
  ``DDP`` to a function that records the call and returns ``DistributedDataParallel(module)`` without device ids
  (otherwise the same defaults, ``find_unused_parameters=False`` included). nnU-Net's ``__init__`` also sets the device
  to ``cuda:<rank>`` whenever a process group is initialised, whatever device it is given, and makes a CUDA
  ``GradScaler``; the worker sets ``trainer.device`` to CPU and ``trainer.grad_scaler`` to None (what nnU-Net's
  ``__init__`` does for a CPU device) before ``initialize()``. ``torch.compile`` stays off (``nnUNet_compile=f``,
  and nnU-Net never compiles on CPU), which the worker checks.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from batchgenerators.utilities.file_and_folder_operations import load_json
from conftest import (
    NUM_CLASSES,
    NUM_INPUT_CHANNELS,
    make_plans_manager,
    mixed_batch,
    trainer_class,
    trainer_confkd_loss,
)
from torch.nn.parallel import DistributedDataParallel

from nnunetv2_confkd.supervision import batch_counts, full_mask
from nnunetv2_confkd.training.mixed_loading import unwrap

WORLD_SIZE = 2
BATCH = 4
FEATURES = (4, 8, 16, 32)
PATCH = (32, 32)
TRAINER_NAMES = ("nnUNetTrainerConfKD", "nnUNetTrainerConfKD_legacy", "nnUNetTrainerConfKD_decoupled",
                 "nnUNetTrainerConfKD_pseudoMaskTeacher", "nnUNetTrainerConfKD_noKD")
# per step: supervision level of the BATCH cases (the same counts on every rank; the order is shuffled per rank).
# The last step repeats the first: DDP reports a reduction left unfinished by a step at the *next* forward.
STEPS = (
    ("full", "full", "weak", "weak"),  # (a) 2 full + 2 weak
    ("full",) * BATCH,  # (b) all full
    ("full", "unlabeled", "unlabeled", "unlabeled"),  # (c) 1 full + 3 unlabeled
    ("full", "full", "weak_empty", "weak_empty"),  # (d) weak cases without any labeled voxel
    ("full", "full", "weak", "weak"),
)
TIMEOUT = timedelta(seconds=300)  # generous: the CPUs may be shared with other work


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch(rank: int, step: int, levels, ds_shapes):
    """One rank's batch; different on every rank and step (the case order too)."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    levels = [levels[i] for i in torch.randperm(len(levels), generator=g).tolist()]
    return mixed_batch(levels, PATCH, ds_shapes, g)


def _gather_equal(tensor: torch.Tensor) -> tuple[bool, float]:
    """Whether ``tensor`` is the same on every rank, and the largest absolute difference to rank 0."""
    gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
    return all(torch.allclose(g, gathered[0], rtol=1e-6, atol=1e-9) for g in gathered), diff


def _train(rank: int, trainer_name: str, skip_teacher_at: int | None) -> dict:
    """Run STEPS through DDP; ``skip_teacher_at``: the step whose loss leaves the teacher out (negative control)."""
    plans_manager, configuration_manager = make_plans_manager("2d", features=FEATURES, patch_size=PATCH)
    cls = trainer_class(trainer_name)
    torch.manual_seed(0)  # identical initial weights on both ranks
    net = cls.build_network_architecture(plans_manager, configuration_manager, NUM_INPUT_CHANNELS,
                                                   NUM_CLASSES, True)
    same_init, _ = _gather_equal(torch.cat([p.detach().flatten() for p in net.parameters()]))
    ddp_net = DistributedDataParallel(net)  # find_unused_parameters=False, as nnU-Net
    cumulative = np.cumprod(np.vstack(configuration_manager.pool_op_kernel_sizes), axis=0)[:-1]
    ds_shapes = [tuple(p // int(s) for p, s in zip(PATCH, c, strict=True)) for c in cumulative]
    loss_fn = trainer_confkd_loss(cls, len(ds_shapes), batch_dice=True, ddp=True)
    optimizer = torch.optim.SGD(ddp_net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
    names = [n for n, _ in net.named_parameters()]
    result = {"same_init": same_init, "steps": []}
    for step, levels in enumerate(STEPS):
        x, targets, is_full = _batch(rank, step, levels, ds_shapes)
        teacher_mask = torch.ones_like(is_full) if loss_fn.config.teacher_on_all else is_full
        optimizer.zero_grad(set_to_none=True)
        try:
            output = ddp_net(x, teacher_cases=torch.nonzero(teacher_mask).flatten())
            teacher, student = list(output.teacher), list(output.student)
            if step == skip_teacher_at:
                loss = loss_fn.weak_loss(student, targets)  # student only: the teacher decoder gets no gradient
            else:
                loss, _ = loss_fn(teacher, student, targets, is_full, teacher_mask)
            loss.backward()
        except RuntimeError as e:
            result["error"] = {"step": step, "message": str(e)}
            return result
        missing = [n for n, p in zip(names, net.parameters(), strict=True) if p.grad is None]
        grads = torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.detach().flatten()
                           for p in net.parameters()])
        grads_equal, grad_diff = _gather_equal(grads)
        losses = [torch.zeros(1) for _ in range(WORLD_SIZE)]
        dist.all_gather(losses, loss.detach().reshape(1).float())
        result["steps"].append({"loss": float(loss), "losses": [float(v) for v in losses], "missing_grad": missing,
                                "grads_equal": grads_equal, "grad_diff": grad_diff,
                                "grad_norm": float(grads.norm())})
        optimizer.step()
    result["same_final"], _ = _gather_equal(torch.cat([p.detach().flatten() for p in net.parameters()]))
    return result


def _worker(rank: int, port: int, trainer_names, skip_teacher_at, outdir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=TIMEOUT)
    try:
        results = {name: _train(rank, name, skip_teacher_at) for name in trainer_names}
        with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
            json.dump(results, f)
    finally:
        dist.destroy_process_group()


def _spawn(outdir, trainer_names, skip_teacher_at=None) -> list[dict]:
    mp.spawn(_worker, args=(_free_port(), list(trainer_names), skip_teacher_at, str(outdir)), nprocs=WORLD_SIZE,
             join=True)
    results = []
    for rank in range(WORLD_SIZE):
        with open(os.path.join(outdir, f"rank{rank}.json")) as f:
            results.append(json.load(f))
    return results


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict]:
    """One 2-process run of every trainer of TRAINER_NAMES (one process start for all: imports dominate)."""
    return _spawn(tmp_path_factory.mktemp("ddp"), TRAINER_NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("trainer_name", TRAINER_NAMES)
def test_ddp_steps_give_every_parameter_the_same_gradient_on_every_rank(ddp_results, trainer_name):
    per_rank = [r[trainer_name] for r in ddp_results]
    for rank, result in enumerate(per_rank):
        assert "error" not in result, f"rank {rank}: {result.get('error')}"
        assert result["same_init"]
        assert len(result["steps"]) == len(STEPS)
        for step, record in enumerate(result["steps"]):
            assert record["missing_grad"] == [], f"rank {rank} step {step}: no gradient for {record['missing_grad']}"
            assert record["grads_equal"], f"rank {rank} step {step}: gradients differ by {record['grad_diff']}"
            assert np.isfinite(record["loss"]) and record["grad_norm"] > 0
        assert result["same_final"]
    for step in range(len(STEPS)):
        losses = per_rank[0]["steps"][step]["losses"]
        # the ranks did see different batches (their local losses differ), yet ended with the same gradient
        assert losses[0] != losses[1]
        assert per_rank[0]["steps"][step]["grad_norm"] == pytest.approx(per_rank[1]["steps"][step]["grad_norm"])


@pytest.mark.slow
def test_ddp_negative_control_skipped_teacher_term_raises(tmp_path):
    """The teacher term left out by a Python ``if`` on step 0: DDP raises at the next forward."""
    results = _spawn(tmp_path, ["nnUNetTrainerConfKD"], skip_teacher_at=0)
    for rank, per_trainer in enumerate(results):
        result = per_trainer["nnUNetTrainerConfKD"]
        assert "error" in result, f"rank {rank}: skipping the teacher term raised nothing"
        assert result["error"]["step"] == 1
        assert "Expected to have finished reduction" in result["error"]["message"]
        # the skipped step itself left the teacher decoder without gradients
        missing = result["steps"][0]["missing_grad"]
        assert missing and all(n.startswith("teacher_decoder.") for n in missing)


# ======================================================================================================================
# The trainer's own data path: real trainers in both ranks, batches from their own training loaders.
# ======================================================================================================================

LOADER_STEPS = 3
LOADER_SEED = 1234  # rank r seeds NumPy and torch with LOADER_SEED + r: different data and different initial weights
NNUNET_ENV = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_extTrainer")
LOADER_TRAINERS = (
    "nnUNetTrainerConfKD_smoke",  # "add": 3 strong + 3 other cases on each rank
    "nnUNetTrainerConfKD_replaceHalf_smoke",  # "replace": 1 strong + 2 other cases on each rank
    "nnUNetTrainerStrongOnly_smoke",  # "replace" with strong_fraction 1: 3 strong cases on each rank
)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def _gather_objects(obj) -> list:
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _install_cpu_ddp(record: dict) -> None:
    """Rebind the ``DDP`` name of nnU-Net's trainer module: the same wrapper, without the CUDA device ids."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module

    assert nnunet_trainer_module.DDP is DistributedDataParallel  # the name nnunetv2 2.8.1 wraps with

    def cpu_ddp(module, device_ids=None, **kwargs):
        record["calls"] = record.get("calls", 0) + 1
        record["device_ids"] = device_ids
        # the ranks start from different random weights; the wrapper broadcasts rank 0's
        record["equal_before_wrap"], _ = _gather_equal(_flat(module.parameters()))
        return DistributedDataParallel(module, **kwargs)

    nnunet_trainer_module.DDP = cpu_ddp


def _train_through_loader(rank: int, trainer_name: str, log) -> None:
    """Build, initialise and train ``trainer_name`` for LOADER_STEPS steps on batches of its own training loader.

    ``log(record)`` writes one record at once (a set-up record, then per step a "drawn" record before ``train_step``
    and a "stepped" record after it), so that the parent can check what was drawn even if a step crashes.
    """
    wrap: dict = {}
    _install_cpu_ddp(wrap)
    preprocessed = os.path.join(os.environ["nnUNet_preprocessed"], "Dataset990_ConfKDSynthetic")
    plans = load_json(os.path.join(preprocessed, "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = load_json(os.path.join(preprocessed, "dataset.json"))
    np.random.seed(LOADER_SEED + rank)
    torch.manual_seed(LOADER_SEED + rank)
    trainer = trainer_class(trainer_name)(plans=plans, configuration="2d", fold=0, dataset_json=dataset_json,
                                          device=torch.device("cpu"))
    setup = {"kind": "setup", "is_ddp": trainer.is_ddp, "init_device": str(trainer.device)}
    # nnU-Net's __init__ moves every DDP trainer to cuda:<rank> and makes a CUDA GradScaler: back to the CPU setup
    trainer.device = torch.device("cpu")
    trainer.grad_scaler = None
    setup["compile"] = trainer._do_i_compile()
    trainer.initialize()
    net = unwrap(trainer.network)
    setup.update(
        wrap=wrap, wrapped=isinstance(trainer.network, DistributedDataParallel),
        wrapped_device_ids=getattr(trainer.network, "device_ids", "n/a"),
        find_unused_parameters=getattr(trainer.network, "find_unused_parameters", "n/a"),
        param_devices=sorted({str(p.device) for p in net.parameters()}), batch_size=trainer.batch_size,
        batch_counts=list(trainer._batch_counts()), same_init=_gather_equal(_flat(net.parameters()))[0])
    log(setup)
    names = [n for n, _ in net.named_parameters()]
    train_loader, _ = trainer.get_dataloaders()
    trainer.network.train()
    for step in range(LOADER_STEPS):
        batch = next(train_loader)
        keys = [str(k) for k in batch["keys"]]
        n_full = int(full_mask(keys, trainer.supervision).sum())
        log({"kind": "drawn", "step": step, "keys": keys, "levels": [trainer.supervision[k] for k in keys],
             "n_full_per_rank": _gather_objects(n_full),
             "checksums": _gather_objects(float(batch["data"].double().sum()))})
        out = trainer.train_step(batch)
        missing = [n for n, p in zip(names, net.parameters(), strict=True) if p.grad is None]
        grads = torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.detach().flatten()
                           for p in net.parameters()])
        grads_equal, grad_diff = _gather_equal(grads)
        weights_equal, weight_diff = _gather_equal(_flat(net.parameters()))
        log({"kind": "stepped", "step": step, "terms": {k: float(v) for k, v in out.items()},
             "missing_grad": missing, "grads_equal": grads_equal, "grad_diff": grad_diff,
             "grad_norm": float(grads.norm()), "weights_equal": weights_equal, "weight_diff": weight_diff})


def _loader_worker(rank: int, port: int, env: dict, trainer_name: str, outdir: str) -> None:
    os.environ.update(env)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE, timeout=TIMEOUT)
    try:
        with open(os.path.join(outdir, f"rank{rank}.jsonl"), "w") as f:
            def log(record: dict) -> None:
                f.write(json.dumps(record) + "\n")
                f.flush()

            _train_through_loader(rank, trainer_name, log)
    finally:
        dist.destroy_process_group()


def _read_log(path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {"setup": next((r for r in records if r["kind"] == "setup"), None),
            "drawn": [r for r in records if r["kind"] == "drawn"],
            "stepped": [r for r in records if r["kind"] == "stepped"]}


@pytest.mark.slow
@pytest.mark.parametrize("trainer_name", LOADER_TRAINERS)
def test_ddp_steps_through_the_trainers_own_loader(planned_dataset, tmp_path, trainer_name):
    """Two ranks, each a real trainer on the synthetic dataset: batches from its own loader, its own train step."""
    env = {k: planned_dataset.env[k] for k in NNUNET_ENV}
    env.update(nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="0", nnUNet_compile="f")
    crash = None
    try:
        mp.spawn(_loader_worker, args=(_free_port(), env, trainer_name, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    except (mp.ProcessExitedException, mp.ProcessRaisedException) as e:
        crash = e  # check what was drawn first: a wrong composition explains most crashes
    logs = [_read_log(tmp_path / f"rank{rank}.jsonl") for rank in range(WORLD_SIZE)]

    cls = trainer_class(trainer_name)
    plan_batch = load_json(str(planned_dataset.preprocessed / "nnUNetPlans.json"))["configurations"]["2d"][
        "batch_size"]
    n_strong, n_other = batch_counts(plan_batch, WORLD_SIZE, cls.batch_composition, cls.strong_fraction,
                                     cls.weak_ratio)
    split = [plan_batch // WORLD_SIZE + (r < plan_batch % WORLD_SIZE) for r in range(WORLD_SIZE)]  # nnU-Net's
    for rank, log in enumerate(logs):
        setup = log["setup"]
        assert setup is not None, f"rank {rank} did not get through initialize(): {crash}"
        # nnU-Net's DDP path ran, on CPU, uncompiled, wrapped once by the CPU wrapper
        assert setup["is_ddp"] and setup["init_device"] == f"cuda:{rank}"  # what nnU-Net's __init__ does under DDP
        assert setup["compile"] is False
        assert setup["wrapped"] and setup["wrapped_device_ids"] is None and setup["find_unused_parameters"] is False
        assert setup["wrap"]["calls"] == 1 and setup["wrap"]["device_ids"] == [rank]
        assert setup["param_devices"] == ["cpu"]
        assert not setup["wrap"]["equal_before_wrap"] and setup["same_init"]
        assert setup["batch_size"] == split[rank]
        assert setup["batch_counts"] == [n_strong, n_other]
        # every rank draws n_strong + n_other cases, so nnU-Net's DDP batch Dice gathers equal shapes
        loader_batch = n_strong + n_other
        for drawn in log["drawn"]:
            where = f"rank {rank} step {drawn['step']}: {drawn['levels']}"
            assert drawn["n_full_per_rank"] == [n_strong] * WORLD_SIZE, where
            assert len(drawn["keys"]) == loader_batch, where
            if n_other == 0:  # a strong-only baseline: no other case at all
                assert set(drawn["levels"]) == {"full"}, where
        for stepped in log["stepped"]:
            where = f"rank {rank} step {stepped['step']}"
            assert stepped["missing_grad"] == [], f"{where}: no gradient for {stepped['missing_grad']}"
            assert stepped["grads_equal"], f"{where}: gradients differ by {stepped['grad_diff']}"
            assert stepped["grad_norm"] > 0
            assert all(np.isfinite(v) for v in stepped["terms"].values()), f"{where}: {stepped['terms']}"
            assert stepped["weights_equal"], f"{where}: weights differ by {stepped['weight_diff']}"
    assert crash is None, f"a worker crashed after the steps above passed their checks: {crash}"
    for step in range(LOADER_STEPS):
        drawn = [log["drawn"][step] for log in logs]
        stepped = [log["stepped"][step] for log in logs]
        # the ranks drew different batches (else equal gradients would prove nothing), yet got the same gradient
        assert drawn[0]["checksums"][0] != drawn[0]["checksums"][1]
        assert stepped[0]["terms"]["loss"] != stepped[1]["terms"]["loss"]
        assert stepped[0]["grad_norm"] == pytest.approx(stepped[1]["grad_norm"])
