"""``scpl bench``'s command line: one subcommand per benchmark, its defaults those of the
benchmark's settings (:class:`scpl.bench.settings.Settings`), its handler printing the ratios.
Each benchmark is imported when it runs (``scpl --help`` loads no torch)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from .settings import METHODS, WORKLOADS, Settings


def _bench_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run

    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
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
    from .early_exit import run

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
    from .gpu import run

    r = run(args.cpu_ranks, args.cpu_batch_size, args.cpu_steps,
            log=lambda line: print(line, file=sys.stderr))
    print(f"{r['device']} ({'CUDA' if r['cuda'] else 'no CUDA'}), torch {r['torch']}, {r['seconds']:.0f} s")
    if "note" in r:
        print(r["note"])
    print(json.dumps(r))
    return 0


def _bench_memory(args: argparse.Namespace) -> int:
    from .memory import run

    r = run(args.models, args.ks, args.batch_size, args.cut_by,
            log=lambda line: print(line, file=sys.stderr))
    print(f"activation memory held for backward, batch {r['batch_size']}, {r['cut_by']} cuts "
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


def add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``scpl bench`` and its subcommands to the ``scpl`` parser's subcommands ``sub``."""
    bench = sub.add_parser("bench", help="benchmarks that print ratios measured side by side")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    pipe = bench_sub.add_parser("pipeline",
                                help="decoupled pipelines vs sequential, BP and torch.distributed.pipelining")
    d = Settings()
    pipe.add_argument("--stages", type=int, default=d.stages, help="K: blocks, threads and gloo ranks")
    pipe.add_argument("--batch-size", type=int, default=d.batch_size)
    pipe.add_argument("--micro-batch", type=int, default=d.micro_batch)
    pipe.add_argument("--steps", type=int, default=d.steps, help="timed steps per run")
    pipe.add_argument("--warmup", type=int, default=d.warmup, help="untimed steps first")
    pipe.add_argument("--repeats", type=int, default=d.repeats,
                      help="runs per configuration (median reported)")
    pipe.add_argument("--method", default=d.method, choices=METHODS)
    pipe.add_argument("--model", default=d.model, choices=WORKLOADS,
                      help="cnn: compute-heavy; cnn_fc: a 10.6M-parameter fully connected head; "
                           "embed: a 12.8M-parameter embedding table (where DistributedDataParallel's "
                           "all-reduce is large)")
    pipe.add_argument("--replicas", type=int, default=d.replicas, help="also run K x R replicated ranks")
    pipe.add_argument("--compile", action="store_true",
                      help="also run the sequential engine with compiled blocks")
    pipe.add_argument("--no-peer-search", dest="peer_search", action="store_false",
                      help="give the BP pipeline the decoupled cut instead of searching its neighbours for "
                           "its own best (saves 2 x (2K - 1) rank groups)")
    pipe.add_argument("--seed", type=int, default=d.seed)
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
    mem.add_argument("--cut-by", default="equal", choices=["equal", "memory"],
                     help="cut into equal numbers of residual units, or into equal activation memory")
    mem.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    mem.set_defaults(func=_bench_memory)
