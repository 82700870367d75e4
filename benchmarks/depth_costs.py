"""What each K of the depth grid costs and buys: activation memory and the ideal pipeline speed-up.

For every row of the depth grid (``benchmarks/grid/depth.py``) at K = 2, 4, 8 and 16, and for BP,
the model is built exactly as the grid's command builds it (``scpl train --config
fmnist-resnet32-depth --blocks K ...``: ``scpl.runner.assemble.build``) and measured on one real
training batch of 128 images:

* ``peak_bytes``: the activation memory held for backward, counted as ``scpl bench memory``
  counts it (:func:`scpl.bench.memory.block_bytes`: every tensor autograd saves, once per
  storage, parameters excluded); a decoupled model's peak is its largest block (blocks run one
  after another free their graphs), BP's the whole network;
* ``block_seconds``: the median time of one real training step of each block (its layers, head,
  loss, backward and optimizer step; :func:`scpl.balance.time_blocks`), one thread;
  ``ideal_speedup`` = their sum over the slowest, what a pipeline of K devices could reach at
  best (no communication, a full pipeline).

Writes ``benchmarks/depth-costs.json`` (read by the depth tables of docs/results.md)::

    python benchmarks/depth_costs.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grid.depth import DEPTH_KS, DEPTH_RECIPE, DEPTH_ROWS  # noqa: E402
from scpl.balance import time_blocks  # noqa: E402
from scpl.bench.memory import block_bytes  # noqa: E402
from scpl.cli import build_parser, train_config  # noqa: E402
from scpl.runner.assemble import build  # noqa: E402

OUT = Path(__file__).with_name("depth-costs.json")


def measure(args: list[str], repeats: int) -> dict:
    """Peak bytes, per-block seconds and the ideal speed-up of the model ``scpl train ARGS`` builds."""
    cfg = train_config(build_parser().parse_args(["train", "--config", DEPTH_RECIPE, *args, "--no-progress"]))
    run = build(cfg)
    x, y = next(iter(run.train_batches))
    per_block = block_bytes(run.model, x, y)
    torch.manual_seed(0)
    seconds = time_blocks(list(run.model.blocks), x, y, repeats=repeats)
    return {"args": shlex.join(args), "peak_bytes": max(per_block), "block_bytes": per_block,
            "block_seconds": seconds, "ideal_speedup": sum(seconds) / max(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result: dict = {"batch_size": 128, "bp": measure(["--method", "bp"], args.repeats), "rows": {}}
    print(f"bp: {result['bp']['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    for k in sorted(DEPTH_KS):
        for row, row_args in DEPTH_ROWS.items():
            found = measure(["--blocks", str(k), *row_args], args.repeats)
            result["rows"].setdefault(row, {})[str(k)] = found
            print(f"K={k:<2} {row:<12} {found['peak_bytes'] / 2**20:7.1f} MiB  "
                  f"ideal speed-up {found['ideal_speedup']:.2f}", flush=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
