"""Distributed data-parallel training of the sequential models: the process-group plumbing.

The trainer (models.training) runs under PyTorch DistributedDataParallel whenever a default
process group with more than one process exists: each rank trains on its shard of every
global batch, rank 0 evaluates and decides early stopping for all. This module joins or
starts such groups:

- under `torchrun` (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT): `init_from_env()` in each process, `shutdown()` at the end;
- on one machine, from Python: `spawn(fn, nproc, *args)` (torch.multiprocessing, 127.0.0.1
  and a free port) or `fit_distributed(model, train, valid, nproc)`.

Backend: NCCL when the model trains on CUDA (one GPU per local rank), gloo on CPU.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and outside a process group): the process that evaluates and saves."""
    return world()[0] == 0


def uses_cuda(device: str = "auto") -> bool:
    return str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def init_from_env(device: str = "auto", backend: str | None = None) -> bool:
    """Join the process group a launcher (torchrun) describes in the environment.

    Returns False, doing nothing, when WORLD_SIZE is unset or 1; True once in a group (also
    when one was already initialised). With CUDA the process takes GPU LOCAL_RANK and the
    backend is NCCL; otherwise gloo.
    """
    if dist.is_initialized():
        return True
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={size} but {', '.join(missing)} not set: launch with torchrun "
                         f"(or set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")
    cuda = uses_cuda(device)
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices: "
                             f"use --nproc_per_node <= the number of GPUs, or device cpu")
        torch.cuda.set_device(local)
    backend = backend or ("nccl" if cuda and dist.is_nccl_available() else "gloo")
    dist.init_process_group(backend, init_method="env://")
    return True


def shutdown(wait: bool = False) -> None:
    """Leave the process group (if any). wait=True: first a barrier, so that every rank leaves
    together (after a normal finish; gloo could abort a rank that tore its group down while
    rank 0 was still saving, "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        if wait:
            barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, nproc: int, port: int, fn, args: tuple, threads: int | None, backend: str | None,
               device: str):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)
    init_from_env(device, backend)
    try:
        fn(*args)
    except BaseException:
        shutdown()                    # no barrier: the other ranks may never reach it
        raise
    shutdown(wait=True)


def spawn(fn, nproc: int, *args, threads: int | None = None, backend: str | None = None,
          device: str = "auto") -> None:
    """Run fn(*args) in `nproc` fresh local processes joined in one process group.

    fn must be importable by name (a module-level function); args are pickled to the
    children. threads: torch threads per process (default: the CPU cores shared out).
    device: where the models will train ("cpu" keeps gloo on a CUDA machine; CUDA: rank r
    takes GPU r). A child's exception is raised here.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, not {nproc}")
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    mp.spawn(_rank_main, args=(nproc, free_port(), fn, args, threads, backend, device), nprocs=nproc, join=True)


def _fit_and_save(model, train, valid, out: str) -> None:
    model.fit(train, valid)
    if is_main():
        model.save(out)


def fit_distributed(model, train, valid=None, nproc: int = 2, threads: int | None = None):
    """Fit a sequential model with DDP over `nproc` local processes; returns rank 0's fitted model.

    `model` is the unfitted estimator (its hyper-parameters travel to every process); the
    fitted model comes back through its saved artifact.
    """
    with tempfile.TemporaryDirectory(prefix="migrec-ddp-") as tmp:
        out = str(Path(tmp) / "model")
        spawn(_fit_and_save, nproc, model, train, valid, out, threads=threads, device=getattr(model, "device", "auto"))
        return type(model).load(out)


# -- collectives the trainer uses ---------------------------------------------------------------
def _control_device(device: torch.device) -> torch.device:
    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_values(values: list, device: torch.device) -> list:
    """Rank 0's numbers, on every rank (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=_control_device(device))
    dist.broadcast(t, src=0)
    return t.cpu().tolist()


def all_sum(values: list, device: torch.device) -> list:
    """The element-wise sum of every rank's numbers (float64)."""
    t = torch.tensor(values, dtype=torch.float64, device=_control_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def broadcast_module(module: torch.nn.Module) -> None:
    """Every parameter and buffer of `module` set to rank 0's values."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def data_parallel(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`module` under DistributedDataParallel (its trainable parameters: those that require grad).

    Buffers are not broadcast each step: the sequential models' buffers (text vectors, seen
    flags) are data, identical on every rank.
    """
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    quiet = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}
    return DistributedDataParallel(module, device_ids=ids, **quiet)
