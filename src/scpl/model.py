"""DecoupledModel: a user's model cut into blocks, each with its own local objective.

>>> model = DecoupledModel(net, blocks=[3, 3, 2], method="scpl", num_classes=10,
...                        example_input=torch.zeros(2, 1, 28, 28))
>>> model.fit(train_loader, epochs=5)
>>> model.evaluate(test_loader)["accuracy"]
"""

from __future__ import annotations

import copy
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from . import balance
from .assembly import build_blocks, check_options, claim, configure, context_spec
from .balance import BalancedCut, HeadLoss, sample_labels
from .batches import Checked, arranged, check_finite_outputs, checked, has_batch_norm
from .block import BlockList, OptimizerFactory, SchedulerFactory
from .context import ContextSpec, context_cost
from .errors import ConfigError
from .executors import DistributedExecutor, Executor, SequentialExecutor, get_executor
from .flow import Flow, flow_to
from .heads import HeadFactory, ProjectorSpec
from .methods import get_method
from .objectives import ObjectiveSpec
from .partition import BlockSpec, has_parts, split_model, units
from .progress import EpochBar, chain, epoch_line
from .progressive import BlockSchedule
from .tracing.cut import TracedStage
from .tracing.units import points_of

__all__ = ["DecoupledModel", "auto_cut"]


class DecoupledModel(nn.Module):
    """A model trained block by block with local objectives (or end to end with ``method="bp"``).

    Args:
        model: an ``nn.Sequential``, a list of modules (one block each) or any ``nn.Module``
            together with split points (see :func:`scpl.partition.split_model`). The last block
            must output class logits ``(B, num_classes)``. The blocks share the given modules'
            parameters: give each DecoupledModel its own model (e.g. a fresh one per method).
        blocks: layer counts, split-point names, an int (even split), None, a
            :class:`~scpl.balance.BalancedCut` (from :func:`auto_cut`), or ``"auto"``:
            ``auto_cut`` with ``num_blocks`` here (the cut is in ``model.balanced_cut``). Give a batch
            of the training size as ``example_input`` for a meaningful profile.
        method: a name of :data:`scpl.methods.METHODS`: ``"scpl"``, ``"deinforeg"``, ``"greedy"``
            (cross-entropy), ``"contsup"``, ``"dascpl"`` or ``"bp"``.
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        example_input: one batch (tensor or tuple) used once to infer the heads' sizes.
        objective / projector / features: override the method's local objective, projector
            (``scpl.heads.PROJECTORS``) or feature extractor (``scpl.heads.FEATURES``) of the
            blocks before the last: a name, module or callable, a mapping from the kind of block
            output (``"conv"``, ``"sequence"``, ``"flat"``) to one, or a list with one per block.
        projector_dim / projector_hidden: projector output and hidden widths (a flat block's
            projector is at most twice as wide as its features: :func:`scpl.heads.head_width`).
        exits: exit classifiers (trained on detached features) on every block but the last
            (default: the method's; on for ``"dascpl"``).
        optimizer / scheduler: factories ``params -> Optimizer`` and ``Optimizer -> LRScheduler``,
            or lists with one per block (per-block learning-rate schedules). Default Adam 1e-3.
        block_lr: each block's optimizer trains at a multiple of its rate: ``"ramp"`` (1, 1.5,
            2, 2, ... for blocks 1, 2, 3, 4, ...; the decoupled methods' default, chosen by the
            ablations in docs/results.md), ``"uniform"`` (the papers' setting) or one multiplier
            per block (:func:`scpl.optim.block_lr_scales`). None: the method's default
            (:attr:`scpl.methods.Method.block_lr`: ``"ramp"``, ``"uniform"`` for BP), or
            ``"uniform"`` when ``optimizer`` is a list (each block's rate as given). The
            multipliers are built into each block's optimizer once; a scheduler scales from there.
        devices: a device, or one per block.
        objective_kwargs: keyword arguments for objectives built by name (e.g. ``temperature``).
        num_blocks: the K of ``blocks="auto"``.
        contsup: ContSup context supply, a mode (``"R0"``, ``"E"``, ``"R1"``, ``"R1E"``,
            ``"Rn"``) or a :class:`~scpl.context.ContextSpec`; needs conv blocks (4-D maps).
        infopro: InfoPro's reconstruction weight lambda_x (Wang et al., ICLR 2021): a decoder on
            every block but the last reconstructs the input from the block's output, and the local
            loss becomes ``infopro * BCE + L``; with the ContSup mode, if any (else the input
            alone travels with the flow, mode "R0"). Needs conv blocks.
        precision: ``"fp32"`` or ``"bf16"`` (each block's forward and loss under
            ``torch.autocast`` with bfloat16; weights, gradients and optimizer state stay fp32).
        clip_grad_norm: clip each block's gradient norm to this value before its step.
        compile: compile each block's training forward (layers, head and objective, one graph
            per block) with ``torch.compile`` (:meth:`~scpl.block.Block.compile`, which says
            how closely compiled training follows eager).
        output: for a traced model whose output is not the logits alone, the key (of a dict,
            dataclass or ``ModelOutput``) or index (of a tuple) of the logits; default: the entry
            ``logits``, or the first.
        last_block: ``"ce"`` (cross-entropy on the last block's logits) or ``"contrastive"``
            (SCPL's original: the local objective on the input of the last block's final
            ``nn.Linear``, which learns with cross-entropy on that input, detached).

    Attributes:
        blocks: the :class:`~scpl.block.Block` s, in order.
        balanced_cut: the measured cut of ``blocks="auto"`` (else None).
        split_points: where the blocks of a traced model begin (None for other models).
        input_names: the argument names a traced model takes (a mapping of inputs is arranged
            in this order), else None.
        block_lr: the learning-rate multiplier of each block this model built, e.g.
            ``[1.0, 1.5, 2.0, 2.0]`` under ``"ramp"`` (for :func:`scpl.extension.extend`, the new
            blocks only).
    """

    def __init__(
        self,
        model: Union[nn.Module, Sequence[nn.Module]],
        blocks: Union[BlockSpec, str, BalancedCut] = None,
        *,
        method: str = "scpl",
        num_classes: int,
        example_input: Flow,
        objective: Union[ObjectiveSpec, Sequence[ObjectiveSpec], None] = None,
        projector: Union[ProjectorSpec, Sequence[ProjectorSpec], None] = None,
        projector_dim: Optional[int] = None,
        projector_hidden: int = 512,
        features: Union[str, nn.Module, Sequence[Any], None] = None,
        exits: Optional[bool] = None,
        optimizer: Union[OptimizerFactory, Sequence[OptimizerFactory], None] = None,
        block_lr: Union[str, Sequence[float], None] = None,
        scheduler: Union[SchedulerFactory, Sequence[Optional[SchedulerFactory]], None] = None,
        devices: Union[str, torch.device, Sequence[Union[str, torch.device]], None] = None,
        objective_kwargs: Optional[dict] = None,
        num_blocks: Optional[int] = None,
        contsup: Union[str, ContextSpec, None] = None,
        infopro: Optional[float] = None,
        precision: str = "fp32",
        clip_grad_norm: Optional[float] = None,
        last_block: str = "ce",
        compile: bool = False,
        output: Union[str, int, None] = None,
    ):
        super().__init__()
        spec = get_method(method)
        check_options(precision, clip_grad_norm, num_classes, last_block, method)
        claim(model)
        self.trained_with: Optional[Executor] = None
        context = context_spec(contsup if contsup is not None else spec.contsup, method, infopro)
        self.method, self.num_classes = method, num_classes
        self.progressive_span: Optional[float] = spec.progressive  # DASCPL's schedule, if any
        heads: dict[str, Any] = dict(objective=objective, projector=projector, features=features,
                                     projector_dim=projector_dim, projector_hidden=projector_hidden,
                                     objective_kwargs=objective_kwargs, exits=exits)
        if blocks == "auto":
            blocks = auto_cut(model, num_blocks, example_input, method=method, num_classes=num_classes,
                              contsup=context, last_block=last_block, optimizer=optimizer,
                              scheduler=scheduler, devices=devices, output=output, **heads)
        self.balanced_cut = blocks if isinstance(blocks, BalancedCut) else None
        cut = blocks.cut if isinstance(blocks, BalancedCut) else blocks
        if cut is None and spec.objective is None and not has_parts(model):
            cut = []  # BP trains any model whole
        parts = split_model(model, cut, example_input, output)
        traced = parts[0] if isinstance(parts[0], TracedStage) else None
        self.input_names = traced.inputs if traced is not None else None
        self.split_points = [p.start for p in parts[1:]] if traced is not None else None
        example_input = arranged(example_input, self.input_names)
        view = traced.head_inputs if traced is not None else None  # heads: (output, mask) of a traced flow
        self.blocks = BlockList(build_blocks(spec, parts, devices, num_classes, heads, example_input,
                                                 context, last_block, view))
        self._check_output(example_input)
        self.block_lr = configure(list(self.blocks), spec, optimizer, scheduler, block_lr, precision,
                                  clip_grad_norm, compile)

    def default_block_schedule(self, epochs: int) -> Optional[BlockSchedule]:
        """The method's block schedule for ``epochs`` (DASCPL: progressive), else None."""
        if self.progressive_span is None:
            return None
        return BlockSchedule.progressive(len(self.blocks), epochs, self.progressive_span)

    def context_cost(self, example_input: Flow) -> dict[str, float]:
        """Parameters and multiply-accumulates per sample of the ContSup context branches,
        absolute and as a fraction of the whole backbone (see :func:`scpl.context.context_cost`)."""
        return context_cost(self.blocks, example_input)

    def _check_output(self, example_input: Flow) -> None:
        was_training = self.training
        self.eval()
        with torch.no_grad():
            out = self(example_input)
        self.train(was_training)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != self.num_classes:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(
                f"the last block must output class logits of shape (batch, {self.num_classes}), got {shape}; "
                "end the model with a classifier layer (e.g. nn.Linear(features, num_classes))"
            )

    # -- inference ------------------------------------------------------------------------
    def forward(self, inputs: Flow) -> Tensor:
        """Logits of the full network (no early exit)."""
        for logits in self.block_outputs(inputs):  # each output is dropped once the next exists
            pass
        return cast(Tensor, logits)  # the last block's output: logits (_check_output checked it at build)

    def block_outputs(self, inputs: Flow) -> Iterator[Flow]:
        """Each block's output in turn, the last one being the logits (for probes of the
        intermediate features). Each block's input is moved to its device, so each output is on
        its block's device. A generator: grad mode and autocast apply as it is iterated."""
        flow = arranged(inputs, self.input_names)
        for block in self.blocks:
            flow = block(flow_to(flow, block.device))
            yield flow

    def inference_executor(self, executor: Union[str, Executor, None]) -> Executor:
        """The executor that runs inference: the given one; else the distributed executor the
        model was trained with, if any (refused once its process group is gone); else the blocks in
        order in this process (refused while a process group of several ranks is active: each rank
        holds only its own block's weights)."""
        if executor is not None:
            return get_executor(executor)
        distributed = dist.is_available() and dist.is_initialized()
        if isinstance(self.trained_with, DistributedExecutor):
            if distributed:
                return self.trained_with
            raise ConfigError("this model was trained by the distributed executor, and its process group is "
                              "gone: this process holds only its own block's trained weights. Evaluate "
                              "before destroy_process_group(), or load the whole model (save_blocks on every "
                              "rank, then load_state_dict(merge_blocks(DIR, K))) and pass "
                              "executor='sequential'")
        if distributed and dist.get_world_size() > 1:
            raise ConfigError("a torch.distributed process group is active: pass "
                              "executor=DistributedExecutor(...) to run the blocks on their ranks, or "
                              "executor='sequential' if this process holds every block's trained weights "
                              "(e.g. loaded from merge_blocks)")
        return SequentialExecutor()

    def _outputs(self, loader: Iterable,
                 executor: Union[str, Executor, None]) -> Iterator[tuple[Tensor, Tensor]]:
        """(logits, labels) pairs for a loader, through the executor's inference (checked finite)."""
        self.eval()
        chosen = self.inference_executor(executor)
        for logits, labels in chosen.forward_batches(list(self.blocks), self._checked(loader, finite=True)):
            check_finite_outputs(logits)
            yield logits, labels

    @torch.no_grad()
    def predict(self, data: Union[Tensor, Iterable], executor: Union[str, Executor, None] = None) -> Tensor:
        """Predicted classes for a tensor batch, or for every batch of a loader (concatenated).

        Under torch.distributed, give the executor (or train with one first); see :meth:`evaluate`.
        """
        self.eval()
        if isinstance(data, (Tensor, tuple, np.ndarray, Mapping)):
            first = arranged(data, self.input_names)
            first = first if not isinstance(first, tuple) else first[0]
            data = [(data, torch.zeros(first.shape[0], dtype=torch.long))]
        return torch.cat([logits.argmax(dim=1).cpu() for logits, _ in self._outputs(data, executor)])

    @torch.no_grad()
    def evaluate(self, loader: Iterable, executor: Union[str, Executor, None] = None) -> dict[str, float]:
        """Accuracy and mean cross-entropy of the full network over a loader of ``(x, y)``.

        With a pipeline ``executor`` (e.g. distributed) the batches run through its stages;
        without one, a model trained with the distributed executor evaluates through it too.
        Inputs or outputs holding NaN/inf raise :class:`ConfigError`.
        """
        correct, total, loss_sum = 0, 0, 0.0
        for logits, labels in self._outputs(loader, executor):
            labels = labels.to(logits.device)
            loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            total += labels.numel()
        if total == 0:
            raise ConfigError("evaluate() got an empty loader")
        return {"accuracy": correct / total, "loss": loss_sum / total}

    @torch.no_grad()
    def evaluate_exits(self, loader: Iterable,
                       executor: Union[str, Executor, None] = None) -> list[Optional[float]]:
        """Accuracy at every exit: block k's exit classifier (None without one), the last block's output."""
        self.eval()
        chosen = self.inference_executor(executor)
        predictions, labels = chosen.exit_predictions(list(self.blocks), self._checked(loader, finite=True))
        if labels.numel() == 0:
            raise ConfigError("evaluate_exits() got an empty loader")
        return [None if p is None else int((p == labels).sum()) / labels.numel() for p in predictions]

    # -- training -------------------------------------------------------------------------
    def _checked(self, loader: Iterable, finite: bool = False, training: bool = False) -> Checked:
        skip_single = training and has_batch_norm(self.blocks)
        return checked(loader, self.num_classes, skip_single=skip_single, finite=finite,
                       names=self.input_names)

    def fit(
        self,
        loader: Iterable,
        epochs: int = 1,
        *,
        val_loader: Optional[Iterable] = None,
        executor: Union[str, Executor] = "sequential",
        on_step: Optional[Callable[[int, list[float]], None]] = None,
        block_schedule: Optional[BlockSchedule] = None,
        start_epoch: int = 0,
        progress: bool = True,
    ) -> list[dict]:
        """Train for ``epochs`` over ``loader``; return one record per epoch.

        Each record holds ``epoch``, ``losses`` (mean local loss per block; None for a block that
        did not train that epoch), ``seconds`` and, with ``val_loader``, ``val_accuracy``. LR
        schedulers step once per epoch. ``block_schedule`` (DASCPL) switches blocks on or
        freezes them by epoch (counted from ``start_epoch``); ``method="dascpl"`` has a
        progressive one by default. A block's scheduler steps only after epochs in which its
        optimizer stepped (in this process: a distributed rank steps its own block's).
        ``progress`` draws a bar per epoch (on a terminal) and prints one line per epoch (on
        stderr; under torch.distributed on the rank that sees every step, the last).

        ``loader`` must be re-iterable (a list, a DataLoader): an epoch without batches, e.g.
        the second pass over a used-up generator, raises :class:`ConfigError`.
        """
        if not isinstance(epochs, int) or epochs < 1:
            raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
        executor = get_executor(executor)
        self.trained_with = executor
        schedule = (block_schedule if block_schedule is not None
                    else self.default_block_schedule(start_epoch + epochs))
        if schedule is not None:
            schedule.validate(len(self.blocks))
        history = []
        for epoch in range(start_epoch, start_epoch + epochs):
            if schedule is not None:
                for k, block in enumerate(self.blocks):
                    block.mode = schedule.mode(k, epoch)
            record = self._epoch(loader, epoch, start_epoch + epochs, executor, on_step, progress)
            reported = record.pop("_reported")
            if val_loader is not None:
                record["val_accuracy"] = self.evaluate(val_loader, executor)["accuracy"]
            if progress and reported:
                line = epoch_line(epoch + 1, start_epoch + epochs, record["losses"],
                                  record.get("val_accuracy"), record["seconds"])
                tqdm.write(line, file=sys.stderr)
            history.append(record)
        return history

    def _epoch(self, loader: Iterable, epoch: int, epochs: int, executor: Executor,
               on_step: Optional[Callable[[int, list[float]], None]], progress: bool) -> dict[str, Any]:
        start = time.perf_counter()
        steps_before = [block.steps for block in self.blocks]
        bar = EpochBar(epoch + 1, epochs, loader, enabled=progress)
        try:
            steps = executor.train_epoch(list(self.blocks), self._checked(loader, training=True),
                                         chain(on_step, lambda step, losses: bar.step(losses)))
        finally:
            bar.close()
        if not steps:
            raise ConfigError(f"epoch {epoch + 1} had no batches: the loader is empty, or a one-shot "
                              "iterator (e.g. a generator) used up by an earlier epoch; pass a re-iterable "
                              "loader such as a list or a DataLoader")
        for block, before in zip(self.blocks, steps_before):
            if block.scheduler is not None and block.steps > before:  # trained here, this epoch
                block.scheduler.step()
        losses = [sum(s[i] for s in steps) / len(steps) if block.mode == "train" else None
                  for i, block in enumerate(self.blocks)]
        return {"epoch": epoch + 1, "losses": losses, "seconds": time.perf_counter() - start,
                "_reported": bar.count > 0}


def auto_cut(model: Union[nn.Module, Sequence[nn.Module]], num_blocks: Optional[int], example_input: Flow, *,
             num_classes: int, method: str = "scpl", rounds: int = 3, output: Union[str, int, None] = None,
             **options: Any) -> BalancedCut:
    """The cut of ``model`` into ``num_blocks`` blocks that minimises the slowest block's time,
    for ``DecoupledModel(model, blocks=<this>, ...)``: between the children of an
    ``nn.Sequential``, or between the units of any other model (:func:`scpl.partition.units`:
    its stages, residual units, transformer blocks).

    Every unit and the local head after it are profiled on ``example_input`` (give a batch of
    the training size), then ``rounds`` of real block steps of trial DecoupledModels (built
    with ``method`` and ``options``, on copies of ``model``) correct the profile
    (:func:`scpl.balance.choose_cut`). Under torch.distributed every rank gets rank 0's cut.
    """
    if num_blocks is None:
        raise ConfigError('blocks="auto" needs num_blocks=K')
    spec = get_method(method)
    layers, points, flow = units(model, example_input, output)
    labels = sample_labels(flow, num_classes)
    head_options = {k: options.get(k) for k in ("objective", "projector", "features", "projector_dim",
                                                   "objective_kwargs", "exits")}
    factory = HeadFactory.for_method(spec, num_classes, max(num_blocks - 1, 1),
                                     projector_hidden=options.get("projector_hidden", 512), **head_options)

    def head(out: Flow) -> nn.Module:
        built = factory(0, out)
        return HeadLoss(built.features, built.projector, built.objective).train()

    def cut(counts: list[int]) -> Union[list[int], list[str]]:
        return counts if points is None else points_of(points, counts)

    def measure(counts: list[int]) -> list[float]:
        trial = DecoupledModel(copy.deepcopy(model), cut(counts), method=method, num_classes=num_classes,
                               example_input=example_input, output=output, **options)
        return balance.time_blocks(trial.blocks, flow, labels)

    found = balance.choose_cut(layers, num_blocks, flow, labels, head if spec.objective else None,
                               measure if spec.objective else None, rounds)
    if points is not None:
        found.points = points_of(points, found.counts)
    return found
