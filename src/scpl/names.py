"""Every name a user can choose, in one place, without importing torch (``*_NAMES``: tuples of
names; the registries that build the named things are dicts elsewhere, e.g. ``METHODS``).

The command line takes its choices and help texts from here (so ``scpl --help`` starts fast),
``TrainConfig`` checks its values against them, and each registry that builds the named thing
(models, data sets, optimizers, ...) is tested to hold exactly these names.
"""

from __future__ import annotations

from .methods import BLOCK_LR_RULES as _BLOCK_LR_RULES
from .methods import METHODS as _METHODS

METHOD_NAMES = tuple(_METHODS)
"""Training methods (:data:`scpl.methods.METHODS`)."""

MODEL_NAMES = ("small_cnn", "vgg8", "resnet18", "resnet32", "resnet110", "text_lstm", "text_transformer")
"""Reference models (:data:`scpl.models.MODELS`)."""
MODEL_PREFIXES = ("timm", "hf")
"""Ecosystem models by name, ``timm:NAME`` and ``hf:NAME`` (:mod:`scpl.models.ecosystem`)."""


def is_model(name: str) -> bool:
    """Whether ``name`` is a reference model or an ecosystem model name (``timm:resnet18``)."""
    prefix, sep, rest = name.partition(":")
    return name in MODEL_NAMES or bool(sep and rest and prefix in MODEL_PREFIXES)


IMAGE_DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "stl10",
                       "tiny-imagenet")
TEXT_DATASET_NAMES = ("debian", "ag-news", "dbpedia", "imdb", "sst2")
DATASET_NAMES = IMAGE_DATASET_NAMES + TEXT_DATASET_NAMES
"""Data sets (:data:`scpl.data.datasets.DATASETS`)."""

OPTIMIZER_NAMES = ("adam", "adamw", "sgd", "lars")
SCHEDULE_NAMES = ("constant", "cosine")
"""Learning-rate schedules (``TrainConfig.schedule``); DASCPL's block schedule is
:class:`scpl.progressive.BlockSchedule`."""

BLOCK_LR_NAMES = _BLOCK_LR_RULES
"""Rules for the learning rate of each block (:func:`scpl.optim.block_lr_scales`)."""

AUGMENTATION_NAMES = ("none", "mnist", "cifar", "scpl")
EXECUTOR_NAMES = ("sequential", "threads", "distributed")
PRECISION_NAMES = ("fp32", "bf16")
PROJECTOR_NAMES = ("identity", "linear", "mlp", "mlp_bn", "deinforeg")
FEATURE_NAMES = ("pool1", "pool2", "pool4", "conv", "conv2")
LAST_BLOCK_NAMES = ("ce", "contrastive")

LSTM_INPUT_NORM = True
"""Default of ``text_lstm``'s ``input_norm`` (a LayerNorm on each LSTM block's input); read by
:class:`scpl.models.TextClassifier` and written into every saved ``text_lstm`` config."""


def choices(names: tuple[str, ...]) -> str:
    """``a|b|c``, for help texts."""
    return "|".join(names)
