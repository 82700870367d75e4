"""What a :class:`~scpl.DecoupledModel` accepts as data, checked before any block sees it.

A loader is any re-iterable of ``(inputs, labels)`` pairs: inputs a tensor, a tuple of tensors
or, for a model traced with keyword inputs, a mapping of them (``{"input_ids": ...,
"attention_mask": ...}``, as a tokenizer returns; NumPy arrays are converted), labels integer
class indices in ``[0, num_classes)``.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ConfigError, LabelError
from .flow import Flow

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Raise :class:`LabelError` unless ``labels`` is a 1-D integer tensor in ``[0, num_classes)``."""
    if not isinstance(labels, Tensor) or labels.dtype not in _INTEGER_DTYPES:
        raise LabelError("labels must be an integer tensor of class indices, "
                         f"got {getattr(labels, 'dtype', type(labels))}")
    if labels.dim() != 1:
        raise LabelError(f"labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise LabelError(
            f"labels must lie in [0, {num_classes}), "
            f"got values from {int(labels.min())} to {int(labels.max())}; "
            "check num_classes or remap the labels"
        )


def as_tensors(value: Any, what: str) -> Any:
    """A tensor, or a tuple of tensors, from tensors or NumPy arrays (converted, not copied)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ConfigError(f"{what} is a NumPy array of Python objects; "
                              "give numbers (e.g. .astype(np.float32))")
        return torch.from_numpy(value)
    if isinstance(value, (tuple, list)):
        return tuple(as_tensors(v, what) for v in value)
    if isinstance(value, Mapping):
        return {k: as_tensors(v, f"{what}[{k!r}]") for k, v in value.items()}
    if not isinstance(value, Tensor):
        raise ConfigError(f"{what} must be a tensor, a NumPy array or a tuple of them, "
                          f"got {type(value).__name__}")
    return value


def arranged(inputs: Any, names: Optional[Sequence[str]]) -> Any:
    """Keyword inputs (a mapping) as the positional flow of a model traced with the inputs
    ``names``; other inputs as they are."""
    if not isinstance(inputs, Mapping):
        return inputs
    if names is None:
        raise ConfigError("inputs given by name (a mapping) need a model split by tracing with the same "
                          "named example_input; give this model its inputs as a tensor or a tuple")
    missing, extra = [n for n in names if n not in inputs], [k for k in inputs if k not in names]
    if missing or extra:
        raise ConfigError(f"the inputs have the keys {list(inputs)}, the model was traced with {list(names)}"
                          f"{'; missing ' + str(missing) if missing else ''}"
                          f"{'; not traced: ' + str(extra) if extra else ''}: give the batches the keys "
                          "of example_input")
    values = tuple(inputs[n] for n in names)
    return values[0] if len(values) == 1 else values


def has_batch_norm(blocks: Iterable[nn.Module]) -> bool:
    """Whether any block (layers or head) normalises with batch statistics in training."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for b in blocks for m in b.modules())


class Checked:
    """The batches of a loader as (inputs, labels) tensors, checked as they are read (see
    :func:`checked`); its length is the loader's (a ``TypeError`` for a loader without one)."""

    def __init__(self, loader: Iterable, num_classes: int, skip_single: bool = False, finite: bool = False,
                 names: Optional[Sequence[str]] = None):
        if isinstance(loader, Tensor) or not hasattr(type(loader), "__iter__"):
            raise ConfigError("a loader must be an iterable of (inputs, labels) batches, "
                              f"got {type(loader).__name__}")
        self.loader, self.num_classes, self.skip_single = loader, num_classes, skip_single
        self.finite, self.names = finite, names

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[Flow, Tensor]]:
        for index, batch in enumerate(self.loader):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ConfigError("each batch must be a pair (inputs, labels)")
            inputs = arranged(as_tensors(batch[0], "inputs"), self.names)
            labels = as_tensors(batch[1], "labels")
            if any(t.is_meta for t in (*_leaves(inputs), labels)):
                raise ConfigError(f"batch {index} is on the meta device: meta tensors have shapes but no "
                                  "values (e.g. data made under torch.device('meta')); give real data on cpu "
                                  "or cuda")
            check_labels(labels, self.num_classes)
            if self.finite and not all_finite(inputs):
                raise ConfigError(f"the inputs of batch {index} contain NaN or inf; clean or impute them "
                                  "first")
            if self.skip_single and labels.shape[0] == 1:
                warnings.warn("skipped a training batch of one sample: BatchNorm cannot normalise a single "
                              "sample (use DataLoader(drop_last=True) to avoid such batches)", RuntimeWarning,
                              stacklevel=2)
                continue
            yield inputs, labels.long()


def checked(loader: Iterable, num_classes: int, skip_single: bool = False,
            finite: bool = False, names: Optional[Sequence[str]] = None) -> Checked:
    """The batches of ``loader`` as (inputs, labels) tensors, checked.

    ``skip_single``: leave out batches of one sample (with a warning), which BatchNorm cannot
    train on (e.g. the last batch of an epoch when the data set size is 1 more than a multiple
    of the batch size; ``DataLoader(drop_last=True)`` avoids them). ``finite``: raise
    :class:`ConfigError` for inputs holding NaN or inf (evaluation would return a number
    computed from them). ``names``: the input names of a model traced with keyword inputs
    (mappings are arranged in that order, :func:`arranged`).
    """
    return Checked(loader, num_classes, skip_single, finite, names)


def all_finite(flow: Flow) -> bool:
    """Whether every floating-point tensor of a flow is free of NaN and inf."""
    return all(bool(torch.isfinite(t).all()) for t in _leaves(flow) if t.is_floating_point())


def _leaves(flow: Flow) -> list[Tensor]:
    return [flow] if isinstance(flow, Tensor) else [t for part in flow for t in _leaves(part)]


def check_finite_outputs(logits: Tensor) -> None:
    """Raise :class:`ConfigError` if ``logits`` (of finite inputs) hold NaN or inf."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ConfigError(f"the model's outputs are NaN or inf for {bad} sample(s) of finite inputs: "
                          "its weights are not finite (did training diverge? load a checkpoint from before)")
