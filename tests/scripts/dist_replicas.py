"""Run by the tests on K*R real ranks: train with replicated stages, save what every rank ends with.

Usage: dist_replicas.py OUT METHOD[,METHOD...] REPLICAS MICRO_BATCHES [FAULT]
Several methods train one after another in the same ranks, each saved as OUT.METHOD.RANK (one
method: OUT.RANK). FAULT "raise:CALL:RANK" or "kill:CALL:RANK" makes that rank's objective fail
at its CALL-th call; "objective:0:RANK" gives that rank an objective of another kind than its
twin's; "order:0:RANK" and "short:0:RANK" give it other batches.
$PEER_TIMEOUT sets the executor's peer_timeout (seconds; 20 if unset).
"""

import os
import signal
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from replica_cases import build, loader  # noqa: E402
from scpl.early_exit import PatienceCosine, early_exit  # noqa: E402
from scpl.executors.distributed import DistributedExecutor, init_from_env  # noqa: E402
from scpl.objectives import CallableObjective  # noqa: E402


def main() -> None:
    out, methods, replicas, micro = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4])
    fault = sys.argv[5] if len(sys.argv) > 5 else None
    torch.set_num_threads(1)
    rank, world = init_from_env("gloo")
    for method in methods:
        result = run_method(method, rank, replicas, micro, fault)
        torch.save(result, f"{out}.{method}.{rank}" if len(methods) > 1 else f"{out}.{rank}")
    dist.barrier()
    dist.destroy_process_group()


def run_method(method: str, rank: int, replicas: int, micro: int, fault: str | None) -> dict:
    model = build(method)
    ex = DistributedExecutor(micro_batches=micro, replicas=replicas,
                             peer_timeout=float(os.environ.get("PEER_TIMEOUT", "20")))
    stage = rank // replicas
    data = loader()
    if fault:
        kind, at, target = fault.split(":")
        if kind in ("order", "short") and rank == int(target):  # this replica reads other batches
            data = list(data)[::-1] if kind == "order" else list(data)[:-1]
        elif kind == "objective" and rank == int(target):  # this replica's objective is of another kind
            model.blocks[stage].objective = CallableObjective(model.blocks[stage].objective)
        elif rank == int(target):  # the objective fails; the replicas' modules stay alike
            calls = [0]

            def faulty(module, args):
                calls[0] += 1
                if calls[0] == int(at):
                    if kind == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    raise ValueError(f"injected failure at call {calls[0]}")

            model.blocks[stage].objective.register_forward_pre_hook(faulty)
    history = model.fit(data, epochs=2, executor=ex, progress=False)
    result = {"rank": rank, "stage": stage, "block": model.blocks[stage].state_dict(), "history": history,
              "metrics": model.evaluate(loader()), "preds": model.predict(loader())}
    if method in ("scpl", "traced"):
        result["exit_accuracy"] = model.evaluate_exits(loader())
        report = early_exit(model, loader(), PatienceCosine(threshold=0.5))
        result["exits"] = {**report.as_dict(), "predictions": report.predictions,
                           "exit_block": report.exit_block}
    return result


if __name__ == "__main__":
    main()
