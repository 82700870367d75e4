"""Where a model can be cut: its own units, the submodules its forward pass runs in order.

A unit is a child of the model itself or of an ``nn.Sequential`` / ``nn.ModuleList`` anywhere
in it (a ResNet's stages and residual units, a ViT's or BERT's blocks), before which a cut hands
exactly one learned value on (:mod:`scpl.tracing.cut`). Of units that begin at the same
operation, the outermost names the cut.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConfigError
from ..flow import Flow, call_with_flow
from .capture import Captured
from .cut import build, compute_nodes, inside, plan, trainable


def candidates(model: nn.Module) -> list[str]:
    """The model's units by name, in definition order (see the module docstring)."""
    found = []
    for name, module in model.named_modules():
        if name == "" or isinstance(module, (nn.Sequential, nn.ModuleList)) or name.startswith("_scpl_mode_"):
            continue
        parent = model.get_submodule(name.rpartition(".")[0])
        if parent is model or isinstance(parent, (nn.Sequential, nn.ModuleList)):
            found.append(name)
    return found


def unit_points(captured: Captured, model: nn.Module) -> list[str]:
    """The split points of ``model``'s units, in execution order; ConfigError if it has none."""
    nodes = compute_nodes(captured.graph_module.graph)
    learned = trainable(captured.graph_module)
    start: dict[int, str] = {}
    for name in candidates(model):
        first = next((i for i, n in enumerate(nodes) if inside(n, name)), None)
        if first is None or first == 0 or first in start:
            continue
        try:
            cut = plan(captured, [name])
        except ConfigError:
            continue
        if sum(v in learned for v in cut.flows[1]) == 1:
            start[first] = name
    if not start:
        raise ConfigError(f"found no place to cut {type(model).__name__} between its units (children of the "
                          "model or of an nn.Sequential / nn.ModuleList); give split points by name")
    return [start[i] for i in sorted(start)]


def segments(captured: Captured, points: Sequence[str]) -> list[nn.Module]:
    """The model cut before every one of ``points``: one module per segment."""
    return list(build(captured, plan(captured, points), points))


def flops(parts: Sequence[nn.Module], example: Flow) -> list[float]:
    """Floating-point operations of each part's forward on the flow it receives from the one
    before (the first on ``example``), counted by ``torch.utils.flop_counter``."""
    out, flow = [], example
    with torch.no_grad():
        for part in parts:
            counter = FlopCounterMode(display=False)
            with counter:
                flow = call_with_flow(part, flow)
            out.append(float(counter.get_total_flops()))
    return out


def points_of(points: Sequence[str], counts: Sequence[int]) -> list[str]:
    """The split points that make blocks of ``counts`` units of the segments between ``points``
    (``len(points) + 1`` segments)."""
    if sum(counts) != len(points) + 1 or min(counts) < 1:
        raise ConfigError(f"block counts {list(counts)} do not cover the model's {len(points) + 1} units")
    ends, total = [], 0
    for c in counts[:-1]:
        total += c
        ends.append(points[total - 1])
    return ends


def equal_cost_points(captured: Captured, model: nn.Module, k: int, example: Any) -> list[str]:
    """Split points cutting the model's units into ``k`` blocks of near-equal FLOPs (a
    deterministic count, so every rank and every rerun gets the same cut)."""
    from ..balance import best_cut

    points = unit_points(captured, model)
    if not 1 <= k <= len(points) + 1:
        raise ConfigError(f"{type(model).__name__} has {len(points) + 1} units to cut between; cannot make "
                          f"{k} blocks (its units begin at {points[:8]}{'...' if len(points) > 8 else ''})")
    costs = flops(segments(captured, points), example)
    floor = max(costs) * 1e-3 or 1.0  # a unit without FLOPs (a dropout) still costs a little
    return points_of(points, best_cut([max(c, floor) for c in costs], k))
