"""Data-parallel training under ``torchrun``: NCCL on GPUs, gloo on CPUs; one process without it.

Rank 0 owns everything stateful (the advisory lock, the watermark cut, Feast reads, the publish);
it hands the training data to the other ranks, every rank trains its shard of each global batch
inside DistributedDataParallel, and only rank 0 writes the artifact and the version.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, name: str) -> torch.device:
        """``--device auto|cpu|cuda``, pinned to this rank's GPU under torchrun."""
        if name == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; the training data is small next to the model)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, value: float) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return float(t.item())

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # The only buffers are BERT's constant position ids: nothing to keep in step.
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def join(device_name: str = "auto") -> World:
    """The torchrun world from its environment variables, or a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    use_nccl = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        # gloo on CPU carries the object broadcasts too; NCCL needs CUDA tensors for them.
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return world
