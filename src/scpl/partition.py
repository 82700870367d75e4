"""Cutting a user's model into contiguous blocks.

Three ways, all returning a list of ``nn.Module`` (one per block) that share parameters with
the given model:

* a list of modules (or an ``nn.ModuleList``): one block each;
* an ``nn.Sequential`` and a list of layer counts (or ``None``: one block per child);
* any ``nn.Module`` and a list of split points, the qualified names of the submodules at
  which a new block begins. The model is traced with ``torch.fx`` and split between those
  submodules. ``torch.distributed.pipelining.pipeline`` was considered for this; it traces
  with ``torch.export``, which bakes BatchNorm's train/eval mode into the graph, so the
  split blocks would normalise with batch statistics at evaluation too.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch.fx
from torch import nn
from torch.fx.passes.split_module import split_module

from .errors import ConfigError

BlockSpec = Union[None, int, Sequence[int], Sequence[str]]


def split_model(model: Union[nn.Module, Sequence[nn.Module]], blocks: BlockSpec = None) -> list[nn.Module]:
    """Return the blocks of ``model`` described by ``blocks`` (see the module docstring)."""
    if isinstance(model, (list, tuple, nn.ModuleList)):
        if blocks is not None:
            raise ConfigError("a list of modules is already one block per module; leave `blocks` unset")
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
            "(names of the submodules at which a new block begins), or pass a list of modules"
        )
    if isinstance(blocks, int):
        if not isinstance(model, nn.Sequential):
            raise ConfigError("an integer block count needs an nn.Sequential; give split-point names instead")
        return _split_sequential(model, _even_counts(len(model), blocks))
    blocks = list(blocks)
    if blocks and all(isinstance(b, int) for b in blocks):
        if not isinstance(model, nn.Sequential):
            raise ConfigError(
                "block sizes as layer counts need an nn.Sequential; for other modules give split points "
                "(submodule names)"
            )
        return _split_sequential(model, blocks)
    if blocks and all(isinstance(b, str) for b in blocks):
        return split_at(model, blocks)
    raise ConfigError(f"`blocks` must be layer counts (ints) or split points (str), got {blocks!r}")


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
    out, start = [], 0
    for c in counts:
        out.append(nn.Sequential(*layers[start : start + c]))
        start += c
    return out


class _Stage(nn.Module):
    """One traced piece of a model; reorders the incoming flow to the arguments it expects."""

    def __init__(self, module: nn.Module, arg_order: Optional[list[int]]):
        super().__init__()
        self.module = module
        self.arg_order = arg_order

    def forward(self, *flow):
        args = flow if self.arg_order is None else tuple(flow[i] for i in self.arg_order)
        return self.module(*args)


def _owner(target: str, points: Sequence[str]) -> Optional[int]:
    for i, name in enumerate(points):
        if target == name or target.startswith(name + "."):
            return i
    return None


def split_at(model: nn.Module, points: Sequence[str]) -> list[nn.Module]:
    """Trace ``model`` with ``torch.fx`` and cut it before each submodule named in ``points``."""
    names = dict(model.named_modules())
    for p in points:
        if p not in names:
            raise ConfigError(f"split point {p!r} is not a submodule of {type(model).__name__}; "
                              f"known: {sorted(n for n in names if n)[:20]}")
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; all mean "not traceable"
        raise ConfigError(
            f"could not trace {type(model).__name__} with torch.fx to split it ({exc}); pass a list of "
            "modules, one per block, instead"
        ) from exc

    partition: dict[str, int] = {}
    current = 0
    for node in traced.graph.nodes:
        if node.op in ("call_module", "get_attr"):
            owner = _owner(node.target, points)
            if owner is not None:
                if owner + 1 < current:
                    raise ConfigError(f"submodule {node.target!r} runs after split point "
                                      f"{points[current - 1]!r}; split points must be in execution order")
                current = max(current, owner + 1)
        partition[node.name] = current
    found = sorted(set(partition.values()))
    if found != list(range(len(points) + 1)):
        raise ConfigError(f"split points {list(points)} do not cut the forward pass into "
                          f"{len(points) + 1} non-empty blocks")
    _check_no_unit_is_cut(traced.graph, partition, points)

    split = split_module(traced, model, lambda node: partition[node.name])
    return _chain(split, len(points) + 1)


def _check_no_unit_is_cut(graph: torch.fx.Graph, partition: dict[str, int], points: Sequence[str]) -> None:
    """Refuse a split point inside a module whose own forward crosses it, e.g. ``"6.bn1"`` of a
    residual unit ``"6"``: the unit's input would travel on as a second output and the local loss
    would train on the wrong tensor. A value may cross a cut only between the children of the
    model itself or of an ``nn.Sequential`` (so splitting between the units of a stage, e.g. at
    ``"layer2.1"``, is fine)."""
    def stack(node: torch.fx.Node) -> list[tuple[str, type]]:
        return list(node.meta.get("nn_module_stack", {}).values())

    for node in graph.nodes:
        for arg in node.all_input_nodes:
            if partition[arg.name] >= partition[node.name]:
                continue
            common = [a for a, b in zip(stack(arg), stack(node)) if a == b]
            if common and not issubclass(common[-1][1], nn.Sequential):
                unit = common[-1][0]
                raise ConfigError(
                    f"split point {points[partition[node.name] - 1]!r} lies inside {unit!r}, "
                    "whose computation crosses it (a skip connection crosses a split point). Move the split "
                    f"point outside the residual unit: split at {unit!r} or after it.")


def _chain(split: torch.fx.GraphModule, k: int) -> list[nn.Module]:
    """Check that block i feeds only block i+1 and wrap each piece so tuple flows line up."""
    calls = {n.target: n for n in split.graph.nodes if n.op == "call_module"}
    order = [f"submod_{i}" for i in range(k)]
    stages = []
    for i, name in enumerate(order):
        node = calls[name]
        if i == 0:
            if not all(a.op == "placeholder" for a in node.args):
                raise ConfigError("the first block must take only the model's inputs")
            stages.append(_Stage(getattr(split, name), None))
            continue
        prev = calls[order[i - 1]]
        arg_order: Optional[list[int]] = []
        for a in node.args:
            if a is prev:
                arg_order = None
            elif a.op == "call_function" and a.args and a.args[0] is prev:
                arg_order.append(a.args[1])
            else:
                raise ConfigError(
                    f"block {i} uses a value ({a.name}) that is not an output of block {i - 1}: a skip "
                    "connection crosses a split point. Move the split point outside the residual unit."
                )
        if arg_order is not None and arg_order == list(range(len(arg_order))):
            arg_order = None
        stages.append(_Stage(getattr(split, name), arg_order))
    return stages
