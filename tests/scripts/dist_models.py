"""torchrun --nproc-per-node=4 dist_models.py OUT: one training step of every reference model."""

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from model_cases import LABELS, SPECS, build  # noqa: E402
from scpl.executors.distributed import DistributedExecutor, init_from_env  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    rank, _ = init_from_env("gloo")
    out = {}
    for name in SPECS:
        model, x = build(name)
        model.fit([(x, LABELS)], executor=DistributedExecutor(micro_batches=2))
        out[name] = model.blocks[rank].state_dict()
    torch.save(out, f"{sys.argv[1]}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
