"""The results page's tables, rendered from the cache (never edited by hand)."""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path
from typing import Optional

from .depth import DEPTH_RECIPE, depth_tables
from .execute import load
from .gallery import gallery_table
from .headline import headline
from .spec import SEEDS, parity_name, portable
from .tiers import (
    ABLATION_BASES,
    ABLATION_REFERENCE,
    BEFORE,
    GRID_ARGS,
    NOISE,
    NOISE_RECIPE,
    PARITY,
    UNIFORM_GRIDS,
    ablation_runs,
    exit_runs,
    grid_title,
    noise_runs,
    reference_name,
    tradeoff_runs,
)


def _pct(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"



def _code(text: str) -> str:
    """Text as inline code (a run's name, a recipe)."""
    return "`" + text.replace("|", "\\|") + "`"


def wrapped(command: str, width: int = 100) -> list[str]:
    """A command (its output folder shown as ``results/NAME`` wherever it ran) as shell lines of
    at most about ``width`` characters, continued with a backslash."""
    lines, line = [], ""
    for word in shlex.split(portable(command)):
        word = shlex.quote(word)
        if line and len(line) + 1 + len(word) > width:
            lines.append(line + " \\")
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


def commands_page(runs: dict[str, dict]) -> str:
    """Every cached run's command by run name (the companion of the results page, whose tables
    name runs): a run cached from an identical computation (``same_as``) shows that one too."""
    out = ["# The commands behind docs/results.md", "",
           "Written by `python benchmarks/results.py --render docs/results.md` from the cache; each run's",
           "name is the one its table shows. Output folders are shown as `results/NAME`.", ""]
    for name in sorted(runs):
        record = runs[name]
        out += [f"## {name}", "", "```bash", *wrapped(record["command"])]
        if record.get("same_as"):
            out += ["# cached from the same computation:", *wrapped(record["same_as"])]
        out += ["```", ""]
    return "\n".join(out)


def ablation_tables(runs: dict[str, dict]) -> list[str]:
    lines: list[str] = []
    for workload in ABLATION_BASES:
        specs = [s for s in ablation_runs() if s.table == workload and s.name in runs]
        if not specs:
            continue
        seeds = "seed 0" if all(s.seed == 0 for s in specs) else "seed 0 unless the setting names another"
        lines += [f"#### {workload} (`{' '.join(ABLATION_BASES[workload])}`, {seeds})", "",
                  "| method | setting | val accuracy % | Δ to the method's first row (or parity run) "
                  "| best epoch | run |",
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
                         f"{s['best_epoch']}/{s['epochs']} | {_code(spec.name)} |")
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
        names = {m: [n for s in SEEDS if (n := parity_name(grid, m, s, suffix)) in runs] for m in methods}
        rows = {m: [runs[n] for n in ns] for m, ns in names.items()}
        if not any(rows.values()):
            continue
        bp = [r["summary"]["test_accuracy"] for r in rows.get("bp", [])]
        title = grid_title(grid) + (" (the recipe's earlier budget)" if grid in GRID_ARGS else "")
        title += ", one learning rate for every block" if suffix else ""
        lines += [f"#### {title}", "",
                  "| method | test accuracy % (mean ± sd) | gap to BP | val accuracy % | best epochs | "
                  "val gain in the last quarter | train s | samples/s | run (seed 0) |",
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
                f"{statistics.mean(s['samples_per_s'] for s in ss):.0f} | {_code(names[method][0])} |")
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
                  "last epoch | run |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for spec in rows:
            r = runs[spec.name]
            s = r["summary"]
            fitted = " / ".join(_fmt(v) for v in r["curves"].get("train_accuracy", [])[9::10])
            val = r["curves"].get("val_accuracy") or [None]
            lines.append(f"| {spec.row} | {100 * s['test_accuracy']:.2f} | {s['best_epoch']}/{s['epochs']} | "
                         f"{_fmt(s['val_accuracy'])} / {_fmt(val[-1])} | "
                         f"{fitted or '-'} | {_fmt(s.get('final_train_clean_accuracy'))} | "
                         f"{_code(spec.name)} |")
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
        lines += ["", f"Runs: `tradeoff-val-{run}`, `tradeoff-test-{run}`.", ""]
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
    depth = depth_tables(runs, figures)
    if depth:
        lines += [f"### Depth: ResNet-32 cut into K = 2 to 16 blocks (`{DEPTH_RECIPE}`)", "", *depth]
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
    """Replace the text between each pair of markers on the page with freshly rendered tables:
    ``tables`` (the results page) and ``gallery`` (the model gallery)."""
    sections = {"headline": lambda: "\n".join(headline(load())) + "\n",
                "tables": lambda: tables(page.parent / "img"),
                "gallery": lambda: "\n".join(gallery_table(load())) + "\n"}
    text = page.read_text()
    found = [name for name in sections if f"<!-- {name}:start -->" in text and f"<!-- {name}:end -->" in text]
    if not found:
        raise SystemExit(f"{page} has no pair of markers <!-- NAME:start --> <!-- NAME:end --> with NAME "
                         f"one of {list(sections)}")
    for name in found:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{sections[name]()}{end}{tail}"
    page.write_text(text)
    if "tables" in found:  # the commands of the runs the tables name
        page.with_name("results-commands.md").write_text(commands_page(load()))

