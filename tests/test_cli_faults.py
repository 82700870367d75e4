"""Bad input and faults through the command line: one clear line and a non-zero exit, found
before training where it can be, never a raw traceback."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from scpl.cli import main
from scpl.runner.state import RunLock

FAST = ["train", "--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--no-progress",
        "--threads", "1"]


def one_error_line(capsys, *argv) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.startswith("scpl ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def trained(tmp_path, name="run", *extra):
    out = tmp_path / name
    assert main([*FAST, "--out", str(out), *extra]) == 0
    return out


@pytest.mark.parametrize("args, message", [
    (["--set", "model_args={widths: [8, 8"],
     "--set model_args=\\{widths: \\[8, 8: the value is not valid YAML"),
    (["--devices", "cuda:0"], "CUDA is not available on this machine"),
    (["--devices", "tpu"], "unknown device 'tpu'"),
    (["--threads", "-1"], "threads must be >= 1"),
    (["--set", "model_args={widthz: [8, 8, 8, 8]}"], "model_args for small_cnn: .*widthz.*accepts "
                                                     "\\['in_channels', 'num_classes', 'widths'\\]"),
    (["--micro-batches", "100"], "micro_batches \\(100\\) cannot exceed the batch size \\(64\\)"),
    (["--set", "objective_args={temp: 0.5}"], "objective_args for 'supcon': .*'temp'.*accepts \\['original', "
                                               "'temperature'\\]"),
])
def test_bad_settings_fail_before_training_in_one_line(capsys, args, message):
    import re

    start = time.monotonic()
    line = one_error_line(capsys, *FAST, *args)
    assert re.search(message, line), line
    assert time.monotonic() - start < 30  # no epoch was trained first


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_fails_before_training(capsys, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    assert "cannot be written" in one_error_line(capsys, *FAST, "--out", str(locked / "run"))


def test_a_read_only_epochs_folder_fails_before_training(capsys, tmp_path):
    """An immutable epochs/ folder (chattr +i: even root cannot write there) is found when the run
    starts, not when its first epoch is saved."""
    out = trained(tmp_path)
    if subprocess.run(["chattr", "+i", str(out / "epochs")], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        line = one_error_line(capsys, *FAST, "--out", str(out), "--resume", "--epochs", "2")
    finally:
        subprocess.run(["chattr", "-i", str(out / "epochs")], check=True)
    assert f"--out {out} cannot be written (Operation not permitted: {out / 'epochs'}" in line, line


def test_out_is_checked_and_locked_before_training(capsys, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    assert "is a file; give a folder" in one_error_line(capsys, *FAST, "--out", str(a_file))
    lock = RunLock(tmp_path / "busy")  # another scpl train holds this folder
    try:
        assert f"is in use by another scpl train (process {os.getpid()})" in one_error_line(
            capsys, *FAST, "--out", str(tmp_path / "busy"))
    finally:
        lock.release()
    assert main([*FAST, "--out", str(tmp_path / "busy")]) == 0  # free again


def test_the_run_folder_is_checked_before_the_data_loads(capsys, tmp_path):
    """With data that cannot load, the folder's error comes first: a user who forgot --resume, or
    whose folder is busy, learns it in a moment, not after a long data load."""
    out = trained(tmp_path)
    no_data = ["--dataset", "cifar10", "--data-root", str(tmp_path / "no-data")]
    assert "no-data" in one_error_line(capsys, *FAST, *no_data)  # the data really cannot load
    assert "already holds a run" in one_error_line(capsys, *FAST, *no_data, "--out", str(out))
    assert "nothing to resume" in one_error_line(capsys, *FAST, *no_data, "--out", str(tmp_path / "new"),
                                                 "--resume")
    lock = RunLock(tmp_path / "busy")
    try:
        assert "is in use by another scpl train" in one_error_line(capsys, *FAST, *no_data, "--out",
                                                                   str(tmp_path / "busy"))
    finally:
        lock.release()


def test_the_distributed_executor_without_torchrun_fails_before_touching_the_folder(capsys, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    out = tmp_path / "run"
    assert "launch with `torchrun" in one_error_line(capsys, *FAST, "--executor", "distributed",
                                                      "--out", str(out))
    assert not out.exists()


def test_damaged_run_files_are_named(capsys, tmp_path):
    out = trained(tmp_path)
    (out / "latest.json").write_text("")
    assert "latest.json is damaged" in one_error_line(capsys, *FAST, "--out", str(out), "--resume")
    (out / "latest.json").write_text(json.dumps({"epoch": 1}))
    block = out / "epochs" / "1" / "block-2.pt"
    block.write_bytes(block.read_bytes()[:200])
    assert "block-2.pt is corrupted" in one_error_line(capsys, *FAST, "--out", str(out), "--resume")
    block.unlink()
    assert "block-2.pt is missing" in one_error_line(capsys, *FAST, "--out", str(out), "--resume")
    model = out / "model.pt"
    model.write_bytes(model.read_bytes()[:300])
    assert "model.pt is corrupted" in one_error_line(capsys, "eval", str(out))


@pytest.mark.parametrize("rule, message", [
    (["--early-exit", "confidence", "--threshold", "-0.2"],
     "Confidence: threshold is in \\[0, 1\\], got -0.2"),
    (["--early-exit", "patience", "--patience", "0"], "patience counts agreeing blocks, a whole number >= 1"),
    (["--early-exit", "patience", "--cosine", "1.5"], "PatienceCosine: threshold is in \\[0, 1\\], got 1.5"),
])
def test_eval_refuses_an_exit_rule_out_of_range_before_loading(capsys, tmp_path, rule, message):
    import re

    folder = tmp_path / "no-run"  # the rule is checked before the run is read
    assert re.search(message, one_error_line(capsys, "eval", str(folder), *rule))


def test_eval_refuses_an_edited_config(capsys, tmp_path):
    out = trained(tmp_path)
    config = out / "config.yaml"
    config.write_text(config.read_text().replace("widths", "widths_old") if "widths" in config.read_text()
                      else config.read_text().replace("model_args: {}", "model_args: {widths: [8, 8, 8, 8]}"))
    assert ("config.yaml differs from the config the run trained with"
            in one_error_line(capsys, "eval", str(out)))


@pytest.mark.parametrize("args, message", [
    (["--stages", "1"], "--stages must be >= 2"),
    (["--micro-batch", "0"], "--batch-size and --micro-batch must be >= 1"),
    (["--repeats", "0"], "--warmup, --steps and --repeats must be >= 1"),
    (["--batch-size", "8", "--micro-batch", "8"], "1 micro-batch\\(es\\) per batch for 2 stages"),
])
def test_bench_settings_are_checked(capsys, args, message):
    import re

    assert re.search(message, one_error_line(capsys, "bench", "pipeline", *args))


@pytest.mark.parametrize("sent, code, how", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
@pytest.mark.slow
def test_ctrl_c_and_sigterm_print_where_it_stopped_and_how_to_resume(tmp_path, sent, code, how):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scpl", *FAST[:3], "--epochs", "200", *FAST[5:], "--out", str(out)]
    # a shell's background job (CI run with `&`, nohup) ignores SIGINT, and children inherit that:
    # give the run the default disposition a terminal's Ctrl-C meets
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "latest.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(sent)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"scpl train: {how}; epochs 1-") and f"are saved in {out}" in last, last
    assert last.endswith(f"--out {out} --resume"), last


def test_a_finished_run_continues_to_more_epochs_with_a_learning_rate_restart(tmp_path):
    import csv

    out = trained(tmp_path, "run", "--epochs", "2")
    assert main([*FAST, "--out", str(out), "--epochs", "3", "--resume"]) == 0
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r["name"] == "lr"]
    lrs = [float(r["value"]) for r in rows]
    assert len(lrs) == 3 and lrs[0] == 1e-3 and lrs[1] < 1e-3 and lrs[2] == 1e-3  # cosine, then a new cycle
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["config"]["restarts"] == [2]
    assert set(summary["environment"]) == {"scpl", "torch", "python", "host", "device"} and summary["started"]


@pytest.mark.slow
def test_a_full_disk_while_saving_says_what_is_safe_and_the_run_resumes_exactly(capsys, tmp_path,
                                                                                monkeypatch):
    """torch.save fails as on a full disk (PyTorch's own message) while epoch 2's set is written:
    one line names the file and the saved epochs; the resumed run ends where an uninterrupted one
    does."""
    import torch

    import scpl.checkpoint as C

    full = tmp_path / "full"
    assert main([*FAST, "--epochs", "2", "--out", str(full)]) == 0
    out = tmp_path / "run"
    real, calls = C.torch.save, [0]

    def save(obj, f):
        calls[0] += 1
        if calls[0] == 8:  # a file of epoch 2's set (epoch 1: 4 blocks + 1 trainer state, and so on)
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 46: "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
        return real(obj, f)

    monkeypatch.setattr(C.torch, "save", save)
    line = one_error_line(capsys, *FAST, "--epochs", "2", "--out", str(out))
    assert "could not write" in line and "file write failed; is the disk full?" in line, line
    assert f"nothing saved before is lost; epochs 1-1 are saved in {out}; continue with: scpl " in line
    assert not [p for p in (out / "epochs").rglob(".*") if p.is_file()]  # no half-written file is left
    monkeypatch.setattr(C.torch, "save", real)
    assert main([*FAST, "--epochs", "2", "--out", str(out), "--resume"]) == 0
    a, b = torch.load(full / "model.pt"), torch.load(out / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
