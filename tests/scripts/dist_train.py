"""Run under torchrun by the tests: train a model with the distributed executor, save the result.

Usage: torchrun --nproc-per-node=K dist_train.py OUT.pt CASE[,CASE...] [FAULT]
CASE picks the model (tests/cases.py; several cases run one after another in the same ranks, each
saved as OUT.CASE.RANK, one process group for all); FAULT (one case) is "raise:CALL", "kill:CALL"
or "dtype:CALL" (an unsendable output),
on rank 1, or "KIND:CALL:RANK" on another rank; CALL "last" is the block's last objective call of the run.
$PEER_TIMEOUT sets the executor's peer_timeout (seconds).
"""

import os
import signal
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from cases import CASES, FIT_KWARGS  # noqa: E402
from conftest import tiny_cnn  # noqa: E402
from scpl import ConfigError  # noqa: E402
from scpl.early_exit import PatienceCosine, early_exit  # noqa: E402
from scpl.executors.distributed import DistributedExecutor, init_from_env  # noqa: E402
from scpl.objectives import CallableObjective  # noqa: E402


def main() -> None:
    out, cases = sys.argv[1], sys.argv[2].split(",")
    fault = sys.argv[3] if len(sys.argv) > 3 else None
    torch.set_num_threads(1)
    rank, world = init_from_env("gloo")
    results = {case: run_case(case, rank, fault) for case in cases}
    dist.barrier()
    dist.destroy_process_group()
    for case, (model, loader, result) in results.items():
        try:  # only this rank's block is trained here now: evaluating in-process would be wrong
            model.evaluate(loader)
            result["after_destroy"] = ""
        except ConfigError as exc:
            result["after_destroy"] = str(exc)
        torch.save(result, f"{out}.{case}.{rank}" if len(cases) > 1 else f"{out}.{rank}")


def run_case(case: str, rank: int, fault) -> tuple:
    """Train ``case`` on these ranks; the model, its loader and what the test compares."""
    model, loader, epochs, micro = CASES[case]()
    kind, at, target = (fault.split(":") + ["1"])[:3] if fault else (None, None, "-1")
    if kind == "cut" and rank == int(target):  # this rank builds the model with other block counts
        from scpl import DecoupledModel, seed_everything

        seed_everything(0)
        model = DecoupledModel(tiny_cnn(), [2, 4, 2], method="scpl", num_classes=4,
                               example_input=torch.zeros(2, 1, 8, 8), exits=True)
    if at == "last":
        at = str(len(loader) * micro * epochs)
    if fault and kind != "cut" and rank == int(target):
        block = model.blocks[rank]
        inner, calls = block.objective, [0]

        def faulty(f, y):
            calls[0] += 1
            if calls[0] == int(at):
                if kind == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError(f"injected failure at call {calls[0]}")
            return inner(f, y)

        if kind == "dtype":  # the rank outputs a tensor no message can carry
            step, steps = block.train_step, [0]

            def complex_output(*args, **kwargs):
                out, loss = step(*args, **kwargs)
                steps[0] += 1
                return (out.to(torch.complex64) if steps[0] == int(at) else out), loss

            block.train_step = complex_output
        else:
            block.objective = CallableObjective(faulty)
    ex = DistributedExecutor(micro_batches=micro, peer_timeout=float(os.environ.get("PEER_TIMEOUT", 30)))
    seen = []  # on_step calls on this rank
    history = model.fit(loader, epochs=epochs, executor=ex,
                        on_step=lambda s, losses: seen.append((s, losses)), **FIT_KWARGS.get(case, {}))
    metrics = model.evaluate(loader, executor=ex)
    # no executor: the model evaluates through the one it trained with
    default_metrics = model.evaluate(loader)
    exit_accuracy = model.evaluate_exits(loader)
    # a model not trained on these ranks must not silently evaluate its local (untrained) copies
    try:
        CASES[case]()[0].evaluate(loader)
        refused = ""
    except ConfigError as exc:
        refused = str(exc)
    preds = model.predict(loader, executor=ex)
    exits = None
    if case == "cnn":
        report = early_exit(model, loader, PatienceCosine(threshold=0.5), executor=ex)
        exits = {**report.as_dict(), "predictions": report.predictions, "exit_block": report.exit_block}
    state = {k: v for k, v in model.blocks[rank].state_dict().items()}
    return model, loader, {"rank": rank, "block": state, "history": history, "steps": seen,
                           "metrics": metrics, "preds": preds, "exits": exits,
                           "default_metrics": default_metrics, "exit_accuracy": exit_accuracy,
                           "refused": refused}


if __name__ == "__main__":
    main()
