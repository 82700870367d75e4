"""Run under torchrun by the tests: train a model with the distributed executor, save the result.

Usage: torchrun --nproc-per-node=K dist_train.py OUT.pt CASE [FAULT]
CASE picks the model (see build()); FAULT is "raise:STEP", "kill:STEP" or "dtype:STEP" (an unsendable output) on rank 1.
"""

import os
import signal
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from cases import CASES, FIT_KWARGS  # noqa: E402

from scpl.executors.distributed import DistributedExecutor, init_from_env  # noqa: E402
from scpl.objectives import CallableObjective  # noqa: E402
from scpl.inference import PatienceCosine, early_exit  # noqa: E402


def main() -> None:
    out, case = sys.argv[1], sys.argv[2]
    fault = sys.argv[3] if len(sys.argv) > 3 else None
    torch.set_num_threads(1)
    rank, world = init_from_env("gloo")
    model, loader, epochs, micro = CASES[case]()
    if fault and rank == 1:
        kind, at = fault.split(":")
        inner, calls = model.blocks[1].objective, [0]

        def faulty(f, y):
            calls[0] += 1
            if calls[0] == int(at):
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError(f"injected failure at call {calls[0]}")
            return inner(f, y)

        if kind == "dtype":  # rank 1 outputs a tensor no message can carry
            step, steps = model.blocks[1].train_step, [0]

            def complex_output(*args, **kwargs):
                out, loss = step(*args, **kwargs)
                steps[0] += 1
                return (out.to(torch.complex64) if steps[0] == int(at) else out), loss

            model.blocks[1].train_step = complex_output
        else:
            model.blocks[1].objective = CallableObjective(faulty)
    ex = DistributedExecutor(micro_batches=micro)
    seen = []  # on_step calls on this rank
    history = model.fit(loader, epochs=epochs, executor=ex, on_step=lambda s, losses: seen.append((s, losses)),
                        **FIT_KWARGS.get(case, {}))
    metrics = model.evaluate(loader, executor=ex)
    preds = model.predict(loader, executor=ex)
    exits = None
    if case == "cnn":
        report = early_exit(model, loader, PatienceCosine(threshold=0.5), executor=ex)
        exits = {**report.as_dict(), "predictions": report.predictions, "exit_block": report.exit_block}
    state = {k: v for k, v in model.blocks[rank].state_dict().items()}
    torch.save({"rank": rank, "block": state, "history": history, "steps": seen, "metrics": metrics, "preds": preds,
                "exits": exits}, f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
