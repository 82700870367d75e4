"""Command-line interface: ``scpl demo``, ``scpl train``, ``scpl eval`` and ``scpl bench``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from typing import TYPE_CHECKING, Optional, Sequence

from tqdm import tqdm

from . import names, recipes
from .errors import ConfigError, ScplError
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
        values[key.replace("-", "_")] = yaml.safe_load(text)
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


def _bench_pipeline(args: argparse.Namespace) -> int:
    from .bench.pipeline import Settings, run

    settings = Settings(stages=args.stages, batch_size=args.batch_size, micro_batch=args.micro_batch,
                        steps=args.steps, warmup=args.warmup, repeats=args.repeats, method=args.method,
                        seed=args.seed, model=args.model, replicas=args.replicas, compile=args.compile)
    result = run(settings, log=lambda line: print(line, file=sys.stderr))
    ranks = result["stages"] * result["replicas"]
    rows = [("decoupled, sequential (1 thread)", "sequential_sps"), ("decoupled, threads", "threads_sps"),
            ("decoupled, processes (gloo)", "processes_sps"),
            (f"decoupled, {result['stages']} x {result['replicas']} replicated ranks", "replicated_sps"),
            ("decoupled, compiled blocks (sequential)", "compiled_sps"), ("BP, 1 thread", "bp_sps"),
            (f"BP, {result['bp_all_cores_threads']} threads", "bp_all_cores_sps"),
            (f"BP, DistributedDataParallel on {ranks} ranks", "ddp_sps"),
            ("BP pipeline, torch.distributed.pipelining GPipe", "peer_gpipe_sps"),
            ("BP pipeline, torch.distributed.pipelining 1F1B", "peer_1f1b_sps")]
    print(f"{result['model']}: K={result['stages']} blocks {result['blocks']}, batch {result['batch_size']} "
          f"as micro-batches of {result['micro_batch']}, median of {result['repeats']}")
    for label, key in rows:
        if key in result:
            print(f"{label:<50} {result[key]:8.1f} samples/s")
    extra = "".join(f"; {name} {result[key]:.3f}" for name, key in (
        ("replicated vs processes", "speedup_replicated_vs_processes"),
        ("compiled vs eager", "speedup_compiled_vs_eager"))
        if key in result)
    print(f"speed-up processes vs sequential {result['speedup_processes_vs_sequential']:.3f} "
          f"(efficiency {result['efficiency']:.3f}); vs peer pipeline "
          f"{result['speedup_vs_peer_pipeline']:.3f}; vs DDP {result['speedup_vs_ddp']:.3f}{extra}; "
          f"max_param_diff {result['max_param_diff']:g}")
    if args.json:
        print(json.dumps(result))
    return 0


def _bench_early_exit(args: argparse.Namespace) -> int:
    from .bench.early_exit import run

    r = run(args.dataset, args.epochs, args.train_limit, args.batch_size, args.seed)
    exits = ", ".join("-" if a is None else f"{a:.4f}" for a in r["exit_accuracy"])
    print(f"{r['dataset']}, {r['train_size']} training images, {r['epochs']} epochs "
          f"({r['train_seconds']:.0f} s): full path accuracy {r['full_path_accuracy']:.4f}; "
          f"accuracy at each exit {exits}")
    print(f"{'policy':<20} {'accuracy':>8} {'saved(calls)':>12} {'saved(time)':>11}  exits per block")
    for key, p in r["policies"].items():
        print(f"{key:<20} {p['accuracy']:8.4f} {p['compute_saved']:12.3f} "
              f"{p['compute_saved_by_time']:11.3f}  {p['exits']}")
    if args.json:
        print(json.dumps(r))
    return 0


def _bench_gpu(args: argparse.Namespace) -> int:
    from .bench.gpu import run

    r = run(args.cpu_ranks, args.cpu_batch_size, args.cpu_steps,
            log=lambda line: print(line, file=sys.stderr))
    print(f"{r['device']} ({'CUDA' if r['cuda'] else 'no CUDA'}), torch {r['torch']}, {r['seconds']:.0f} s")
    if "note" in r:
        print(r["note"])
    print(json.dumps(r))
    return 0


def _bench_memory(args: argparse.Namespace) -> int:
    from .bench.memory import run

    r = run(args.models, args.ks, args.batch_size, args.balance,
            log=lambda line: print(line, file=sys.stderr))
    print(f"activation memory held for backward, batch {r['batch_size']}, {r['balance']} cuts "
          "(GiB; peak over blocks run one after another)")
    print(f"{'model':<10} {'BP':>7} " + " ".join(f"{'K=' + str(k):>7}" for k in args.ks) +
          "   (+ContSup R1E: " + " ".join(f"K={k}" for k in args.ks) + ")")
    for name, m in r["models"].items():
        plain = " ".join(f"{m['decoupled_peak_bytes'][k] / 2**30:7.3f}" for k in args.ks)
        ctx = " ".join(f"{m['contsup_r1e_peak_bytes'][k] / 2**30:.3f}" for k in args.ks)
        print(f"{name:<10} {m['bp_peak_bytes'] / 2**30:7.3f} {plain}   ({ctx})")
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
    demo.add_argument("--methods", nargs="+", choices=names.METHODS, metavar="METHOD",
                      help=f"any of {choices(names.METHODS)} (default: bp scpl deinforeg greedy)")
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
                       help=choices(names.MODELS) + ", or timm:NAME / hf:NAME (e.g. timm:resnet18, hf:bert; "
                            "pip install \"scpl[timm]\" or \"scpl[hf]\")")
    train.add_argument("--dataset", choices=names.DATASETS, metavar="NAME", help=choices(names.DATASETS))
    train.add_argument("--data-root", dest="data_root",
                       help="folder of the data set (default $SCPL_DATA/<name>)")
    train.add_argument("--method", choices=names.METHODS, help="; ".join(
        f"{name}: {m.about}" for name, m in METHODS.items()))
    train.add_argument("--blocks", help="'auto', a number of blocks K, layer counts '2,2', or split points "
                                        "by submodule name, e.g. 'layer2,layer3' for timm:resnet18 "
                                        "(default: the model's own)")
    train.add_argument("--num-blocks", dest="num_blocks", type=int,
                       help="K for --blocks auto (under torchrun: the world size)")
    train.add_argument("--devices", help="a device, or one per block: 'cuda:0,cuda:1'")
    train.add_argument("--executor", choices=names.EXECUTORS)
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", dest="batch_size", type=int)
    train.add_argument("--micro-batches", dest="micro_batches", type=int)
    train.add_argument("--replicas", type=int,
                       help="with --executor distributed: R replicas of every block on K x R ranks "
                            "(each replica trains on 1/R of every batch)")
    train.add_argument("--optimizer", choices=names.OPTIMIZERS)
    train.add_argument("--lr", type=float)
    train.add_argument("--weight-decay", dest="weight_decay", type=float)
    train.add_argument("--schedule", choices=names.LR_SCHEDULES, help="learning-rate schedule")
    train.add_argument("--warmup-epochs", dest="warmup_epochs", type=int)
    train.add_argument("--precision", choices=names.PRECISIONS)
    train.add_argument("--clip-grad-norm", dest="clip_grad_norm", type=float)
    train.add_argument("--compile", action="store_true", default=argparse.SUPPRESS,
                       help="torch.compile each block's training forward (one graph per block)")
    train.add_argument("--augment", choices=names.AUGMENTATIONS)
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

    bench = sub.add_parser("bench", help="benchmarks that print ratios measured side by side")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    pipe = bench_sub.add_parser("pipeline",
                                help="decoupled pipelines vs sequential, BP and torch.distributed.pipelining")
    pipe.add_argument("--stages", type=int, default=2, help="K: blocks, threads and gloo ranks")
    pipe.add_argument("--batch-size", type=int, default=256)
    pipe.add_argument("--micro-batch", type=int, default=64)
    pipe.add_argument("--steps", type=int, default=10, help="timed steps per run")
    pipe.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    pipe.add_argument("--repeats", type=int, default=3, help="runs per configuration (median reported)")
    pipe.add_argument("--method", default="scpl", choices=["scpl", "deinforeg", "greedy"])
    pipe.add_argument("--model", default="cnn", choices=["cnn", "cnn_fc", "embed"],
                      help="cnn: compute-heavy; cnn_fc: a 10.6M-parameter fully connected head; "
                           "embed: a 12.8M-parameter embedding table (where DistributedDataParallel's "
                           "all-reduce is large)")

    pipe.add_argument("--replicas", type=int, default=1, help="also run K x R replicated ranks")
    pipe.add_argument("--compile", action="store_true",
                      help="also run the sequential engine with compiled blocks")
    pipe.add_argument("--seed", type=int, default=0)
    pipe.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    pipe.set_defaults(func=_bench_pipeline)
    ee = bench_sub.add_parser("early-exit",
                              help="accuracy and block compute saved by early exit, on real data")
    ee.add_argument("--dataset", default="fashion-mnist", choices=["digits", "fashion-mnist", "auto"])
    ee.add_argument("--epochs", type=int, default=3)
    ee.add_argument("--train-limit", type=int, default=20000)
    ee.add_argument("--batch-size", type=int, default=128)
    ee.add_argument("--seed", type=int, default=0)
    ee.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ee.set_defaults(func=_bench_early_exit)
    gpu = bench_sub.add_parser("gpu", help="the GPU check in one command (one JSON object); CPU ranks only "
                                           "without CUDA")
    gpu.add_argument("--cpu-ranks", nargs="+", type=int, default=[2, 4, 8],
                     help="K of the CPU-rank pipeline (those beyond the machine's cores are skipped)")
    gpu.add_argument("--cpu-batch-size", type=int, default=256)
    gpu.add_argument("--cpu-steps", type=int, default=6)
    gpu.add_argument("--json", action="store_true", help="(the JSON object is always the last line)")
    gpu.set_defaults(func=_bench_gpu)
    mem = bench_sub.add_parser("memory",
                               help="activation memory held for backward: BP vs K blocks of CIFAR ResNets")
    mem.add_argument("--models", nargs="+", default=["resnet32", "resnet110"],
                     choices=["resnet32", "resnet110"])
    mem.add_argument("--ks", nargs="+", type=int, default=[2, 4, 8, 16])
    mem.add_argument("--batch-size", type=int, default=1024)
    mem.add_argument("--balance", default="equal", choices=["equal", "memory"],
                     help="cut into equal numbers of residual units, or into equal activation memory")
    mem.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    mem.set_defaults(func=_bench_memory)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``scpl`` on ``argv`` (default ``sys.argv[1:]``); return the exit status (1: error, 130: Ctrl-C)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ScplError, FileNotFoundError, ImportError) as exc:
        print(f"scpl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scpl {args.command}: {interrupted(args, argv)}", file=sys.stderr)
        return 130


def interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    """One line for Ctrl-C: where a training run stopped and the exact command that continues it."""
    out = getattr(args, "out", None)
    if args.command != "train":
        return "interrupted"
    if not out:
        return "interrupted; nothing was saved (no --out)"
    from pathlib import Path

    from .runner.state import latest

    try:
        done = latest(Path(out))
    except ScplError:
        done = None
    if not done:
        return f"interrupted before the first epoch ended; nothing to resume in {out} (start it again)"
    resume = argv if "--resume" in argv else [*argv, "--resume"]
    again = ("rerun the same torchrun command with --resume" if "RANK" in os.environ
             else f"continue with: {shlex.join(['scpl', *resume])}")
    return f"interrupted; epochs 1-{done} are saved in {out}; {again}"


if __name__ == "__main__":
    raise SystemExit(main())
