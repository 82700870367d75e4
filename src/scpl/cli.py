"""Command-line interface: ``scpl demo`` (more commands join as they are built)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from tqdm import tqdm


def _demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_METHODS, load_demo_data, run_method

    train, test, name = load_demo_data(args.dataset, args.train_limit)
    methods = args.methods or list(DEMO_METHODS)
    epochs = args.epochs if args.epochs is not None else (12 if name == "digits" else 3)
    print(f"scpl demo: SmallCNN in 4 blocks on {name} ({len(train)} train / {len(test)} test), "
          f"{epochs} epochs, batch {args.batch_size}, seed {args.seed}", file=sys.stderr)
    results = []
    for method in tqdm(methods, desc="methods", disable=args.json or not sys.stderr.isatty()):
        results.append(run_method(method, train, test, epochs, args.batch_size, args.seed))
    width = max(len(m) for m in methods)
    print(f"{'method':<{width}}  test_accuracy  seconds")
    for r in results:
        print(f"{r['method']:<{width}}  {r['test_accuracy']:13.4f}  {r['seconds']:7.1f}")
    if args.json:
        print(json.dumps({"dataset": name, "epochs": epochs, "results": results}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scpl", description="Decoupled, pipeline-parallel training for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN with BP and each decoupled method; print a table")
    demo.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist", "auto"],
                      help="digits (bundled with scikit-learn, default), fashion-mnist, or auto (Fashion-MNIST if installed)")
    demo.add_argument("--methods", nargs="+", choices=["bp", "scpl", "deinforeg", "greedy"])
    demo.add_argument("--epochs", type=int, help="default 12 on digits, 3 on Fashion-MNIST")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--train-limit", type=int, default=10000, help="Fashion-MNIST: first N training images")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
