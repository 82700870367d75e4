"""Cutting a user's model into contiguous blocks.

Three ways, all returning a list of ``nn.Module`` (one per block) that share parameters with
the given model:

* a list of modules (or an ``nn.ModuleList``): one block each;
* an ``nn.Sequential`` and a list of layer counts (or ``None``: one block per child);
* any ``nn.Module`` and a list of split points, the qualified names of the submodules at
  which a new block begins, or a number of blocks K (cut between the model's units at
  near-equal FLOPs). The model is captured as one graph (``torch.fx``, else ``torch.export``
  with its training-mode ops made switchable again) and cut there: see :mod:`scpl.tracing`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from torch import nn

from .errors import ConfigError
from .tracing.capture import Captured, OutputKey, capture, first_flow
from .tracing.cut import build, plan, verify
from .tracing.units import equal_cost_points, segments, unit_points

BlockSpec = Union[None, int, Sequence[int], Sequence[str]]


def has_parts(model: object) -> bool:
    """Whether ``model`` gives its blocks by itself: a list of modules (one block each) or an
    ``nn.Sequential`` (one block per child unless counts are given)."""
    return isinstance(model, (list, tuple, nn.ModuleList, nn.Sequential))


def split_model(model: Union[nn.Module, Sequence[nn.Module]], blocks: BlockSpec = None,
                example_input: Any = None, output: OutputKey = None) -> list[nn.Module]:
    """Return the blocks of ``model`` described by ``blocks`` (see the module docstring).
    A traced model needs ``example_input`` (a batch of its inputs) and, if its output is not the
    logits alone, ``output``: the key or index of the logits in it (default ``"logits"``)."""
    if isinstance(model, (list, tuple, nn.ModuleList)):
        if blocks is not None and not (isinstance(blocks, int) and not isinstance(blocks, bool)
                                       and blocks == len(model)):
            raise ConfigError(f"a list of {len(model)} modules is already one block per module; leave "
                              f"`blocks` unset (or {len(model)}), or give the layers as one nn.Sequential "
                              f"to cut otherwise")
        modules = list(model)
        if not modules or not all(isinstance(m, nn.Module) for m in modules):
            raise ConfigError("a list of blocks must be a non-empty list of nn.Module")
        return modules
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module or a list of them, got {type(model).__name__}")
    if blocks is None:
        if isinstance(model, nn.Sequential):
            return list(model.children())
        raise ConfigError(
            f"{type(model).__name__} is not an nn.Sequential: give `blocks` as a list of split points "
            "(names of the submodules at which a new block begins), a number of blocks, or pass a list of "
            "modules"
        )
    if isinstance(blocks, int):
        if not isinstance(model, nn.Sequential):
            return split_even(model, blocks, example_input, output)
        return _split_sequential(model, _even_counts(len(model), blocks))
    spec = list(blocks)
    if not spec and not isinstance(model, nn.Sequential):  # no split point: the model as one block
        return split_at(model, [], example_input, output)
    counts = [b for b in spec if isinstance(b, int)]
    names = [b for b in spec if isinstance(b, str)]
    if spec and len(counts) == len(spec):
        if not isinstance(model, nn.Sequential):
            raise ConfigError(
                "block sizes as layer counts need an nn.Sequential; for other modules give split points "
                "(submodule names)"
            )
        return _split_sequential(model, counts)
    if spec and len(names) == len(spec):
        return split_at(model, names, example_input, output)
    raise ConfigError(f"`blocks` must be layer counts (ints) or split points (str), got {spec!r}")


def _even_counts(num_layers: int, k: int) -> list[int]:
    if not 1 <= k <= num_layers:
        raise ConfigError(f"cannot cut {num_layers} layers into {k} non-empty blocks")
    base, extra = divmod(num_layers, k)
    return [base + (i < extra) for i in range(k)]


def _split_sequential(model: nn.Sequential, counts: Sequence[int]) -> list[nn.Module]:
    layers = list(model.children())
    if any(c <= 0 for c in counts):
        raise ConfigError(f"every block needs at least one layer, got counts {list(counts)}")
    if sum(counts) != len(layers):
        raise ConfigError(
            f"block layer counts {list(counts)} sum to {sum(counts)} but the model has {len(layers)} layers; "
            "make them add up to the number of children of the nn.Sequential"
        )
    out: list[nn.Module] = []
    start = 0
    for c in counts:
        out.append(nn.Sequential(*layers[start : start + c]))
        start += c
    return out


def split_at(model: nn.Module, points: Sequence[str], example_input: Any,
             output: OutputKey = None) -> list[nn.Module]:
    """Cut ``model`` before each submodule named in ``points`` (see :mod:`scpl.tracing`); the
    blocks are checked against the model's own output on ``example_input`` in eval mode."""
    known = dict(model.named_modules())
    for p in points:
        if p not in known:
            raise ConfigError(f"split point {p!r} is not a submodule of {type(model).__name__}; "
                              f"known: {sorted(n for n in known if n)[:20]}")
    captured = _captured(model, example_input, output)
    stages = build(captured, plan(captured, points), points)
    verify(model, stages, captured, example_input, output)
    return list(stages)


def split_even(model: nn.Module, k: int, example_input: Any, output: OutputKey = None) -> list[nn.Module]:
    """Cut ``model`` into ``k`` blocks of its units (:mod:`scpl.tracing.units`) of near-equal
    floating-point operations on ``example_input``."""
    captured = _captured(model, example_input, output)
    return split_at(model, equal_cost_points(captured, model, k, first_flow(captured, example_input)),
                    example_input, output)


def units(model: Union[nn.Module, Sequence[nn.Module]], example_input: Any,
          output: OutputKey = None) -> tuple[list[nn.Module], Optional[list[str]], Any]:
    """What ``blocks="auto"`` cuts between, as ``(layers, points, first flow)``: an
    ``nn.Sequential``'s children (``points`` None), or a traced model's units
    (:mod:`scpl.tracing.units`) with the split point before each but the first."""
    if isinstance(model, nn.Sequential):
        return list(model.children()), None, example_input
    if not isinstance(model, nn.Module):
        raise ConfigError(f'blocks="auto" cuts an nn.Module, got {type(model).__name__}')
    captured = _captured(model, example_input, output)
    points = unit_points(captured, model)
    return segments(captured, points), points, first_flow(captured, example_input)


def _captured(model: nn.Module, example_input: Any, output: OutputKey) -> Captured:
    if example_input is None:
        raise ConfigError(f"cutting {type(model).__name__} by its submodules traces it: give example_input, "
                          "a batch of its inputs")
    return capture(model, example_input, output)
