"""PNG plots and the threaded executor's timeline trace."""

import csv
from collections import defaultdict

import pytest
import torch

from conftest import synthetic_loader, tiny_cnn
from scpl import DecoupledModel, seed_everything
from scpl.executors import ThreadedExecutor
from scpl.executors.threads import TraceEvent
from scpl.plots import (
    plot_curves,
    plot_exit_histogram,
    plot_runs,
    plot_timeline,
    plot_tradeoff,
    read_metrics_csv,
)

ROWS = [
    {"epoch": e, "block": b, "name": n, "value": v}
    for e in (1, 2, 3)
    for b, n, v in [(0, "train_loss", 1.5 / e), (1, "train_loss", 1.2 / e),
                    (0, "val_accuracy", 0.3 + 0.1 * e), (1, "val_accuracy", 0.4 + 0.1 * e),
                    ("", "val_accuracy", 0.45 + 0.1 * e), (0, "lr", 0.1 / e), ("", "epoch_seconds", 2.0)]
]


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_plot_curves_and_csv_round_trip(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "block", "name", "value"])
        writer.writeheader()
        writer.writerows(ROWS)
    rows = read_metrics_csv(csv_path)
    assert rows == [{**r, "block": None if r["block"] == "" else r["block"]} for r in ROWS]
    assert all(isinstance(r["epoch"], int) and isinstance(r["value"], float) for r in rows)
    assert_png(plot_curves(rows, tmp_path / "curves.png"))
    assert_png(plot_curves(ROWS[:2], str(tmp_path / "sub" / "loss.png")))  # str path, one panel, new folder


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="no rows named any of"):
        plot_curves([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="no rows named any of"):
        plot_curves([r for r in ROWS if r["name"] == "epoch_seconds"], tmp_path / "a.png")
    with pytest.raises(ValueError, match="no events to plot"):
        plot_timeline([], tmp_path / "b.png")
    with pytest.raises(ValueError, match="positive total"):
        plot_exit_histogram([0, 0], tmp_path / "c.png")
    with pytest.raises(ValueError, match="2 accuracies for 3 blocks"):
        plot_exit_histogram([1, 2, 3], tmp_path / "c.png", accuracy=[0.5, 0.5])
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,name\n1,x\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['block', 'value'\]"):
        read_metrics_csv(bad)
    assert not list(tmp_path.glob("*.png"))


def test_plot_runs_compares_curves_and_names_what_is_missing(tmp_path):
    runs = {"bp": {"val_accuracy": [0.5, 0.7, 0.8], "train_accuracy": [0.4, 0.6, 0.9]},
            "scpl": {"val_accuracy": [0.45, 0.65]}}  # shorter, and without training accuracy
    assert_png(plot_runs(runs, ["train_accuracy", "val_accuracy"], tmp_path / "r.png",
                         titles={"val_accuracy": "validation"}, title="two runs"))
    with pytest.raises(ValueError, match=r"no run has \['lr'\]"):
        plot_runs(runs, ["val_accuracy", "lr"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_runs({}, ["val_accuracy"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_tradeoff_draws_one_line_per_rule_and_refuses_an_empty_panel(tmp_path):
    rows = [{"rule": "confidence", "patience": None, "threshold": t, "accuracy": 0.9 - 0.1 * s,
             "compute_saved": s} for t, s in ((0.9, 0.2), (0.7, 0.5))]
    rows += [{"rule": "patience", "patience": 1, "threshold": 0.8, "accuracy": 0.8, "compute_saved": 0.4}]
    assert_png(plot_tradeoff({"validation": rows, "test": rows}, tmp_path / "t.png", title="sweep"))
    with pytest.raises(ValueError, match=r"every panel needs rows, got \[3, 0\]"):
        plot_tradeoff({"validation": rows, "test": []}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_timeline_and_exit_histogram(tmp_path):
    events = [TraceEvent(s, t, m, 0.01 * (2 * t + m + s), 0.01 * (2 * t + m + s) + 0.008)
              for s in range(3) for t in range(4) for m in range(2)]
    assert_png(plot_timeline(events, tmp_path / "t.png", title="synthetic"))
    as_dicts = [dict(stage=e.stage, step=e.step, micro=e.micro, start=e.start, end=e.end) for e in events]
    assert_png(plot_timeline(as_dicts, tmp_path / "d.png"))
    assert_png(plot_exit_histogram([50, 30, 20], tmp_path / "h.png", accuracy=[0.9, 0.7, float("nan")]))
    assert_png(plot_exit_histogram((5, 0), tmp_path / "h2.png"))


def test_threaded_trace_records_every_train_step():
    seed_everything(0)
    model = DecoupledModel(tiny_cnn(), [3, 5], method="scpl", num_classes=4,
                           example_input=torch.zeros(2, 1, 8, 8))
    loader, micro = synthetic_loader(n=96, batch_size=16), 2
    steps = len(loader)
    executor = ThreadedExecutor(micro_batches=micro, trace=True)
    for _ in range(2):  # the trace is reset per epoch
        model.fit(loader, epochs=1, executor=executor)
        events = executor.events
        assert len(events) == len(model.blocks) * steps * micro
        assert [e.start for e in events] == sorted(e.start for e in events)
        by_stage = defaultdict(list)
        for e in events:
            assert 0 <= e.start <= e.end
            by_stage[e.stage].append(e)
        for stage, evs in by_stage.items():
            assert [(e.step, e.micro) for e in evs] == [(t, m) for t in range(steps) for m in range(micro)]
            assert all(a.end <= b.start for a, b in zip(evs, evs[1:])), f"stage {stage} overlaps itself"
        done = {(e.step, e.micro): e for e in by_stage[0]}
        assert all(e.start >= done[e.step, e.micro].end for e in by_stage[1]), "stage 1 ran before its input"
    assert ThreadedExecutor().events == [] and not ThreadedExecutor().trace
