"""Every executor against the sequential oracle, and failures in every executor."""

import os
import re
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from cases import CASES, FIT_KWARGS
from launch import run_ranks
from scpl import ConfigError
from scpl.early_exit import PatienceCosine, early_exit
from scpl.errors import NonFiniteLossError, StageError
from scpl.executors import DistributedExecutor, SequentialExecutor, ThreadedExecutor, p2p
from scpl.executors.base import Failures
from scpl.executors.stage import LostLink, _announce_lost_peer, _explain, _keep_own_error, _report
from scpl.executors.watch import ABORT_KEY, RemoteStageFailure, announce, announced
from scpl.objectives import CallableObjective

HANG_S = 240
"""A failure must stop every rank: one left waiting would wait for gloo's own timeout (30
minutes), and run_ranks reports a hang after this long. No tighter bound: on a loaded 2-core
machine, three ranks take most of a minute to start (48 s for a kill at call 3, measured)."""


def trained(case, executor, steps=None):
    model, loader, epochs, micro = CASES[case]()
    on_step = (lambda s, losses: steps.append((s, losses))) if steps is not None else None
    history = model.fit(loader, epochs=epochs, executor=executor(micro), on_step=on_step,
                        **FIT_KWARGS.get(case, {}))
    return model, [r["losses"] for r in history]


def assert_same_parameters(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


@pytest.mark.parametrize("case", ["cnn", "text", "contsup", "dascpl", "traced", "bert"])
def test_threads_equal_sequential_bitwise(case):
    ref, ref_losses = trained(case, SequentialExecutor)
    got, got_losses = trained(case, ThreadedExecutor)
    assert_same_parameters(ref, got)
    assert got_losses == ref_losses


def test_threads_call_on_step_in_order():
    model, loader, _, _ = CASES["cnn"]()
    steps = []
    model.fit(loader, epochs=1, executor=ThreadedExecutor(micro_batches=3),
              on_step=lambda s, losses: steps.append((s, len(losses))))
    assert steps == [(i, 3) for i in range(len(loader))]


def _fail_at(model, block, call, exc_factory):
    inner, calls = model.blocks[block].objective, [0]

    def objective(f, y):
        calls[0] += 1
        if calls[0] == call:
            raise exc_factory()
        return inner(f, y)

    model.blocks[block].objective = CallableObjective(objective)


def test_threads_stage_error_has_index_and_traceback():
    model, loader, _, _ = CASES["cnn"]()
    _fail_at(model, 1, 4, lambda: KeyError("boom in the middle"))
    with pytest.raises(StageError, match=r"stage 1 failed with KeyError") as info:
        model.fit(loader, epochs=3, executor=ThreadedExecutor())
    assert info.value.stage == 1
    assert isinstance(info.value.__cause__, KeyError)
    assert "in objective" in str(info.value) and "boom in the middle" in str(info.value)


def test_threads_non_finite_loss_and_loader_failure():
    model, loader, _, _ = CASES["cnn"]()
    model.blocks[2].objective = CallableObjective(lambda f, y: f.sum() * float("nan"))
    with pytest.raises(StageError, match="stage 2 failed with NonFiniteLossError") as info:
        model.fit(loader, executor=ThreadedExecutor())
    assert isinstance(info.value.__cause__, NonFiniteLossError)

    def broken():
        yield next(iter(loader))
        raise OSError("disk went away")

    model, _, _, _ = CASES["cnn"]()
    with pytest.raises(StageError, match=r"the data loader \(stage -1\) failed with OSError: disk went away"):
        model.fit(broken(), executor=ThreadedExecutor())


def test_threads_with_seeded_dropout_equal_sequential_and_unseeded_warns():
    ref, ref_losses = trained("dropout", SequentialExecutor)
    got, got_losses = trained("dropout", ThreadedExecutor)
    assert_same_parameters(ref, got)
    assert got_losses == ref_losses
    model, loader, _, _ = CASES["dropout"]()
    for block in model.blocks:
        block.rng_seed = None
    with pytest.warns(RuntimeWarning, match="dropout but no rng_seed"):
        model.fit(loader, executor=ThreadedExecutor())


@pytest.mark.slow
@pytest.mark.parametrize("cases,world", [(("cnn", "text", "contsup", "dascpl", "traced", "bert"), 3),
                                         (("dropout",), 2), (("extension",), 5)])
def test_distributed_equals_sequential_bitwise(cases, world, tmp_path):
    """One group of real gloo ranks trains every case of its size, one after another (one launch
    for several cases); each case must equal the sequential engine bit for bit."""
    codes, outputs, _ = run_ranks("dist_train.py", world, str(tmp_path / "out"), ",".join(cases),
                                  timeout=HANG_S)
    assert codes == [0] * world, outputs
    for case in cases:
        check_distributed_case(case, world, tmp_path, several=len(cases) > 1)


def check_distributed_case(case: str, world: int, tmp_path, several: bool) -> None:
    ref_steps = []
    ref, ref_losses = trained(case, SequentialExecutor, ref_steps)
    _, loader, _, _ = CASES[case]()  # built once: a traced case (BERT) takes seconds to build
    ref_metrics = ref.evaluate(loader)
    ref_preds = ref.predict(loader)
    ref_exit_accuracy = ref.evaluate_exits(loader)
    for rank in range(world):
        saved = torch.load(tmp_path / (f"out.{case}.{rank}" if several else f"out.{rank}"))
        block_state = ref.blocks[rank].state_dict()
        for k, v in block_state.items():
            assert torch.equal(v, saved["block"][k]), f"rank {rank}: {k} differs from the sequential engine"
        assert [r["losses"] for r in saved["history"]] == ref_losses
        # on_step (what scpl train's progress bar shows) runs on the last rank only, once per step
        assert saved["steps"] == (ref_steps if rank == world - 1 else []), f"rank {rank}"
        assert saved["metrics"]["accuracy"] == ref_metrics["accuracy"]
        # evaluate() without an executor uses the pipeline
        assert saved["default_metrics"] == saved["metrics"]
        assert "a torch.distributed process group is active" in saved["refused"]  # an untrained model
        assert "trained by the distributed executor, and its process group is gone" in saved["after_destroy"]
        assert saved["exit_accuracy"] == ref_exit_accuracy
        assert saved["metrics"]["loss"] == pytest.approx(ref_metrics["loss"], rel=1e-6)
        assert torch.equal(saved["preds"], ref_preds)
        if case == "cnn":  # early exit through the pipeline decides exactly as in one process
            ref_exit = early_exit(ref, loader, PatienceCosine(threshold=0.5))
            got = saved["exits"]
            assert torch.equal(got["predictions"], ref_exit.predictions)
            assert torch.equal(got["exit_block"], ref_exit.exit_block)
            assert got["block_samples"] == ref_exit.block_samples and got["accuracy"] == ref_exit.accuracy


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["raise:3", "kill:3"])
def test_distributed_failure_stops_every_rank(fault, tmp_path):
    codes, outputs, _ = run_ranks("dist_train.py", 3, str(tmp_path / "out"), "cnn", fault, timeout=HANG_S)
    assert all(c != 0 for c in codes), codes
    for rank in (0, 2):
        assert "StageError: stage 1 failed" in outputs[rank], outputs[rank][-2000:]
        assert "stopped responding" not in outputs[rank]  # told at once, not after a heartbeat timeout
    if fault.startswith("raise"):
        assert "injected failure at call 3" in outputs[1]
        assert ("rank 1 failed: ValueError: injected failure" in outputs[2]
                or "lost the connection to rank 1" in outputs[2])


@pytest.mark.slow
def test_a_killed_store_host_stops_every_rank_and_no_rank_blames_it_on_a_healthy_one(tmp_path):
    # rank 0 hosts the store: rank 1 loses its link to it; rank 2 loses the store and then its
    # link to rank 1, which stopped because of rank 0: it must not name rank 1 as the cause alone
    codes, outputs, _ = run_ranks("dist_train.py", 3, str(tmp_path / "out"), "cnn", "kill:3:0",
                                  timeout=HANG_S)
    assert codes[0] == -9 and codes[1] != 0 and codes[2] != 0, codes
    assert "StageError: stage 0 failed" in outputs[1], outputs[1][-2000:]
    stopped = [line for line in outputs[2].splitlines() if "StageError:" in line]
    assert stopped and ("may have stopped because another rank failed" in stopped[0]
                        or "lost the process group's store" in stopped[0]), outputs[2][-2000:]


def test_a_lost_store_waits_for_a_broken_link_that_names_the_rank_that_died():
    """A killed rank breaks its neighbours' links; the rank hosting the store may stop first (its
    own link broke) and make the watchdog report "lost the store" before the link's error is
    read: the link's error, which names the dead rank, must still be the one raised."""
    failures = Failures(threading.Event())
    watchdog = threading.Thread(target=_report(failures, grace=30.0),
                                args=(None, RemoteStageFailure("lost the process group's store")))
    start = time.monotonic()
    watchdog.start()
    time.sleep(0.2)
    failures.add(1, LostLink("lost the connection to rank 1"), "")  # the receiver thread
    watchdog.join()
    assert time.monotonic() - start < 20  # it ended its wait when the link reported
    error = failures.error()
    assert error.stage == 1 and "lost the connection to rank 1" in str(error)
    # with no link to name the cause, the lost store is reported after the wait
    alone = Failures(threading.Event())
    _report(alone, grace=0.1)(None, RemoteStageFailure("lost the process group's store"))
    assert alone.error().stage is None and "lost the process group's store" in str(alone.error())
    # this stage's own error stays as it is
    own = Failures(threading.Event())
    own.add(2, ValueError("bad input"), "")
    _report(own, grace=30.0)(None, RemoteStageFailure("lost the process group's store"))
    assert own.error().stage == 2 and str(own.items[0][1]) == "bad input" and len(own.items) == 2
    # a stage that finished cleanly during the wait records nothing
    clean = Failures(threading.Event())
    clean.abort.set()
    _report(clean, grace=30.0)(None, RemoteStageFailure("lost the process group's store"))
    assert not clean


def test_a_broken_link_yields_to_an_announced_failure_or_says_that_the_store_is_gone_too():
    """A peer whose link broke may have stopped because of another rank's failure."""
    def link_failure():
        failures = Failures(threading.Event())
        failures.add(1, LostLink("lost the connection to rank 1: closed by peer"), "")
        return failures

    store = dist.HashStore()
    failures = link_failure()
    _explain(failures, store, rank=2)  # nothing announced: the peer is the cause
    assert failures.error().stage == 1 and "store" not in str(failures.error())
    store.set(ABORT_KEY, "0\nValueError: bad batch")
    _explain(failures, store, rank=2)
    assert failures.error().stage == 0 and "rank 0 failed: ValueError: bad batch" in str(failures.error())
    # the rank hosting the store stopped: the link is named, with the doubt
    server = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    client = dist.TCPStore("127.0.0.1", server.port, is_master=False, timeout=timedelta(seconds=10))
    del server
    failures = link_failure()
    _explain(failures, client, rank=2)
    assert failures.error().stage == 1
    assert "store is gone too: rank 1 may have stopped because another rank failed" in str(failures.error())


def test_an_error_inside_a_collective_yields_to_the_failure_announced_before_it():
    """A replica's collective fails when its twin stopped because a third rank failed: every rank
    names that rank, and keeps its own error beside it (nothing lost)."""
    def own_failure(failures=None):
        failures = failures or Failures(threading.Event())
        failures.add(0, RuntimeError("Connection closed by peer"), "Traceback: all_reduce\n")
        return failures

    def explained(failures, store):
        _explain(failures, store, rank=0)
        _keep_own_error(failures, rank=0)
        return failures.error(stage_of=lambda r: r // 2)

    store = dist.HashStore()
    error = explained(own_failure(), store)  # nothing announced: this rank's error stands
    assert error.stage == 0 and str(error.cause) == "Connection closed by peer"
    announce(store, 0, error.cause)
    assert str(explained(own_failure(), store).cause) == "Connection closed by peer"  # announced by itself
    # announced by another rank, seen only in the store
    store = dist.HashStore()
    announce(store, 3, ValueError("bad batch"))
    error = explained(own_failure(), store)
    assert error.stage == 1 and isinstance(error.cause, RemoteStageFailure)
    assert str(error.cause) == ("rank 3 failed: ValueError: bad batch; then rank 0 failed with "
                                "RuntimeError: Connection closed by peer")
    assert "Traceback: all_reduce" in str(error)
    # seen by the watchdog before this rank's own error
    failures = Failures(threading.Event())
    failures.add(1, RemoteStageFailure("rank 1 stopped responding"), "")
    error = explained(own_failure(failures), dist.HashStore())
    assert error.stage == 0 and str(error.cause).startswith("rank 1 stopped responding; then rank 0 failed")
    # a broken link stays a LostLink (the lost peer is announced from it)
    failures = Failures(threading.Event())
    failures.add(2, LostLink("lost the connection to rank 2"), "")
    error = explained(own_failure(failures), dist.HashStore())
    assert isinstance(error.cause, LostLink) and "then rank 0 failed with RuntimeError" in str(error.cause)


def test_a_lost_peer_is_announced_unless_a_cause_was_and_the_first_announcement_stands():
    """A rank beyond the lost peer sees only silence: the rank whose link broke names the peer."""
    store = dist.HashStore()
    failures = Failures(threading.Event())
    failures.add(2, LostLink("lost the connection to rank 2: closed by peer"), "")
    _announce_lost_peer(failures, store, rank=1)
    rank, error = announced(store)
    assert rank == 2 and "seen by rank 1: lost the connection to rank 2" in str(error)
    announce(store, 0, ValueError("later"))  # an effect, announced after the cause: ignored
    assert announced(store)[0] == 2
    # a cause announced before (by the failed rank itself) is left as it is
    store = dist.HashStore()
    announce(store, 3, ValueError("bad batch"))
    failures = Failures(threading.Event())
    failures.add(2, LostLink("lost the connection to rank 2: closed by peer"), "")
    _explain(failures, store, rank=1)
    _announce_lost_peer(failures, store, rank=1)
    assert announced(store)[0] == 3 and failures.error().stage == 3
    # the stage's own error is announced where it is raised, never as a lost peer
    store = dist.HashStore()
    own = Failures(threading.Event())
    own.add(1, ValueError("bad input"), "")
    _announce_lost_peer(own, store, rank=1)
    assert announced(store) is None


@pytest.mark.slow
def test_a_rank_killed_in_the_last_micro_batch_stops_every_rank(tmp_path, monkeypatch):
    # Without the torchrun agent nobody kills the others, and ranks 0 and 1 have sent everything:
    # their heartbeat watch notices that rank 2 stopped beating. Or rank 1's link to rank 2
    # breaks first (gloo notices the dead peer on a loaded machine): rank 1 announces that, and
    # rank 0 names rank 2, not rank 1 that stopped after it.
    monkeypatch.setenv("PEER_TIMEOUT", "10")  # a loaded CI machine can stall a rank for seconds
    codes, outputs, _ = run_ranks("dist_train.py", 3, str(tmp_path / "out"), "cnn", "kill:last:2",
                                  timeout=HANG_S)
    assert codes[2] == -9 and codes[0] != 0 and codes[1] != 0, codes
    assert "StageError: stage 2 failed" in outputs[0], "\n-----\n".join(o[-2500:] for o in outputs)
    assert ("rank 2 stopped responding: no heartbeat for 10 s" in outputs[0]
            or "rank 2 failed: LostLink: seen by rank 1: lost the connection to rank 2" in outputs[0]), \
        outputs[0][-2000:]
    # rank 1 reads rank 0's announcement, unless rank 0 (hosting the store) is gone by then, or
    # its own connection to rank 2 breaks first (gloo notices the dead peer on a loaded machine)
    assert ("rank 2 stopped responding" in outputs[1] or "lost the connection to rank 2" in outputs[1]
            or "lost the process group's store" in outputs[1]), outputs[1]


@pytest.mark.slow
def test_distributed_unsendable_output_is_the_senders_error(tmp_path):
    # a local error of the sending stage, not a "lost the connection" to its healthy neighbour
    codes, outputs, _ = run_ranks("dist_train.py", 3, str(tmp_path / "out"), "cnn", "dtype:2", timeout=90)
    assert all(c != 0 for c in codes), codes
    assert "cannot send tensors of dtype torch.complex64" in outputs[1], outputs[1][-2000:]
    assert "lost the connection" not in outputs[1], outputs[1][-2000:]
    for rank in (0, 2):
        assert "StageError: stage 1 failed" in outputs[rank], outputs[rank][-2000:]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc")
@pytest.mark.parametrize("order", ["early", "late"])
def test_destroy_process_group_ends_gloo_threads(order):
    """A process group kept alive after destroy_process_group() keeps gloo's worker threads
    running into interpreter shutdown, where releasing a tensor aborts the process (SIGABRT,
    "terminate called without an active exception"). torch.distributed.nn.functional binds
    group.WORLD as default arguments when first imported; scpl imports it before any group
    exists ("early"). A script that joins the group before importing scpl ("late") keeps the
    threads alive, and the executor warns about it."""
    codes, outputs, _ = run_ranks("dist_shutdown.py", 2, order, fresh=True)  # interpreter exit
    assert codes == [0, 0], outputs
    for out in outputs:
        warned, before, after = map(int, re.search(r"warned (\d) threads (\d+) (\d+)", out).groups())
        if order == "early":
            assert (warned, after) == (0, before), out
        else:
            assert warned == 1 and after > before, out


def test_distributed_needs_a_process_group_of_matching_size():
    model, loader, _, _ = CASES["cnn"]()
    with pytest.raises(ConfigError, match="launch with `torchrun"):
        model.fit(loader, executor=DistributedExecutor())
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(ConfigError, match="3 blocks need 3 ranks, but the world size is 1"):
            model.fit(loader, executor=DistributedExecutor())
    finally:
        dist.destroy_process_group()


def test_p2p_header_round_trip():
    tensors = [torch.zeros(3, 4, 5), torch.ones(2, dtype=torch.int64), torch.zeros((), dtype=torch.bool),
               torch.zeros(7, 0, dtype=torch.bfloat16)]
    header = p2p.encode_header(p2p.Message(p2p.DATA, step=12, micro=3, tensors=tensors, flag=1))
    msg, specs = p2p.decode_header(header)
    assert (msg.kind, msg.step, msg.micro, msg.flag) == (p2p.DATA, 12, 3, 1)
    assert specs == [(t.dtype, tuple(t.shape)) for t in tensors]
    with pytest.raises(TypeError, match="complex64"):
        p2p.encode_header(p2p.Message(p2p.DATA, tensors=[torch.zeros(2, dtype=torch.complex64)]))


@pytest.mark.slow
def test_two_stages_times_two_replicas_equal_one_rank_on_the_whole_batches(tmp_path):
    """K=2 x R=2 on 4 real gloo ranks against the sequential engine on the whole batches, for SCPL
    (with exits), DeInfoReg, greedy and a traced ViT-like model, one after another in one launch.
    All-reduce and the gathered loss sum in another order than one rank: equal to 1e-5 relative."""
    from replica_cases import build, loader

    methods = ["scpl", "deinforeg", "greedy", "traced"]
    codes, outputs, _ = run_ranks("dist_replicas.py", 4, str(tmp_path / "out"), ",".join(methods), "2", "2")
    assert codes == [0] * 4, outputs
    for method in methods:
        ref = build(method)
        ref_history = ref.fit(loader(), epochs=2, executor=SequentialExecutor(2), progress=False)
        ref_metrics = ref.evaluate(loader())
        ref_preds = ref.predict(loader())
        for rank in range(4):
            saved = torch.load(tmp_path / f"out.{method}.{rank}")
            for k, v in ref.blocks[saved["stage"]].state_dict().items():
                torch.testing.assert_close(saved["block"][k], v, rtol=1e-5, atol=1e-6,
                                           msg=f"{method}, rank {rank}: {k}")
            for got, want in zip(saved["history"], ref_history):
                assert got["losses"] == pytest.approx(want["losses"], rel=1e-5), method
            assert saved["metrics"]["accuracy"] == ref_metrics["accuracy"], method
            assert torch.equal(saved["preds"], ref_preds), method
            if method in ("scpl", "traced"):
                assert saved["exit_accuracy"] == ref.evaluate_exits(loader())
                report = early_exit(ref, loader(), PatienceCosine(threshold=0.5))
                assert torch.equal(saved["exits"]["predictions"], report.predictions)
                assert torch.equal(saved["exits"]["exit_block"], report.exit_block)
                assert saved["exits"]["block_samples"] == report.block_samples


@pytest.mark.slow
def test_ranks_built_with_other_block_counts_refuse_to_train(tmp_path):
    codes, outputs, _ = run_ranks("dist_train.py", 3, str(tmp_path / "out"), "cnn", "cut:0:1", timeout=HANG_S)
    assert all(c != 0 for c in codes), codes
    for out in outputs:
        assert "ConfigError: the ranks hold different models or cuts (rank 0: 3 blocks, " in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("fault, message", [
    ("order:0:1", "the replicas of the first stage were given different batches"),
    ("short:0:1", "the replicas of the first stage were given different numbers of batches (rank 0: 6, "
                  "rank 1: 5)"),
    ("objective:0:3", "the replicas of stage 1 hold different blocks (rank 2: "),
])
def test_replicas_given_other_batches_or_blocks_refuse_to_train(fault, message, tmp_path):
    codes, outputs, _ = run_ranks("dist_replicas.py", 4, str(tmp_path / "out"), "scpl", "2", "1", fault,
                                  timeout=HANG_S)
    assert all(c != 0 for c in codes), codes
    for out in outputs:  # every rank, not only the two that read the data, stops at once
        assert message in out, out[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["raise:3:3", "kill:3:1"])
def test_a_failing_replica_stops_every_rank(fault, tmp_path):
    """A replica fails in its objective (raises, or its process is killed) while its twin and
    the other stage's replicas are in collectives or links with it: every rank stops and names
    the failed replica's stage; a raised error is named on every rank."""
    codes, outputs, _ = run_ranks("dist_replicas.py", 4, str(tmp_path / "out"), "scpl", "2", "1", fault,
                                  timeout=HANG_S)
    assert all(c != 0 for c in codes), codes
    kind, _, failed = fault.split(":")
    stage = int(failed) // 2
    everything = "\n-----\n".join(o[-2500:] for o in outputs)
    for rank in set(range(4)) - {int(failed)}:
        assert f"StageError: stage {stage} failed" in outputs[rank], everything
        if kind == "raise":
            assert "ValueError: injected failure at call 3" in outputs[rank], outputs[rank][-2500:]


def test_a_port_in_use_is_named_in_one_line():
    import socket
    import subprocess
    import sys

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                   LOCAL_RANK="0")
        code = ("from scpl import ConfigError\nfrom scpl.executors.distributed import init_from_env\n"
                "try:\n    init_from_env('gloo')\nexcept ConfigError as exc:\n    print(exc)")
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"the process group's port 127.0.0.1:{port} is in use" in proc.stdout
    assert "torchrun --master-port=PORT" in proc.stdout
