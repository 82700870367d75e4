"""Every name a user can choose, in one place, without importing torch.

The command line takes its choices and help texts from here (so ``scpl --help`` starts fast),
``TrainConfig`` checks its values against them, and each registry that builds the named thing
(models, data sets, optimizers, ...) is tested to hold exactly these names.
"""

from __future__ import annotations

from .methods import BLOCK_LR_RULES as _BLOCK_LR_RULES
from .methods import METHODS as _METHODS

METHODS = tuple(_METHODS)
"""Training methods (:data:`scpl.methods.METHODS`)."""

MODELS = ("small_cnn", "vgg8", "resnet18", "resnet32", "resnet110", "text_lstm", "text_transformer")
"""Reference models (:data:`scpl.models.MODELS`)."""
MODEL_PREFIXES = ("timm", "hf")
"""Ecosystem models by name, ``timm:NAME`` and ``hf:NAME`` (:mod:`scpl.models.ecosystem`)."""


def is_model(name: str) -> bool:
    """Whether ``name`` is a reference model or an ecosystem model name (``timm:resnet18``)."""
    prefix, sep, rest = name.partition(":")
    return name in MODELS or bool(sep and rest and prefix in MODEL_PREFIXES)

IMAGE_DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10", "tiny-imagenet")
TEXT_DATASETS = ("debian", "ag-news", "dbpedia", "imdb", "sst2")
DATASETS = IMAGE_DATASETS + TEXT_DATASETS
"""Data sets (:data:`scpl.data.datasets.DATASETS`)."""

OPTIMIZERS = ("adam", "adamw", "sgd", "lars")
LR_SCHEDULES = ("constant", "cosine")
"""Learning-rate schedules (``TrainConfig.schedule``); DASCPL's block schedule is
:class:`scpl.progressive.BlockSchedule`."""

BLOCK_LR = _BLOCK_LR_RULES
"""Rules for the learning rate of each block (:func:`scpl.optim.block_lr_scales`)."""

AUGMENTATIONS = ("none", "mnist", "cifar", "scpl")
EXECUTORS = ("sequential", "threads", "distributed")
PRECISIONS = ("fp32", "bf16")
PROJECTORS = ("identity", "linear", "mlp", "mlp_bn", "deinforeg")
FEATURES = ("pool1", "pool2", "pool4", "conv")
LAST_BLOCKS = ("ce", "contrastive")

LSTM_INPUT_NORM = True
"""Default of ``text_lstm``'s ``input_norm`` (a LayerNorm on each LSTM block's input); read by
:class:`scpl.models.TextClassifier` and written into every saved ``text_lstm`` config."""


def choices(names: tuple[str, ...]) -> str:
    """``a|b|c``, for help texts."""
    return "|".join(names)
