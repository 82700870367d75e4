"""Capturing a user's model as one graph: ``torch.fx`` where it can, ``torch.export`` where not.

``torch.fx.symbolic_trace`` records module calls (``nn.BatchNorm2d``, ``nn.Dropout`` stay
modules, so they keep switching between training and eval) but cannot follow Python control
flow on tensor values or shapes, which Hugging Face models are full of. ``torch.export`` (non
strict: the model's Python runs as written, on fake tensors) captures those, at the level of
ATen ops, in the mode the model was in; :mod:`scpl.tracing.modes` then makes its training-mode
ops follow ``.train()`` / ``.eval()`` again. The batch dimension (and every other dimension the
model does not fix) stays dynamic, so batches and sequences of any size run.

Inputs are a tensor, a tuple of tensors (positional arguments) or a mapping of keyword
arguments (``{"input_ids": ..., "attention_mask": ...}``); the captured graph takes them as
positional placeholders named by :attr:`Captured.inputs`. Its output is the class logits alone:
a tensor output as is; of a dict, dataclass or ``ModelOutput`` the entry ``logits`` (or the one
the caller names); of a tuple the first entry (or the index the caller names).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch
import torch.fx
import torch.utils._pytree as pytree
from torch import Tensor, nn

from ..errors import ConfigError
from .modes import drop_assertions, follow_mode

OutputKey = Union[str, int, None]


@dataclass
class Captured:
    """A model as one ``torch.fx.GraphModule`` whose parameters are the model's own."""

    graph_module: torch.fx.GraphModule
    inputs: tuple[str, ...]  # the placeholders, in order: the model's argument names
    tracer: str  # "fx" or "export"


def example_arguments(model: nn.Module, example: Any) -> tuple[tuple, dict]:
    """``example`` as (positional, keyword) arguments of ``model``."""
    if isinstance(example, Tensor):
        return (example,), {}
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, (tuple, list)):
        return tuple(example), {}
    raise ConfigError(f"example_input must be a tensor, a tuple of tensors or a mapping of keyword "
                      f"inputs, got {type(example).__name__}")


def first_flow(captured: Captured, example: Any) -> Any:
    """``example`` as the flow of the captured graph: its inputs in placeholder order (a tensor
    when there is one)."""
    args, kwargs = example_arguments(captured.graph_module, example)
    values = tuple(kwargs[n] for n in captured.inputs) if kwargs else args
    return values[0] if len(values) == 1 else values


def _parameter_names(model: nn.Module, count: int) -> list[str]:
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) < count:
        return [f"input_{i}" for i in range(count)]
    return [p.name for p in params[:count]]


def capture(model: nn.Module, example: Any, output: OutputKey = None) -> Captured:
    """``model`` as one graph (see the module docstring); ConfigError when no tracer can."""
    args, kwargs = example_arguments(model, example)
    for name, value in [*enumerate(args), *kwargs.items()]:
        if not isinstance(value, Tensor):
            raise ConfigError(f"input {name!r} of example_input is a {type(value).__name__}; a traced "
                              "model takes tensors (give the others as defaults of the model)")
    fx_error: Any = None
    if not kwargs:
        try:
            gm = _fx(model, len(args))
            _select_output(gm, None, output)
            captured = Captured(gm, tuple(_parameter_names(model, len(args))), "fx")
            differs = _run_and_compare(captured, model, example, output)
            if differs is None:
                return captured
            fx_error = f"its graph differs from the model in eval mode by up to {differs}"
        except ConfigError:
            raise
        except Exception as exc:  # fx raises many kinds: each means "cannot trace"
            fx_error = exc
    try:
        registered(in_eval_mode([model], lambda: model(*args, **kwargs)))
        gm, names, out_spec = _export(model, args, kwargs)
    except Exception as exc:
        why = f"torch.fx: {fx_error}; " if fx_error is not None else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"could not capture {type(model).__name__} to split it ({why}torch.export: "
                          f"{first}); pass a list of modules, one per block, instead") from exc
    _select_output(gm, out_spec, output)
    captured = Captured(gm, names, "export")
    differs = _run_and_compare(captured, model, example, output)
    if differs is not None:
        raise ConfigError(
            f"the traced graph of {type(model).__name__} does not compute the model's output in eval mode "
            f"(largest difference {differs}): the model does something in training mode that tracing "
            "recorded as fixed (e.g. stochastic depth: set drop_path_rate=0), or its output depends on "
            "random numbers. Pass a list of modules, one per block, instead")
    return captured


class _Marker(torch.fx.Interpreter):
    """Runs a graph and notes on every node whether its value is a tensor (``meta["tensor"]``)."""

    def run_node(self, n: torch.fx.Node) -> Any:
        value = super().run_node(n)
        n.meta["tensor"] = isinstance(value, Tensor)
        return value


def differs(got: Tensor, expected: Tensor) -> Optional[float]:
    """None when ``got`` equals ``expected`` up to float error; else the largest difference
    (infinity for a shape that differs)."""
    if got.shape != expected.shape:
        return float("inf")
    if torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
        return None
    return float((got - expected).abs().max())


def in_eval_mode(modules: Sequence[nn.Module], run: Callable[[], Any]) -> Any:
    """``run()`` with ``modules`` in eval mode, without gradients and without touching the
    global random numbers; their modes are restored."""
    modes = [m.training for m in modules]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            for m in modules:
                m.eval()
            return run()
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def _run_and_compare(captured: Captured, model: nn.Module, example: Any,
                     output: OutputKey) -> Optional[float]:
    """Run the graph on ``example`` in eval mode, noting which of its values are tensors (the
    others, sizes and the like, are computed again where needed instead of travelling between
    blocks), and compare its output with the model's (:func:`differs`)."""
    args, kwargs = example_arguments(model, example)
    flow = first_flow(captured, example)
    flat = flow if isinstance(flow, tuple) else (flow,)
    got, expected = in_eval_mode([captured.graph_module, model], lambda: (
        _Marker(captured.graph_module).run(*flat), logits_of(model(*args, **kwargs), output)))
    return differs(got, expected)


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, which also keeps as module calls (so that their mode stays
    switchable) the subclasses of torch's BatchNorm and dropout layers (timm's
    ``BatchNormAct2d``) and every submodule whose ``forward`` reads ``self.training`` (timm's
    ``DropPath``: stochastic depth)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """torch.nn's own modules, its normalisation and dropout layers' subclasses, and modules
        that behave differently in training."""
        kept = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
        return (isinstance(m, kept) or super().is_leaf_module(m, module_qualified_name)
                # a class is hashable; mypy checks type[Module] against Hashable with the instances' __hash__
                or (module_qualified_name != "" and _reads_training(type(m))))  # type: ignore[arg-type]


@functools.lru_cache(maxsize=None)
def _reads_training(cls: type[nn.Module]) -> bool:
    """Whether ``cls.forward``'s source reads ``self.training``."""
    try:
        return "self.training" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def _fx(model: nn.Module, count: int) -> torch.fx.GraphModule:
    """``torch.fx`` tracing with the arguments after the first ``count`` at their defaults."""
    params = list(inspect.signature(model.forward).parameters.values())
    concrete = {p.name: p.default for p in params[count:]
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}
    gm = torch.fx.GraphModule(model, _Tracer().trace(model, concrete_args=concrete or None))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, param in zip(placeholders[count:], params[count:]):  # the defaults: constants of the graph
        if param.name not in concrete:
            raise RuntimeError(f"argument {param.name} has no default and is not in example_input")
        value = concrete[param.name]
        for user in list(node.users):
            if user.op == "call_function" and "assert" in getattr(user.target, "__name__", ""):
                gm.graph.erase_node(user)  # fx's check that the argument is the default
            else:
                user.args, user.kwargs = pytree.tree_map(lambda a: value if a is node else a,
                                                         (user.args, user.kwargs))
        gm.graph.erase_node(node)
    gm.graph._codegen = torch.fx.graph.CodeGen()
    gm.recompile()
    return gm


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.export without its notes on dimensions fixed by the example (a channel count of 1)."""
    logger = logging.getLogger("torch._export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _no_cache(model: nn.Module) -> Iterator[None]:
    """Hugging Face models without their key/value cache (an output export cannot flatten; a
    classifier trained block by block has no use for it) while they are captured."""
    config: Any = getattr(model, "config", None)  # a Hugging Face PretrainedConfig, if any
    cached = getattr(config, "use_cache", None)
    if cached:
        config.use_cache = False
    try:
        yield
    finally:
        if cached:
            config.use_cache = cached


def _export(model: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.fx.GraphModule, tuple[str, ...], Any]:
    """``torch.export`` (non strict, every dimension free unless the model fixes it) of the
    model in training mode, its training ops following the module's mode again: the graph, the
    names of its placeholders and the structure of its outputs."""
    positional = _parameter_names(model, len(args))
    dynamic = {name: {d: torch.export.Dim.AUTO for d in range(t.dim())}
               for name, t in [*zip(positional, args), *kwargs.items()]}
    was_training = model.training
    model.train()
    try:
        with _no_cache(model), _quiet():
            program = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False)
    finally:
        model.train(was_training)
    unlifted = program.module()
    codegen = unlifted.graph._codegen
    assert isinstance(codegen, torch.fx.graph._PyTreeCodeGen)  # an exported graph keeps its pytree structure
    info = codegen.pytree_info
    gm = torch.fx.GraphModule(unlifted, unlifted.graph)  # a plain GraphModule: .train()/.eval() work
    gm.graph._codegen = torch.fx.graph.CodeGen()  # flat positional inputs, outputs as a flat tuple
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    call_args, call_kwargs = pytree.tree_unflatten(placeholders, info.in_spec)
    names = {node: positional[i] for i, node in enumerate(call_args)}
    names.update({node: key for key, node in call_kwargs.items()})
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)  # checks of the example's shapes: sizes vary in training
    drop_assertions(gm)
    follow_mode(gm)
    gm.delete_all_unused_submodules()
    return gm, tuple(names[n] for n in placeholders), info.out_spec


def _select_output(gm: torch.fx.GraphModule, out_spec: Any, key: OutputKey) -> None:
    """Make ``gm`` return only the class logits (see the module docstring). ``out_spec``: the
    structure of an exported graph's flat outputs (None: the graph returns the structure)."""
    out = next(n for n in gm.graph.nodes if n.op == "output")
    tree = pytree.tree_unflatten(list(out.args[0]), out_spec) if out_spec is not None else out.args[0]
    out.args = (logits_of(tree, key, torch.fx.Node),)
    gm.graph.eliminate_dead_code()
    gm.recompile()


def _plain(tree: Any) -> Any:
    """A model's output with its dataclasses as dicts of their fields (a ``ModelOutput`` is a
    dict already), so that their entries can be found by name."""
    if dataclasses.is_dataclass(tree) and not isinstance(tree, (type, Mapping)):
        return {f.name: _plain(getattr(tree, f.name)) for f in dataclasses.fields(tree)}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_plain(v) for v in tree) if type(tree) in (tuple, list) else tree
    return tree


def registered(output: Any) -> None:
    """Make the dataclasses in a model's ``output`` known to torch.export (pytree nodes), as
    torch.export asks for a model that returns one."""
    if dataclasses.is_dataclass(output) and not isinstance(output, (type, Mapping)):
        if type(output) not in pytree.SUPPORTED_NODES:
            torch.export.register_dataclass(type(output))
        for f in dataclasses.fields(output):
            registered(getattr(output, f.name))
    elif isinstance(output, (tuple, list)):
        for v in output:
            registered(v)


def logits_of(tree: Any, key: OutputKey, leaf: type = Tensor) -> Any:
    """The entry of a model's output ``tree`` that holds the class logits (see the module
    docstring); its leaves are of type ``leaf`` (tensors, or graph nodes)."""
    def names(path: tuple) -> list:
        return [getattr(k, "key", getattr(k, "idx", getattr(k, "name", None))) for k in path]

    leaves = pytree.tree_leaves_with_path(_plain(tree), is_leaf=lambda v: isinstance(v, leaf))
    found = [(names(path), value) for path, value in leaves if isinstance(value, leaf)]
    if not found:
        raise ConfigError("the model's output holds no tensor computed from its inputs")
    if key is None:
        if len(found) == 1:
            return found[0][1]
        named = [node for path, node in found if path and path[0] == "logits"]
        if named:
            return named[0]
        if all(path and isinstance(path[0], int) for path, _ in found):
            return found[0][1]
        raise ConfigError(f"the model returns several outputs ({[p[0] for p, _ in found]}) and none is "
                          "called 'logits': name the one with the class logits, output=KEY")
    match = [node for path, node in found if path and path[0] == key]
    if not match:
        raise ConfigError(f"the model's output has no entry {key!r}; it has {[p[0] for p, _ in found]}")
    return match[0]
