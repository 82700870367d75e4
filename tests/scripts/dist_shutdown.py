"""Run by the tests: does destroy_process_group() end gloo's worker threads?

Every rank imports scpl, joins the group, builds an optimizer (which imports torch._dynamo and,
through it, torch.distributed.nn.functional), runs a collective and destroys the group; it
prints how many threads the process had before the group and after destroying it.
"""

import os
import sys

import torch
import torch.distributed as dist

from scpl.executors.distributed import init_from_env  # scpl before the group, as the docs ask


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def main() -> None:
    torch.set_num_threads(1)
    before = threads()
    init_from_env("gloo")
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    dist.barrier()
    dist.destroy_process_group()
    print(f"threads {before} {threads()}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
