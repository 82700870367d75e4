"""Run by the tests: does destroy_process_group() end gloo's worker threads?

Usage: dist_shutdown.py early|late. ``early`` imports scpl before joining the group (as the docs
ask), ``late`` joins first. Every rank then builds an optimizer (which imports torch._dynamo and,
through it, torch.distributed.nn.functional), trains one step on the pipeline, destroys the group
and prints how many threads the process had before the group and after destroying it.
"""

import os
import sys
import warnings

import torch
import torch.distributed as dist


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main() -> None:
    order = sys.argv[1]
    torch.set_num_threads(1)
    before = threads()
    if order == "late":
        dist.init_process_group("gloo")
    from scpl import DecoupledModel
    from scpl.executors.distributed import DistributedExecutor, init_from_env

    init_from_env("gloo")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    model = DecoupledModel(net, [1, 1], method="greedy", num_classes=2, example_input=torch.zeros(2, 4))
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(batches, epochs=1, executor=DistributedExecutor())
    dist.barrier()
    dist.destroy_process_group()
    warned = any("imported after init_process_group" in str(w.message) for w in caught)
    print(f"warned {int(warned)} threads {before} {threads()}", flush=True)
    if order == "late":  # the threads live on: skip interpreter shutdown, where they could abort the process
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
