"""Two-process CPU DDP (gloo) training steps of the dual network with the ConfKD objective.

nnU-Net wraps the network in ``DistributedDataParallel`` with ``find_unused_parameters=False``: every parameter of both
decoders, every ``seg_layer`` included, needs a gradient in every step on every rank, whatever the batch composition.
Each rank draws different data; the number of fully labeled cases is the same on both ranks within a step (the
trainer guarantees it, and the all-gathered batch Dice needs it) and changes from step to step. A negative control
(the teacher term skipped by a Python ``if``) shows that the setup does catch an unused parameter.
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
from conftest import (
    NUM_CLASSES,
    NUM_INPUT_CHANNELS,
    make_plans_manager,
    mixed_batch,
    trainer_class,
    trainer_confkd_loss,
)
from torch.nn.parallel import DistributedDataParallel

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
TIMEOUT = timedelta(seconds=60)


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
