"""PyTorch's own distributed engine, as geospot uses it (`torchrun` + `torch.distributed`).

`torchrun --nproc-per-node N -m geospot ...` starts N processes with `RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` set; `init()` joins
them into one process group (NCCL when every rank has its own GPU, gloo on
CPU). Outside torchrun everything here degrades to one process: rank 0 of 1,
no process group, barriers that return at once. No scheduler of our own.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "all_reduce_sum", "barrier", "broadcast_floats", "current", "init", "shutdown"]

# Ranks wait at barriers for the slowest rank's share (hours of embedding on CPU): a long timeout.
_TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("GEOSPOT_DIST_TIMEOUT_S", 6 * 3600)))


@dataclass(frozen=True)
class Context:
    """Where this process stands: `rank` of `world_size`, `local_rank` on its node, its `device`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """True inside `torchrun` (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _device(local_rank: int, want: str) -> torch.device:
    if want not in ("auto", "cpu") and not want.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {want!r}")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {want!r} asked for, but torch sees no CUDA GPU")
    index = local_rank % torch.cuda.device_count() if want in ("auto", "cuda") else torch.device(want).index
    return torch.device("cuda", index)


def _share_cpus(local_rank: int, local_world: int) -> None:
    """Give each CPU rank of a node its own cores, so N ranks do not each start a thread per core
    (ONNX Runtime and torch size their pools from this process's affinity)."""
    if local_world < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    mine = cores[local_rank::local_world] or [cores[local_rank % len(cores)]]
    os.sched_setaffinity(0, mine)
    torch.set_num_threads(len(mine))


def init(device: str = "auto", backend: str | None = None) -> Context:
    """Join the process group started by torchrun (once per process) and pick this rank's device.

    `backend`: None = NCCL when the device is a GPU, else gloo. Without torchrun: one process, no group.
    """
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(local_rank, device)
    if dev.type == "cuda":  # cuBLAS needs this to honour torch.use_deterministic_algorithms (seeded training)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if world > 1 and dev.type == "cpu":
        _share_cpus(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"), timeout=_TIMEOUT,
                                rank=rank, world_size=world)
    return Context(rank, world, local_rank, dev)


def current() -> Context:
    """The context of an already-initialised process (rank 0 of 1 when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device | None = None) -> list[float]:
    """Element-wise sum over ranks of a few floats (float64 on the wire)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device or torch.device("cpu"))
    dist.all_reduce(t)
    return t.cpu().tolist()


def broadcast_floats(values: list[float], src: int = 0, device: torch.device | None = None) -> list[float]:
    """Rank `src`'s floats on every rank (a tensor on the wire, never a pickle)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device or torch.device("cpu"))
    dist.broadcast(t, src=src)
    return t.cpu().tolist()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
