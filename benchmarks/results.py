"""Run the experiments behind docs/results.md and write its tables.

Every run is one ``scpl train`` (or ``scpl eval``) command, printed on the page beside its
number. Each finished run's summary and validation/training curves are cached, one JSON line per
run, in ``benchmarks/results-cache.jsonl`` (committed, so the grid outlives a machine); its
checkpoints live under ``--out`` (not committed). An interrupted grid continues where it
stopped: finished runs are not run again, and a run stopped halfway continues from its last
checkpoint (``--resume``, bit for bit) if its folder is still there (a folder holding checkpoints
of another command is refused, not resumed). A failed run is reported
and the others go on.

Tiers::

    ablations  one factor at a time on validation accuracy (seed 0): Fashion-MNIST at a short
               budget, the Debian Transformer and LSTM
    parity     converged budgets, seeds 0-2, BP and every decoupled method on the same backbone,
               budget, augmentation and optimizer
    noise      20 % and 40 % symmetric label noise, long enough for BP to fit the noisy labels,
               with accuracy on the noisy and the true training labels every epoch
    exits      the early-exit trade-off (threshold against accuracy and compute saved) of the
               converged models with exit classifiers (``scpl eval --tradeoff``)
    uniform    the parity grid and its early-exit evaluations at one learning rate for every
               block (``block_lr=uniform``), the decoupled methods' default before 2026-12-01
               (the LSTM's at 16 epochs, its budget then)
    depth      ResNet-32 on Fashion-MNIST cut into K = 2, 4, 8 and 16 blocks, every method
               (seed 0; seeds 1-2 for BP and the two best at K=8 and 16)

Runs measured before a default changed pin the old setting in their commands (the ablations and
the noise runs pin ``block_lr=uniform``), so that every command on the page computes its number.

Usage::

    python benchmarks/results.py --tier parity --jobs 2 --out results    # run (or finish) a tier
    python benchmarks/results.py --render docs/results.md                # rewrite the page's tables
    python benchmarks/results.py --tier parity --list                    # the commands, without running
    python benchmarks/results.py --tier noise:noise40 exits --seeds 0    # several tables, one queue

Each run uses one intra-op thread (the recipes set ``threads: 1``); ``--jobs`` runs that many
at once. Run a long tier from its own checkout of a fixed commit (``PYTHONPATH=CHECKOUT/src``)
so that work on the code does not change what is measured halfway.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

CACHE = Path(__file__).with_name("results-cache.jsonl")
SEEDS = (0, 1, 2)
DECOUPLED = ("scpl", "deinforeg", "greedy", "contsup", "dascpl")
TEXT_METHODS = ("bp", "scpl", "deinforeg", "greedy", "dascpl")  # ContSup's context needs conv feature maps
PARITY = {"fmnist-cnn-parity": ("bp", *DECOUPLED), "debian-transformer-parity": TEXT_METHODS,
          "debian-lstm-parity": TEXT_METHODS, "debian-lstm-parity-16ep": TEXT_METHODS}
"""The parity grids and their methods. A grid is named by its recipe, or it is a recipe at the
budget it had before (:data:`GRID_ARGS`)."""
GRID_ARGS = {"debian-lstm-parity-16ep": ("--config", "debian-lstm-parity", "--epochs", "16")}
"""Grids kept at a budget their recipe has left (the LSTM's went from 16 to 24 epochs on
2026-12-02): their commands pin it, so that each computes its cached number."""
NOISE = {"rates": (0.2, 0.4), "methods": ("bp", "scpl", "deinforeg", "greedy")}
UNIFORM = ("--set", "block_lr=uniform")
"""One learning rate for every block: the decoupled methods' default before "ramp" (2026-12-01)."""
BEFORE = "uniform-lr"
"""The name suffix of the parity runs (and their evaluations) made with :data:`UNIFORM`."""
UNIFORM_GRIDS = ("fmnist-cnn-parity", "debian-transformer-parity", "debian-lstm-parity-16ep")
"""The grids also run with :data:`UNIFORM` (the LSTM's at 16 epochs, its budget then)."""


def grid_args(grid: str) -> tuple[str, ...]:
    """The arguments that select a parity grid's recipe and budget."""
    return GRID_ARGS.get(grid, ("--config", grid))


def grid_title(grid: str) -> str:
    """A parity grid as the page names it: its recipe and any pinned budget."""
    return "`" + " ".join(a for a in grid_args(grid) if a != "--config") + "`"


@dataclass(frozen=True)
class Spec:
    """One run: its cache name, where its number goes (tier, table, row) and its arguments."""

    name: str
    tier: str
    table: str
    row: str
    args: tuple[str, ...]
    seed: int = 0
    note: str = ""
    eval_of: Optional[str] = None  # ``scpl eval`` of this run's folder instead of a training run

    def command(self, out: Path) -> list[str]:
        if self.eval_of is not None:
            return ["scpl", "eval", str(out / self.eval_of), *self.args, "--json"]
        return ["scpl", "train", *self.args, "--out", str(out / self.name), "--json", "--no-progress"]


# --------------------------------------------------------------------------- the tiers

def _set(**values: str) -> list[str]:
    return [a for key, value in values.items() for a in ("--set", f"{key}={value}")]


ABLATION_REFERENCE = {"fmnist-parity": ("fmnist-cnn-parity", BEFORE),
                      "transformer-parity": ("debian-transformer-parity", BEFORE),
                      "lstm-parity": ("debian-lstm-parity-16ep", BEFORE),
                      "lstm-parity-ramp": ("debian-lstm-parity-16ep", ""),
                      "transformer-parity-ramp": ("debian-transformer-parity", "")}
"""Ablations on a parity grid, by workload: the grid and its rate rule (:data:`BEFORE`: one rate
per block; "": the ramp, pinned). A row is compared with the grid's run of its method and seed."""
ABLATION_BASES = {
    "fmnist": ["--config", "fmnist-cnn-fast", "--epochs", "8", *UNIFORM],
    "transformer": ["--config", "debian-transformer-fast", "--epochs", "10", *UNIFORM],
    "lstm": ["--config", "debian-lstm-fast", "--epochs", "8", *UNIFORM],
    **{workload: [*grid_args(grid), *(UNIFORM if rule == BEFORE else _set(block_lr="ramp"))]
       for workload, (grid, rule) in ABLATION_REFERENCE.items()},
}
"""Short budgets: Fashion-MNIST 18,000 images x 8 epochs, the text models 10 and 8 epochs; and
the settings that won at the short budget, checked at the converged one. All at one learning rate
per block, as measured (a row's own ``block_lr`` comes later and wins), except the ``-ramp``
workloads: the text parity grids under the per-block rates that are the default since 2026-12-01.
A row's own ``--epochs`` replaces its base's."""


def reference_name(workload: str, method: str, seed: int) -> str:
    """The parity run an ablation row of ``workload`` is compared with (:data:`ABLATION_REFERENCE`)."""
    grid, rule = ABLATION_REFERENCE[workload]
    return parity_name(grid, method, seed, rule)


def _seeded(setting: str, extra: list[str], seed: int) -> tuple[str, list[str]]:
    """A row's setting and arguments at ``seed`` (seed 0, the recipes' own, adds nothing)."""
    return (setting, extra) if seed == 0 else (f"{setting}, seed {seed}", [*extra, "--seed", str(seed)])


def _ablations() -> list[tuple[str, str, str, list[str]]]:
    """(workload, method, setting, extra arguments), one factor changed at a time from a stated
    baseline; every factor that a default may change is given explicitly, so a row's command
    computes the same thing whatever the defaults are."""
    scpl = greedy = _set(projector="mlp", features="pool2")
    deinforeg = _set(projector="deinforeg", features="pool2")
    temperature = '{{"temperature":{}}}'.format
    rows = [
        ("fmnist", "bp", "baseline", []),
        ("fmnist", "bp", "random crop (augment mnist)", ["--augment", "mnist"]),
        ("fmnist", "bp", "lr x 2", ["--lr", "0.002"]),
        ("fmnist", "scpl", "baseline: MLP projector 512-128, 2x2 pooled maps, tau 0.1", scpl),
        ("fmnist", "scpl", "baseline, seed 1", [*scpl, "--seed", "1"]),
        ("fmnist", "scpl", "linear projector (128)", _set(projector="linear", projector_dim="128",
                                                          features="pool2")),
        ("fmnist", "scpl", "identity projector", _set(projector="identity", features="pool2")),
        ("fmnist", "scpl", "MLP projector with BatchNorm", _set(projector="mlp_bn", features="pool2")),
        ("fmnist", "scpl", "MLP projector with BatchNorm, seed 1",
         [*_set(projector="mlp_bn", features="pool2"), "--seed", "1"]),
        ("fmnist", "scpl", "maps pooled to 1x1", _set(projector="mlp", features="pool1")),
        ("fmnist", "scpl", "maps pooled to 4x4", _set(projector="mlp", features="pool4")),
        ("fmnist", "scpl", "conv head (3x3 conv+BN+ReLU, then 2x2)", _set(projector="mlp", features="conv")),
        *(("fmnist", "scpl", f"temperature {t}", [*scpl, *_set(objective_args=temperature(t))])
          for t in ("0.05", "0.2", "0.5")),
        ("fmnist", "scpl", "contrastive last block (SCPL's original)",
         [*scpl, *_set(last_block="contrastive")]),
        ("fmnist", "scpl", "block lr x [1, 1.5, 2, 2]", [*scpl, *_set(block_lr="[1,1.5,2,2]")]),
        ("fmnist", "scpl", "block lr x [1, 1.5, 2, 2], seed 1",
         [*scpl, *_set(block_lr="[1,1.5,2,2]"), "--seed", "1"]),
        ("fmnist", "scpl", "block lr x [0.3, 0.5, 1, 1]", [*scpl, *_set(block_lr="[0.3,0.5,1,1]")]),
        ("fmnist", "scpl", "lr x 2", [*scpl, "--lr", "0.002"]),
        ("fmnist", "scpl", "1 warm-up epoch", [*scpl, "--warmup-epochs", "1"]),
        ("fmnist", "scpl", "2 warm-up epochs", [*scpl, "--warmup-epochs", "2"]),
        ("fmnist", "scpl", "random crop (augment mnist)", [*scpl, "--augment", "mnist"]),
        ("fmnist", "scpl", "random crop, two views per image", [*scpl, "--augment", "mnist",
                                                                  *_set(two_views="true")]),
        ("fmnist", "deinforeg", "baseline: projector 512-512-512 with BatchNorm, 2x2 pooled maps", deinforeg),
        ("fmnist", "deinforeg", "baseline, seed 1", [*deinforeg, "--seed", "1"]),
        ("fmnist", "deinforeg", "linear projector (128)", _set(projector="linear", projector_dim="128",
                                                               features="pool2")),
        ("fmnist", "deinforeg", "MLP projector 512-128", _set(projector="mlp", projector_dim="128",
                                                              features="pool2")),
        ("fmnist", "deinforeg", "maps pooled to 4x4", _set(projector="deinforeg", features="pool4")),
        ("fmnist", "deinforeg", "conv head", _set(projector="deinforeg", features="conv")),
        ("fmnist", "deinforeg", "invariance term only",
         [*deinforeg, *_set(objective_args='{"var_weight":0,"cov_weight":0}')]),
        ("fmnist", "deinforeg", "block lr x [1, 1.5, 2, 2]", [*deinforeg, *_set(block_lr="[1,1.5,2,2]")]),
        ("fmnist", "greedy", "baseline: MLP head 512-10, 2x2 pooled maps", greedy),
        ("fmnist", "greedy", "baseline, seed 1", [*greedy, "--seed", "1"]),
        ("fmnist", "greedy", "linear head", _set(projector="linear", features="pool2")),
        ("fmnist", "greedy", "maps pooled to 4x4", _set(projector="mlp", features="pool4")),
        ("fmnist", "greedy", "maps pooled to 4x4, seed 1",
         [*_set(projector="mlp", features="pool4"), "--seed", "1"]),
        ("fmnist", "greedy", "conv head (DGL's auxiliary net)", _set(projector="mlp", features="conv")),
        ("fmnist", "greedy", "conv head, seed 1", [*_set(projector="mlp", features="conv"), "--seed", "1"]),
        ("fmnist", "greedy", "block lr x [1, 1.5, 2, 2]", [*greedy, *_set(block_lr="[1,1.5,2,2]")]),
        ("fmnist", "greedy", "random crop (augment mnist)", [*greedy, "--augment", "mnist"]),
        *(("fmnist", "dascpl", f"blocks switched on within {span} of the epochs",
           [*scpl, *_set(progressive_span=span)]) for span in ("1.0", "0.5", "0.25")),
    ]
    for workload in ("transformer", "lstm"):
        rows += [(workload, "bp", "baseline", []),
                 (workload, "scpl", "baseline: MLP projector 512-128", _set(projector="mlp")),
                 (workload, "scpl", "linear projector (128)", _set(projector="linear", projector_dim="128")),
                 (workload, "scpl", "identity projector", _set(projector="identity")),
                 (workload, "deinforeg", "baseline: projector 512-512-512 with BatchNorm",
                  _set(projector="deinforeg")),
                 (workload, "deinforeg", "linear projector (128)",
                  _set(projector="linear", projector_dim="128")),
                 (workload, "deinforeg", "MLP projector 512-128", _set(projector="mlp", projector_dim="128")),
                 (workload, "greedy", "baseline: MLP head 512-16", _set(projector="mlp")),
                 (workload, "greedy", "linear head", _set(projector="linear"))]
    # DeInfoReg's LSTM blocks shrink their outputs (the BatchNorm projector makes the loss blind
    # to their scale) and the next block reads ever smaller inputs: does normalising them help?
    lstm_norm = _set(model_args="{dim: 50, hidden: 64, layers: 3, input_norm: true}")
    rows += [("lstm", "deinforeg", "block lr x [1, 1.5, 2, 2]",
              _set(projector="deinforeg", block_lr="[1,1.5,2,2]")),
             ("lstm", "deinforeg", "LSTM blocks normalise their input (LayerNorm)",
              [*_set(projector="deinforeg"), *lstm_norm]),
             ("lstm", "bp", "LSTM blocks normalise their input (LayerNorm)", lstm_norm),
             ("lstm", "scpl", "LSTM blocks normalise their input (LayerNorm)",
              [*_set(projector="mlp"), *lstm_norm])]
    rows += [("fmnist-parity", method, "block lr x [1, 1.5, 2, 2]", _set(block_lr="[1,1.5,2,2]"))
             for method in ("scpl", "deinforeg", "greedy", "dascpl", "contsup")]
    rows += [("transformer-parity", method, "block lr x [1, 1.5, 2, 2]", _set(block_lr="[1,1.5,2,2]"))
             for method in ("scpl", "deinforeg", "greedy", "dascpl")]
    # the budget that chose the recipe's 24 epochs: at 12, BP peaked at epoch 7 and SCPL, DeInfoReg
    # and DASCPL were still improving at 11-12; 24 epochs added 1.1 (BP) to 3.8 (DASCPL) points
    rows += [("transformer-parity", method, "12 epochs", ["--epochs", "12"])
             for method in ("bp", "scpl", "deinforeg", "greedy", "dascpl")]
    # the parity LSTM before input_norm became text_lstm's default (seed 0 of each method)
    rows += [("lstm-parity", method, "plain BiLSTM blocks (no input norm)",
              _set(model_args="{dim: 50, hidden: 64, layers: 3, input_norm: false}"))
             for method in ("bp", "scpl", "deinforeg", "greedy", "dascpl")]
    # the two LSTM parity misses (greedy -1.8, DeInfoReg -4.8 over 3 seeds; DeInfoReg still gained
    # 2 validation points in its last quarter): per-block learning rates, and a longer schedule
    rows += [("lstm-parity", method, "block lr x [1, 1.5, 2, 2]", _set(block_lr="[1,1.5,2,2]"))
             for method in ("deinforeg", "greedy")]
    rows += [("lstm-parity", method, "24 epochs", ["--epochs", "24"])
             for method in ("bp", "deinforeg", "greedy")]
    # DeInfoReg's LSTM miss under the defaults (-3.6 test, -3.8 validation over 3 seeds): the MLP
    # projector without BatchNorm won the LSTM ablation by 11 validation points over DeInfoReg's
    # projector (8 epochs, the plain BiLSTM) and lost 4.5 on the Transformer's: both are sequence
    # outputs. At the LSTM's parity budget (input_norm) it lost about 5 points at every seed; the
    # Transformer check (-2.25) stopped at seed 0.
    mlp = _set(projector="mlp", projector_dim="128")
    rows += [(workload, "deinforeg", *_seeded("MLP projector 512-128", mlp, seed))
             for workload, seeds in (("lstm-parity-ramp", SEEDS), ("transformer-parity-ramp", (0,)))
             for seed in seeds]
    # the lever left for the LSTM misses: at one rate, 24 epochs closed half of DeInfoReg's gap
    # (BP at 24 epochs is the lstm-parity row: BP has one block, the same run under either rule)
    rows += [("lstm-parity-ramp", method, *_seeded("24 epochs", ["--epochs", "24"], seed))
             for seed in (0, 1) for method in ("deinforeg", "greedy")]
    return rows


ABLATIONS = _ablations()


def ablation_name(workload: str, method: str, extra: list[str]) -> str:
    """A run's cache name from its arguments (stable: the same command, the same name)."""
    text = "-".join(a.lstrip("-") for a in extra) or "baseline"
    return "ablation-" + re.sub(r"[^a-z0-9.]+", "-", f"{workload}-{method}-{text}".lower()).strip("-")


def ablation_runs() -> list[Spec]:
    return [Spec(ablation_name(workload, method, extra), "ablations", workload, f"{method}|{setting}",
                 (*_base(workload, extra), "--method", method, *extra), _seed(extra))
            for workload, method, setting, extra in ABLATIONS]


def _base(workload: str, extra: list[str]) -> list[str]:
    """The workload's base arguments, without its ``--epochs`` if the row sets its own."""
    base = ABLATION_BASES[workload]
    if "--epochs" in extra and "--epochs" in base:
        at = base.index("--epochs")
        return base[:at] + base[at + 2:]
    return base


def _seed(args: list[str]) -> int:
    """The ``--seed`` among a run's arguments (0 when absent: the recipes' seed)."""
    return int(args[args.index("--seed") + 1]) if "--seed" in args else 0


def parity_name(grid: str, method: str, seed: int, suffix: str = "") -> str:
    """A parity run's cache name; ``suffix`` (e.g. :data:`BEFORE`) marks a pinned older default.
    BP is one block, the same run under every ``block_lr``: it has no suffix."""
    return f"{grid}-{method}-s{seed}" + (f"-{suffix}" if suffix and method != "bp" else "")


def parity_runs() -> list[Spec]:
    """Grid by grid (:data:`PARITY`), seed 0 of every method first (a partial grid covers every
    method)."""
    return [Spec(parity_name(grid, method, seed), "parity", grid, method,
                 (*grid_args(grid), "--method", method, "--seed", str(seed)), seed)
            for grid, methods in PARITY.items() for seed in SEEDS for method in methods]


def uniform_runs() -> list[Spec]:
    """The decoupled runs of :data:`UNIFORM_GRIDS` at one rate per block, and their exit
    evaluations."""
    return [Spec(parity_name(grid, method, seed, BEFORE), "uniform", grid, method,
                 (*grid_args(grid), "--method", method, "--seed", str(seed), *UNIFORM), seed)
            for grid in UNIFORM_GRIDS for seed in SEEDS for method in PARITY[grid]
            if method != "bp"] + exit_runs(BEFORE)


NOISE_RECIPE = "fmnist-cnn-noise"


def noise_runs() -> list[Spec]:
    """One table per noise rate (``--only noise40``), the largest rate first."""
    return [Spec(f"noise{rate}-{method}-s0", "noise", f"noise{100 * rate:.0f}", method,
                 ("--config", NOISE_RECIPE, "--method", method, "--label-noise", str(rate), *UNIFORM))
            for rate in (*sorted(NOISE["rates"], reverse=True), 0.0) for method in NOISE["methods"]]


def tradeoff_runs(suffix: str = "") -> list[str]:
    """The models whose early-exit trade-off is measured: DASCPL's Fashion-MNIST parity runs."""
    return [parity_name("fmnist-cnn-parity", "dascpl", s, suffix) for s in SEEDS]


def exit_runs(suffix: str = "") -> list[Spec]:
    return [Spec(f"tradeoff-{split}-{run}", "uniform" if suffix else "exits", split, run,
                 ("--tradeoff", "--split", split), seed, eval_of=run)
            for seed, run in enumerate(tradeoff_runs(suffix)) for split in ("val", "test")]


DEPTH_RECIPE = "fmnist-resnet32-depth"
DEPTH_KS = (16, 8, 4, 2)
"""The depths of the depth grid, the deepest first (a partial grid holds the hardest cases)."""
DEPTH_ROWS: dict[str, tuple[str, ...]] = {
    "greedy": ("--method", "greedy"),
    "scpl": ("--method", "scpl"),
    "deinforeg": ("--method", "deinforeg"),
    "dascpl": ("--method", "dascpl"),
    "contsup E": ("--method", "contsup", "--set", "contsup=E"),
    "contsup R1": ("--method", "contsup", "--set", "contsup=R1"),
    "contsup R1E": ("--method", "contsup", "--set", "contsup=R1E"),
    "infopro": ("--method", "greedy", "--set", "infopro=1"),
}
"""The depth grid's rows at every K: each method with its defaults; ContSup in each mode that
adds context (R0 is greedy); InfoPro (greedy's local loss plus the reconstruction of the input
with weight 1)."""
DEPTH_SEEDED: dict[int, tuple[str, ...]] = {}
"""Rows also run at seeds 1 and 2, by K: the two best on validation at seed 0 (with BP)."""


def depth_name(row: str, k: int, seed: int) -> str:
    """A depth run's cache name; BP is one block, the same run at every K."""
    if row == "bp":
        return f"depth-bp-s{seed}"
    return f"depth-k{k}-{row.replace(' ', '-').lower()}-s{seed}"


def depth_runs() -> list[Spec]:
    """Seed 0 of every row at every K (BP first), then seeds 1-2 of BP, BP at twice the budget
    (has it converged?) and seeds 1-2 of :data:`DEPTH_SEEDED`."""
    def spec(row: str, k: int, seed: int) -> Spec:
        args = ("--method", "bp") if row == "bp" else ("--blocks", str(k), *DEPTH_ROWS[row])
        return Spec(depth_name(row, k, seed), "depth", "bp" if row == "bp" else f"k{k}", row,
                    ("--config", DEPTH_RECIPE, *args, "--seed", str(seed)), seed)

    longer = Spec("depth-bp-20ep-s0", "depth", "bp", "bp, 20 epochs",
                  ("--config", DEPTH_RECIPE, "--method", "bp", "--epochs", "20", "--seed", "0"))
    runs = [spec("bp", 1, 0)] + [spec(row, k, 0) for k in DEPTH_KS for row in DEPTH_ROWS]
    runs += [spec("bp", 1, seed) for seed in SEEDS[1:]] + [longer]
    return runs + [spec(row, k, seed) for seed in SEEDS[1:] for k, rows in DEPTH_SEEDED.items()
                   for row in rows]


TIERS: dict[str, Callable[[], list[Spec]]] = {"ablations": ablation_runs, "parity": parity_runs,
                                              "noise": noise_runs, "exits": exit_runs,
                                              "uniform": uniform_runs, "depth": depth_runs}


# --------------------------------------------------------------------------- running

def execute(spec: Spec, out: Path) -> dict:
    cmd = spec.command(out)
    resume = spec.eval_of is None and _resumable(out / spec.name, shlex.join(cmd))  # stopped halfway
    proc = subprocess.run([sys.executable, "-m", "scpl", *cmd[1:], *(["--resume"] if resume else [])],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {"name": spec.name, "tier": spec.tier, "table": spec.table, "row": spec.row, "seed": spec.seed,
            "command": shlex.join(cmd), "summary": json.loads(proc.stdout.strip().splitlines()[-1]),
            "curves": curves(out / spec.name / "metrics.csv")}


def _resumable(folder: Path, command: str) -> bool:
    """Whether ``folder`` holds checkpoints of this very command, to resume (``--resume``). The
    command is written there first; checkpoints of another command are refused, not resumed: a
    finished run resumed at a larger ``--epochs`` would be extended, not trained afresh."""
    stamp = folder / "command.txt"
    if (folder / "latest.json").exists():
        if not stamp.exists() or stamp.read_text() != command:
            raise RuntimeError(f"{folder} holds checkpoints of another command "
                               f"({stamp.read_text() if stamp.exists() else 'not recorded'}), not of "
                               f"{command}: move the folder away to run it afresh")
        return True
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(command)
    return False


def curves(path: Path) -> dict[str, list[float]]:
    """The whole-model metrics per epoch of a run (validation and training accuracy, lr)."""
    if not path.exists():
        return {}
    import csv

    out: dict[str, dict[int, float]] = {}
    for row in csv.DictReader(open(path)):
        if row["block"] == "":
            out.setdefault(row["name"], {})[int(row["epoch"])] = float(row["value"])
    return {name: [v for _, v in sorted(values.items())] for name, values in out.items()}


def load(path: Path = CACHE) -> dict[str, dict]:
    runs: dict[str, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interruption: that run is redone
                continue
            runs[record["name"]] = record
    return runs


def selected(tier: str, only: Optional[str] = None, seeds: Optional[set[int]] = None) -> list[Spec]:
    """The tier's runs, of one table (``only``) and some seeds, if given."""
    return [s for s in TIERS[tier]()
            if (only is None or s.table == only) and (seeds is None or s.seed in seeds)]


def queue(items: list[str], only: Optional[str] = None, seeds: Optional[set[int]] = None) -> list[Spec]:
    """The runs of several ``TIER`` or ``TIER:TABLE`` items, in the order given, each once."""
    specs: dict[str, Spec] = {}
    for item in items:
        tier, _, table = item.partition(":")
        if tier not in TIERS:
            raise SystemExit(f"unknown tier {tier!r} in --tier {item}: "
                             f"choose from {', '.join(sorted(TIERS))}")
        for spec in selected(tier, table or only, seeds):
            specs.setdefault(spec.name, spec)
    return list(specs.values())


def run_tier(specs: list[Spec], out: Path, jobs: int, redo: bool = False, cache: Path = CACHE,
             runner: Callable[[Spec, Path], dict] = execute) -> None:
    """Run the specs not cached yet (with ``redo``, all of them: a later cache line replaces an
    earlier one of the same name), ``jobs`` at a time, appending each result to ``cache``.
    An evaluation of a run that is itself in the queue starts once that run has finished (and is
    reported as failed, without running, if that run failed)."""
    out.mkdir(parents=True, exist_ok=True)
    done = {} if redo else load(cache)
    todo = [s for s in specs if s.name not in done]
    print(f"{len(specs) - len(todo)} of {len(specs)} runs cached in {cache}, {len(todo)} to go",
          file=sys.stderr)
    queued = {s.name for s in todo}
    after: dict[str, list[Spec]] = {}  # run name -> the evaluations waiting for it
    for s in todo:
        if s.eval_of in queued:
            after.setdefault(s.eval_of, []).append(s)
    failed = []
    with ThreadPoolExecutor(jobs) as pool, open(cache, "a") as log:
        running = {pool.submit(runner, s, out): s for s in todo if s.eval_of not in queued}
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = running.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # keep the other runs going; report at the end
                    own = str(exc) if isinstance(exc, RuntimeError) else f"{spec.name}: {exc!r}"
                    errors = [own[:2000]] + [f"{e.name} not run: {spec.name} failed"
                                                  for e in after.pop(spec.name, [])]
                    failed += errors
                    print("\n".join(errors), file=sys.stderr)
                    continue
                log.write(json.dumps(result) + "\n")
                log.flush()
                accuracy = {k: v for k, v in result["summary"].items()
                            if k in ("val_accuracy", "test_accuracy", "accuracy")}  # a run's or an eval's
                print(f"{result['name']}: {json.dumps(accuracy)}", file=sys.stderr)
                running.update({pool.submit(runner, e, out): e for e in after.pop(spec.name, [])})
    if failed:
        raise SystemExit(f"{len(failed)} runs failed (see above)")


# --------------------------------------------------------------------------- tables

def _pct(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"


def portable(command: str) -> str:
    """A command with its output folder shown as ``results/NAME``, wherever it ran."""
    return re.sub(r"\S*/results/", "results/", command)


def _code(text: str) -> str:
    """A command as inline code; its output folder shown as ``results/NAME`` wherever it ran."""
    return "`" + portable(text).replace("|", "\\|") + "`"


def _command(record: dict) -> str:
    """A run's command; for a run cached from an identical computation (``same_as``: an ablation
    row that set the default's value explicitly), that one's command as well."""
    same = record.get("same_as")
    return _code(record["command"]) + (f" (cached from the same computation: {_code(same)})" if same else "")


def ablation_tables(runs: dict[str, dict]) -> list[str]:
    lines: list[str] = []
    for workload in ABLATION_BASES:
        specs = [s for s in ablation_runs() if s.table == workload and s.name in runs]
        if not specs:
            continue
        seeds = "seed 0" if all(s.seed == 0 for s in specs) else "seed 0 unless the setting names another"
        lines += [f"#### {workload} (`{' '.join(ABLATION_BASES[workload])}`, {seeds})", "",
                  "| method | setting | val accuracy % | Δ to the method's first row (or parity run) "
                  "| best epoch | command |",
                  "| --- | --- | ---: | ---: | ---: | --- |"]
        first: dict[str, float] = {}
        for spec in specs:
            s = runs[spec.name]["summary"]
            method, setting = spec.row.split("|", 1)
            if workload in ABLATION_REFERENCE:  # against the parity run, once it is cached
                reference = runs.get(reference_name(workload, method, spec.seed))
                base = reference["summary"]["val_accuracy"] if reference else None
            else:
                base = first.setdefault(method, s["val_accuracy"])
            delta = "–" if base is None else f"{100 * (s['val_accuracy'] - base):+.2f}"
            lines.append(f"| {method} | {setting} | {100 * s['val_accuracy']:.2f} | {delta} | "
                         f"{s['best_epoch']}/{s['epochs']} | {_code(runs[spec.name]['command'])} |")
        lines.append("")
    return lines


def _curve_gain(record: dict) -> Optional[float]:
    """Best validation accuracy minus the best before the last quarter of the epochs: what the
    last quarter still added (convergence evidence)."""
    val = record.get("curves", {}).get("val_accuracy")
    if not val:
        return None
    start = len(val) - max(len(val) // 4, 1)
    return max(val) - max(val[:start])


def parity_tables(runs: dict[str, dict], suffix: str = "") -> list[str]:
    lines: list[str] = []
    for grid in UNIFORM_GRIDS if suffix else PARITY:
        methods = PARITY[grid]
        rows = {m: [runs[parity_name(grid, m, s, suffix)] for s in SEEDS
                    if parity_name(grid, m, s, suffix) in runs] for m in methods}
        if not any(rows.values()):
            continue
        bp = [r["summary"]["test_accuracy"] for r in rows.get("bp", [])]
        title = grid_title(grid) + (" (the recipe's earlier budget)" if grid in GRID_ARGS else "")
        title += ", one learning rate for every block" if suffix else ""
        lines += [f"#### {title}", "",
                  "| method | test accuracy % (mean ± sd) | gap to BP | val accuracy % | best epochs | "
                  "val gain in the last quarter | train s | samples/s | command (seed 0) |",
                  "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"]
        for method, rs in rows.items():
            if not rs:
                continue
            ss = [r["summary"] for r in rs]
            tests = [s["test_accuracy"] for s in ss]
            gap = (f"{100 * (statistics.mean(tests) - statistics.mean(bp)):+.2f}"
                   if bp and method != "bp" else "")
            gains = [g for g in (_curve_gain(r) for r in rs) if g is not None]
            gain = f"{100 * max(gains):.2f}" if gains else "-"
            seeds = "" if len(rs) == len(SEEDS) else f" ({len(rs)} seed{'s' if len(rs) > 1 else ''})"
            lines.append(
                f"| {method}{seeds} | {_pct(tests)} | {gap} | {_pct([s['val_accuracy'] for s in ss])} | "
                f"{', '.join(str(s['best_epoch']) for s in ss)} / {ss[0]['epochs']} | {gain} | "
                f"{statistics.mean(s['train_seconds'] for s in ss):.0f} | "
                f"{statistics.mean(s['samples_per_s'] for s in ss):.0f} | {_command(rs[0])} |")
        lines += ["", *paired_gaps(grid, runs, suffix)]
    return lines


def paired_gaps(grid: str, runs: dict[str, dict], suffix: str = "") -> list[str]:
    """Each method's gap to BP trained with the same seed, on test and validation, once two
    seeds of a method and of BP are cached: how much of a mean gap is seed noise."""
    def gaps(method: str, split: str) -> list[tuple[int, float]]:
        pairs = [(seed, parity_name(grid, method, seed, suffix), parity_name(grid, "bp", seed))
                 for seed in SEEDS]
        return [(seed, 100 * (runs[run]["summary"][split] - runs[bp]["summary"][split]))
                for seed, run, bp in pairs if {run, bp} <= runs.keys()]

    def cell(values: list[tuple[int, float]]) -> tuple[str, str]:
        numbers = [g for _, g in values]
        return (" / ".join(f"s{seed} {g:+.2f}" for seed, g in values),
                f"{statistics.mean(numbers):+.2f} ± {statistics.stdev(numbers):.2f}")

    rows = []
    for method in (m for m in PARITY[grid] if m != "bp"):
        test, val = gaps(method, "test_accuracy"), gaps(method, "val_accuracy")
        if len(test) > 1:
            rows.append(f"| {method} | {' | '.join(cell(test))} | {' | '.join(cell(val))} |")
    if not rows:
        return []
    return ["Gap to BP at the same seed (points):", "",
            "| method | test, per seed | test, mean ± sd | validation, per seed | validation, mean ± sd |",
            "| --- | --- | ---: | --- | ---: |", *rows, ""]


def ramp_against_uniform(runs: dict[str, dict]) -> list[str]:
    """Each decoupled method's gap to BP under the default (the ramp) and at one rate per block,
    over the seeds where all three runs are cached: the change of default, like for like."""
    def mean(method: str, seeds: list[int], split: str, suffix: str = "") -> float:
        return statistics.mean(100 * runs[parity_name(grid, method, s, suffix)]["summary"][split]
                               for s in seeds)

    rows = []
    for grid in UNIFORM_GRIDS:
        for method in (m for m in PARITY[grid] if m != "bp"):
            seeds = [s for s in SEEDS if {parity_name(grid, method, s), parity_name(grid, "bp", s),
                                          parity_name(grid, method, s, BEFORE)} <= runs.keys()]
            if not seeds:
                continue
            cells = []
            for split in ("test_accuracy", "val_accuracy"):
                bp = mean("bp", seeds, split)
                before, after = mean(method, seeds, split, BEFORE) - bp, mean(method, seeds, split) - bp
                cells += [f"{before:+.2f} -> {after:+.2f}", f"{after - before:+.2f}"]
            rows.append(f"| {grid_title(grid)} | {method} | {', '.join(map(str, seeds))} | "
                        f"{' | '.join(cells)} |")
    if not rows:
        return []
    return ["### The defaults against one rate for every block, like for like", "",
            "Each method's mean gap to BP over the seeds where the method's run at one rate, its run "
            "under the ramp and BP's run are all cached (points; the tables above and below hold the "
            "runs and their commands):", "",
            "| grid | method | seeds | test gap to BP: one rate -> ramp | Δ test | "
            "validation gap to BP: one rate -> ramp | Δ validation |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: |", *rows, ""]


NOISE_CURVES = {"train_accuracy": "training accuracy, the labels trained on",
                "train_clean_accuracy": "training accuracy, true labels",
                "val_accuracy": "validation accuracy (clean)"}


def noise_table(runs: dict[str, dict], figures: Optional[Path] = None) -> list[str]:
    """One table per noise rate; with ``figures``, each rate's curves as ``noiseNN.png`` there."""
    specs = [s for s in noise_runs() if s.name in runs]
    if not specs:
        return []
    lines = [f"### Label noise (`{NOISE_RECIPE}`, seed 0; noise on the training labels only)", ""]
    for table in dict.fromkeys(s.table for s in specs):
        rows = sorted((s for s in specs if s.table == table), key=lambda s: NOISE["methods"].index(s.row))
        lines += [f"#### {table[5:]} % noise", "",
                  "| method | test accuracy % (selected epoch) | best epoch | val accuracy, best / last "
                  "epoch | training accuracy on its labels, epochs 10 / 20 / 30 / 40 | on the true labels, "
                  "last epoch | command |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for spec in rows:
            r = runs[spec.name]
            s = r["summary"]
            fitted = " / ".join(_fmt(v) for v in r["curves"].get("train_accuracy", [])[9::10])
            val = r["curves"].get("val_accuracy") or [None]
            lines.append(f"| {spec.row} | {100 * s['test_accuracy']:.2f} | {s['best_epoch']}/{s['epochs']} | "
                         f"{_fmt(s['val_accuracy'])} / {_fmt(val[-1])} | "
                         f"{fitted or '-'} | {_fmt(s.get('final_train_clean_accuracy'))} | "
                         f"{_code(r['command'])} |")
        lines.append("")
        if figures is not None:
            from scpl.plots import plot_runs

            curves = {s.row: runs[s.name]["curves"] for s in rows}
            # without noise the labels are the true ones: no second training-accuracy curve
            metrics = [m for m in NOISE_CURVES if any(c.get(m) for c in curves.values())]
            path = plot_runs(curves, metrics,
                             figures / f"{table}.png", titles=NOISE_CURVES,
                             title=f"{table[5:]} % symmetric label noise ({NOISE_RECIPE}, seed 0)")
            lines += [f"![curves at {table[5:]} % noise](img/{path.name})", ""]
    return lines


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _share(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


EXIT_BUDGET = 0.005
"""The accuracy an exit rule may lose on validation to be chosen (0.5 points)."""


def exit_tables(runs: dict[str, dict], figures: Optional[Path] = None, suffix: str = "") -> list[str]:
    """Per model: every rule's validation and test accuracy change and compute saved; the rule
    saving most while losing at most EXIT_BUDGET on validation is chosen (marked). With
    ``figures``, each model's trade-off curves as ``tradeoff-RUN.png`` there."""
    lines: list[str] = []
    for run in tradeoff_runs(suffix):
        val, test = (runs.get(f"tradeoff-{split}-{run}") for split in ("val", "test"))
        if val is None or test is None:
            continue
        v, t = val["summary"], test["summary"]
        ok = [i for i, p in enumerate(v["tradeoff"])
              if p["accuracy"] >= v["accuracy"] - EXIT_BUDGET - 1e-9]  # float32 accuracies
        chosen = max(ok, key=lambda i: v["tradeoff"][i]["compute_saved"]) if ok else None
        full = f"full path: val {100 * v['accuracy']:.2f} %, test {100 * t['accuracy']:.2f} %"
        lines += [f"#### `{run}` ({full})", "",
                  "| rule | patience | threshold | val Δ accuracy | val calls saved | test Δ accuracy | "
                  "test calls saved | test time saved | test exits per block |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for i, (pv, pt) in enumerate(zip(v["tradeoff"], t["tradeoff"])):
            mark = " **(chosen on val)**" if i == chosen else ""
            dv, dt = pv["accuracy"] - v["accuracy"], pt["accuracy"] - t["accuracy"]
            lines.append(f"| {pv['rule']}{mark} | {pv['patience'] or '-'} | {pv['threshold']} | "
                         f"{100 * dv:+.2f} | {100 * pv['compute_saved']:.1f}% | "
                         f"{100 * dt:+.2f} | {100 * pt['compute_saved']:.1f}% | "
                         f"{_share(pt.get('compute_saved_by_time'))} | {pt['exits']} |")
        lines += ["", f"Commands: {_code(val['command'])} and the same with `--split test`.", ""]
        if figures is not None:
            from scpl.plots import plot_tradeoff

            path = plot_tradeoff({"validation": v["tradeoff"], "test": t["tradeoff"]},
                                 figures / f"tradeoff-{run}.png", title=f"early exit, {run}")
            lines += [f"![trade-off of {run}](img/{path.name})", ""]
    return lines


def _rule(row: dict) -> tuple:
    """An exit rule's identity in a trade-off row."""
    return row["rule"], row["patience"], row["threshold"]


def exit_summary(runs: dict[str, dict], suffix: str = "") -> list[str]:
    """Markdown lines (none with fewer than two seeds' models): the one exit rule a user would set
    for every seed's model. Among the rules whose validation change, averaged over the seeds, is
    within EXIT_BUDGET, the one with the most block calls saved on validation (mean over seeds);
    its validation and test change and its savings on test, seed by seed and as mean ± sd."""
    models = [(spec.seed, *(runs[f"tradeoff-{split}-{spec.eval_of}"]["summary"] for split in ("val", "test")))
              for spec in exit_runs(suffix) if spec.table == "val"
              and all(f"tradeoff-{split}-{spec.eval_of}" in runs for split in ("val", "test"))]
    if len(models) < 2:
        return []
    # (seed, split) -> rule -> (accuracy change from the full path, calls saved, time saved)
    table = {(seed, split): {_rule(row): (row["accuracy"] - summary["accuracy"], row["compute_saved"],
                                          row.get("compute_saved_by_time"))
                             for row in summary["tradeoff"]}
             for seed, val, test in models for split, summary in (("val", val), ("test", test))}
    rules = set.intersection(*(set(rows) for rows in table.values()))  # the rules every model has

    def values(rule: tuple, split: str, column: int) -> list[Optional[float]]:
        return [table[seed, split][rule][column] for seed, _, _ in models]

    ok = [r for r in rules if statistics.mean(values(r, "val", 0)) >= -EXIT_BUDGET - 1e-9]
    if not ok:
        return [f"No exit rule loses at most {100 * EXIT_BUDGET:.1f} points of validation accuracy "
                "on the mean over the seeds' models.", ""]
    rule = max(ok, key=lambda r: (statistics.mean(values(r, "val", 1)), r[2]))

    def row(label: str, split: str, column: int, sign: str = "") -> list[str]:
        found = values(rule, split, column)
        if any(v is None for v in found):
            return []
        return [f"| {label} | {' / '.join(f'{100 * v:{sign}.2f}' for v in found)} | "
                f"{100 * statistics.mean(found):{sign}.2f} ± {100 * statistics.stdev(found):.2f} |"]

    name, patience, threshold = rule
    return [f"One rule for every seed's model ({len(models)} seeds; the one saving most block calls on "
            f"validation while losing at most {100 * EXIT_BUDGET:.1f} points there on the mean): "
            f"**{name}, patience {patience or '-'}, threshold {threshold}**.", "",
            f"| measure (points) | {' / '.join(f's{seed}' for seed, _, _ in models)} | mean ± sd |",
            "| --- | --- | ---: |",
            *row("val Δ accuracy", "val", 0, "+"), *row("test Δ accuracy", "test", 0, "+"),
            *row("test block calls saved %", "test", 1), *row("test block time saved %", "test", 2), ""]


def tables(figures: Optional[Path] = None) -> str:
    runs = load()
    lines = ["### Converged parity, the defaults (`block_lr=ramp`)", ""] + parity_tables(runs)
    lines += ramp_against_uniform(runs)
    lines += ["### Converged parity, one learning rate for every block (`--set block_lr=uniform`, "
              "the defaults before 2026-12-01)", ""] + parity_tables(runs, BEFORE)
    lines += ["### Ablations (validation accuracy, one factor at a time)", ""] + ablation_tables(runs)
    lines += noise_table(runs, figures)
    for title, suffix in (("the defaults", ""), ("one learning rate for every block", BEFORE)):
        found = exit_summary(runs, suffix) + exit_tables(runs, figures, suffix)
        if found:
            lines += [f"### Early exit on the converged models, {title}", ""] + found
    return "\n".join(lines) + "\n"


def render(page: Path) -> None:
    """Replace the text between the page's table markers with freshly rendered tables."""
    start, end = "<!-- tables:start -->", "<!-- tables:end -->"
    text = page.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{page} needs the markers {start} and {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{tables(page.parent / 'img')}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results", help="folder of the runs (checkpoints, curves)")
    parser.add_argument("--tier", nargs="+", metavar="TIER[:TABLE]",
                        help=f"run (or finish) these tiers ({', '.join(sorted(TIERS))}) or tables of a "
                             "tier, e.g. parity:fmnist-cnn-parity, one queue in the order given")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", help="run only this table of the tier (a recipe, a workload, ...)")
    parser.add_argument("--seeds", help="run only these seeds, e.g. 0 or 1,2")
    parser.add_argument("--redo", action="store_true",
                        help="run the selected runs again even if cached (e.g. an evaluation after a change)")
    parser.add_argument("--list", action="store_true",
                        help="print the tier's commands instead of running them")
    parser.add_argument("--render", help="rewrite the tables of this page")
    args = parser.parse_args()
    out = Path(args.out)
    seeds = None if args.seeds is None else {int(s) for s in args.seeds.split(",")}
    specs = queue(args.tier, args.only, seeds) if args.tier else []
    if args.tier and args.list:
        for spec in specs:
            print(shlex.join(spec.command(out)))
    elif args.tier:
        run_tier(specs, out, args.jobs, args.redo)
    if args.render:
        render(Path(args.render))


if __name__ == "__main__":
    main()
