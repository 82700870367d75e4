"""Decoupled methods on a plain MLP over flat inputs, with the defaults a user gets.

scikit-learn's ``make_classification`` (6,000 samples, 20 features of which 8 informative,
4 classes of 2 clusters each, class_sep 2.0, random_state 0), standardised; the first 4,000
train, the other 2,000 are tested once after the last epoch. An MLP 20-64-64-64-4 in 3 blocks
([2, 2, 3] layers), Adam 1e-3, batch 64, one thread, seed 0. Prints one line per method and
projector, and one JSON object as the last line::

    python benchmarks/flat_inputs.py [--epochs 12]
"""

from __future__ import annotations

import argparse
import json

import torch
from sklearn.datasets import make_classification
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import scpl

RUNS = [("bp", None), ("greedy", None), ("scpl", None), ("scpl", "linear"), ("scpl", "identity"),
        ("deinforeg", None), ("deinforeg", "linear"), ("deinforeg", "identity")]


def data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_classification(6000, n_features=20, n_informative=8, n_classes=4, n_clusters_per_class=2,
                               class_sep=2.0, random_state=0)
    x = torch.tensor(x, dtype=torch.float32)
    return (x - x.mean(0)) / x.std(0), torch.tensor(y)


def mlp(dim: int, hidden: int = 64, classes: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = data()
    test = DataLoader(TensorDataset(x[4000:], y[4000:]), batch_size=512)
    results = []
    for method, projector in RUNS:
        # a loader of its own: every run shuffles alike, whatever ran before it
        train = DataLoader(TensorDataset(x[:4000], y[:4000]), batch_size=64, shuffle=True,
                           generator=torch.Generator().manual_seed(0))
        torch.manual_seed(0)
        options = {} if projector is None else {"projector": projector}
        model = scpl.DecoupledModel(mlp(x.shape[1]), [2, 2, 3], method=method, num_classes=4,
                                    example_input=x[:2], **options)
        model.fit(train, epochs=args.epochs, progress=False)
        accuracy = model.evaluate(test)["accuracy"]
        results.append({"method": method, "projector": projector or "default", "test_accuracy": accuracy})
        print(f"{method:<10} {projector or 'default':<9} {100 * accuracy:.2f}", flush=True)
    print(json.dumps({"epochs": args.epochs, "results": results}))


if __name__ == "__main__":
    main()
