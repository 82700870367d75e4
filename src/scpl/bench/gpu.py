"""``scpl bench gpu``: the project's GPU check in one command, one JSON object.

On a CUDA machine (one GPU is enough; the parts are timed to finish in about 5 minutes):

* ``streams``: the threaded executor (one CUDA stream per block) against the sequential engine
  on one GPU, VGG-8 at CIFAR shape in 4 blocks: samples/s, their ratio, the parameters'
  largest difference (the executors compute the same thing);
* ``bf16``: the sequential engine in bf16 autocast against fp32: samples/s and their ratio;
* ``compile``: compiled blocks against eager (compilation inside the warm-up steps);
* ``memory``: peak memory measured with ``torch.cuda.max_memory_allocated`` during one training
  step of ResNet-110 at batch 1024: BP against K = 2, 4, 8 blocks (memory-balanced cuts);

and on every machine ``cpu_pipeline``: the distributed executor on K = 2, 4, 8 gloo CPU ranks
(``--cpu-ranks``, those the machine has cores for) against the sequential engine on the
benchmark CNN. Without CUDA the JSON says so and only the CPU part runs. A part that fails is
reported with its error and the others still run: GPU time is scarce.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from typing import Callable, Sequence

import torch

from ..executors import SequentialExecutor, ThreadedExecutor
from ..model import DecoupledModel
from ..models import CifarResNet, create_model
from ..seed import seed_everything

DEADLINE_S = 420.0


def _timed_fit(model: DecoupledModel, batches: list, executor, warmup: int) -> float:
    """Samples/s of ``model.fit`` over ``batches`` after ``warmup`` steps (CUDA synchronised)."""
    times: list[float] = []

    def on_step(step: int, losses: list[float]) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter())

    model.fit(batches, executor=executor, on_step=on_step, progress=False)
    n = sum(y.shape[0] for _, y in batches[warmup:])
    return n / (times[-1] - times[warmup - 1])


def _vgg(device: str, precision: str = "fp32", compile: bool = False, width: float = 1.0) -> DecoupledModel:
    seed_everything(0)
    return DecoupledModel(create_model("vgg8", num_classes=10, width=width), method="scpl", num_classes=10,
                          example_input=torch.zeros(2, 3, 32, 32), devices=device, precision=precision,
                          compile=compile)


def _batches(n: int, batch: int, device: str) -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch, 3, 32, 32, generator=g).to(device),
             torch.randint(0, 10, (batch,), generator=g).to(device)) for _ in range(n)]


def streams(steps: int = 20, warmup: int = 3, batch: int = 256, device: str = "cuda",
            width: float = 1.0) -> dict:
    """Threaded (one stream per block) against sequential on one GPU, same batches."""
    batches = _batches(warmup + steps, batch, device)
    seq, thr = _vgg(device, width=width), _vgg(device, width=width)
    seq_sps = _timed_fit(seq, batches, SequentialExecutor(), warmup)
    thr_sps = _timed_fit(thr, batches, ThreadedExecutor(threads_per_stage=None), warmup)
    diff = max((a.double() - b.double()).abs().max().item()
               for a, b in zip(seq.state_dict().values(), thr.state_dict().values()) if a.numel())
    return {"model": "vgg8", "blocks": len(seq.blocks), "batch_size": batch, "sequential_sps": seq_sps,
            "threads_sps": thr_sps, "threads_vs_sequential": thr_sps / seq_sps, "max_param_diff": diff}


def bf16(steps: int = 20, warmup: int = 3, batch: int = 256, device: str = "cuda",
         width: float = 1.0) -> dict:
    """The sequential engine in bf16 autocast against fp32."""
    batches = _batches(warmup + steps, batch, device)
    fp32_sps = _timed_fit(_vgg(device, "fp32", width=width), batches, SequentialExecutor(), warmup)
    bf16_sps = _timed_fit(_vgg(device, "bf16", width=width), batches, SequentialExecutor(), warmup)
    return {"fp32_sps": fp32_sps, "bf16_sps": bf16_sps, "bf16_vs_fp32": bf16_sps / fp32_sps}


def compiled(steps: int = 20, warmup: int = 3, batch: int = 256, device: str = "cuda",
             width: float = 1.0) -> dict:
    """Compiled blocks against eager (the first ``warmup`` steps compile)."""
    batches = _batches(warmup + steps, batch, device)
    eager_sps = _timed_fit(_vgg(device, width=width), batches, SequentialExecutor(), warmup)
    start = time.perf_counter()
    compiled_sps = _timed_fit(_vgg(device, compile=True, width=width), batches, SequentialExecutor(), warmup)
    return {"eager_sps": eager_sps, "compiled_sps": compiled_sps,
            "compiled_vs_eager": compiled_sps / eager_sps,
            "seconds_with_compilation": time.perf_counter() - start}


def memory(ks: Sequence[int] = (2, 4, 8), batch: int = 1024) -> dict:
    """Peak CUDA memory of one training step of ResNet-110: BP against K decoupled blocks."""
    x, y = torch.randn(batch, 3, 32, 32, device="cuda"), torch.arange(batch, device="cuda") % 10

    def peak(model: DecoupledModel) -> int:
        model.fit([(x, y)], progress=False)  # optimizer states exist from here on, as in training
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model.fit([(x, y)], progress=False)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    out: dict = {"model": "resnet110", "batch_size": batch, "peak_bytes": {}}
    seed_everything(0)
    bp = DecoupledModel(create_model("resnet110"), method="bp", num_classes=10, example_input=x[:2],
                        devices="cuda")
    out["peak_bytes"]["bp"] = peak(bp)
    del bp
    for k in ks:
        torch.cuda.empty_cache()
        seed_everything(0)
        net = create_model("resnet110")
        assert isinstance(net, CifarResNet)
        model = DecoupledModel(net, net.block_counts(k, "memory"), method="greedy", num_classes=10,
                               example_input=x[:2], devices="cuda")
        out["peak_bytes"][f"K={k}"] = peak(model)
        del model
    out["fraction_of_bp"] = {k: v / out["peak_bytes"]["bp"] for k, v in out["peak_bytes"].items()
                             if k != "bp"}
    return out


def cpu_pipeline(ranks: Sequence[int] = (2, 4, 8), batch_size: int = 256, steps: int = 6) -> dict:
    """The distributed executor on K gloo CPU ranks against the sequential engine (bench CNN),
    each batch in 8 micro-batches."""
    from .pipeline import balanced_counts, run_local
    from .settings import Settings
    from .workers import run_processes

    cores = os.cpu_count() or 1
    micro_batch = max(batch_size // 8, 1)
    out: dict = {"cores": cores, "batch_size": batch_size, "micro_batch": micro_batch}
    for k in ranks:
        if k > cores:
            out[f"K={k}"] = f"skipped: {cores} cores"
            continue
        s = Settings(stages=k, batch_size=batch_size, micro_batch=micro_batch, steps=steps, warmup=2,
                     repeats=1)
        s.validate()
        counts, _ = balanced_counts(s)
        seq_sps, _ = run_local(s, s.method, counts, SequentialExecutor(s.micro_batches), 1)
        proc_sps, _ = run_processes(s, counts)
        out[f"K={k}"] = {"blocks": counts, "sequential_sps": seq_sps, "processes_sps": proc_sps,
                         "speedup": proc_sps / seq_sps, "efficiency": proc_sps / seq_sps / k}
    return out


def run(cpu_ranks: Sequence[int] = (2, 4, 8), cpu_batch: int = 256, cpu_steps: int = 6,
        log: Callable[[str], None] = print) -> dict:
    """Every part that this machine can run; see the module docstring."""
    start = time.perf_counter()
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "torch": torch.__version__, "host": platform.node(), "cuda": torch.cuda.is_available()}
    parts: list[tuple[str, Callable[[], dict]]] = []
    if torch.cuda.is_available():
        result["device"] = f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
        parts = [("streams", streams), ("bf16", bf16), ("memory", memory), ("compile", compiled)]
    else:
        result["device"] = "no CUDA device"
        result["note"] = (f"CUDA is not available here (torch {torch.__version__}): only the CPU part ran; "
                          "run `scpl bench gpu --json` on a CUDA machine for the GPU figures")
    parts.append(("cpu_pipeline", lambda: cpu_pipeline(cpu_ranks, cpu_batch, cpu_steps)))
    for name, part in parts:
        if time.perf_counter() - start > DEADLINE_S and name != "cpu_pipeline":
            result[name] = {"skipped": f"past the {DEADLINE_S:.0f} s budget"}
            continue
        log(f"bench gpu: {name} ...")
        try:
            result[name] = part()
        except Exception as exc:  # report and go on: the other parts still run
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"bench gpu: {name}: {result[name]}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["seconds"] = time.perf_counter() - start
    return result
