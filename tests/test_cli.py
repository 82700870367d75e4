"""The command line, run as a user would: a real subprocess."""

import json
import subprocess
import sys


def run_cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "scpl", *args], capture_output=True, text=True, timeout=timeout)


def test_demo_json_last_line():
    proc = run_cli("demo", "--json", "--epochs", "2", "--methods", "bp", "scpl", "deinforeg", "greedy")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["method"] for r in last["results"]] == ["bp", "scpl", "deinforeg", "greedy"]
    for r in last["results"]:
        assert 0.5 < r["test_accuracy"] <= 1.0  # 2 epochs on digits learn well beyond chance (0.1)
        assert r["seconds"] > 0
    assert "test_accuracy" in proc.stdout.splitlines()[0]


def test_bad_arguments_exit_nonzero_with_message():
    proc = run_cli("demo", "--methods", "nope")
    assert proc.returncode == 2
    assert "invalid choice: 'nope'" in proc.stderr
    assert run_cli("--help").returncode == 0
