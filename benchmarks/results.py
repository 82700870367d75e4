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
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the grid package beside this script

from grid.execute import run_tier  # noqa: E402
from grid.tables import render  # noqa: E402
from grid.tiers import TIERS, by_names, queue  # noqa: E402


def _seeds(text: str) -> set[int]:
    try:
        return {int(s) for s in text.split(",")}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seeds separated by commas, e.g. 0 or 1,2") from None


def _jobs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the number of runs at once is a whole number >= 1")
    return int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results", help="folder of the runs (checkpoints, curves)")
    parser.add_argument("--tier", nargs="+", metavar="TIER[:TABLE]",
                        help=f"run (or finish) these tiers ({', '.join(sorted(TIERS))}) or tables of a "
                             "tier, e.g. parity:fmnist-cnn-parity, one queue in the order given")
    parser.add_argument("--jobs", type=_jobs, default=2)
    parser.add_argument("--only", help="run only this table of the tier (a recipe, a workload, ...)")
    parser.add_argument("--seeds", type=_seeds, help="run only these seeds, e.g. 0 or 1,2")
    parser.add_argument("--names", nargs="+", metavar="PATTERN",
                        help="run only the runs whose cache names match these shell patterns, in the "
                             "order of the patterns, e.g. 'depth-k16-contsup-*' 'depth-k16-*-s0'")
    parser.add_argument("--redo", action="store_true",
                        help="run the selected runs again even if cached (e.g. an evaluation after a change)")
    parser.add_argument("--list", action="store_true",
                        help="print the tier's commands instead of running them")
    parser.add_argument("--render", help="rewrite the tables of this page")
    args = parser.parse_args()
    if not args.tier and not args.render:
        parser.error("nothing to do: give --tier TIER (to run it, or with --list to print its commands) "
                     "or --render PAGE")
    out = Path(args.out)
    specs = queue(args.tier, args.only, args.seeds) if args.tier else []
    if args.names:
        specs = by_names(specs, args.names)
    if args.list:
        for spec in specs:
            print(shlex.join(spec.command(out)))
    elif args.tier:
        run_tier(specs, out, args.jobs, args.redo)
    if args.render:
        render(Path(args.render))


if __name__ == "__main__":
    main()
