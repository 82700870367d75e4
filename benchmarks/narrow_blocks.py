"""Narrow blocks: local heads sized to the block they read, against fixed-width defaults.

A plain MLP 8-16-16-8-4 in 3 blocks (8->16 | 16->16 | 16->8->4), the shape a user with a small
tabular problem brings. Data: scikit-learn's ``make_classification`` (3,000 samples, 8 features
of which 6 informative, 4 classes, 2 clusters each, class_sep 1.5, random_state 0), standardised;
2,000 train, 500 validation, 500 test. Adam 1e-3, batch 64, 60 epochs, one thread. Each method
with its default head (SCPL's and DeInfoReg's projectors on a flat block at most twice as wide
as the block, :func:`scpl.heads.head_width`; greedy's 512) and with the same projector at fixed
hidden widths (512: every method's width before that rule), 3 seeds.
Prints one line per setting (training, validation and test accuracy, mean of the seeds) and one
JSON object as the last line::

    python benchmarks/narrow_blocks.py [--epochs 60] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Callable, Optional

import torch
from sklearn.datasets import make_classification
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import scpl
from scpl.heads import mlp as head_mlp

OUT = {"scpl": 128, "greedy": 4}  # each method's projector output (DeInfoReg's: its hidden width)


def projector(method: str, hidden: int) -> Callable[[int], nn.Module]:
    """The method's default projector with ``hidden`` units, whatever the block's width."""
    if method == "deinforeg":
        return lambda d: head_mlp([d, hidden, hidden, hidden], batch_norm=True)
    return lambda d: head_mlp([d, hidden, OUT[method]])


SETTINGS: list[tuple[str, str, dict]] = [("bp", "default", {})] + [
    (method, label, options) for method in ("scpl", "deinforeg", "greedy")
    for label, options in (("default", {}),
                           *((f"hidden {w}", {"projector": projector(method, w)}) for w in (64, 128, 512)),
                           ("linear", {"projector": "linear"}))]
"""(method, setting, options): 512 was every method's width before the flat-width rule."""


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_classification(3000, n_features=8, n_informative=6, n_redundant=0, n_classes=4,
                               n_clusters_per_class=2, class_sep=1.5, random_state=0)
    x = torch.tensor(x, dtype=torch.float32)
    return (x - x.mean(0)) / x.std(0), torch.tensor(y)


def mlp() -> nn.Sequential:
    """8 -> 16 | 16 -> 16 | 16 -> 8 -> 4: three blocks of [2, 2, 3] layers."""
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))


def accuracy(model: scpl.DecoupledModel, x: torch.Tensor, y: torch.Tensor) -> float:
    return model.evaluate([(x, y)])["accuracy"]


def run(method: str, options: dict, seed: int, epochs: int) -> dict[str, float]:
    x, y = data()
    splits = {"train": (x[:2000], y[:2000]), "val": (x[2000:2500], y[2000:2500]),
              "test": (x[2500:], y[2500:])}
    loader = DataLoader(TensorDataset(*splits["train"]), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    scpl.seed_everything(seed)
    model = scpl.DecoupledModel(mlp(), [2, 2, 3], method=method, num_classes=4, example_input=x[:2],
                                **options)
    model.fit(loader, epochs=epochs, progress=False)
    return {split: accuracy(model, *xy) for split, xy in splits.items()}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", help="only these methods")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = []
    for method, setting, options in SETTINGS:
        if args.methods and method not in args.methods:
            continue
        runs = [run(method, options, seed, args.epochs) for seed in args.seeds]
        mean = {split: statistics.mean(r[split] for r in runs) for split in ("train", "val", "test")}
        results.append({"method": method, "setting": setting, **mean})
        print(f"{method:<10} {setting:<32} train {100 * mean['train']:6.2f}  "
              f"val {100 * mean['val']:6.2f}  test {100 * mean['test']:6.2f}", flush=True)
    print(json.dumps({"epochs": args.epochs, "seeds": args.seeds, "results": results}))


if __name__ == "__main__":
    main()
