"""Scale and class content of each block's features in trained runs (validation split).

For every block but the last (numbered from 0, as scpl numbers them): the block's local
features (``block.features``, e.g. the masked mean over positions), their mean absolute value,
the median / min / max over dimensions of their standard deviation over samples, and the
accuracy of a nearest-class-mean readout of the *standardised* features (class means from the
same split: a cheap probe of how much class information the features hold, whatever their
scale). Shows when blocks shrink their outputs while keeping the information, as DeInfoReg's
plain LSTM blocks do (docs/results.md)::

    python benchmarks/feature_scale.py results/RUN [results/RUN ...]
"""

from __future__ import annotations

import argparse

import torch

from scpl.evaluate import load_run


def block_features(folder: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The validation features of every block but the last, and the labels."""
    run = load_run(folder, devices=None)  # on the CPU, wherever it trained
    if run.val_batches is None:
        raise SystemExit(f"{folder} was trained without a validation split (val_fraction: 0); "
                         "this probe reads the validation split")
    model = run.model.eval()
    feats: list[list[torch.Tensor]] = [[] for _ in model.blocks[:-1]]
    labels = []
    with torch.no_grad():
        for inputs, y in run.val_batches:
            for k, (block, flow) in enumerate(zip(model.blocks[:-1], model.block_outputs(inputs))):
                feats[k].append(block.features(flow))
            labels.append(y)
    return [torch.cat(f) for f in feats], torch.cat(labels)


def nearest_class_mean(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of the nearest class mean on standardised features."""
    z = (features - features.mean(0)) / (features.std(0) + 1e-6)
    classes = labels.unique()
    means = torch.stack([z[labels == c].mean(0) for c in classes])
    return (classes[torch.cdist(z, means).argmin(1)] == labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="folders of finished `scpl train` runs")
    args = parser.parse_args()
    print("| run | block | dim | mean abs | sd median | sd min | sd max | NCM accuracy % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for folder in args.runs:
        features, labels = block_features(folder)
        for k, f in enumerate(features):
            sd = f.std(0)
            print(f"| {folder.rstrip('/').split('/')[-1]} | {k} | {f.shape[1]} | {f.abs().mean():.4f} | "
                  f"{sd.median():.4f} | {sd.min():.4f} | {sd.max():.4f} | "
                  f"{100 * nearest_class_mean(f, labels):.1f} |")


if __name__ == "__main__":
    main()
