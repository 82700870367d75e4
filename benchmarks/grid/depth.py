"""The depth grid: ResNet-32 on Fashion-MNIST cut into K = 2, 4, 8 and 16 blocks, every method
against BP (docs/results.md, "Depth")."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

from .spec import SEEDS, Spec

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
DEPTH_SEEDED: dict[int, tuple[str, ...]] = {
    8: ("contsup E", "contsup R1E", "deinforeg"),
    16: ("contsup E", "contsup R1E"),
}
"""Rows also run at seeds 1 and 2, by K (with BP): the two best on validation at seed 0, and
ContSup's default mode R1E beside them. ContSup E led R1E on validation at seed 0 by 0.85
points at K=8 and by 0.05 at K=16, while R1E led on test: the seeds decide the default mode."""


def depth_name(row: str, k: int, seed: int) -> str:
    """A depth run's cache name; BP is one block, the same run at every K."""
    if row == "bp":
        return f"depth-bp-s{seed}"
    return f"depth-k{k}-{row.replace(' ', '-').lower()}-s{seed}"


def ramp_over_depth(k: int) -> str:
    """``block_lr`` for K blocks rising with the block's place in the depth, min(1 + 2i/K, 2): the
    default ``"ramp"`` (min(1 + i/2, 2)) at K=4, which reaches 2x at block 2 whatever K is."""
    return "[" + ",".join(f"{min(1 + 2 * i / k, 2.0):g}" for i in range(k)) + "]"


def _thirds(k: int, names: tuple[str, str, str]) -> str:
    """A per-block ``features`` list for the K-1 heads of K blocks: ``names`` over thirds."""
    heads = k - 1
    first, second = heads // 3 + (heads % 3 > 0), heads // 3 + (heads % 3 > 1)
    picks = [names[0]] * first + [names[1]] * second + [names[2]] * (heads - first - second)
    return "[" + ",".join(picks) + "]"


DEPTH_ABLATIONS: tuple[tuple[int, str, str, str, tuple[str, ...]], ...] = (
    (16, "scpl", "lr-over-depth", "block lr rising over the depth, min(1 + 2i/K, 2)",
     ("--set", f"block_lr={ramp_over_depth(16)}")),
    (16, "scpl", "heads-by-position", "head depth decaying with position: two convs, one conv, "
     "2x2 pooling by thirds", ("--set", f"features={_thirds(16, ('conv2', 'conv', 'pool2'))}")),
    (16, "greedy", "heads-by-position", "head depth decaying with position: two convs, one conv, "
     "2x2 pooling by thirds", ("--set", f"features={_thirds(16, ('conv2', 'conv', 'pool2'))}")),
    (16, "scpl", "lr-uniform", "one learning rate for every block", ("--set", "block_lr=uniform")),
    (16, "greedy", "lr-over-depth", "block lr rising over the depth, min(1 + 2i/K, 2)",
     ("--set", f"block_lr={ramp_over_depth(16)}")),
    (16, "infopro", "weight-0.5", "reconstruction weight 0.5", ("--set", "infopro=0.5")),
    (16, "infopro", "weight-2", "reconstruction weight 2", ("--set", "infopro=2")),
    (16, "greedy", "conv2", "two convs in every head", ("--set", "features=conv2")),
    (16, "scpl", "20ep", "20 epochs (does a longer budget close the gap? BP's did not gain)",
     ("--epochs", "20")),
    (8, "greedy", "20ep", "20 epochs (does a longer budget close the 2-point target's 0.05 miss?)",
     ("--epochs", "20")),
    (8, "scpl", "cut-memory", "cut balanced by activation memory (layers 2,1,1,1,1,2,3,6)",
     ("--blocks", "2,1,1,1,1,2,3,6")),
    (8, "scpl", "cut-auto", "cut balanced by measured step time (--blocks auto)",
     ("--blocks", "auto", "--num-blocks", "8")),
)
"""One factor at a time against a row's defaults at that K (seed 0, chosen on validation), in
the order they run: the per-block learning-rate rule at K=16, the local head's depth by the
block's position (AugLocal, DGL), InfoPro's reconstruction weight, a longer budget for the rows
short of a target, and where the cuts fall at K=8 (at K=16 each of ResNet-32's 16 cuttable
layers is a block: there is no choice). The memory cut is
``resnet32(in_channels=1).block_counts(8, "memory", torch.zeros(8, 1, 28, 28))``. The
ContSup modes are rows of the grid itself."""


def depth_ablation_name(k: int, row: str, key: str, seed: int = 0) -> str:
    """An ablation run's cache name (keep a row's key once it has run)."""
    return f"depth-k{k}-{row}-{key}-s{seed}"


def depth_ablation_runs() -> list[Spec]:
    """The runs of :data:`DEPTH_ABLATIONS`: a row's grid command with the factor appended."""
    return [Spec(depth_ablation_name(k, row, key), "depth", "ablations", setting,
                 ("--config", DEPTH_RECIPE, "--blocks", str(k), *DEPTH_ROWS[row], *extra, "--seed", "0"))
            for k, row, key, setting, extra in DEPTH_ABLATIONS]


def depth_runs() -> list[Spec]:
    """Seed 0 of every row at every K (BP first), then seeds 1-2 of BP, BP at twice the budget
    (has it converged?), seeds 1-2 of :data:`DEPTH_SEEDED` and the :data:`DEPTH_ABLATIONS`."""
    def spec(row: str, k: int, seed: int) -> Spec:
        args = ("--method", "bp") if row == "bp" else ("--blocks", str(k), *DEPTH_ROWS[row])
        return Spec(depth_name(row, k, seed), "depth", "bp" if row == "bp" else f"k{k}", row,
                    ("--config", DEPTH_RECIPE, *args, "--seed", str(seed)), seed)

    longer = Spec("depth-bp-20ep-s0", "depth", "bp", "bp, 20 epochs",
                  ("--config", DEPTH_RECIPE, "--method", "bp", "--epochs", "20", "--seed", "0"))
    runs = [spec("bp", 1, 0)] + [spec(row, k, 0) for k in DEPTH_KS for row in DEPTH_ROWS]
    runs += [spec("bp", 1, seed) for seed in SEEDS[1:]] + [longer]
    runs += [spec(row, k, seed) for seed in SEEDS[1:] for k, rows in DEPTH_SEEDED.items()
             for row in rows]
    return runs + depth_ablation_runs()


# --------------------------------------------------------------------------- tables

COSTS = Path(__file__).resolve().parents[1] / "depth-costs.json"
"""Activation memory and per-block step times of every row and K (``benchmarks/depth_costs.py``)."""
INFOPRO_ERROR_RATIO = 12.75 / 7.76
"""InfoPro's test error on CIFAR-10 ResNet-32 at K=16 over K=2 (its paper, Table 2): 1.64."""


def _percent(runs: dict[str, dict], name: str, split: str) -> Optional[float]:
    """The cached run ``name``'s accuracy % on ``split`` ("val" or "test"), or None."""
    record = runs.get(name)
    return None if record is None else 100 * record["summary"][f"{split}_accuracy"]


def _test(runs: dict[str, dict], row: str, k: int, seed: int = 0) -> Optional[float]:
    return _percent(runs, depth_name(row, k, seed), "test")


def _val(runs: dict[str, dict], row: str, k: int, seed: int = 0) -> Optional[float]:
    return _percent(runs, depth_name(row, k, seed), "val")


def accuracy_table(runs: dict[str, dict]) -> list[str]:
    """Test accuracy of every row at every K (seed 0), with its gap to BP (seed 0)."""
    bp = _test(runs, "bp", 1)
    ks = sorted(DEPTH_KS)
    rows = []
    for row in DEPTH_ROWS:
        cells = [_test(runs, row, k) for k in ks]
        if all(c is None for c in cells):
            continue
        shown = ["-" if c is None else f"{c:.2f} ({c - bp:+.2f})" if bp is not None else f"{c:.2f}"
                 for c in cells]
        rows.append(f"| {row} | {' | '.join(shown)} |")
    if not rows:
        return []
    return ["Test accuracy % (gap to BP), seed 0:", "",
            "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "| --- |" + " ---: |" * len(ks),
            f"| BP (one block: the same run at every K) | {' | '.join([f'{bp:.2f}'] * len(ks))} |"
            if bp is not None else "| BP | - |",
            *rows, ""]


def tradeoff_tables(runs: dict[str, dict], costs: Optional[dict]) -> list[str]:
    """Per K: each row's accuracy next to the activation memory it holds and the ideal speed-up
    of a pipeline on K devices."""
    bp = _test(runs, "bp", 1)
    lines: list[str] = []
    bp_bytes = costs["bp"]["peak_bytes"] if costs else None
    for k in sorted(DEPTH_KS):
        body = []
        for row in DEPTH_ROWS:
            test, val = _test(runs, row, k), _val(runs, row, k)
            if test is None:
                continue
            cost = (costs or {}).get("rows", {}).get(row, {}).get(str(k))
            memory = (f"{cost['peak_bytes'] / 2**20:.0f} ({cost['peak_bytes'] / bp_bytes:.2f})"
                      if cost and bp_bytes else "-")
            speedup = f"{cost['ideal_speedup']:.2f}" if cost else "-"
            gap = f"{test - bp:+.2f}" if bp is not None else "-"
            body.append(f"| {row} | {test:.2f} | {gap} | {val:.2f} | {memory} | {speedup} |")
        if body:
            lines += [f"#### K = {k}", "",
                      "| method | test % | gap to BP | val % | activation memory MiB (of BP's) | "
                      "ideal speed-up on K devices |", "| --- | ---: | ---: | ---: | ---: | ---: |",
                      *body, ""]
    if lines and bp_bytes:
        lines = [f"BP holds {bp_bytes / 2**20:.0f} MiB of activations for backward at batch 128 "
                 "(`python benchmarks/depth_costs.py`: memory counted as `scpl bench memory` counts it, "
                 "speed-up = the sum of the measured per-block step times over the slowest).", "", *lines]
    return lines


def cost_table(costs: Optional[dict]) -> list[str]:
    """What every row costs at every K, trained or not: activation memory held for backward
    (MiB, and its fraction of BP's) and the ideal speed-up of a pipeline on K devices."""
    if not costs:
        return []
    bp_bytes = costs["bp"]["peak_bytes"]
    ks = sorted(DEPTH_KS)
    lines = ["What each K costs and buys, for every row (memory MiB (of BP's) / ideal speed-up; "
             f"batch {costs.get('batch_size', 128)}, `python benchmarks/depth_costs.py`):", "",
             "| method | " + " | ".join(f"K={k}" for k in ks) + " |", "| --- |" + " ---: |" * len(ks)]
    for row in DEPTH_ROWS:
        cells = []
        for k in ks:
            cost = costs.get("rows", {}).get(row, {}).get(str(k))
            cells.append(f"{cost['peak_bytes'] / 2**20:.0f} ({cost['peak_bytes'] / bp_bytes:.2f}) / "
                         f"{cost['ideal_speedup']:.2f}" if cost else "-")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def paired_table(runs: dict[str, dict]) -> list[str]:
    """The seeded rows' test gap to BP at the same seed, and their mean validation accuracy over
    the same seeds (what a default is chosen on)."""
    rows = []
    for k, names in DEPTH_SEEDED.items():
        for row in names:
            found = [(s, a - b, v) for s in SEEDS
                     if (a := _test(runs, row, k, s)) is not None
                     and (b := _test(runs, "bp", 1, s)) is not None
                     and (v := _val(runs, row, k, s)) is not None]
            if len(found) < 2:
                continue
            gaps, vals = [g for _, g, _ in found], [v for *_, v in found]
            rows.append(f"| K={k} | {row} | " + " / ".join(f"s{s} {g:+.2f}" for s, g, _ in found) +
                        f" | {statistics.mean(gaps):+.2f} ± {statistics.stdev(gaps):.2f}"
                        f" | {statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f} |")
    if not rows:
        return []
    return ["Seeded rows: gap to BP at the same seed (test, points), and validation accuracy:", "",
            "| K | method | test gap per seed | test gap mean ± sd | val % mean ± sd |",
            "| --- | --- | --- | ---: | ---: |", *rows, ""]


def degradation(runs: dict[str, dict]) -> list[str]:
    """The best row's test error at K=16 over its error at K=2 (the best: the highest validation
    accuracy at K=16 among rows with both; never chosen on test), against a third of InfoPro's
    rise on CIFAR-10 ResNet-32."""
    both = {row: (a2, a16) for row in DEPTH_ROWS
            if (a2 := _test(runs, row, 2)) is not None and (a16 := _test(runs, row, 16)) is not None}
    if not both:
        return []
    row = max(both, key=lambda r: _val(runs, r, 16) or 0.0)
    a2, a16 = both[row]
    ratio, bound = (100 - a16) / (100 - a2), 1 + (INFOPRO_ERROR_RATIO - 1) / 3
    verdict = "holds" if ratio <= bound else f"**missed**: {ratio:.2f} > {bound:.2f}"
    return [f"Degradation from K=2 to K=16 of the best row at K=16 on validation ({row}): test error "
            f"{100 - a2:.2f} -> {100 - a16:.2f} %, a factor of {ratio:.2f}; the target is at most a third "
            f"of InfoPro's rise on CIFAR-10 ResNet-32 (7.76 -> 12.75 %, x{INFOPRO_ERROR_RATIO:.2f}), "
            f"x{bound:.2f}: {verdict}.", ""]


def ablation_table(runs: dict[str, dict]) -> list[str]:
    """Each cached ablation's validation accuracy against its row's defaults at the same K (the
    grid's seed-0 run), and its test accuracy."""
    body = []
    for k, row, key, setting, _ in DEPTH_ABLATIONS:
        name = depth_ablation_name(k, row, key)
        val, test = _percent(runs, name, "val"), _percent(runs, name, "test")
        if val is None or test is None:
            continue
        base = _val(runs, row, k)
        gap = "-" if base is None else f"{val - base:+.2f}"
        body.append(f"| {k} | {row} | {setting} | {val:.2f} | {gap} | {test:.2f} |")
    if not body:
        return []
    return ["Ablations at depth, one factor at a time against the row's defaults at the same K "
            "(seed 0; chosen on validation; commands in docs/results-commands.md):", "",
            "| K | method | setting | val % | val gap to the defaults | test % |",
            "| ---: | --- | --- | ---: | ---: | ---: |", *body, ""]


def depth_tables(runs: dict[str, dict], figures: Optional[Path] = None) -> list[str]:
    """The depth section's tables (and, with ``figures``, its plot ``depth.png`` there)."""
    costs = json.loads(COSTS.read_text()) if COSTS.exists() else None
    lines = accuracy_table(runs)
    if not lines:
        return []
    bp = _test(runs, "bp", 1)
    if figures is not None and bp is not None:
        from scpl.plots import plot_depth

        accuracy = {row: {k: a for k in DEPTH_KS if (a := _test(runs, row, k)) is not None}
                    for row in DEPTH_ROWS}
        path = plot_depth({r: a for r, a in accuracy.items() if a}, bp, figures / "depth.png",
                          title=f"ResNet-32 on Fashion-MNIST ({DEPTH_RECIPE}, seed 0)")
        lines += [f"![accuracy against K](img/{path.name})", ""]
    lines += degradation(runs) + cost_table(costs) + tradeoff_tables(runs, costs) + paired_table(runs)
    lines += ablation_table(runs)
    longer = runs.get("depth-bp-20ep-s0")
    if longer and bp is not None:
        lines += [f"BP at 20 epochs: test {100 * longer['summary']['test_accuracy']:.2f}, validation "
                  f"{100 * longer['summary']['val_accuracy']:.2f} (best epoch "
                  f"{longer['summary']['best_epoch']}), against {bp:.2f} / {_val(runs, 'bp', 1):.2f} "
                  "at 10.", ""]
    return lines
