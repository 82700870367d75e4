"""What the results grid runs: its tiers, each a list of :class:`~grid.spec.Spec` s.

Runs measured before a default changed pin the old setting in their commands (the ablations and
the noise runs pin ``block_lr=uniform``), so that every command on the page computes its number.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Callable, Optional

import yaml

from .depth import depth_runs
from .gallery import gallery_runs
from .spec import SEEDS, Spec, _seed, ablation_name, parity_name

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


ABLATIONS: list[tuple[str, str, str, list[str]]] = [
    (w, m, s, [str(a) for a in extra])
    for w, m, s, extra in yaml.safe_load(Path(__file__).with_name("ablations.yaml").read_text())["rows"]]
"""(workload, method, setting, extra arguments): the rows of ``ablations.yaml``."""


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


TIERS: dict[str, Callable[[], list[Spec]]] = {"ablations": ablation_runs, "parity": parity_runs,
                                              "noise": noise_runs, "exits": exit_runs,
                                              "uniform": uniform_runs, "depth": depth_runs,
                                              "gallery": gallery_runs}



def selected(tier: str, only: Optional[str] = None, seeds: Optional[set[int]] = None) -> list[Spec]:
    """The tier's runs, of one table (``only``) and some seeds, if given."""
    return [s for s in TIERS[tier]()
            if (only is None or s.table == only) and (seeds is None or s.seed in seeds)]


def queue(items: list[str], only: Optional[str] = None, seeds: Optional[set[int]] = None) -> list[Spec]:
    """The runs of several ``TIER`` or ``TIER:TABLE`` items, in the order given, each once; an
    item that selects no run (a mistyped table, a seed the tier lacks) stops with its choices."""
    specs: dict[str, Spec] = {}
    for item in items:
        tier, _, table = item.partition(":")
        if tier not in TIERS:
            raise SystemExit(f"unknown tier {tier!r} in --tier {item}: "
                             f"choose from {', '.join(sorted(TIERS))}")
        found = selected(tier, table or only, seeds)
        if not found:
            every = TIERS[tier]()
            raise SystemExit(f"--tier {item}{f' --only {only}' if only and not table else ''}"
                             f"{f' --seeds {sorted(seeds)}' if seeds else ''} selects no run: the tier's "
                             f"tables are {sorted({s.table for s in every})}, its seeds "
                             f"{sorted({s.seed for s in every})}")
        for spec in found:
            specs.setdefault(spec.name, spec)
    return list(specs.values())


def by_names(specs: list[Spec], patterns: list[str]) -> list[Spec]:
    """The specs whose names match one of ``patterns`` (fnmatch), ordered by the first pattern
    each matches; a pattern that matches nothing stops with the names it could have matched."""
    picked: dict[str, Spec] = {}
    for pattern in patterns:
        found = [s for s in specs if fnmatch.fnmatchcase(s.name, pattern)]
        if not found:
            raise SystemExit(f"--names {pattern!r} matches no run of the queue; its names: "
                             f"{', '.join(s.name for s in specs)}")
        for spec in found:
            picked.setdefault(spec.name, spec)
    return list(picked.values())
