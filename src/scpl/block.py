"""A decoupled block: layers, local head, local objective, optional exit classifier, optimizer.

A block is the unit every executor runs. :meth:`Block.train_step` is the whole contract:
it takes ``sg(h_{k-1})`` and the labels, computes ``h_k`` and the local loss, back-propagates
through this block's parameters only, steps this block's optimizer and returns the detached
``h_k``. Because ``h_k`` is computed before the update and nothing flows backward, running
blocks one after another or as a pipeline gives the same parameters.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Protocol, overload

import torch
from torch import Tensor, nn

from .errors import BlockInputError, ConfigError, NonFiniteLossError
from .flow import Flow, call_with_flow, detach_flow, flow_shape, flow_to
from .seed import seeded_rng

if TYPE_CHECKING:
    from torch.nn.parallel import DistributedDataParallel


class Scheduler(Protocol):
    """What a block's learning-rate scheduler provides (torch's ``LRScheduler`` s do): a step per
    epoch, and its state for checkpoints."""

    def step(self) -> object:
        """Advance the schedule by one epoch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, for a checkpoint."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state of a checkpoint."""
        ...


OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Optional[Scheduler]]


class LossTerm(Protocol):
    """An extra local loss term (a module): ``(loss, outputs) -> loss``, e.g. InfoPro's
    reconstruction of the input from the block's output (:class:`scpl.context.InfoProTerm`)."""

    def __call__(self, loss: Tensor, outputs: Flow) -> Tensor:
        """The block's local ``loss`` combined with this term, computed from its ``outputs``."""
        ...


def run_layers(layers: nn.Module, inputs: Flow, index: int) -> Flow:
    """Call block ``index``'s layers on ``inputs``; a rejected input raises :class:`BlockInputError`."""
    try:
        return call_with_flow(layers, inputs)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, TypeError, ValueError) as exc:
        hint = (" If this is a shape mismatch, check the data's shape against the model's first layer."
                if index == 0 else "")
        raise BlockInputError(f"block {index} failed on its input of shape {flow_shape(inputs)}: "
                              f"{exc}.{hint}") from exc


class Block(nn.Module):
    """One gradient-isolated block.

    Args:
        layers: the block's part of the backbone; called with the incoming flow (a tuple is
            unpacked into arguments).
        objective: ``(features, labels) -> scalar`` local loss.
        features: block output -> (B, D); identity-like for the last block.
        projector: (B, D) -> what ``objective`` sees.
        classifier: optional exit classifier trained with cross-entropy on the *detached*
            features (DASCPL's forward shortcut); its loss is added to the local loss with
            ``classifier_weight`` but its gradient never reaches the layers.
        index: position of the block in the model, for messages.
    """

    # Plain attributes set with object.__setattr__ (see __init__), declared for type checkers.
    replica: Optional[DistributedDataParallel]
    compiled: Optional[Callable[..., tuple[Flow, Tensor]]]

    def __init__(
        self,
        layers: nn.Module,
        objective: nn.Module,
        features: nn.Module,
        projector: nn.Module,
        classifier: Optional[nn.Module] = None,
        classifier_weight: float = 1.0,
        index: int = 0,
    ):
        super().__init__()
        self.layers = layers
        self.features = features
        self.projector = projector
        self.objective = objective
        self.classifier = classifier
        self.classifier_weight = classifier_weight
        self.index = index
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler: Optional[Scheduler] = None
        self.steps = 0
        self.extra_loss: Optional[nn.Module] = None  # a LossTerm, e.g. InfoPro's reconstruction
        self.rng_seed: Optional[int] = None
        self.mode = "train"  # "train", "frozen" (forward only, eval mode) or "inactive" (not run)
        self.autocast_dtype: Optional[torch.dtype] = None  # e.g. torch.bfloat16: forward, loss under autocast
        self.clip_grad_norm: Optional[float] = None  # clip this block's gradient norm before each step
        # What runs a training step's forward and loss, ``(inputs, labels) -> (outputs, loss)``: this
        # block itself, or a DistributedDataParallel replica (scpl.executors.replicas) and/or its
        # torch.compile'd version (compile()). Plain attributes, not submodules: the block owns the weights.
        object.__setattr__(self, "replica", None)
        object.__setattr__(self, "compiled", None)
        self.compile_options: Optional[dict] = None  # torch.compile's options, once compile() was called

    # -- set-up ---------------------------------------------------------------------------
    def configure_optimizer(self, optimizer: OptimizerFactory,
                            scheduler: Optional[SchedulerFactory] = None) -> None:
        """Build this block's optimizer (and LR scheduler) from factories over its parameters."""
        self.optimizer = optimizer(list(self.parameters()))
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None

    def configure(self, optimizer: OptimizerFactory, scheduler: Optional[SchedulerFactory] = None,
                  autocast_dtype: Optional[torch.dtype] = None,
                  clip_grad_norm: Optional[float] = None) -> None:
        """Optimizer, LR schedule, autocast dtype and gradient clipping of this block's steps."""
        self.configure_optimizer(optimizer, scheduler)
        self.autocast_dtype, self.clip_grad_norm = autocast_dtype, clip_grad_norm

    @property
    def device(self) -> torch.device:
        """The device of the block's first parameter (else buffer); CPU when it has neither."""
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # -- computation ----------------------------------------------------------------------
    def forward(self, inputs: Flow) -> Flow:
        """The backbone part only: ``h_k = f_k(h_{k-1})`` (no head, no loss)."""
        return run_layers(self.layers, inputs, self.index)

    def local_loss(self, outputs: Flow, labels: Tensor) -> Tensor:
        """Local objective on ``outputs`` (with the ``extra_loss`` term, if any) plus the exit
        classifier's loss, if any."""
        feats = self.features(outputs)
        loss = self.objective(self.projector(feats), labels)
        if self.extra_loss is not None:
            loss = self.extra_loss(loss, outputs)
        if self.classifier is not None:
            logits = self.classifier(feats.detach())
            loss = loss + self.classifier_weight * nn.functional.cross_entropy(logits, labels)
        return loss

    def forward_loss(self, inputs: Flow, labels: Tensor) -> tuple[Flow, Tensor]:
        """The block's output and its local loss: a training step's forward part."""
        outputs = self(inputs)
        return outputs, self.local_loss(outputs, labels)

    def compile(self, dynamic: Optional[bool] = None, **options) -> None:
        """Compile this block's training forward (layers, head, objective: one graph) with
        ``torch.compile``; ``dynamic`` as there (None: shapes that change are recompiled once
        as dynamic; torch bounds recompilations by ``torch._dynamo.config.cache_size_limit``).
        Backward runs as AOTAutograd compiled it; the optimizer step stays eager. Inference
        (``block(x)``) is not compiled. Compiled training follows eager to float rounding (its
        kernels fuse and round differently): 3e-8 after 8 SGD steps of 10 blocks, but up to 1e-2
        with Adam, which magnifies rounding where a gradient is near zero. Each block's step is a
        function of its own: torch.compile
        keeps one cache and one recompilation budget per function, and blocks sharing one would
        exhaust it (past it, torch runs the rest eagerly: blocks would train compiled or not by
        chance)."""
        if self.device.type == "cpu":
            _need_cxx()
        self.compile_options = dict(dynamic=dynamic, **options)
        step = self.replica if self.replica is not None else self.forward_loss
        compiled = torch.compile(_own_function(step, self.index), **self.compile_options)
        object.__setattr__(self, "compiled", compiled)

    def exit_logits(self, outputs: Flow) -> Optional[Tensor]:
        """Class logits of this block's exit classifier for ``outputs`` (None without one)."""
        if self.classifier is None:
            return None
        return self.classifier(self.features(outputs))

    def train_step(self, inputs: Flow, labels: Tensor, micro: int = 0,
                   micro_batches: int = 1) -> tuple[Flow, float]:
        """Forward on sg(inputs), local loss, backward, and (after the last micro-batch) a step.

        With ``micro_batches = m > 1`` the batch arrives as m pieces, ``micro = 0..m-1``: gradients
        of ``loss / m`` accumulate and the optimizer steps once, after piece m-1. Returns the
        detached output (computed before the update) and the loss value. Raises
        :class:`NonFiniteLossError` if the loss is NaN or infinite (before any step).
        A ``"frozen"`` block only runs forward (eval mode); an ``"inactive"`` one returns its
        input; both report loss 0. With ``rng_seed`` set, the block's random numbers (dropout)
        come from a generator seeded by (rng_seed, block index, step, micro), so they do not
        depend on the executor.
        With ``autocast_dtype`` (e.g. bf16) the forward pass and loss run under ``torch.autocast``
        (parameters and optimizer state stay fp32); with ``clip_grad_norm`` the block's gradient
        norm is clipped before the step. The returned output is whatever dtype autocast produced.
        """
        device = self.device
        inputs = detach_flow(flow_to(inputs, device, non_blocking=True))
        if self.mode == "inactive":
            return inputs, 0.0
        if self.mode == "frozen":
            self.eval()
            with torch.no_grad():
                return self(inputs), 0.0
        if self.optimizer is None:
            raise ConfigError(f"block {self.index} has no optimizer; call configure_optimizer first")
        labels = labels.to(device, non_blocking=True)
        self.train()
        step = next(s for s in (self.compiled, self.replica, self.forward_loss) if s is not None)
        accumulate = self.replica is not None and micro < micro_batches - 1  # DDP: all-reduce at last piece
        with self.replica.no_sync() if accumulate and self.replica is not None else contextlib.nullcontext():
            with self._rng(micro), self._autocast(device):
                outputs, loss = step(inputs, labels)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLossError(self.index, self.steps, value)
            if micro == 0:
                self.optimizer.zero_grad(set_to_none=True)
            (loss / micro_batches if micro_batches > 1 else loss).backward()
        if micro == micro_batches - 1:
            if self.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.parameters(), self.clip_grad_norm)
            self.optimizer.step()
            self.steps += 1
        return detach_flow(outputs), value

    def _autocast(self, device: torch.device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def _rng(self, micro: int):
        if self.rng_seed is None:
            return contextlib.nullcontext()
        return seeded_rng(self.device, (self.rng_seed, self.index, self.steps, micro))


if TYPE_CHECKING:
    class BlockList(nn.ModuleList):
        """An ``nn.ModuleList`` of :class:`Block` s, as type checkers see it (at run time it is
        ``nn.ModuleList`` itself): what :attr:`scpl.model.DecoupledModel.blocks` holds."""

        def __iter__(self) -> Iterator[Block]: ...

        @overload
        def __getitem__(self, idx: slice) -> BlockList: ...

        @overload
        def __getitem__(self, idx: int) -> Block: ...

        def __getitem__(self, idx: int | slice) -> Block | BlockList: ...
else:
    BlockList = nn.ModuleList


def _need_cxx() -> None:
    """ConfigError unless torch.compile finds the C++ compiler it builds CPU kernels with."""
    from torch._inductor.cpp_builder import get_cpp_compiler
    from torch._inductor.exc import InvalidCxxCompiler

    try:
        get_cpp_compiler()
    except InvalidCxxCompiler as exc:
        raise ConfigError("compile: torch.compile builds CPU kernels with a C++ compiler and finds none "
                          f"({exc}); install one (apt-get install g++, or set CXX) or train without "
                          "compile") from exc


def compile_report() -> dict[str, int]:
    """What torch.compile did in this process so far: graphs compiled and recompilations."""
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "recompilations": int(sum(counters["recompiles"].values()))}


def _own_function(step: Callable, index: int) -> Callable:
    """``step(inputs, labels)`` behind a function whose code object is this block's alone."""
    namespace: dict = {}
    source = "def step(inputs, labels):\n    return call(inputs, labels)\n"
    exec(compile(source, f"<scpl block {index} step>", "exec"), {"call": step}, namespace)
    return namespace["step"]
