"""The command line, run as a user would: a real subprocess."""

import json
import subprocess
import sys

import pytest


def torchrun(nproc: int) -> list[str]:
    """``torchrun --nproc-per-node=N`` on a free port: tests run side by side (pytest-xdist), and
    torchrun's default port, 29500, would be taken by whichever started first."""
    from launch import free_port

    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            f"--master-port={free_port()}"]


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "scpl", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_demo_json_last_line():
    proc = run_cli("demo", "--json", "--epochs", "2", "--methods", "bp", "scpl", "deinforeg", "greedy")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["method"] for r in last["results"]] == ["bp", "scpl", "deinforeg", "greedy"]
    for r in last["results"]:
        assert 0.5 < r["test_accuracy"] <= 1.0  # 2 epochs on digits learn well beyond chance (0.1)
        assert r["seconds"] > 0
    assert "test_accuracy" in proc.stdout.splitlines()[0]
    epochs = [line for line in proc.stderr.splitlines() if ": epoch " in line]
    assert [line.split(":")[0] for line in epochs] == [m for m in ("bp", "scpl", "deinforeg", "greedy")
                                                       for _ in range(2)]  # labelled with its method
    assert not any(" val " in line for line in epochs)  # the demo has no validation split


def test_bad_arguments_exit_nonzero_with_message():
    proc = run_cli("demo", "--methods", "nope")
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr
    assert run_cli("--help").returncode == 0


@pytest.mark.slow
def test_train_under_torchrun_equals_sequential_and_exports_a_model(tmp_path):
    import os

    import torch

    from scpl import DecoupledModel
    from scpl.models import SmallCNN

    common = ["train", "--dataset", "digits", "--epochs", "1", "--train-limit", "512", "--batch-size", "32",
              "--micro-batches", "2", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    dist_run = subprocess.run(
        [*torchrun(2), "-m", "scpl", *common,
         "--executor", "distributed", "--blocks", "auto", "--out", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=300, env=env)
    assert dist_run.returncode == 0, dist_run.stderr[-3000:]
    summary = json.loads(dist_run.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 2 and summary["num_blocks"] == 2
    counts = summary["blocks"]
    names = {p.name for p in (tmp_path / "dist").iterdir()}
    assert {"model.pt", "summary.json", "config.yaml", "metrics.csv", "latest.json", "epochs"} <= names
    assert sorted(p.name for p in (tmp_path / "dist" / "epochs" / "1").iterdir()) == [
        f"{name}{end}" for name in ("block-0.pt", "block-1.pt", "trainer-0.pt", "trainer-1.pt")
        for end in ("", ".sha256")]

    seq_run = run_cli(*common, "--executor", "sequential", "--threads", "1",
                      "--blocks", ",".join(map(str, counts)), "--out", str(tmp_path / "seq"))
    assert seq_run.returncode == 0, seq_run.stderr[-3000:]
    seq_summary = json.loads(seq_run.stdout.strip().splitlines()[-1])
    assert seq_summary["test_accuracy"] == summary["test_accuracy"]
    merged = torch.load(tmp_path / "dist" / "model.pt")
    sequential = torch.load(tmp_path / "seq" / "model.pt")
    assert merged.keys() == sequential.keys()
    assert all(torch.equal(merged[k], sequential[k]) for k in merged)
    model = DecoupledModel(SmallCNN(), counts, num_classes=10, example_input=torch.zeros(2, 1, 8, 8))
    model.load_state_dict(merged)


@pytest.mark.slow
def test_train_with_replicated_stages_under_torchrun(tmp_path):
    """2 blocks x 2 replicas on 4 ranks: one checkpoint file per block, a loadable model, resume."""
    import os

    import torch

    common = ["train", "--dataset", "digits", "--epochs", "2", "--train-limit", "512", "--batch-size", "32",
              "--executor", "distributed", "--replicas", "2", "--blocks", "2,2",
              "--out", str(tmp_path / "rep"), "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([*torchrun(4), "-m", "scpl",
                          *common], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["world_size"] == 4 and summary["num_blocks"] == 2 and summary["test_accuracy"] > 0.5
    blocks = sorted(p.name for p in (tmp_path / "rep" / "epochs" / "2").glob("block-*.pt"))
    assert blocks == ["block-0.pt", "block-1.pt"]  # written once per stage
    assert len(list((tmp_path / "rep" / "epochs" / "2").glob("trainer-*.pt"))) == 4
    state = torch.load(tmp_path / "rep" / "model.pt")
    assert any(k.startswith("blocks.1.") for k in state)
    # one model: the replicas' BatchNorm statistics were averaged, so the exported model, evaluated
    # in one process (no torchrun) or under torchrun, gives the accuracy the run reported
    for launch in ([sys.executable, "-m", "scpl"],
                   [*torchrun(1), "-m", "scpl"]):
        ev = subprocess.run([*launch, "eval", str(tmp_path / "rep"), "--json"], capture_output=True,
                            text=True, timeout=300, env=env)
        assert ev.returncode == 0, ev.stderr[-3000:]
        assert json.loads(ev.stdout.strip().splitlines()[-1])["accuracy"] == summary["test_accuracy"]
    more = [("3" if a == "2" and common[i - 1] == "--epochs" else a) for i, a in enumerate(common)]
    again = subprocess.run([*torchrun(4), "-m", "scpl",
                            *more, "--resume"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["epochs"] == 3
