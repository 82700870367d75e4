"""The multi-process runs of ``scpl bench pipeline``: gloo ranks, one thread each.

* :func:`run_processes`: the decoupled model on the distributed executor (K or K x R ranks);
* :func:`run_peer`: BP pipelined with ``torch.distributed.pipelining`` (GPipe or 1F1B);
* :func:`run_ddp`: BP with DistributedDataParallel, every rank on its share of each batch.

Each returns the samples per second measured on the last rank (with its final state where the
benchmark compares parameters). The ranks are forked from a fork server that imported torch and
this module once, so that a group of ranks starts without paying each rank's imports (two seconds
a rank here); where there is no fork server (Windows) they are spawned.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import tempfile
import time
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ..executors import DistributedExecutor
from ..seed import seed_everything
from . import workloads
from .settings import Settings
from .workloads import build, make_batches, sps


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_method() -> str:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    # (a torch optimizer imports torch._dynamo, a second, when given its parameters)
    multiprocessing.get_context("forkserver").set_forkserver_preload(["torch", "torch._dynamo", __name__])
    return "forkserver"


def _spawn(fn: Callable, s: Settings, ranks: int, *extra) -> list[dict]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(fn, args=(ranks, s, port, tmp, *extra), nprocs=ranks, join=True,
                           start_method=_start_method())
        return [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(ranks)]


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def _save(tmp: str, rank: int, result: dict) -> None:
    torch.save(result, os.path.join(tmp, f"{rank}.pt"))
    dist.destroy_process_group()


def _decoupled(rank: int, world: int, s: Settings, port: int, tmp: str, counts: list[int],
               replicas: int) -> None:

    _init(rank, world, port)
    model = build(s, s.method, counts)
    times: list[float] = []
    batches = make_batches(s)
    executor = DistributedExecutor(s.micro_batches, replicas=replicas)
    dist.barrier()
    model.fit(batches, executor=executor, progress=False,
              on_step=lambda step, losses: times.append(time.perf_counter()))
    stage = rank // replicas
    state = {f"blocks.{stage}.{k}": v for k, v in model.blocks[stage].state_dict().items()}
    _save(tmp, rank, {"sps": sps(times, s) if rank == world - 1 else None, "state": state})


def run_processes(s: Settings, counts: list[int], replicas: int = 1) -> tuple[float, dict]:
    """Samples/s of the distributed executor on ``stages x replicas`` spawned ranks, and the
    final state of the first replica of every stage."""
    results = _spawn(_decoupled, s, s.stages * replicas, counts, replicas)
    state = {k: v for r in results[::replicas] for k, v in r["state"].items()}
    return results[-1]["sps"], state


def _peer(rank: int, world: int, s: Settings, port: int, tmp: str, counts: list[int],
          schedule_name: str) -> None:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe


    _init(rank, world, port)
    seed_everything(s.seed)
    layers = list(workloads.WORKLOADS[s.model]().children())
    start = sum(counts[:rank])
    part = nn.Sequential(*layers[start : start + counts[rank]])
    stage = PipelineStage(part, rank, world, torch.device("cpu"))
    schedule_cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule_name]
    schedule = schedule_cls(stage, n_microbatches=s.micro_batches, loss_fn=nn.functional.cross_entropy)
    optimizer = torch.optim.Adam(part.parameters(), lr=1e-3)
    last = rank == world - 1
    times = []
    dist.barrier()
    for x, y in make_batches(s):
        optimizer.zero_grad(set_to_none=True)
        if rank == 0:
            schedule.step(x)
        elif last:
            schedule.step(target=y, losses=[])
        else:
            schedule.step()
        optimizer.step()
        times.append(time.perf_counter())
    _save(tmp, rank, {"sps": sps(times, s) if last else None})


def run_peer(s: Settings, counts: list[int], schedule: str) -> float:
    """Samples/s of the BP pipeline cut by ``counts`` with ``schedule`` ``"gpipe"`` or ``"1f1b"``."""
    return _spawn(_peer, s, s.stages, counts, schedule)[-1]["sps"]


def _ddp(rank: int, world: int, s: Settings, port: int, tmp: str) -> None:
    from torch.nn.parallel import DistributedDataParallel


    _init(rank, world, port)
    seed_everything(s.seed)
    model = DistributedDataParallel(workloads.WORKLOADS[s.model]())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    dist.barrier()
    for x, y in make_batches(s):
        x, y = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()  # the all-reduce overlaps this backward
        optimizer.step()
        times.append(time.perf_counter())
    _save(tmp, rank, {"sps": sps(times, s)})


def run_ddp(s: Settings) -> float:
    """Samples/s of BP with DistributedDataParallel on as many ranks as the decoupled run uses."""
    return _spawn(_ddp, s, s.ranks)[-1]["sps"]
