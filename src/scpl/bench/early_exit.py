"""``scpl bench early-exit``: how much block compute early exit saves, at what accuracy cost.

Trains the 4-block SmallCNN with SCPL and exit classifiers on real data, then evaluates the
test set with the full path and with each exit policy: accuracy, exit histogram and the
fraction of block compute saved, both per block call and weighted by each block's measured
forward time.
"""

from __future__ import annotations

import time

from torch.utils.data import DataLoader

from ..demo import load_demo_data
from ..early_exit import Confidence, PatienceCosine, block_seconds, early_exit
from ..exit_rules import Policy
from ..model import DecoupledModel
from ..models import SmallCNN
from ..seed import seed_everything

POLICIES: dict[str, Policy] = {
    "patience1_cos0.8": PatienceCosine(1, 0.8),
    "patience1_cos0.95": PatienceCosine(1, 0.95),
    "confidence0.9": Confidence(0.9),
    "confidence0.99": Confidence(0.99),
}


def run(dataset: str = "fashion-mnist", epochs: int = 3, train_limit: int = 20000, batch_size: int = 128,
        seed: int = 0) -> dict:
    """Train SmallCNN with SCPL and exits; return full-path, per-exit and per-policy test results."""
    train, test, name = load_demo_data(dataset, train_limit)
    gen = seed_everything(seed)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
    test_loader = DataLoader(test, batch_size=1000)
    example = train[0][0].unsqueeze(0)
    model = DecoupledModel(SmallCNN(in_channels=example.shape[1]), method="scpl", num_classes=10,
                           example_input=example, exits=True)
    start = time.perf_counter()
    model.fit(loader, epochs=epochs)
    seconds = time.perf_counter() - start
    costs = block_seconds(model, next(iter(test_loader))[0])
    result = {"dataset": name, "epochs": epochs, "train_size": len(train), "train_seconds": seconds,
              "full_path_accuracy": model.evaluate(test_loader)["accuracy"],
              "exit_accuracy": model.evaluate_exits(test_loader), "block_seconds": costs, "policies": {}}
    for key, policy in POLICIES.items():
        plain = early_exit(model, test_loader, policy)
        timed = early_exit(model, test_loader, policy, block_costs=costs)
        result["policies"][key] = {**plain.as_dict(), "compute_saved_by_time": timed.compute_saved}
    return result
