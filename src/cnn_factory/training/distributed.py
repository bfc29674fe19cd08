"""Several processes, one training run: DistributedDataParallel when started by torchrun.

    torchrun --nproc_per_node=2 -m stages.train            # one process per GPU (or CPU share)
    dvc exp run -S train.sync_batchnorm=true ...           # (with torchrun as the command) batch norm over all GPUs

`cnn_factory.training.fit` calls `setup()` first (docs/scaling.md). Rank 0 alone logs, writes
checkpoints, pictures and the model; every rank validates its share of the val split and the sums
are added up over the ranks (training/validation.py), so all agree on the best epoch and on stopping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cnn_factory.errors import UserError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1 or dist.is_initialized()

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()  # a run without torchrun


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Joins the process group (NCCL on CUDA, each process on `cuda:<LOCAL_RANK>`; gloo on the CPU)
    when torchrun started us; returns the ranks and this process's device (SINGLE and `device` else)."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")  # torchrun's environment
    if not all(k in os.environ for k in names):
        return SINGLE, device
    rank, world, local = (int(os.environ[k]) for k in names)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(
                f"torchrun: LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible; "
                "lower --nproc_per_node"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world), device


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing the model file
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, d: Dist, device: torch.device, sync_batchnorm: bool, unused: bool) -> torch.nn.Module:
    """The model DDP trains (gradients averaged over ranks); the plain model is kept for saving.
    `unused`: some parameters get no gradient in some steps (a frozen encoder), which DDP must look for.

    sync_batchnorm (train.sync_batchnorm) turns batch norm into SyncBatchNorm first (CUDA only: PyTorch has no
    CPU implementation). The converted layers share the parameters and buffers of the originals,
    so the optimiser and the saved state_dict are unchanged."""
    if not d.enabled:
        return model
    if sync_batchnorm:
        if device.type == "cuda":
            # converts the children in place: MultiOutputNet's own module is returned as it is
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif d.main:
            print("train: train.sync_batchnorm ignored: SyncBatchNorm needs CUDA; each rank normalises alone")
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def all_sum(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    """The sum over ranks (in place); the tensor itself when single-process."""
    if d.enabled:
        dist.all_reduce(tensor)
    return tensor


def sync_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Rank 0's batch-norm running statistics on every rank (each rank updated them with its own batches)."""
    if d.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


class NoLive:
    """Stands in for dvclive's Live on ranks other than 0: every logging call does nothing."""

    step = 0

    def __enter__(self) -> NoLive:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None
