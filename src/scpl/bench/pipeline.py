"""``scpl bench pipeline``: decoupled pipelines against the sequential engine, BP and a BP pipeline.

Ratios are medians of per-repeat ratios. All configurations train the same CNN (64-64-128-128
channels, 28x28x1 inputs, Adam) on the same synthetic batches, each cut into the same
micro-batches, and are timed side by side in one run, ``repeats`` times (median reported).
Samples per second count the steps after ``warmup``:

* ``sequential``: the decoupled engine, one worker (1 thread);
* ``threads``: the threaded executor, one thread per block (1 intra-op thread each);
* ``processes``: the distributed executor, one gloo rank (1 thread) per block;
* ``bp`` / ``bp_all_cores``: end-to-end BP through the same engine on 1 thread / all cores;
* ``peer_pipeline``: BP pipelined over the same ranks with ``torch.distributed.pipelining``
  (best of GPipe and 1F1B), the tool a user would otherwise pick for model parallelism. It
  gets its own best cut among the decoupled cut and its one-layer neighbours.

``max_param_diff`` is the largest absolute difference between the parameters the sequential,
threaded and distributed runs reach on the same batches (0 on CPU: they compute the same thing).
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ..errors import ConfigError
from ..executors import DistributedExecutor, SequentialExecutor, ThreadedExecutor
from ..model import DecoupledModel
from ..seed import seed_everything


@dataclass
class Settings:
    """One benchmark: ``stages`` blocks, batches of ``batch_size`` cut into micro-batches of
    ``micro_batch``, ``warmup`` + ``steps`` steps per run, ``repeats`` runs of each configuration.
    """

    stages: int = 2
    batch_size: int = 256
    micro_batch: int = 64
    steps: int = 10
    warmup: int = 2
    repeats: int = 3
    method: str = "scpl"
    seed: int = 0

    @property
    def micro_batches(self) -> int:
        """Micro-batches per batch."""
        return self.batch_size // self.micro_batch

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings the benchmark cannot run, naming the fix."""
        if self.stages < 2:
            raise ConfigError(f"--stages must be >= 2 (a pipeline of one stage is the sequential engine), "
                              f"got {self.stages}")
        if self.micro_batch < 1 or self.batch_size < 1:
            raise ConfigError(f"--batch-size and --micro-batch must be >= 1, got {self.batch_size} and "
                              f"{self.micro_batch}")
        if self.batch_size % self.micro_batch:
            raise ConfigError(f"--batch-size {self.batch_size} is not a multiple of --micro-batch {self.micro_batch}")
        if self.micro_batches < self.stages:
            raise ConfigError(f"{self.micro_batches} micro-batch(es) per batch for {self.stages} stages: the "
                              "pipelines need at least one per stage; lower --micro-batch to "
                              f"{max(self.batch_size // self.stages, 1)} or less")
        if self.warmup < 1 or self.steps < 1 or self.repeats < 1:
            raise ConfigError("--warmup, --steps and --repeats must be >= 1 (the clock starts after the warm-up)")


def bench_cnn(num_classes: int = 10) -> nn.Sequential:
    """The benchmark CNN as a flat nn.Sequential (so that balancing may cut between any layers)."""
    def group(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(
        *group(1, 64), *group(64, 64), nn.MaxPool2d(2),
        *group(64, 128), *group(128, 128), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


def make_batches(s: Settings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ``warmup + steps`` seeded synthetic (images, labels) batches every configuration trains on."""
    g = torch.Generator().manual_seed(s.seed)
    n = s.warmup + s.steps
    return [(torch.randn(s.batch_size, 1, 28, 28, generator=g),
             torch.randint(0, 10, (s.batch_size,), generator=g)) for _ in range(n)]


def build(s: Settings, method: str, counts: Optional[list[int]]) -> DecoupledModel:
    """The benchmark CNN, seeded, as a DecoupledModel cut by ``counts`` and trained by ``method``."""
    seed_everything(s.seed)
    return DecoupledModel(bench_cnn(), counts, method=method, num_classes=10,
                          example_input=torch.zeros(2, 1, 28, 28))


def balanced_counts(s: Settings) -> tuple[list[int], str]:
    """The auto-balanced cut for ``s.stages`` blocks, profiled on one micro-batch with 1 thread."""
    torch.set_num_threads(1)
    seed_everything(s.seed)
    model = DecoupledModel(bench_cnn(), "auto", num_blocks=s.stages, method=s.method, num_classes=10,
                           example_input=torch.randn(s.micro_batch, 1, 28, 28))
    return model.balance.counts, str(model.balance)


def _sps(times: list[float], s: Settings) -> float:
    return s.steps * s.batch_size / (times[-1] - times[s.warmup - 1])


def _flat(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_local(s: Settings, method: str, counts, executor, threads: int) -> tuple[float, dict]:
    """Samples/s of one in-process run and its final state."""
    torch.set_num_threads(threads)
    model = build(s, method, counts)
    times: list[float] = []
    model.fit(make_batches(s), executor=executor,
              on_step=lambda step, losses: times.append(time.perf_counter()))
    return _sps(times, s), _flat(model)


# -- multi-process runs -------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(fn: Callable, s: Settings, counts, extra) -> list[dict]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(fn, args=(s, counts, extra, port, tmp), nprocs=s.stages, join=True,
                           start_method="spawn")
        return [torch.load(os.path.join(tmp, f"{r}.pt")) for r in range(s.stages)]


def _init(rank: int, world: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)


def _decoupled_worker(rank: int, s: Settings, counts, _extra, port: int, tmp: str) -> None:
    _init(rank, s.stages, port)
    model = build(s, s.method, counts)
    times: list[float] = []
    batches = make_batches(s)
    dist.barrier()
    model.fit(batches, executor=DistributedExecutor(s.micro_batches),
              on_step=lambda step, losses: times.append(time.perf_counter()))
    state = {f"blocks.{rank}.{k}": v for k, v in model.blocks[rank].state_dict().items()}
    torch.save({"sps": _sps(times, s) if rank == s.stages - 1 else None, "state": state},
               os.path.join(tmp, f"{rank}.pt"))
    dist.destroy_process_group()


def _peer_worker(rank: int, s: Settings, counts, schedule_name: str, port: int, tmp: str) -> None:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    _init(rank, s.stages, port)
    seed_everything(s.seed)
    layers = list(bench_cnn().children())
    start = sum(counts[:rank])
    part = nn.Sequential(*layers[start : start + counts[rank]])
    stage = PipelineStage(part, rank, s.stages, torch.device("cpu"))
    schedule_cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule_name]
    schedule = schedule_cls(stage, n_microbatches=s.micro_batches, loss_fn=nn.functional.cross_entropy)
    optimizer = torch.optim.Adam(part.parameters(), lr=1e-3)
    last = rank == s.stages - 1
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
    torch.save({"sps": _sps(times, s) if last else None}, os.path.join(tmp, f"{rank}.pt"))
    dist.destroy_process_group()


def run_processes(s: Settings, counts) -> tuple[float, dict]:
    """Samples/s of the distributed executor (one spawned gloo rank per block) and its final state."""
    results = _spawn(_decoupled_worker, s, counts, None)
    state = {k: v for r in results for k, v in r["state"].items()}
    return results[-1]["sps"], state


def run_peer(s: Settings, counts, schedule: str) -> float:
    """Samples/s of the BP pipeline cut by ``counts`` with ``schedule`` ``"gpipe"`` or ``"1f1b"``."""
    return _spawn(_peer_worker, s, counts, schedule)[-1]["sps"]


def neighbour_cuts(counts: list[int]) -> list[list[int]]:
    """``counts`` and every cut that moves one boundary by one layer (blocks stay non-empty)."""
    cuts = [list(counts)]
    for i in range(len(counts) - 1):
        for delta in (-1, 1):
            c = list(counts)
            c[i] += delta
            c[i + 1] -= delta
            if min(c) >= 1:
                cuts.append(c)
    return cuts


def best_peer_cut(s: Settings, counts: list[int]) -> tuple[list[int], dict[str, float]]:
    """The BP pipeline's own best cut near the decoupled one (its balance differs: no local
    heads, but input gradients at each boundary), by one run of each schedule per candidate.
    """
    trials = {str(c): max(run_peer(s, c, "gpipe"), run_peer(s, c, "1f1b")) for c in neighbour_cuts(counts)}
    best = max(trials, key=trials.get)
    return [int(v) for v in best.strip("[]").split(",")], {k: round(v, 1) for k, v in trials.items()}


# -- the whole benchmark ------------------------------------------------------------------
def max_diff(*states: dict) -> float:
    """Largest absolute difference of any entry between the first state dict and each other one."""
    ref = states[0]
    worst = 0.0
    for other in states[1:]:
        for k, v in ref.items():
            worst = max(worst, (v.double() - other[k].double()).abs().max().item() if v.numel() else 0.0)
    return worst


def run(s: Settings, log: Callable[[str], None] = print) -> dict:
    """Run every configuration ``s.repeats`` times, interleaved; return the medians and ratios."""
    s.validate()
    all_cores = os.cpu_count() or 1
    counts, report = balanced_counts(s)
    log(f"balanced cut {counts} (profiled on one micro-batch of {s.micro_batch}):\n{report}")
    peer_counts, peer_trials = best_peer_cut(s, counts)
    log(f"peer pipeline cut {peer_counts} (best of {peer_trials} samples/s)")
    m = s.micro_batches
    samples: dict[str, list[float]] = {k: [] for k in ("sequential", "threads", "processes", "bp",
                                                       "bp_all_cores", "peer_gpipe", "peer_1f1b")}
    diffs = []
    for rep in range(s.repeats):
        seq_sps, seq_state = run_local(s, s.method, counts, SequentialExecutor(m), 1)
        thr_sps, thr_state = run_local(s, s.method, counts, ThreadedExecutor(m), 1)
        proc_sps, proc_state = run_processes(s, counts)
        bp_sps, _ = run_local(s, "bp", counts, SequentialExecutor(m), 1)
        bp_all_sps, _ = run_local(s, "bp", counts, SequentialExecutor(m), all_cores)
        gpipe = run_peer(s, peer_counts, "gpipe")
        one_f_one_b = run_peer(s, peer_counts, "1f1b")
        for key, value in zip(samples, (seq_sps, thr_sps, proc_sps, bp_sps, bp_all_sps, gpipe, one_f_one_b)):
            samples[key].append(value)
        diffs.append(max_diff(seq_state, thr_state, proc_state))
        log(f"repeat {rep + 1}/{s.repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items())
            + " samples/s")
    med = {k: statistics.median(v) for k, v in samples.items()}
    peer = max(med["peer_gpipe"], med["peer_1f1b"])

    def ratio(num: str, *den: str) -> float:
        """Median over repeats of the per-repeat ratio (runs of one repeat are back to back,
        so a slow phase of the machine affects both sides of a ratio).
        """
        return statistics.median(samples[num][r] / max(samples[d][r] for d in den) for r in range(s.repeats))

    speedup = ratio("processes", "sequential")
    return {
        "stages": s.stages,
        "batch_size": s.batch_size,
        "micro_batch": s.micro_batch,
        "method": s.method,
        "blocks": counts,
        "peer_blocks": peer_counts,
        "repeats": s.repeats,
        "sequential_sps": med["sequential"],
        "threads_sps": med["threads"],
        "processes_sps": med["processes"],
        "bp_sps": med["bp"],
        "bp_all_cores_sps": med["bp_all_cores"],
        "bp_all_cores_threads": all_cores,
        "peer_pipeline_sps": peer,
        "peer_gpipe_sps": med["peer_gpipe"],
        "peer_1f1b_sps": med["peer_1f1b"],
        "speedup_processes_vs_sequential": speedup,
        "speedup_threads_vs_sequential": ratio("threads", "sequential"),
        "efficiency": speedup / s.stages,
        "speedup_vs_peer_pipeline": ratio("processes", "peer_gpipe", "peer_1f1b"),
        "speedup_vs_bp_all_cores": ratio("processes", "bp_all_cores"),
        "max_param_diff": max(diffs),
        "samples": samples,
    }
