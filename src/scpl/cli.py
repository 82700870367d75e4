"""Command-line interface: ``scpl demo``, ``scpl train``, ``scpl eval`` and ``scpl bench``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
from typing import TYPE_CHECKING, Optional, Sequence

from tqdm import tqdm

from . import names, recipes
from .bench.cli import add_bench_parsers
from .errors import ConfigError, ScplError, WriteError
from .methods import METHODS
from .names import choices

if TYPE_CHECKING:
    from .runner import TrainConfig


def _demo(args: argparse.Namespace) -> int:
    from .demo import DEMO_METHODS, load_demo_data, run_method

    train, test, name = load_demo_data(args.dataset, args.train_limit)
    methods = args.methods or list(DEMO_METHODS)
    epochs = args.epochs if args.epochs is not None else (12 if name == "digits" else 3)
    print(f"scpl demo: SmallCNN in 4 blocks on {name} ({len(train)} train / {len(test)} test), "
          f"{epochs} epochs, batch {args.batch_size}, seed {args.seed}", file=sys.stderr)
    results = []
    for method in tqdm(methods, desc="methods", disable=args.json or not sys.stderr.isatty()):
        results.append(run_method(method, name, epochs, args.batch_size, args.seed, args.train_limit))
    width = max(len(m) for m in methods)
    print(f"{'method':<{width}}  test_accuracy  seconds")
    for r in results:
        print(f"{r['method']:<{width}}  {r['test_accuracy']:13.4f}  {r['seconds']:7.1f}")
    if args.json:
        print(json.dumps({"dataset": name, "epochs": epochs, "results": results}))
    return 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The checked TrainConfig of parsed ``scpl train`` arguments: recipes, then flags, then
    ``--set`` items, later ones winning."""
    import yaml

    from .runner import TrainConfig, load_recipe

    values: dict = {}
    for recipe in getattr(args, "config", None) or []:
        values.update(load_recipe(recipe))
    for key in TrainConfig.__dataclass_fields__:
        if key in vars(args):
            values[key] = getattr(args, key)
    for item in getattr(args, "set", None) or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set takes KEY=VALUE (YAML value), got {item!r}")
        try:
            values[key.replace("-", "_")] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item}: the value is not valid YAML ({str(exc).splitlines()[0]}); "
                              "quote it, e.g. --set 'model_args={hidden: 64}'") from exc
    if args.json:
        values.setdefault("progress", False)
    return TrainConfig.from_dict(values)


def _train(args: argparse.Namespace) -> int:
    from .runner import run

    summary = run(train_config(args))
    if summary["rank"] == 0:
        val = "-" if summary["val_accuracy"] is None else f"{summary['val_accuracy']:.4f}"
        print(f"{summary['method']} on {summary['dataset']} ({summary['model']}, {summary['num_blocks']} "
              f"blocks, {summary['executor']}): val accuracy {val} (epoch {summary['best_epoch']}), test "
              f"accuracy {summary['test_accuracy']:.4f}, {summary['train_seconds']:.1f} s, "
              f"{summary['samples_per_s']:.0f} samples/s")
        if args.json:
            print(json.dumps(summary))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    r = evaluate_run(args.run, args.split, args.early_exit, args.patience, args.cosine, args.threshold,
                     args.histogram, by_class=args.per_class, sweep=args.tradeoff)
    print(f"{r['method']} on {r['dataset']}, {r['split']} split: accuracy {r['accuracy']:.4f}")
    if "per_class" in r:
        width = max(len("class"), *(len(row["name"]) for row in r["per_class"]))
        print(f"{'class':<{width}}  share  recall  predicted")
        for row in r["per_class"]:
            recall = f"{row['recall']:6.3f}" if row["recall"] is not None else "     -"
            print(f"{row['name']:<{width}}  {row['share']:5.3f}  {recall}  {row['predicted_share']:9.3f}")
    if "exits" in r:
        print(f"early exit ({args.early_exit}): accuracy {r['exit_accuracy']:.4f}, exits per block "
              f"{r['exits']}, block compute saved {r['compute_saved']:.3f} (by calls), "
              f"{r['compute_saved_by_time']:.3f} (by time)")
    for row in r.get("tradeoff", []):
        print(f"{row['rule']:<10} patience {row['patience'] or '-'} threshold {row['threshold']:<6} accuracy "
              f"{row['accuracy']:.4f} ({row['accuracy'] - r['accuracy']:+.4f})  block calls saved "
              f"{row['compute_saved']:.3f}  by time {row['compute_saved_by_time']:.3f}  exits {row['exits']}")
    if args.json:
        print(json.dumps(r))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``scpl`` argument parser; every (sub)command sets ``func`` to the handler that runs it."""
    parser = argparse.ArgumentParser(prog="scpl",
                                     description="Decoupled, pipeline-parallel training for PyTorch.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN with BP and each decoupled method; print a table")
    demo.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist", "auto"],
                      help="digits (bundled with scikit-learn, default), fashion-mnist, or auto "
                           "(Fashion-MNIST if installed)")
    demo.add_argument("--methods", nargs="+", choices=names.METHOD_NAMES, metavar="METHOD",
                      help=f"any of {choices(names.METHOD_NAMES)} (default: bp scpl deinforeg greedy)")
    demo.add_argument("--epochs", type=int, help="default 12 on digits, 3 on Fashion-MNIST")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--train-limit", type=int, default=10000, help="Fashion-MNIST: first N training images")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train", argument_default=argparse.SUPPRESS,
        help="train one model (recipe + flags); with --executor distributed, launch under torchrun",
        description="Settings come from TrainConfig's defaults, then --config recipes (in order), "
                    "then flags, then --set KEY=VALUE. Shipped recipes: " + ", ".join(recipes.names()))
    train.add_argument("--config", action="append", help="a YAML recipe file or the name of a shipped recipe")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any TrainConfig key, value in YAML")
    train.add_argument("--model", metavar="NAME",
                       help=choices(names.MODEL_NAMES) + ", or timm:NAME / hf:NAME (e.g. timm:resnet18, "
                            "hf:bert; pip install \"scpl[timm]\" or \"scpl[hf]\")")
    train.add_argument("--dataset", choices=names.DATASET_NAMES, metavar="NAME",
                       help=choices(names.DATASET_NAMES))
    train.add_argument("--data-root", dest="data_root",
                       help="folder of the data set (default $SCPL_DATA/<name>)")
    train.add_argument("--method", choices=names.METHOD_NAMES, help="; ".join(
        f"{name}: {m.about}" for name, m in METHODS.items()))
    train.add_argument("--blocks", help="'auto', a number of blocks K, layer counts '2,2', or split points "
                                        "by submodule name, e.g. 'layer2,layer3' for timm:resnet18 "
                                        "(default: the model's own)")
    train.add_argument("--num-blocks", dest="num_blocks", type=int,
                       help="K for --blocks auto (under torchrun: the world size)")
    train.add_argument("--devices", help="a device, or one per block: 'cuda:0,cuda:1'")
    train.add_argument("--executor", choices=names.EXECUTOR_NAMES)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", dest="batch_size", type=int)
    train.add_argument("--micro-batches", dest="micro_batches", type=int)
    train.add_argument("--replicas", type=int,
                       help="with --executor distributed: R replicas of every block on K x R ranks "
                            "(each replica trains on 1/R of every batch)")
    train.add_argument("--optimizer", choices=names.OPTIMIZER_NAMES)
    train.add_argument("--lr", type=float)
    train.add_argument("--weight-decay", dest="weight_decay", type=float)
    train.add_argument("--schedule", choices=names.SCHEDULE_NAMES, help="learning-rate schedule")
    train.add_argument("--warmup-epochs", dest="warmup_epochs", type=int)
    train.add_argument("--precision", choices=names.PRECISION_NAMES)
    train.add_argument("--clip-grad-norm", dest="clip_grad_norm", type=float)
    train.add_argument("--compile", action="store_true", default=argparse.SUPPRESS,
                       help="torch.compile each block's training forward (one graph per block)")
    train.add_argument("--augment", choices=names.AUGMENTATION_NAMES)
    train.add_argument("--label-noise", dest="label_noise", type=float,
                       help="symmetric noise rate, a fraction in [0, 1)")
    train.add_argument("--val-fraction", dest="val_fraction", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--train-limit", dest="train_limit", type=int,
                       help="keep the first N training samples")
    train.add_argument("--threads", type=int,
                       help="intra-op threads (default: torch's; 1 per rank when distributed)")
    train.add_argument("--out", help="folder for checkpoints, metrics, plots and the exported model.pt")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint")
    train.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard")
    train.add_argument("--no-progress", dest="progress", action="store_false")
    train.add_argument("--json", action="store_true", default=False,
                       help="print one JSON object as the last line")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="test a trained run's model.pt, optionally with per-sample early exit")
    ev.add_argument("run", help="the --out folder of a finished `scpl train` run")
    ev.add_argument("--split", default="test", choices=["test", "val"])
    ev.add_argument("--early-exit", choices=["patience", "confidence"],
                    help="exit rule (needs exit classifiers)")
    ev.add_argument("--patience", type=int, default=1)
    ev.add_argument("--cosine", type=float, default=0.8, help="patience rule: cosine similarity threshold")
    ev.add_argument("--threshold", type=float, default=0.9, help="confidence rule: max softmax threshold")
    ev.add_argument("--histogram", help="write the exit histogram to this PNG")
    ev.add_argument("--per-class", action="store_true",
                    help="print each class's share, recall and predicted share")
    ev.add_argument("--tradeoff", action="store_true",
                    help="early exit's accuracy and compute saved for a sweep of rules and thresholds "
                         "(one pass)")
    ev.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ev.set_defaults(func=_eval)

    add_bench_parsers(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and torchrun's agent send), handled as Ctrl-C is."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``scpl`` on ``argv`` (default ``sys.argv[1:]``); return the exit status (1: error,
    130: Ctrl-C, 143: SIGTERM)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except WriteError as exc:  # the files already written are whole: say what is safe and how to go on
        saved = _saved(args, argv) if args.command == "train" else ""
        print(f"scpl {args.command}: error: {exc}; nothing saved before is lost{saved}", file=sys.stderr)
        return 1
    except (ScplError, FileNotFoundError, ImportError) as exc:
        print(f"scpl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"scpl {args.command}: {interrupted(args, argv, how)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def interrupted(args: argparse.Namespace, argv: list[str], how: str = "interrupted") -> str:
    """One line for Ctrl-C or SIGTERM (``how``): where a training run stopped and the exact
    command that continues it."""
    if args.command != "train":
        return how
    return f"{how}{_saved(args, argv)}"


def _saved(args: argparse.Namespace, argv: list[str]) -> str:
    """What a stopped training run has on disk and how to go on: "; epochs 1-N are saved in OUT;
    continue with: ..." (the exact --resume command)."""
    out = getattr(args, "out", None)
    if not out:
        return "; nothing was saved (no --out)"
    from pathlib import Path

    from .runner.state import latest

    try:
        done = latest(Path(out))
    except ScplError:
        done = None
    if not done:
        return f" before the first epoch ended; nothing to resume in {out} (start it again)"
    resume = argv if "--resume" in argv else [*argv, "--resume"]
    again = ("rerun the same torchrun command with --resume" if "RANK" in os.environ
             else f"continue with: {shlex.join(['scpl', *resume])}")
    return f"; epochs 1-{done} are saved in {out}; {again}"


if __name__ == "__main__":
    raise SystemExit(main())
