"""``scpl bench pipeline``: decoupled pipelines against the sequential engine, BP, a BP pipeline
and BP with DistributedDataParallel.

Ratios are medians of per-repeat ratios. All configurations train the same workload
(:mod:`scpl.bench.workloads`: ``cnn``, ``cnn_fc`` or ``embed``) on the same synthetic batches,
each cut into the same micro-batches, and are timed side by side in one run, ``repeats`` times.
Samples per second count the steps after ``warmup``:

* ``sequential``: the decoupled engine, one worker (1 thread);
* ``threads``: the threaded executor, one thread per block (1 intra-op thread each);
* ``processes``: the distributed executor, one gloo rank (1 thread) per block;
* ``replicated`` (``--replicas R``): the distributed executor on K x R ranks;
* ``bp`` / ``bp_all_cores``: end-to-end BP through the same engine on 1 thread / all cores;
* ``ddp``: BP with torch's DistributedDataParallel on as many gloo ranks as the decoupled run
  uses (K, or K x R), each on its share of every batch, gradients all-reduced every step;
* ``peer_pipeline``: BP pipelined over the same ranks with ``torch.distributed.pipelining``
  (best of GPipe and 1F1B), the tool a user would otherwise pick for model parallelism. It
  gets its own best cut among the decoupled cut and its one-layer neighbours;
* ``compiled`` (``--compile``): the sequential engine with every block's training forward
  compiled by ``torch.compile`` (compilation happens in the warm-up steps).

``max_param_diff`` is the largest absolute difference between the parameters the sequential,
threaded and distributed runs reach on the same batches (0 on CPU: they compute the same thing).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

from ..executors import SequentialExecutor, ThreadedExecutor
from ..model import DecoupledModel
from ..seed import seed_everything
from . import workers, workloads
from .settings import Settings
from .workloads import build, make_batches, sps


def balanced_counts(s: Settings) -> tuple[list[int], str]:
    """The auto-balanced cut for ``s.stages`` blocks, profiled on one micro-batch with 1 thread."""
    torch.set_num_threads(1)
    seed_everything(s.seed)
    model = DecoupledModel(workloads.WORKLOADS[s.model](), "auto", num_blocks=s.stages, method=s.method,
                           num_classes=10,
                           example_input=workloads.example(s.model, s.micro_batch // s.replicas))
    assert model.balanced_cut is not None  # blocks="auto" measured it
    return model.balanced_cut.counts, str(model.balanced_cut)


def flat(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``model``'s state."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_local(s: Settings, method: str, counts, executor, threads: int,
              compile: bool = False) -> tuple[float, dict]:
    """Samples/s of one in-process run and its final state."""
    torch.set_num_threads(threads)
    model = build(s, method, counts, compile)
    times: list[float] = []
    model.fit(make_batches(s), executor=executor, progress=False,
              on_step=lambda step, losses: times.append(time.perf_counter()))
    return sps(times, s), flat(model)


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
    trials = {str(c): max(workers.run_peer(s, c, "gpipe"), workers.run_peer(s, c, "1f1b"))
              for c in neighbour_cuts(counts)}
    best = max(trials, key=lambda c: trials[c])
    return [int(v) for v in best.strip("[]").split(",")], {k: round(v, 1) for k, v in trials.items()}


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
    log(f"{s.model}: balanced cut {counts} (profiled on one micro-batch of {s.micro_batch}):\n{report}")
    if s.peer_search:
        peer_counts, peer_trials = best_peer_cut(s, counts)
        log(f"peer pipeline cut {peer_counts} (best of {peer_trials} samples/s)")
    else:
        peer_counts = counts
    m = s.micro_batches
    keys = ["sequential", "threads", "processes", "bp", "bp_all_cores", "peer_gpipe", "peer_1f1b", "ddp"]
    keys += ["replicated"] if s.replicas > 1 else []
    keys += ["compiled"] if s.compile else []
    samples: dict[str, list[float]] = {k: [] for k in keys}
    diffs = []
    for rep in range(s.repeats):
        seq_sps, seq_state = run_local(s, s.method, counts, SequentialExecutor(m), 1)
        thr_sps, thr_state = run_local(s, s.method, counts, ThreadedExecutor(m), 1)
        proc_sps, proc_state = workers.run_processes(s, counts, replicas=1)
        measured = {"sequential": seq_sps, "threads": thr_sps, "processes": proc_sps,
                    "bp": run_local(s, "bp", counts, SequentialExecutor(m), 1)[0],
                    "bp_all_cores": run_local(s, "bp", counts, SequentialExecutor(m), all_cores)[0],
                    "peer_gpipe": workers.run_peer(s, peer_counts, "gpipe"),
                    "peer_1f1b": workers.run_peer(s, peer_counts, "1f1b"),
                    "ddp": workers.run_ddp(s)}
        if s.replicas > 1:
            measured["replicated"] = workers.run_processes(s, counts, replicas=s.replicas)[0]
        if s.compile:
            measured["compiled"] = run_local(s, s.method, counts, SequentialExecutor(m), 1, compile=True)[0]
        for key, value in measured.items():
            samples[key].append(value)
        diffs.append(max_diff(seq_state, thr_state, proc_state))
        log(f"repeat {rep + 1}/{s.repeats}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in samples.items())
            + " samples/s")
    med = {k: statistics.median(v) for k, v in samples.items()}

    def ratio(num: str, *den: str) -> float:
        """Median over repeats of the per-repeat ratio (runs of one repeat are back to back,
        so a slow phase of the machine affects both sides of a ratio).
        """
        return statistics.median(samples[num][r] / max(samples[d][r] for d in den) for r in range(s.repeats))

    speedup = ratio("processes", "sequential")
    result = {
        "model": s.model, "stages": s.stages, "replicas": s.replicas, "batch_size": s.batch_size,
        "micro_batch": s.micro_batch, "method": s.method, "blocks": counts, "peer_blocks": peer_counts,
        "repeats": s.repeats, "cores": all_cores,
        **{f"{k}_sps": v for k, v in med.items()},
        "bp_all_cores_threads": all_cores,
        "peer_pipeline_sps": max(med["peer_gpipe"], med["peer_1f1b"]),
        "speedup_processes_vs_sequential": speedup,
        "speedup_threads_vs_sequential": ratio("threads", "sequential"),
        "efficiency": speedup / s.stages,
        "speedup_vs_peer_pipeline": ratio("processes", "peer_gpipe", "peer_1f1b"),
        "speedup_vs_bp_all_cores": ratio("processes", "bp_all_cores"),
        "speedup_vs_ddp": ratio("replicated" if s.replicas > 1 else "processes", "ddp"),
        "max_param_diff": max(diffs),
        "samples": samples,
    }
    if s.replicas > 1:
        result["speedup_replicated_vs_processes"] = ratio("replicated", "processes")
    if s.compile:
        result["speedup_compiled_vs_eager"] = ratio("compiled", "sequential")
    return result
