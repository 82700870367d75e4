"""Assembling a run: data, transforms, model, blocks, executor and block schedule from a config.

:func:`build` is what ``scpl train`` runs first and what ``scpl eval`` rebuilds a finished run
with; it trains nothing (see :mod:`scpl.runner.loop`).
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Subset

from ..data.augment import Augment, TwoViews, preset
from ..data.datasets import DataBundle, load_dataset, num_samples
from ..data.noise import NoisyLabels
from ..data.tokens import Vocab
from ..data.transforms import Compose, Resize
from ..errors import ConfigError
from ..executors import EXECUTORS, Executor
from ..executors.distributed import init_from_env
from ..model import DecoupledModel
from ..models import MODELS, create_model
from ..models.ecosystem import NamedInputs, ecosystem
from ..optim import build_optimizer, build_scheduler
from ..progressive import BlockSchedule
from ..seed import seed_everything
from .config import TrainConfig

log = logging.getLogger("scpl")


class DeviceLoader:
    """A loader whose batches pass through ``transform(x, y) -> (x, y)`` (augmentation,
    normalisation) on the first block's device."""

    def __init__(self, loader: DataLoader, transform: Optional[Callable], device: torch.device):
        self.loader, self.transform, self.device = loader, transform, device

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def batch_size(self) -> Optional[int]:
        """Samples per batch (for samples/s)."""
        return self.loader.batch_size

    def __iter__(self) -> Iterator:
        for x, y in self.loader:
            if self.transform is not None:
                x, y = self.transform(x.to(self.device, non_blocking=True), y)
            yield x, y


def _optimizer(cfg: TrainConfig) -> Any:
    """The optimizer factory of every block (DecoupledModel scales its rate by ``block_lr``)."""
    return lambda params: build_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay, cfg.momentum,
                                          cfg.nesterov)


def _blocks_spec(spec: Any) -> Any:
    """``"auto"``; ``"4"``: 4 blocks of near-equal layer counts; ``"2,3"``: layer counts;
    names: split points."""
    if isinstance(spec, str) and spec != "auto":
        parts = [p.strip() for p in spec.split(",")]
        if not all(p.isdigit() for p in parts):
            return parts
        return int(parts[0]) if len(parts) == 1 else [int(p) for p in parts]
    return spec


def _model(cfg: TrainConfig, bundle: DataBundle) -> torch.nn.Module:
    kwargs = dict(cfg.model_args)
    if ecosystem(cfg.model) is not None:
        if cfg.embeddings:
            raise ConfigError(f"embeddings: pre-trained vectors are for the reference text models, not "
                              f"{cfg.model}")
        sizes = (dict(vocab_size=len(_vocab(bundle)), max_len=cfg.max_len) if bundle.kind == "text" else
                 dict(in_channels=bundle.shape[0], image_size=cfg.image_size or bundle.shape[-1]))
        return create_model(cfg.model, num_classes=bundle.num_classes, **sizes, **kwargs)
    if bundle.kind == "text":
        vocab = _vocab(bundle)
        kwargs.update(vocab_size=len(vocab), num_classes=bundle.num_classes)
        if cfg.embeddings:
            from ..data import glove

            vectors, found = (glove.load_glove_package(vocab, seed=cfg.seed)
                              if cfg.embeddings == "glove"
                              else glove.read_glove_text(cfg.embeddings, vocab, seed=cfg.seed))
            log.info("pre-trained vectors for %d of %d vocabulary words", found, len(vocab))
            kwargs.update(vectors=vectors, dim=vectors.shape[1])
        kwargs.setdefault("max_len", cfg.max_len)
    else:
        kwargs.update(in_channels=bundle.shape[0], num_classes=bundle.num_classes)
        if cfg.model == "vgg8":
            kwargs.setdefault("image_size", cfg.image_size or bundle.shape[-1])
    try:
        return create_model(cfg.model, **kwargs)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        accepted = sorted(n for n in inspect.signature(MODELS[cfg.model]).parameters if n != "kwargs")
        raise ConfigError(f"model_args for {cfg.model}: {exc}; it accepts {accepted}") from exc


def _vocab(bundle: DataBundle) -> Vocab:
    """A text data set's vocabulary."""
    if bundle.vocab is None:
        raise ConfigError(f"the text data set {bundle.name!r} has no vocabulary")
    return bundle.vocab


def _transforms(cfg: TrainConfig, bundle: DataBundle) -> tuple[Optional[Augment], Optional[Augment]]:
    """(training transform, evaluation transform) for image sets; (None, None) for text."""
    if bundle.kind != "image":
        if cfg.augment != "none" or cfg.two_views or cfg.image_size:
            raise ConfigError(f"augment/two_views/image_size apply to image data sets, not {bundle.name!r}")
        return None, None
    size = cfg.image_size or bundle.shape[-1]
    mean, std = bundle.mean, bundle.std
    if mean is None or std is None:
        raise ConfigError(f"the image data set {bundle.name!r} has no per-channel mean and std")

    def make(name: str):
        augment = preset(name, size, mean, std)
        return augment if size == bundle.shape[-1] else Compose([Resize(size), augment])

    if cfg.two_views and cfg.augment == "scpl":  # SCPL's pair: a weak view (crop + flip) and a strong one
        train = Augment(TwoViews(make("cifar"), make("scpl")), seed=cfg.seed)
    else:
        train = Augment(make(cfg.augment), seed=cfg.seed, two_views=cfg.two_views)
    return train, Augment(make("none"), seed=0)


@dataclass
class Run:
    """What :func:`build` assembles; :func:`scpl.runner.loop.train` drives it."""

    cfg: TrainConfig
    bundle: DataBundle
    model: DecoupledModel
    executor: Executor
    train_batches: DeviceLoader
    val_batches: Optional[DeviceLoader]
    test_batches: DeviceLoader
    generator: torch.Generator
    augment: Optional[Augment]
    schedule: Optional[BlockSchedule]
    rank: int = 0
    world: int = 1

    @property
    def stage(self) -> int:
        """The block this rank trains under the distributed executor (rank // replicas)."""
        return self.rank // self.cfg.replicas
    train_eval_batches: Optional[DeviceLoader] = None  # the training split in order, unaugmented (eval_train)
    bn_batches: Optional[DeviceLoader] = None  # precise_bn's batches: training samples spread over the split
    clean_labels: Optional[torch.Tensor] = None  # its true labels when label noise is on


def build(cfg: TrainConfig) -> Run:
    """Data, model, blocks and executor of a run (under torchrun: this rank's view of them)."""
    rank, world = _process(cfg)
    executor = (EXECUTORS["threads"](micro_batches=cfg.micro_batches, trace=bool(cfg.out and cfg.plots))
                if cfg.executor == "threads" else
                EXECUTORS["distributed"](micro_batches=cfg.micro_batches, replicas=cfg.replicas)
                if cfg.executor == "distributed" else
                EXECUTORS[cfg.executor](micro_batches=cfg.micro_batches))
    generator = seed_everything(cfg.seed)
    bundle = load_dataset(cfg.dataset, cfg.data_root, val_fraction=cfg.val_fraction,
                          train_limit=cfg.train_limit, max_len=cfg.max_len, min_freq=cfg.min_freq,
                          max_vocab=cfg.max_vocab)
    train_set = bundle.train
    if cfg.label_noise:
        train_set = NoisyLabels(train_set, cfg.label_noise, bundle.num_classes, seed=cfg.seed)
    if num_samples(train_set) < cfg.batch_size:
        raise ConfigError(f"the training split has {num_samples(train_set)} samples, fewer than one batch of "
                          f"{cfg.batch_size}")
    train_aug, eval_aug = _transforms(cfg, bundle)
    devices = _devices(cfg.devices)
    first_device = torch.device(devices[0] if isinstance(devices, list) else (devices or "cpu"))

    collate = bundle.collate
    if ecosystem(cfg.model) is not None and bundle.kind == "text":
        if bundle.collate is None:
            raise ConfigError(f"the text data set {bundle.name!r} has no collate function")
        collate = NamedInputs(bundle.collate)  # {"input_ids", "attention_mask"}, as a tokenizer gives

    def batches(dataset, size: int, shuffle: bool, transform) -> DeviceLoader:
        loader = DataLoader(dataset, batch_size=size, shuffle=shuffle, drop_last=shuffle,
                            collate_fn=collate, generator=generator if shuffle else None,
                            pin_memory=first_device.type == "cuda")
        return DeviceLoader(loader, transform, first_device)

    example = next(iter(batches(bundle.train, cfg.batch_size, False, eval_aug)))[0]
    model = _decoupled(cfg, bundle, example, devices, world)
    schedule = _block_schedule(cfg, model)
    _schedulers(cfg, model, schedule)
    return Run(cfg, bundle, model, executor, batches(train_set, cfg.batch_size, True, train_aug),
               batches(bundle.val, cfg.eval_batch_size, False, eval_aug) if bundle.val is not None else None,
               batches(bundle.test, cfg.eval_batch_size, False, eval_aug), generator, train_aug, schedule,
               rank, world, train_eval_batches=(batches(train_set, cfg.eval_batch_size, False, eval_aug)
                                                if cfg.eval_train else None),
               bn_batches=(batches(_spread(train_set, cfg.precise_bn * cfg.eval_batch_size),
                                   cfg.eval_batch_size, False, eval_aug) if cfg.precise_bn else None),
               clean_labels=train_set.clean_labels if isinstance(train_set, NoisyLabels) else None)


def _spread(dataset, count: int):
    """Up to ``count`` samples of ``dataset`` spread evenly over it, in order (all if it has fewer)."""
    step = max(1, len(dataset) // count)
    return Subset(dataset, range(0, len(dataset), step)[:count])


def _devices(spec: Any) -> Any:
    """``devices`` as a device name or a list of them, each checked to exist on this machine."""
    names = spec.split(",") if isinstance(spec, str) else spec
    for name in names if isinstance(names, list) else [names] if names else []:
        try:
            device = torch.device(str(name).strip())
        except RuntimeError as exc:
            raise ConfigError(f"unknown device {name!r}: give cpu, cuda or cuda:N (one per block: "
                              "cuda:0,cuda:1)") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: CUDA is not available on this machine "
                              f"(torch {torch.__version__}); use cpu")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        if device.type not in ("cpu", "cuda"):
            raise ConfigError(f"device {name!r}: scpl runs blocks on cpu or cuda devices")
    return [str(n).strip() for n in names] if isinstance(names, list) else names


def launch_rank(cfg: TrainConfig) -> int:
    """This process's rank as torchrun set it (0 outside the distributed executor), readable
    before the process group exists; ConfigError when the distributed executor was not launched
    by torchrun."""
    if cfg.executor != "distributed":
        return 0
    if "RANK" not in os.environ:
        raise ConfigError("executor distributed runs one process per block: launch with "
                          "`torchrun --nproc-per-node=K -m scpl train ...`")
    return int(os.environ["RANK"])


def _process(cfg: TrainConfig) -> tuple[int, int]:
    """(rank, world size): joins torchrun's process group for the distributed executor; sets threads."""
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {cfg.executor!r}; choose one of {sorted(EXECUTORS)}")
    if cfg.executor != "distributed":
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return 0, 1
    launch_rank(cfg)
    rank, world = init_from_env()
    torch.set_num_threads(cfg.threads or 1)
    return rank, world


def _decoupled(cfg: TrainConfig, bundle: DataBundle, example: Any, devices: Any,
               world: int) -> DecoupledModel:
    """The reference model cut into blocks with the method's local objectives."""
    blocks = _blocks_spec(cfg.blocks)
    stages = world // cfg.replicas
    if cfg.executor == "distributed" and world % cfg.replicas:
        raise ConfigError(f"torchrun started {world} ranks, not a multiple of replicas={cfg.replicas}: "
                          "start K x R ranks")
    num_blocks = cfg.num_blocks or (stages if cfg.executor == "distributed" and blocks == "auto" else None)
    if blocks == "auto" and num_blocks is None:
        raise ConfigError("blocks: auto needs num_blocks K (or the distributed executor, where K is the "
                          "world size divided by replicas)")
    net = _model(cfg, bundle)
    block_counts = getattr(net, "block_counts", None)  # the model's own cut (CIFAR ResNets)
    if isinstance(blocks, int) and block_counts is not None:
        blocks = block_counts(blocks)
    model = DecoupledModel(
        net, blocks, num_blocks=num_blocks, method=cfg.method, num_classes=bundle.num_classes,
        example_input=example, contsup=cfg.contsup, infopro=cfg.infopro, exits=cfg.exits, devices=devices,
        objective_kwargs=cfg.objective_args, projector=cfg.projector, projector_dim=cfg.projector_dim,
        projector_hidden=cfg.projector_hidden, features=cfg.features, last_block=cfg.last_block,
        optimizer=_optimizer(cfg), block_lr=cfg.block_lr,
        precision=cfg.precision, clip_grad_norm=cfg.clip_grad_norm, compile=cfg.compile,
    )
    if cfg.executor == "distributed" and len(model.blocks) * cfg.replicas != world:
        raise ConfigError(f"the model has {len(model.blocks)} blocks x {cfg.replicas} replica(s) "
                          f"but torchrun started {world} ranks; "
                          "start K x R ranks (--nproc-per-node, --nnodes) or set blocks/num_blocks")
    for block in model.blocks:
        block.rng_seed = cfg.seed  # dropout draws independent of the executor (threads, ranks) and resumable
    return model


def _block_schedule(cfg: TrainConfig, model: DecoupledModel) -> Optional[BlockSchedule]:
    """DASCPL's block schedule (``activate``), if any, checked against the model's blocks."""
    progressive = model.progressive_span is not None
    # epochs at which the blocks start (from the config), or "progressive"
    activate: Any = cfg.activate if cfg.activate is not None else ("progressive" if progressive else None)
    if activate is None:
        return None
    span = cfg.progressive_span if cfg.progressive_span is not None else (model.progressive_span or 1.0)
    schedule = (BlockSchedule.progressive(len(model.blocks), cfg.first_cycle, span)
                if activate == "progressive" else BlockSchedule(activate=list(activate)))
    schedule.validate(len(model.blocks))
    return schedule


def _schedulers(cfg: TrainConfig, model: DecoupledModel, schedule: Optional[BlockSchedule]) -> None:
    """Every block's learning-rate scheduler, built once: a block switched on at epoch a (a
    block schedule) anneals over its own epochs - a, not over epochs it never trains."""
    starts = schedule.activate if schedule is not None and schedule.activate is not None else None
    for k, block in enumerate(model.blocks):
        if block.optimizer is not None:
            a = starts[k] if starts is not None else 0
            block.scheduler = build_scheduler(
                cfg.schedule, block.optimizer, cfg.epochs - a, cfg.warmup_epochs, cfg.min_lr,
                [r - a for r in cfg.restarts or ()])
