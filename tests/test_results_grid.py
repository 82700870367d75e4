"""benchmarks/grid (run by benchmarks/results.py): every command of the results grid is a valid
``scpl`` command (a typo in a row would otherwise fail hours into a run), names are unique and
stable, seeds are read from the arguments, tables render from cached records."""

import importlib
import re
import shlex
import sys
import time
import types
from pathlib import Path

import pytest

from scpl import ConfigError
from scpl.cli import build_parser, train_config

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def grid():
    """The grid's modules as one namespace (each name is defined in exactly one of them)."""
    sys.path.insert(0, str(BENCHMARKS))
    parts = [importlib.import_module(f"grid.{name}") for name in ("spec", "tiers", "execute", "tables")]
    return types.SimpleNamespace(**{k: v for part in parts for k, v in vars(part).items()
                                    if not k.startswith("__")})


def test_every_training_command_of_every_tier_parses_into_a_checked_config(grid):
    parser = build_parser()
    specs = [s for tier in grid.TIERS for s in grid.TIERS[tier]()]
    assert len({s.name for s in specs}) == len(specs)  # one cache line per run
    for spec in specs:
        argv = spec.command(Path("results"))[1:]
        args = parser.parse_args(argv)
        if spec.eval_of is None:
            config = train_config(args)
            assert config.seed == spec.seed, shlex.join(argv)
            assert config.out == f"results/{spec.name}"


@pytest.mark.parametrize("setting, message", [
    ("projecter=mlp", "unknown config keys"), ("projector=mpl", "unknown projector 'mpl'"),
    ("features={conv: pool3}", "unknown features 'pool3'"), ("block_lr=[1,0,2,2]", "positive multipliers")])
def test_a_bad_setting_in_a_row_is_caught_before_any_data_is_read(setting, message):
    args = build_parser().parse_args(["train", "--config", "fmnist-cnn-fast", "--set", setting])
    with pytest.raises(ConfigError, match=message):
        train_config(args)


def test_names_are_stable_and_seeds_come_from_the_arguments(grid):
    assert grid.ablation_name("fmnist", "scpl", ["--set", "block_lr=[1,1.5,2,2]", "--seed", "1"]) == \
        "ablation-fmnist-scpl-set-block-lr-1-1.5-2-2-seed-1"
    assert grid._seed(["--set", "projector=mlp", "--seed", "2"]) == 2 and grid._seed([]) == 0
    assert {s.seed for s in grid.selected("parity", seeds={1})} == {1}


def test_a_queue_of_tables_runs_in_the_order_given_and_rejects_unknown_tiers(grid):
    specs = grid.queue(["noise:noise40", "parity:debian-lstm-parity", "noise"], seeds={0})
    assert [s.table for s in specs[:4]] == ["noise40"] * 4
    assert {s.table for s in specs[4:9]} == {"debian-lstm-parity"}
    assert len(specs) == len({s.name for s in specs}) == 4 + 5 + 8  # the rest of the noise tier, once
    with pytest.raises(SystemExit, match="unknown tier 'parit'"):
        grid.queue(["parit:debian-lstm-parity"])
    with pytest.raises(SystemExit, match=r"--tier parity:fmnist-cnn-parit selects no run: the tier's "
                                         r"tables are \['debian-lstm-parity', "):
        grid.queue(["parity:fmnist-cnn-parit"])
    with pytest.raises(SystemExit, match=r"--tier noise --seeds \[7\] selects no run.*its seeds \[0\]"):
        grid.queue(["noise"], seeds={7})


def test_runs_picked_by_name_come_in_the_order_of_the_patterns_each_once(grid):
    specs = grid.queue(["depth"])
    picked = grid.by_names(specs, ["depth-k16-contsup-r1e-s0", "depth-k16-contsup-*-s0", "depth-bp-s?"])
    assert [s.name for s in picked] == ["depth-k16-contsup-r1e-s0", "depth-k16-contsup-e-s0",
                                        "depth-k16-contsup-r1-s0", "depth-bp-s0", "depth-bp-s1",
                                        "depth-bp-s2"]
    with pytest.raises(SystemExit, match="--names 'depth-k3-.*' matches no run of the queue; its "
                                         "names: depth-bp-s0"):
        grid.by_names(specs, ["depth-k3-*"])


def test_the_driver_refuses_a_call_that_does_nothing_and_bad_numbers_in_one_line():
    import subprocess

    def run(*args):
        proc = subprocess.run([sys.executable, str(BENCHMARKS / "results.py"), *args], capture_output=True,
                              text=True)
        return proc.returncode, proc.stderr.strip().splitlines()[-1]

    assert run("--list") == (2, "results.py: error: nothing to do: give --tier TIER (to run it, or with "
                                "--list to print its commands) or --render PAGE")
    code, line = run("--tier", "noise", "--seeds", "x", "--list")
    assert code == 2 and "'x': give seeds separated by commas" in line
    code, line = run("--tier", "noise", "--jobs", "0")
    assert code == 2 and "'0': the number of runs at once is a whole number >= 1" in line


def test_noise_tables_come_one_per_rate_with_their_curves(grid, tmp_path):
    curves = {"train_accuracy": [i / 40 for i in range(40)], "train_clean_accuracy": [0.7] * 40,
              "val_accuracy": [0.8] * 40}
    runs = {s.name: {"command": shlex.join(s.command(Path("results"))), "curves": curves,
                     "summary": {"test_accuracy": 0.8, "val_accuracy": 0.85, "best_epoch": 12, "epochs": 40,
                                 "final_train_clean_accuracy": 0.7}}
            for s in grid.noise_runs() if s.table == "noise40"}
    clean = {key: value for key, value in curves.items() if key != "train_clean_accuracy"}
    runs |= {s.name: {"command": shlex.join(s.command(Path("results"))), "curves": clean,
                      "summary": {"test_accuracy": 0.9, "val_accuracy": 0.9, "best_epoch": 30, "epochs": 40,
                                  "final_train_clean_accuracy": None}}
             for s in grid.noise_runs() if s.table == "noise0"}  # no noise: no second label set
    text = "\n".join(grid.noise_table(runs, tmp_path))
    assert text.index("#### 40 % noise") < text.index("#### 0 % noise") and "20 % noise" not in text
    assert "| bp | 80.00 | 12/40 | 85.00 / 80.00 | 22.50 / 47.50 / 72.50 / 97.50 | 70.00 |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noise0.png", "noise40.png"]
    assert "![curves at 40 % noise](img/noise40.png)" in text
    assert "| greedy | 90.00 | 30/40 | 90.00 / 80.00 | 22.50 / 47.50 / 72.50 / 97.50 | - |" in text


def test_the_exit_rule_is_chosen_on_validation_within_half_a_point(grid, tmp_path):
    def rows(accuracies):
        return [{"rule": "confidence", "patience": None, "threshold": t, "accuracy": a, "compute_saved": s,
                 "compute_saved_by_time": s, "exits": [1, 1]}
                for t, a, s in zip((0.9, 0.8, 0.7), accuracies, (0.2, 0.4, 0.6))]
    run = grid.tradeoff_runs()[0]
    runs = {f"tradeoff-{split}-{run}": {"command": "scpl eval x",
                                        "summary": {"accuracy": 0.9, "tradeoff": rows(accuracies)}}
            for split, accuracies in (("val", (0.9, 0.896, 0.89)), ("test", (0.9, 0.88, 0.85)))}
    text = "\n".join(grid.exit_tables(runs, tmp_path))
    assert "| confidence **(chosen on val)** | - | 0.8 | -0.40 | 40.0% | -2.00 | 40.0% | 40.0% |" in text
    assert text.count("chosen on val") == 1 and (tmp_path / f"tradeoff-{run}.png").exists()


def test_ablation_deltas_are_against_the_parity_run_or_left_blank_without_it(grid):
    def record(spec, val):
        return {"command": shlex.join(spec.command(Path("results"))),
                "summary": {"val_accuracy": val, "best_epoch": 5, "epochs": 16}}

    plain = [s for s in grid.ablation_runs() if s.table == "lstm-parity"]
    runs = {s.name: record(s, 0.70) for s in plain}
    parity = {s.name: s for s in grid.parity_runs()}
    runs["debian-lstm-parity-16ep-bp-s0"] = record(parity["debian-lstm-parity-16ep-bp-s0"], 0.75)
    # the ablations ran at one rate per block: a decoupled method's reference is its uniform run
    uniform = {s.name: s for s in grid.uniform_runs()}
    name = "debian-lstm-parity-16ep-scpl-s0-uniform-lr"
    runs[name] = record(uniform[name], 0.72)
    runs["debian-lstm-parity-16ep-greedy-s0"] = record(parity["debian-lstm-parity-16ep-greedy-s0"], 0.90)
    runs["debian-lstm-parity-greedy-s0"] = record(parity["debian-lstm-parity-greedy-s0"], 0.90)  # 24 epochs
    rows = [line for line in grid.ablation_tables(runs) if line.startswith("| ")]
    assert any(line.startswith("| bp | plain BiLSTM") and "| 70.00 | -5.00 |" in line for line in rows)
    assert any(line.startswith("| scpl | plain BiLSTM") and "| 70.00 | -2.00 |" in line for line in rows)
    assert any(line.startswith("| greedy | plain BiLSTM") and "| 70.00 | – |" in line for line in rows)
    # the ramped rows compare with the ramped parity run of their own seed
    ramped = {s.seed: s for s in grid.ablation_runs()
              if s.table == "lstm-parity-ramp" and "MLP projector" in s.row}
    runs = {ramped[0].name: record(ramped[0], 0.80), ramped[1].name: record(ramped[1], 0.81)}
    for seed, val in ((0, 0.78), (1, 0.77)):
        name = f"debian-lstm-parity-16ep-deinforeg-s{seed}"
        runs[name] = record(parity[name], val)
    for name in ("debian-lstm-parity-16ep-deinforeg-s1-uniform-lr", "debian-lstm-parity-deinforeg-s1"):
        runs[name] = record({**uniform, **parity}[name], 0.5)  # not the reference: another rule or budget
    deltas = [line.split(" | ")[3] for line in grid.ablation_tables(runs) if line.startswith("| deinforeg")]
    assert deltas == ["+2.00", "+4.00"]
    # without a reference table, the first row of the method is the baseline
    fmnist = [s for s in grid.ablation_runs() if s.table == "fmnist" and s.row.startswith("bp|")][:2]
    runs = {fmnist[0].name: record(fmnist[0], 0.80), fmnist[1].name: record(fmnist[1], 0.82)}
    assert [line.split(" | ")[3] for line in grid.ablation_tables(runs) if line.startswith("| bp")] == \
        ["+0.00", "+2.00"]


def test_parity_gaps_are_paired_by_seed_once_two_seeds_exist(grid):
    def record(spec, test, val):
        return {"command": shlex.join(spec.command(Path("results"))),
                "summary": {"test_accuracy": test, "val_accuracy": val, "best_epoch": 5, "epochs": 16,
                            "train_seconds": 1.0, "samples_per_s": 1.0}}

    specs = {s.name: s for s in grid.parity_runs() if s.table == "debian-lstm-parity"}
    accuracies = {"bp-s0": (0.70, 0.80), "bp-s1": (0.80, 0.90), "scpl-s0": (0.71, 0.78),
                  "scpl-s1": (0.77, 0.86), "greedy-s0": (0.60, 0.60)}
    runs = {f"debian-lstm-parity-{k}": record(specs[f"debian-lstm-parity-{k}"], *v)
            for k, v in accuracies.items()}
    text = "\n".join(grid.parity_tables(runs))
    # the mean gap (-1.0) hides that SCPL led at seed 0 and trailed at seed 1
    assert "| scpl | s0 +1.00 / s1 -3.00 | -1.00 ± 2.83 | s0 -2.00 / s1 -4.00 | -3.00 ± 1.41 |" in text
    assert "| greedy | s0" not in text  # one seed: no spread to show
    del runs["debian-lstm-parity-scpl-s1"]
    assert "Gap to BP at the same seed" not in "\n".join(grid.parity_tables(runs))


def test_an_evaluation_in_the_queue_waits_for_its_run_and_is_skipped_if_that_run_fails(grid, tmp_path):
    events: list[str] = []

    def runner(spec, out):
        events.append(f"start {spec.name}")
        if spec.name == "broken":
            raise RuntimeError("broken failed")
        time.sleep(0.05 if spec.name == "slow" else 0)
        events.append(f"end {spec.name}")
        return {"name": spec.name, "summary": {}}

    specs = [grid.Spec("slow", "parity", "t", "r", ()), grid.Spec("broken", "parity", "t", "r", ()),
             grid.Spec("eval-slow", "exits", "val", "slow", (), eval_of="slow"),
             grid.Spec("eval-broken", "exits", "val", "broken", (), eval_of="broken"),
             grid.Spec("eval-cached", "exits", "val", "cached", (), eval_of="cached")]
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"name": "cached", "summary": {}}\n')
    with pytest.raises(SystemExit, match="2 runs failed"):  # 'broken' and the evaluation it held back
        grid.run_tier(specs, tmp_path / "out", jobs=3, cache=cache, runner=runner)
    assert events.index("start eval-slow") > events.index("end slow")  # not while 'slow' was running
    assert "start eval-cached" in events and "start eval-broken" not in events
    assert set(grid.load(cache)) == {"cached", "slow", "eval-cached", "eval-slow"}


def test_one_exit_rule_for_all_seeds_is_chosen_on_the_mean_validation_change(grid):
    def record(full, accuracies, order=slice(None)):
        rows = [{"rule": "confidence", "patience": None, "threshold": t, "accuracy": a, "compute_saved": s,
                 "compute_saved_by_time": s - 0.01, "exits": [1, 1]}
                for t, a, s in zip((0.9, 0.8, 0.7), accuracies, (0.2, 0.4, 0.6))]
        return {"command": "scpl eval x", "summary": {"accuracy": full, "tradeoff": rows[order]}}
    run0, run1 = grid.tradeoff_runs()[:2]
    runs = {f"tradeoff-val-{run0}": record(0.9, (0.9, 0.893, 0.89)),  # 0.8 loses 0.7 at seed 0 ...
            f"tradeoff-val-{run1}": record(0.9, (0.9, 0.899, 0.899), slice(None, None, -1)),  # ... 0.1 here
            f"tradeoff-test-{run0}": record(0.8, (0.8, 0.79, 0.78)),
            f"tradeoff-test-{run1}": record(0.8, (0.8, 0.80, 0.79), slice(None, None, -1))}
    assert grid.exit_summary({k: v for k, v in runs.items() if run1 not in k}) == []  # one seed: no summary
    text = "\n".join(grid.exit_summary(runs))
    # 0.8 is inside the budget on the mean (-0.4) though not at seed 0; 0.7 is outside (-0.55);
    # rows are matched by rule, not by position
    assert "**confidence, patience -, threshold 0.8**" in text
    assert "| val Δ accuracy | -0.70 / -0.10 | -0.40 ± 0.42 |" in text
    assert "| test Δ accuracy | -1.00 / +0.00 | -0.50 ± 0.71 |" in text
    assert "| test block calls saved % | 40.00 / 40.00 | 40.00 ± 0.00 |" in text
    assert "| test block time saved % | 39.00 / 39.00 | 39.00 ± 0.00 |" in text
    for key in (f"tradeoff-val-{run0}", f"tradeoff-val-{run1}"):
        runs[key] = record(0.9, (0.89, 0.88, 0.87))
    assert "No exit rule loses at most 0.5 points" in "\n".join(grid.exit_summary(runs))


def test_a_run_that_breaks_the_driver_itself_is_reported_and_the_others_are_kept(grid, tmp_path):
    def runner(spec, out):
        if spec.name == "odd":
            raise ValueError("no JSON line")
        return {"name": spec.name, "summary": {}}

    cache = tmp_path / "cache.jsonl"
    specs = [grid.Spec(n, "parity", "t", "r", ()) for n in ("odd", "a", "b")]
    with pytest.raises(SystemExit, match="1 runs failed"):
        grid.run_tier(specs, tmp_path / "out", jobs=1, cache=cache, runner=runner)
    assert set(grid.load(cache)) == {"a", "b"}


def test_runs_measured_at_one_rate_per_block_pin_it_and_the_uniform_tier_pairs_them_with_bp(grid):
    for spec in grid.ablation_runs() + grid.noise_runs():
        args = list(spec.args)
        pinned = "block_lr=ramp" if spec.table.endswith("-ramp") else "block_lr=uniform"
        assert pinned in args, spec.name  # so each command computes its cached number
        own = [a for a in args if a.startswith("block_lr=")][-1]
        assert own == pinned or pinned in args[:args.index(own)]  # a row's own wins
    names = {s.name for s in grid.uniform_runs()}
    assert "fmnist-cnn-parity-scpl-s2-uniform-lr" in names
    assert "fmnist-cnn-parity-bp-s0-uniform-lr" not in names  # BP is one block: the same run either way
    assert "tradeoff-test-fmnist-cnn-parity-dascpl-s1-uniform-lr" in names
    assert not {s.name for s in grid.parity_runs()} & names
    assert all("block_lr" not in " ".join(s.args) for s in grid.parity_runs())  # the defaults
    # the LSTM's runs from before its budget moved to 24 epochs pin the 16 they ran
    assert "debian-lstm-parity-scpl-s0-uniform-lr" not in names
    for spec in grid.parity_runs() + grid.uniform_runs() + grid.ablation_runs():
        args = " ".join(spec.args)
        if spec.table in ("debian-lstm-parity-16ep", "lstm-parity", "lstm-parity-ramp"):
            epochs = re.findall(r"--epochs (\d+)", args)
            assert epochs == (["24"] if "24 epochs" in spec.row else ["16"]), args
        elif spec.table == "debian-lstm-parity":
            assert "--epochs" not in args

    def record(spec, test):
        return {"command": shlex.join(spec.command(Path("results"))),
                "summary": {"test_accuracy": test, "val_accuracy": test, "best_epoch": 5, "epochs": 16,
                            "train_seconds": 1.0, "samples_per_s": 1.0}}
    specs = {s.name: s for s in grid.parity_runs() + grid.uniform_runs()}
    runs = {name: record(specs[name], test) for name, test in (
        ("debian-lstm-parity-16ep-bp-s0", 0.70), ("debian-lstm-parity-16ep-bp-s1", 0.80),
        ("debian-lstm-parity-16ep-scpl-s0-uniform-lr", 0.71),
        ("debian-lstm-parity-16ep-scpl-s1-uniform-lr", 0.77), ("debian-lstm-parity-16ep-scpl-s0", 0.75))}
    uniform = "\n".join(grid.parity_tables(runs, grid.BEFORE))
    assert "one learning rate for every block" in uniform
    assert "`debian-lstm-parity-16ep-scpl-s0-uniform-lr`" in uniform  # the run, by name
    assert "| scpl | s0 +1.00 / s1 -3.00 | -1.00 ± 2.83 |" in uniform
    ramped = "\n".join(grid.parity_tables(runs))
    assert "| scpl (1 seed) | 75.00 | +0.00 |" in ramped and "uniform" not in ramped
    # like for like: seed 1 has no ramped SCPL run yet, so both sides average seed 0 only
    both = "\n".join(grid.ramp_against_uniform(runs))
    row = "| `debian-lstm-parity --epochs 16` | scpl | 0 | +1.00 -> +5.00 | +4.00 | +1.00 -> +5.00 | +4.00 |"
    assert row in both
    del runs["debian-lstm-parity-16ep-bp-s0"]
    assert grid.ramp_against_uniform(runs) == []


def test_every_cached_run_is_a_run_of_the_grid_and_keeps_the_command_that_computes_it(grid):
    """The page prints each cached run's command beside its number: it must be the command the
    grid runs now (a renamed or re-budgeted run whose cache line kept its old command would
    print a command that computes something else)."""
    specs = {s.name: s for tier in grid.TIERS for s in grid.TIERS[tier]()}
    runs = grid.load()
    assert runs.keys() <= specs.keys(), sorted(runs.keys() - specs.keys())
    def current(command: str, name: str) -> tuple[str, str]:  # (as cached, as the grid runs it)
        return grid.portable(command), shlex.join(specs[name].command(Path("results")))

    for name, record in runs.items():
        cached, now = current(record["command"], name)
        assert cached == now, name
        if "same_as" in record:  # the identical computation it was cached from is a grid run too
            source = re.search(r"--out \S*/results/(\S+)", record["same_as"])[1]
            cached, now = current(record["same_as"], source)
            assert cached == now, name


def test_a_run_folder_is_resumed_only_by_the_command_that_made_it(grid, tmp_path):
    folder = tmp_path / "run"
    assert not grid._resumable(folder, "scpl train --epochs 24")  # a new run: its command is recorded
    (folder / "latest.json").write_text("{}")  # it stopped halfway
    assert grid._resumable(folder, "scpl train --epochs 24")
    with pytest.raises(RuntimeError, match="holds checkpoints of another command"):
        grid._resumable(folder, "scpl train --epochs 32")  # would extend that run, not train afresh
    (folder / "command.txt").unlink()  # a folder from before commands were recorded
    with pytest.raises(RuntimeError, match="not recorded"):
        grid._resumable(folder, "scpl train --epochs 24")


def test_depth_ablations_change_one_factor_of_a_row_that_the_grid_runs_at_that_k(grid):
    from grid import depth
    from scpl.optim import block_lr_scales

    assert depth.ramp_over_depth(4) == "[" + ",".join(f"{s:g}" for s in block_lr_scales("ramp", 4)) + "]"
    heads = depth._thirds(16, ("conv2", "conv", "pool2")).strip("[]").split(",")
    assert heads == ["conv2"] * 5 + ["conv"] * 5 + ["pool2"] * 5  # K-1 heads, deepest first
    assert len(depth._thirds(8, ("a", "b", "c")).split(",")) == 7
    grid_runs = {s.name: s for s in depth.depth_runs()}
    parser = build_parser()

    def config(spec) -> dict:
        return vars(train_config(parser.parse_args(spec.command(Path("r"))[1:])))

    specs = {s.name: s for s in depth.depth_ablation_runs()}
    for k, row, key, *_ in depth.DEPTH_ABLATIONS:
        spec = specs[depth.depth_ablation_name(k, row, key)]
        base = config(grid_runs[depth.depth_name(row, k, 0)])
        changed = {key for key, value in config(spec).items() if base[key] != value and key != "out"}
        assert len(changed - {"num_blocks"}) == 1, (spec.name, changed)  # --blocks auto needs its K


def test_depth_ablations_are_shown_against_their_rows_validation_at_the_same_k(grid):
    from grid import depth

    def record(val: float, test: float) -> dict:
        return {"summary": {"val_accuracy": val, "test_accuracy": test}}

    k, row, key, setting, _ = depth.DEPTH_ABLATIONS[0]
    runs = {depth.depth_ablation_name(k, row, key): record(0.9, 0.8)}
    assert f"| {k} | {row} | {setting} | 90.00 | - | 80.00 |" in depth.ablation_table(runs)
    runs[depth.depth_name(row, k, 0)] = record(0.85, 0.8)
    assert f"| {k} | {row} | {setting} | 90.00 | +5.00 | 80.00 |" in depth.ablation_table(runs)
    assert depth.ablation_table({}) == []


def test_the_degradation_with_depth_is_the_error_ratio_of_the_best_row_at_k16(grid):
    from grid import depth

    def record(test: float) -> dict:
        return {"summary": {"val_accuracy": test, "test_accuracy": test}}

    runs = {depth.depth_name("scpl", 2, 0): record(0.92), depth.depth_name("scpl", 16, 0): record(0.90),
            depth.depth_name("greedy", 2, 0): record(0.93), depth.depth_name("greedy", 16, 0): record(0.89)}
    line = depth.degradation(runs)[0]
    assert "(scpl): test error 8.00 -> 10.00 %, a factor of 1.25" in line
    assert "**missed**: 1.25 > 1.21" in line
    runs[depth.depth_name("scpl", 16, 0)] = record(0.91)
    assert "a factor of 1.12" in depth.degradation(runs)[0] and depth.degradation(runs)[0].endswith("holds.")
    # the best row is the best on validation, not on test
    runs[depth.depth_name("greedy", 16, 0)] = {"summary": {"val_accuracy": 0.95, "test_accuracy": 0.89}}
    assert "(greedy): test error 7.00 -> 11.00 %" in depth.degradation(runs)[0]
    assert depth.degradation({depth.depth_name("scpl", 16, 0): record(0.9)}) == []


def test_seeded_depth_rows_pair_each_seed_with_bp_and_average_validation(grid):
    from grid import depth

    def record(val: float, test: float) -> dict:
        return {"summary": {"val_accuracy": val, "test_accuracy": test}}

    k, rows = next(iter(depth.DEPTH_SEEDED.items()))
    row = rows[0]
    runs = {depth.depth_name("bp", 1, 0): record(0.9, 0.90), depth.depth_name("bp", 1, 1): record(0.9, 0.92),
            depth.depth_name(row, k, 0): record(0.89, 0.89), depth.depth_name(row, k, 1): record(0.91, 0.90)}
    table = depth.paired_table(runs)
    assert f"| K={k} | {row} | s0 -1.00 / s1 -2.00 | -1.50 ± 0.71 | 90.00 ± 1.41 |" in table
    del runs[depth.depth_name("bp", 1, 1)]  # a seed without its BP run is not paired
    assert depth.paired_table(runs) == []


def test_the_best_method_of_a_target_is_chosen_on_validation_and_judged_on_test(grid):
    from grid import headline
    def record(val: float, test: float) -> dict:
        return {"summary": {"val_accuracy": val, "test_accuracy": test}}

    runs = {headline.run_name("k8", "bp", 0): record(0.90, 0.90),
            headline.run_name("k8", "scpl", 0): record(0.86, 0.899),  # closest on test
            headline.run_name("k8", "greedy", 0): record(0.89, 0.892)}  # closest on validation
    measured, outcome = headline.verdict(runs, headline.Target("k8", "best", 0.5))
    assert measured == "greedy -0.80 (1 seed)" and outcome == "**missed by 0.30**"
