"""Run the grid behind docs/results.md and write its tables.

Every cell is one ``scpl train`` command (printed in the page); results are cached in
``OUT/runs.jsonl`` so an interrupted grid continues where it stopped. Usage::

    python benchmarks/results.py --jobs 2 --out results      # run (or finish) the grid
    python benchmarks/results.py --out results --render docs/results.md   # rewrite the tables

Each run uses one intra-op thread; ``--jobs`` runs that many at once.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

SEEDS = (0, 1, 2)
VISION = ("bp", "scpl", "deinforeg", "greedy", "contsup", "dascpl")
TEXT = ("bp", "scpl", "deinforeg", "greedy", "dascpl")  # ContSup's context needs conv feature maps
NOISY = ("bp", "scpl", "deinforeg", "greedy")


def grid() -> list[dict]:
    """Every run: a name and the ``scpl train`` arguments."""
    runs = []
    for recipe, methods in (("fmnist-cnn-fast", VISION), ("debian-lstm-fast", TEXT), ("debian-transformer-fast", TEXT)):
        for method in methods:
            for seed in SEEDS:
                runs.append({"name": f"{recipe}-{method}-s{seed}", "table": recipe, "method": method, "seed": seed,
                             "noise": 0.0, "args": ["--config", recipe, "--method", method, "--seed", str(seed)]})
    for method in VISION:  # the longer budget, one seed
        runs.append({"name": f"fmnist-cnn-full-{method}-s0", "table": "fmnist-cnn-full", "method": method, "seed": 0,
                     "noise": 0.0, "args": ["--config", "fmnist-cnn-full", "--method", method, "--seed", "0"]})
    for noise in (0.2, 0.4):
        for method in NOISY:
            runs.append({"name": f"fmnist-noise{noise}-{method}-s0", "table": "noise", "method": method, "seed": 0,
                         "noise": noise, "args": ["--config", "fmnist-cnn-fast", "--method", method, "--seed", "0",
                                                  "--label-noise", str(noise)]})
    return runs


def command(run: dict, out: Path) -> list[str]:
    return ["scpl", "train", *run["args"], "--out", str(out / run["name"]), "--json", "--no-progress"]


def execute(run: dict, out: Path) -> dict:
    cmd = command(run, out)
    proc = subprocess.run([sys.executable, "-m", "scpl", *cmd[1:]], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return {**run, "command": shlex.join(cmd), "summary": json.loads(proc.stdout.strip().splitlines()[-1])}


def early_exit(out: Path) -> list[dict]:
    """``scpl eval`` with each exit rule on the DASCPL Fashion-MNIST runs (both budgets)."""
    rows = []
    for recipe, seed in [*(("fmnist-cnn-fast", s) for s in SEEDS), ("fmnist-cnn-full", 0)]:
        folder = out / f"{recipe}-dascpl-s{seed}"
        for rule in ("patience", "confidence"):
            cmd = ["scpl", "eval", str(folder), "--early-exit", rule, "--json"]
            if recipe == "fmnist-cnn-full":
                cmd += ["--histogram", str(out / f"exit-histogram-{rule}.png")]
            proc = subprocess.run([sys.executable, "-m", "scpl", *cmd[1:]], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            rows.append({"recipe": recipe, "seed": seed, "rule": rule, "command": shlex.join(cmd),
                         "result": json.loads(proc.stdout.strip().splitlines()[-1])})
    return rows


def load(out: Path) -> dict[str, dict]:
    path = out / "runs.jsonl"
    if not path.exists():
        return {}
    runs = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption: that run is redone
            continue
        runs[record["name"]] = record
    return runs


def run_grid(out: Path, jobs: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    done = load(out)
    todo = [r for r in grid() if r["name"] not in done]
    print(f"{len(done)} runs cached, {len(todo)} to go", file=sys.stderr)
    failed = []
    with ThreadPoolExecutor(jobs) as pool, open(out / "runs.jsonl", "a") as log:
        futures = [pool.submit(execute, r, out) for r in todo]
        for future in as_completed(futures):
            try:
                result = future.result()
            except RuntimeError as exc:  # keep the other runs going; report at the end
                failed.append(str(exc))
                continue
            log.write(json.dumps(result) + "\n")
            log.flush()
            s = result["summary"]
            print(f"{result['name']}: test {s['test_accuracy']:.4f} val {s['val_accuracy']} "
                  f"{s['train_seconds']:.0f} s", file=sys.stderr)
    if failed:
        raise SystemExit("failed runs:\n" + "\n".join(failed))
    (out / "early_exit.json").write_text(json.dumps(early_exit(out), indent=1))


def _mean_spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}"


def tables(out: Path) -> str:
    runs = load(out)
    lines = []
    for recipe, methods in (("fmnist-cnn-fast", VISION), ("debian-lstm-fast", TEXT), ("debian-transformer-fast", TEXT)):
        lines += [f"### `{recipe}`", "",
                  "| method | test accuracy % (mean ± sd, 3 seeds) | val accuracy % | best epoch | train s | samples/s | command (seed 0) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for method in methods:
            rs = [runs[f"{recipe}-{method}-s{s}"] for s in SEEDS if f"{recipe}-{method}-s{s}" in runs]
            if not rs:
                continue
            ss = [r["summary"] for r in rs]
            lines.append(
                f"| {method} | {_mean_spread([s['test_accuracy'] for s in ss])} | "
                f"{_mean_spread([s['val_accuracy'] for s in ss])} | {', '.join(str(s['best_epoch']) for s in ss)} | "
                f"{statistics.mean(s['train_seconds'] for s in ss):.0f} | "
                f"{statistics.mean(s['samples_per_s'] for s in ss):.0f} | `{rs[0]['command']}` |")
        lines.append("")
    full = [(m, runs.get(f"fmnist-cnn-full-{m}-s0")) for m in VISION]
    if any(r for _, r in full):
        lines += ["### `fmnist-cnn-full` (all 54,000 training images, 6 epochs, seed 0)", "",
                  "| method | test accuracy % | val accuracy % | best epoch | train s | samples/s | command |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for m, r in full:
            if r:
                s = r["summary"]
                lines.append(f"| {m} | {100 * s['test_accuracy']:.2f} | {100 * s['val_accuracy']:.2f} | {s['best_epoch']} | "
                             f"{s['train_seconds']:.0f} | {s['samples_per_s']:.0f} | `{r['command']}` |")
        lines.append("")
    lines += ["### Label noise (`fmnist-cnn-fast`, seed 0, symmetric noise on the training labels only)", "",
              "| method | clean | 20% noise | 40% noise |", "| --- | ---: | ---: | ---: |"]
    for method in NOISY:
        cells = [runs.get(f"fmnist-cnn-fast-{method}-s0")] + [runs.get(f"fmnist-noise{n}-{method}-s0") for n in (0.2, 0.4)]
        lines.append(f"| {method} | " + " | ".join("-" if c is None else f"{100 * c['summary']['test_accuracy']:.2f}"
                                                  for c in cells) + " |")
    example = runs.get("fmnist-noise0.4-scpl-s0")
    if example:
        lines += ["", f"Command (40%, SCPL): `{example['command']}`"]
    ee_path = out / "early_exit.json"
    if ee_path.exists():
        lines += ["", "### Early exit (DASCPL runs, Fashion-MNIST test set)", "",
                  "| recipe | seed | rule | full-path accuracy % | early-exit accuracy % | exits per block | block calls saved | block time saved |",
                  "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: |"]
        for row in json.loads(ee_path.read_text()):
            r = row["result"]
            lines.append(f"| `{row['recipe']}` | {row['seed']} | {row['rule']} | {100 * r['accuracy']:.2f} | {100 * r['exit_accuracy']:.2f} | "
                         f"{r['exits']} | {100 * r['compute_saved']:.1f}% | {100 * r['compute_saved_by_time']:.1f}% |")
        lines += ["", f"Command: `{json.loads(ee_path.read_text())[-2]['command']}` (and `--early-exit confidence`); "
                  "patience rule: patience 1, cosine 0.8; confidence rule: max softmax >= 0.9"]
    return "\n".join(lines) + "\n"


def render(out: Path, page: Path) -> None:
    """Replace the text between the page's table markers with freshly rendered tables."""
    start, end = "<!-- tables:start -->", "<!-- tables:end -->"
    text = page.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{page} needs the markers {start} and {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    page.write_text(f"{head}{start}\n{tables(out)}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results", help="folder of the runs and runs.jsonl")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--render", help="rewrite the tables of this page instead of running")
    args = parser.parse_args()
    if args.render:
        render(Path(args.out), Path(args.render))
    else:
        run_grid(Path(args.out), args.jobs)
        print(tables(Path(args.out)))


if __name__ == "__main__":
    main()
