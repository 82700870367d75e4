"""DecoupledModel: a user's model cut into blocks, each with its own local objective.

>>> model = DecoupledModel(net, blocks=[3, 3, 2], method="scpl", num_classes=10,
...                        example_input=torch.zeros(2, 1, 28, 28))
>>> model.fit(train_loader, epochs=5)
>>> model.evaluate(test_loader)["accuracy"]
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .block import Block, OptimizerFactory, SchedulerFactory, run_layers
from .errors import ConfigError, LabelError
from .executors import get_executor
from .flow import Flow, call_with_flow, flow_to
from .balance import Balance, balance as balance_layers, refine, sample_labels, time_blocks
from .heads import PooledFeatures, ProjectorSpec, build_projector
from .objectives import CrossEntropyLoss, ObjectiveSpec, build_objective
from .partition import BlockSpec, split_model
from .schedule import BlockSchedule
from .context import ContextBlock, ContextSpec, First, count_macs, decoder as context_decoder


@dataclass(frozen=True)
class Method:
    """Defaults of a training method for the blocks before the last one."""

    objective: Optional[str]
    projector: str
    out_dim: Optional[int]  # None: num_classes (a classifier head)


METHODS: dict[str, Method] = {
    "bp": Method(objective=None, projector="identity", out_dim=None),
    "scpl": Method(objective="supcon", projector="mlp", out_dim=128),
    "deinforeg": Method(objective="deinforeg", projector="deinforeg", out_dim=None),
    "greedy": Method(objective="ce", projector="mlp", out_dim=None),
}


PRECISIONS: dict[str, Optional[torch.dtype]] = {"fp32": None, "bf16": torch.bfloat16}


def _adam(params):
    return torch.optim.Adam(params, lr=1e-3)


def _per_block(value: Any, k: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ConfigError(f"{what} has {len(value)} entries for {k} blocks; give one per block or a single value")
        return list(value)
    return [value] * k


class Chain(nn.Module):
    """Blocks' layers run as one module (the BP baseline): no stop-gradient between them."""

    def __init__(self, parts: Sequence[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, *flow):
        out: Flow = flow[0] if len(flow) == 1 else flow
        for part in self.parts:
            param = next(part.parameters(), None)
            if param is not None:
                out = flow_to(out, param.device)
            out = call_with_flow(part, out)
        return out


class DecoupledModel(nn.Module):
    """A model trained block by block with local objectives (or end to end with ``method="bp"``).

    Args:
        model: an ``nn.Sequential``, a list of modules (one block each) or any ``nn.Module``
            together with split points (see :func:`scpl.partition.split_model`). The last block
            must output class logits ``(B, num_classes)``.
        blocks: layer counts, split-point names, an int (even split), None, or ``"auto"``:
            profile every layer (and the local head after it) on ``example_input`` and cut an
            ``nn.Sequential`` into ``num_blocks`` blocks that minimise the slowest block's time.
            The chosen cut and its predicted costs are in ``model.balance``. Give a batch of
            the training size as ``example_input`` for a meaningful profile.
        method: ``"scpl"``, ``"deinforeg"``, ``"greedy"`` (cross-entropy) or ``"bp"``.
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        example_input: one batch (tensor or tuple) used once to infer the heads' sizes.
        objective / projector: override the method's local objective / projector for the
            blocks before the last (a name, module, callable, or a list with one per block).
        projector_dim / projector_hidden: projector output and hidden widths.
        features: block output -> (B, D) module (default: pool conv maps to a 2x2 grid,
            masked mean over sequences), or a list with one per block.
        exits: add an exit classifier (trained on detached features) to every block but the last.
        optimizer / scheduler: factories ``params -> Optimizer`` and ``Optimizer -> LRScheduler``,
            or lists with one per block (per-block learning-rate schedules). Default Adam 1e-3.
        devices: a device, or one per block.
        objective_kwargs: keyword arguments for objectives built by name (e.g. ``temperature``).
        num_blocks: the K of ``blocks="auto"``.
        contsup: ContSup context supply, a mode (``"R0"``, ``"E"``, ``"R1"``, ``"R1E"``,
            ``"Rn"``) or a :class:`~scpl.context.ContextSpec`; needs conv blocks (4-D maps).
        precision: ``"fp32"`` or ``"bf16"`` (each block's forward and loss under
            ``torch.autocast`` with bfloat16; weights, gradients and optimizer state stay fp32).
        clip_grad_norm: clip each block's gradient norm to this value before its step.
    """

    def __init__(
        self,
        model: Union[nn.Module, Sequence[nn.Module]],
        blocks: BlockSpec = None,
        *,
        method: str = "scpl",
        num_classes: int,
        example_input: Flow,
        objective: Union[ObjectiveSpec, Sequence[ObjectiveSpec], None] = None,
        projector: Union[ProjectorSpec, Sequence[ProjectorSpec], None] = None,
        projector_dim: Optional[int] = None,
        projector_hidden: int = 512,
        features: Union[nn.Module, Sequence[nn.Module], None] = None,
        exits: bool = False,
        optimizer: Union[OptimizerFactory, Sequence[OptimizerFactory], None] = None,
        scheduler: Union[SchedulerFactory, Sequence[Optional[SchedulerFactory]], None] = None,
        devices: Union[str, torch.device, Sequence[Union[str, torch.device]], None] = None,
        objective_kwargs: Optional[dict] = None,
        num_blocks: Optional[int] = None,
        contsup: Union[str, ContextSpec, None] = None,
        precision: str = "fp32",
        clip_grad_norm: Optional[float] = None,
    ):
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be a positive number, got {clip_grad_norm}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.method = method
        self.num_classes = num_classes
        self.balance: Optional[Balance] = None
        spec = METHODS[method]
        objective_kwargs = objective_kwargs or {}
        context = ContextSpec(contsup) if isinstance(contsup, str) else contsup
        if context is not None and method == "bp":
            raise ConfigError("ContSup adds context between decoupled blocks; it does not apply to method='bp'")

        heads: dict[str, list] = {}

        def plan_heads(n: int) -> None:
            """Per-block objective, projector and feature specs for the n blocks before the last."""
            n = max(n, 1)
            heads.update(objective=_per_block(objective or spec.objective, n, "objective"),
                         projector=_per_block(projector or spec.projector, n, "projector"),
                         features=_per_block(features, n, "features"))

        def make_head(i: int, output: Flow) -> tuple[nn.Module, nn.Module, nn.Module, Optional[nn.Module]]:
            """(features, projector, objective, exit classifier) for block i whose layers give ``output``."""
            feat = heads["features"][i] if heads["features"][i] is not None else PooledFeatures()
            if context is not None:
                feat = First(feat)
            with torch.no_grad():
                feat_dim = feat(output).shape[1]
            proj = heads["projector"][i]
            dim = projector_dim or spec.out_dim or (projector_hidden if proj == "deinforeg" else num_classes)
            return (
                feat,
                build_projector(proj, feat_dim, dim, projector_hidden),
                build_objective(heads["objective"][i], num_classes, **objective_kwargs),
                nn.Linear(feat_dim, num_classes) if exits else None,
            )

        if blocks == "auto":
            if num_blocks is None:
                raise ConfigError('blocks="auto" needs num_blocks=K')
            if not isinstance(model, nn.Sequential):
                raise ConfigError('blocks="auto" needs an nn.Sequential (it cuts between its children)')
            plan_heads(num_blocks - 1)

            def choose() -> Balance:
                found = _auto_balance(model, num_blocks, example_input, num_classes, make_head if method != "bp" else None)
                if method == "bp" or num_blocks == 1:
                    return found

                def measure(counts: list[int]) -> list[float]:
                    trial = DecoupledModel(copy.deepcopy(model), counts, **rebuild)
                    return time_blocks(trial.blocks, example_input, sample_labels(example_input, num_classes))

                rebuild = dict(method=method, num_classes=num_classes, example_input=example_input, objective=objective,
                               projector=projector, projector_dim=projector_dim, projector_hidden=projector_hidden,
                               features=features, exits=exits, optimizer=optimizer, scheduler=scheduler,
                               devices=devices, objective_kwargs=objective_kwargs)
                with torch.random.fork_rng(devices=[]):
                    return refine(found, measure)

            self.balance = _agreed(choose)
            blocks = self.balance.counts
        parts = split_model(model, blocks)
        k = 1 if method == "bp" else len(parts)
        device_list = [torch.device(d) for d in _per_block(devices or "cpu", len(parts), "devices")]
        for part, dev in zip(parts, device_list):
            part.to(dev)

        if method == "bp":
            built = [self._last_block(Chain(parts), 0)]
        else:
            plan_heads(k - 1)
            built = []
            flow = flow_to(example_input, device_list[0])
            for i in range(k - 1):
                if context is not None:
                    parts[i] = _with_context(parts[i], context, flow, first=i == 0, last=False).to(device_list[i])
                with torch.no_grad():
                    parts[i].eval()
                    flow = run_layers(parts[i], flow_to(flow, device_list[i]), i)
                feat, proj, obj, classifier = make_head(i, flow)
                block = Block(parts[i], obj, feat, proj, classifier, index=i)
                if context is not None and context.infopro is not None:
                    lambda_x, lambda_y = context.infopro
                    block.set_reconstruction(context_decoder(flow[0].shape[1], flow[1].shape), lambda_x, lambda_y)
                built.append(block.to(device_list[i]))
            if context is not None:
                parts[-1] = _with_context(parts[-1], context, flow, first=False, last=True).to(device_list[-1])
            built.append(self._last_block(parts[-1], k - 1).to(device_list[-1]))
        self.blocks = nn.ModuleList(built)
        self._check_output(example_input)

        optimizers = _per_block(optimizer or _adam, k, "optimizer")
        schedulers = _per_block(scheduler, k, "scheduler")
        for block, opt, sched in zip(self.blocks, optimizers, schedulers):
            block.configure_optimizer(opt, sched)
            block.autocast_dtype, block.clip_grad_norm = PRECISIONS[precision], clip_grad_norm

    def context_cost(self, example_input: Flow) -> dict[str, float]:
        """Parameters and multiply-accumulates per sample of the ContSup context branches,
        absolute and as a fraction of the whole backbone (heads excluded)."""
        branches = [m for b in self.blocks if isinstance(b.layers, ContextBlock)
                    for m in ([b.layers.encoder] if b.layers.encoder is not None else []) + list(b.layers.projections)]
        params = sum(p.numel() for m in branches for p in m.parameters())
        total_params = sum(p.numel() for b in self.blocks for p in b.layers.parameters())
        first = example_input if isinstance(example_input, Tensor) else example_input[0]
        self.eval()
        macs_all = count_macs(self, example_input) / first.shape[0]
        macs_ctx = sum(count_macs(self, example_input, only=m) for m in branches) / first.shape[0]
        return {"params": params, "params_fraction": params / total_params,
                "macs_per_sample": macs_ctx, "macs_fraction": macs_ctx / macs_all if macs_all else 0.0}

    @staticmethod
    def _last_block(layers: nn.Module, index: int) -> Block:
        return Block(layers, CrossEntropyLoss(), nn.Flatten(), nn.Identity(), index=index)

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
        flow = inputs
        for block in self.blocks:
            flow = block(flow_to(flow, block.device))
        return flow

    def _outputs(self, loader: Iterable, executor: Any) -> Iterator[tuple[Tensor, Tensor]]:
        """(logits, labels) pairs for a loader: through a pipeline executor if it offers one."""
        self.eval()
        runner = get_executor(executor) if executor is not None else None
        if runner is not None and hasattr(runner, "forward_batches"):
            yield runner.forward_batches(list(self.blocks), self._checked(loader))
            return
        for inputs, labels in self._checked(loader):
            yield self(inputs), labels

    @torch.no_grad()
    def predict(self, data: Union[Tensor, Iterable], executor: Any = None) -> Tensor:
        """Predicted classes for a tensor batch, or for every batch of a loader (concatenated)."""
        self.eval()
        if isinstance(data, (Tensor, tuple)):
            first = data if isinstance(data, Tensor) else data[0]
            data = [(data, torch.zeros(first.shape[0], dtype=torch.long))]
        return torch.cat([logits.argmax(dim=1).cpu() for logits, _ in self._outputs(data, executor)])

    @torch.no_grad()
    def evaluate(self, loader: Iterable, executor: Any = None) -> dict[str, float]:
        """Accuracy and mean cross-entropy of the full network over a loader of ``(x, y)``.

        With a pipeline ``executor`` (e.g. distributed) the batches run through its stages.
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
    def evaluate_exits(self, loader: Iterable) -> list[Optional[float]]:
        """Accuracy at every exit: block k's exit classifier (None without one), the last block's output."""
        self.eval()
        correct = [0] * len(self.blocks)
        total = 0
        for inputs, labels in self._checked(loader):
            flow = inputs
            for k, block in enumerate(self.blocks):
                flow = block(flow_to(flow, block.device))
                logits = flow if k == len(self.blocks) - 1 else block.exit_logits(flow)
                if logits is not None:
                    correct[k] += int((logits.argmax(dim=1).cpu() == labels).sum())
            total += labels.numel()
        has_exit = [b.classifier is not None for b in self.blocks[:-1]] + [True]
        return [c / total if h else None for c, h in zip(correct, has_exit)]

    # -- training -------------------------------------------------------------------------
    def _checked(self, loader: Iterable) -> Iterator[tuple[Flow, Tensor]]:
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ConfigError("each batch must be a pair (inputs, labels)")
            inputs, labels = batch
            check_labels(labels, self.num_classes)
            yield inputs, labels.long()

    def fit(
        self,
        loader: Iterable,
        epochs: int = 1,
        *,
        val_loader: Optional[Iterable] = None,
        executor: Any = "sequential",
        on_step: Optional[Callable[[int, list[float]], None]] = None,
        schedule: Optional[BlockSchedule] = None,
        start_epoch: int = 0,
    ) -> list[dict]:
        """Train for ``epochs`` over ``loader``; return one record per epoch.

        Each record holds ``epoch``, ``losses`` (mean local loss per block), ``seconds`` and,
        with ``val_loader``, ``val_accuracy``. Schedulers step once per epoch. ``schedule``
        (DASCPL) switches blocks on or freezes them by epoch (counted from ``start_epoch``).
        A block's scheduler steps only after epochs in which its optimizer stepped (in this
        process: a distributed rank steps its own block's).
        """
        runner = get_executor(executor)
        if schedule is not None:
            schedule.validate(len(self.blocks))
        history = []
        for epoch in range(start_epoch, start_epoch + epochs):
            if schedule is not None:
                for k, block in enumerate(self.blocks):
                    block.mode = schedule.mode(k, epoch)
            start = time.perf_counter()
            steps_before = [block.steps for block in self.blocks]
            steps = runner.train_epoch(list(self.blocks), self._checked(loader), on_step)
            for block, before in zip(self.blocks, steps_before):
                if block.scheduler is not None and block.steps > before:  # trained here, this epoch
                    block.scheduler.step()
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "losses": [sum(s[i] for s in steps) / max(len(steps), 1) for i in range(len(self.blocks))],
                "seconds": time.perf_counter() - start,
            }
            if val_loader is not None:
                record["val_accuracy"] = self.evaluate(val_loader, runner)["accuracy"]
            history.append(record)
        return history


class _HeadLoss(nn.Module):
    """A block's local head as ``(output, labels) -> loss``, for profiling."""

    def __init__(self, feat: nn.Module, proj: nn.Module, obj: nn.Module):
        super().__init__()
        self.feat, self.proj, self.obj = feat, proj, obj

    def forward(self, output: Flow, labels: Tensor) -> Tensor:
        return self.obj(self.proj(self.feat(output)), labels)


def _auto_balance(model: nn.Sequential, k: int, example_input: Flow, num_classes: int, make_head) -> Balance:
    labels = sample_labels(example_input, num_classes)

    def head(output: Flow) -> nn.Module:
        feat, proj, obj, _ = make_head(0, output)
        return _HeadLoss(feat, proj, obj).train()

    return balance_layers(list(model.children()), k, example_input, labels, head if make_head is not None else None)


def _with_context(layers: nn.Module, spec: ContextSpec, flow: Flow, first: bool, last: bool) -> ContextBlock:
    """Wrap ``layers`` for ContSup, sizing its projections from the incoming (example) ``flow``."""
    tensors = (flow,) if isinstance(flow, Tensor) else tuple(flow)
    if any(t.dim() != 4 for t in tensors):
        raise ConfigError("ContSup needs conv blocks whose outputs are 4-D feature maps (B, C, H, W)")
    if first:
        return ContextBlock(layers, spec, first=True, last=last)
    main = tensors[0].shape
    x_shape = tensors[1].shape if spec.uses_x else None
    history = tuple(t.shape for t in tensors[2 if spec.uses_x else 1:])
    return ContextBlock(layers, spec, first=False, last=last, main_shape=main, x_shape=x_shape, history_shapes=history)


def _agreed(choose: Callable[[], Balance]) -> Balance:
    """Under torch.distributed, rank 0 chooses and every rank receives its choice (timings
    differ between processes, so independent choices could disagree); else choose here."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return choose()
    box = [choose() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_labels(labels: Tensor, num_classes: int) -> None:
    """Raise :class:`LabelError` unless ``labels`` is a 1-D integer tensor in ``[0, num_classes)``."""
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise LabelError(f"labels must be an integer tensor of class indices, got {getattr(labels, 'dtype', type(labels))}")
    if labels.dim() != 1:
        raise LabelError(f"labels must be 1-D (batch,), got shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise LabelError(
            f"labels must lie in [0, {num_classes}), got values from {int(labels.min())} to {int(labels.max())}; "
            "check num_classes or remap the labels"
        )
