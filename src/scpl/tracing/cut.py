"""Cutting a captured graph into blocks before the submodules named as split points.

Every operation of the graph belongs to one block: block 0 runs from the model's inputs to the
first split point; block i+1 starts with the first operation inside split point i. Parameters
and buffers read outside any submodule (a ViT's class token, a BERT's position ids) belong to
the block that uses them. What a block hands to the next (its flow) is:

1. its output: the values computed from trainable parameters that cross the cut (the first of
   them, the one produced last, is what the block's local head sees);
2. the model's ``attention_mask`` input, if it has one, so that heads average over real tokens;
3. every tensor computed from the inputs alone (no trainable parameter) that a later block
   needs, e.g. an attention mask derived from the input: it travels from block to block.

Values that are not tensors (sizes read off a tensor, say) never travel: a block that needs one
computes it again from the tensors it has.

A value computed from trainable parameters may cross one cut only, into the split point's own
submodule: anything else is a skip connection across the cut (a cut inside a residual unit) and
is refused with the name of the unit. A parameter used by two blocks (tied weights) is refused:
each block's optimizer would step it with its own local gradient, and ranks would hold copies
that drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.fx
from torch import nn

from ..errors import ConfigError
from ..flow import call_with_flow
from .capture import Captured, OutputKey, differs, example_arguments, first_flow, in_eval_mode, logits_of
from .modes import retarget

MASK = "attention_mask"


def scopes(node: torch.fx.Node) -> list[str]:
    """The qualified names of the submodules ``node`` runs inside, outermost first."""
    found = [path for path, _ in node.meta.get("nn_module_stack", {}).values() if path]
    if node.op == "call_module" and not str(node.target).startswith("_scpl_mode_"):
        if node.target not in found:
            found.append(str(node.target))
    return found


def inside(node: torch.fx.Node, name: str) -> bool:
    """Whether ``node`` runs inside the submodule ``name``."""
    return any(s == name or s.startswith(name + ".") for s in scopes(node))


def compute_nodes(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """The graph's operations, in order (no inputs, attributes or output)."""
    return [n for n in graph.nodes if n.op in ("call_function", "call_method", "call_module")]


def trainable(gm: torch.fx.GraphModule) -> set[torch.fx.Node]:
    """The nodes whose value depends on a trainable parameter."""
    found: set[torch.fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = gm.get_parameter(node.target) if _is_parameter(gm, node.target) else None
            if value is not None and value.requires_grad:
                found.add(node)
        elif node.op == "call_module" and any(p.requires_grad
                                              for p in gm.get_submodule(node.target).parameters()):
            found.add(node)
        elif any(a in found for a in node.all_input_nodes):
            found.add(node)
    return found


def _is_parameter(gm: nn.Module, target: str) -> bool:
    try:
        gm.get_parameter(target)
        return True
    except AttributeError:
        return False


def assign(nodes: list[torch.fx.Node], points: Sequence[str]) -> dict[torch.fx.Node, int]:
    """The block of every operation: i + 1 from the first operation inside ``points[i]`` on."""
    block, current = {}, 0
    for node in nodes:
        owners = [i for i, p in enumerate(points) if inside(node, p)]
        if owners:
            owner = max(owners)  # nested split points: the innermost one
            latest = points[current - 1] if current else ""
            # after an inner split point, the rest of the module around it stays in the later block
            around = any(latest == points[o] or latest.startswith(points[o] + ".") for o in owners)
            if owner + 1 < current and not around:
                raise ConfigError(f"submodule {'.'.join(scopes(node)[-1:])!r} runs after split point "
                                  f"{points[current - 1]!r}; split points must be in execution order and "
                                  "each submodule must run once")
            current = max(current, owner + 1)
        block[node] = current
    if sorted(set(block.values())) != list(range(len(points) + 1)):
        raise ConfigError(f"split points {list(points)} do not cut the forward pass into {len(points) + 1} "
                          "non-empty blocks")
    return block


@dataclass
class Plan:
    """Where each operation runs and what each cut hands on (the values, main one first)."""

    block: dict[torch.fx.Node, int]
    flows: list[list[torch.fx.Node]]  # flows[i]: what block i receives (block 0: the model's inputs)
    output: torch.fx.Node
    head_inputs: int  # how many leading values of a flow the local heads read (main, mask)
    again: set[torch.fx.Node]  # values (not tensors) computed again by every later block that reads them


def plan(captured: Captured, points: Sequence[str]) -> Plan:
    """The blocks and flows of cutting ``captured`` before each of ``points``; ConfigError for a
    cut that a skip connection crosses (see the module docstring)."""
    gm, k = captured.graph_module, len(points) + 1
    nodes = compute_nodes(gm.graph)
    block = assign(nodes, points)
    learned = trainable(gm)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    output = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    origin = {**{n: 0 for n in inputs}, **block}
    needed_by: dict[torch.fx.Node, int] = {}  # value -> the last block that reads it
    again: set[torch.fx.Node] = set()

    def need(value: torch.fx.Node, user: torch.fx.Node, at: int) -> None:
        if value.op == "get_attr" or origin[value] == at:
            return
        if not value.meta.get("tensor", True):  # a size: computed again from what block `at` has
            again.add(value)
            for source in value.all_input_nodes:
                need(source, user, at)
            return
        if value in learned:
            _check_crossing(value, user, origin[value], at, points)
        needed_by[value] = max(needed_by.get(value, 0), at)

    for node in nodes + [output]:
        for value in node.all_input_nodes:
            need(value, node, block.get(node, k - 1))
    if output not in block:
        raise ConfigError("the model's logits do not depend on any operation of the graph")
    mask = next((n for n, name in zip(inputs, captured.inputs) if name == MASK), None)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    flows: list[list[torch.fx.Node]] = [inputs]
    for cut in range(1, k):
        crossing = sorted((v for v in needed_by if origin[v] < cut <= needed_by[v]), key=order.__getitem__)
        main = [v for v in crossing if v in learned][::-1] or crossing[::-1]
        lead = main[:1] + ([mask] if mask is not None and mask not in main[:1] else [])
        flows.append(lead + [v for v in crossing if v not in lead])
    return Plan(block, flows, output, 2 if mask is not None else 1, again)


def _check_crossing(value: torch.fx.Node, user: torch.fx.Node, start: int, end: int,
                    points: Sequence[str]) -> None:
    """ConfigError unless a learned ``value`` of block ``start`` read in block ``end`` enters the
    split point that begins ``end`` straight from the block before it."""
    point = points[end - 1]
    if end == start + 1 and inside(user, point):
        return
    around = [s for s in scopes(user) if point.startswith(s + ".")]
    unit = around[-1] if around else None
    where = f"split point {point!r} lies inside {unit!r}, whose computation crosses it" if unit else (
        f"a value computed in block {start} ({value.name}) is read in block {end} by {user.name}, past "
        f"split point {point!r}")
    fix = (f"split at {unit!r} or after it" if unit else
           "cut where only one value flows on, e.g. between the model's repeated units")
    raise ConfigError(f"{where} (a skip connection crosses a split point). Move the split point outside "
                      f"the residual unit: {fix}.")


class TracedStage(nn.Module):
    """One block's part of a traced model: a graph module called with the block's flow.

    ``inputs``: the model's argument names (block 0) or None; ``head_inputs``: how many leading
    values of the output flow a local head reads; ``start``: the split point it begins at (None
    for block 0). Moved to a device (``.to``), the graph's device constants
    (``arange(..., device=...)``) follow its parameters.
    """

    def __init__(self, graph_module: torch.fx.GraphModule, inputs: Optional[tuple[str, ...]],
                 head_inputs: int, start: Optional[str] = None):
        super().__init__()
        self.graph_module = graph_module
        self.inputs, self.head_inputs, self.start = inputs, head_inputs, start

    def forward(self, *flow):
        """The block's output flow for its input flow."""
        return self.graph_module(*flow)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        device = next((t.device for t in [*self.parameters(), *self.buffers()]), None)
        if device is not None:
            retarget(self.graph_module, device)
        return out


def build(captured: Captured, plan: Plan, points: Sequence[str]) -> list[TracedStage]:
    """The blocks of ``plan`` as :class:`TracedStage` s sharing ``captured``'s parameters."""
    gm, k = captured.graph_module, len(plan.flows)
    stages = []
    owner: dict[int, tuple[int, str]] = {}  # id of a parameter -> (its first stage, its name there)
    for i in range(k):
        graph, env = torch.fx.Graph(), {}
        for value in plan.flows[i]:
            env[value] = graph.placeholder(value.name)

        def read(node: torch.fx.Node, graph=graph, env=env) -> torch.fx.Node:
            if node not in env:
                if node.op == "get_attr":
                    env[node] = graph.get_attr(node.target)
                elif node in plan.again:
                    env[node] = graph.node_copy(node, read)
                else:
                    raise ConfigError(f"block {i} reads {node.name}, which no earlier block hands on")
            return env[node]

        for node in gm.graph.nodes:
            if plan.block.get(node) == i:
                env[node] = graph.node_copy(node, read)
        outs = [plan.output] if i == k - 1 else plan.flows[i + 1]
        graph.output(read(outs[0]) if len(outs) == 1 else tuple(read(v) for v in outs))
        module = torch.fx.GraphModule(gm, graph)
        for name, param in module.named_parameters():
            if id(param) in owner and owner[id(param)][0] != i:
                first, first_name = owner[id(param)]
                raise ConfigError(
                    f"parameter {first_name!r} of block {first} is also {name!r} of block {i} (weights tied "
                    "between blocks, e.g. an embedding and an output layer): each block's optimizer "
                    "would step it with its own local gradient, and ranks would hold copies that drift "
                    "apart. Untie them (e.g. tie_word_embeddings=False) or keep both uses in one block")
            owner[id(param)] = (i, name)
        stages.append(TracedStage(module, captured.inputs if i == 0 else None, plan.head_inputs,
                                  points[i - 1] if i else None))
    return stages


def verify(model: nn.Module, stages: Sequence[nn.Module], captured: Captured, example: Any,
           output: OutputKey = None) -> None:
    """ConfigError unless the blocks, run one after another in eval mode, give the model's own
    logits on ``example`` (the cut wired them wrongly)."""
    args, kwargs = example_arguments(model, example)

    def run() -> tuple:
        flow = first_flow(captured, example)
        for stage in stages:
            flow = call_with_flow(stage, flow)
        return flow, logits_of(model(*args, **kwargs), output)

    difference = differs(*in_eval_mode([model, *stages], run))
    if difference is not None:
        raise ConfigError(f"the blocks of {type(model).__name__} do not compute its output in eval mode "
                          f"(largest difference {difference}); please report this with the model")
