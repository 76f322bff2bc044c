"""torchrun set-up shared by the reasoner CLIs (train, eval): one place for the process group.

Under torchrun (RANK and WORLD_SIZE set) `init_from_env(device)` starts the process group
(NCCL on GPUs, gloo on CPU) and returns this rank's device; alone it does nothing.
`torchrun_group(device)` is the same as a context that also tears down a group it started.
"""
from __future__ import annotations

import contextlib
import os


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str) -> str:
    """Start torch.distributed if torchrun launched us; returns the device to use."""
    if not launched_by_torchrun():
        return device
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    if str(device).startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return device


@contextlib.contextmanager
def torchrun_group(device: str):
    """init_from_env(device) for the length of one command. A process group started here is
    destroyed on the way out -- after a barrier when the command ended normally (returned, or
    sys.exit after a signal stop every rank agreed on), so no rank tears down the rendezvous
    store under another and no collective's work outlives the interpreter (a gloo rank that
    exits with its group alive can abort at interpreter shutdown). After an error there is no
    barrier: the other ranks may never arrive."""
    import torch.distributed as dist
    started = launched_by_torchrun() and not (dist.is_available() and dist.is_initialized())
    device = init_from_env(device)
    clean = False
    try:
        yield device
        clean = True
    except SystemExit as e:
        clean = e.code in (0, None, 130, 143)
        raise
    finally:
        if started and dist.is_initialized():
            if clean:
                dist.barrier()
            dist.destroy_process_group()


def dist_info():
    """(rank, world size); (0, 1) without torch.distributed."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(obj, world: int):
    """Every rank's `obj`, in rank order (just [obj] without torch.distributed)."""
    if world == 1:
        return [obj]
    import torch.distributed as dist
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier(world: int) -> None:
    """Wait for every rank (nothing without torch.distributed)."""
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
