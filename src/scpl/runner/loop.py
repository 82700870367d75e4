"""The epoch loop of a run, and the hooks it calls.

Each epoch: every hook's ``epoch_start``; one epoch of training (``step`` after every step);
evaluation on the validation split; every hook's ``epoch_end`` with the epoch's
:class:`EpochRecord`. The run's own hooks come after the caller's, in this order: metrics,
best model, checkpoint, progress. After the last epoch the selected model is tested once.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.distributed as dist

from ..batchnorm import recompute_batchnorm
from ..errors import ConfigError, NonFiniteLossError, StageError, TrainingDiverged
from ..progress import EpochBar, epoch_line
from . import state
from .assemble import DeviceLoader, Run, build, launch_rank
from .config import TrainConfig
from .export import export, summary
from .metrics import MetricsLog

log = logging.getLogger("scpl")


@dataclass
class EpochRecord:
    """What one epoch did (``epoch`` counts from 1); hooks may read and amend it."""

    epoch: int
    losses: list[Optional[float]]  # None for a block that did not train (DASCPL before its epoch)
    seconds: float
    samples: int
    lr: float  # block 0's rate this epoch (block k's peak rate is block_lr[k] x the config's lr)
    val_accuracy: Optional[float] = None
    val_exits: list[Optional[float]] = field(default_factory=list)
    train_accuracy: Optional[float] = None  # on the training split's (possibly noisy) labels (eval_train)
    train_clean_accuracy: Optional[float] = None  # on its true labels, with label noise (eval_train)


class Hook:
    """Called by the epoch loop; override what you need (every method here does nothing).

    ``loop`` is the running :class:`Loop` (``loop.run``, ``loop.progress``, ``loop.out``).
    ``epoch_start`` gets the 0-based epoch about to train; ``step`` each completed step's
    per-block losses (in the process that sees them: the last rank under torchrun).
    """

    def epoch_start(self, loop: "Loop", epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) trains."""

    def step(self, loop: "Loop", step: int, losses: list[float]) -> None:
        """After each completed step, with its per-block ``losses``."""

    def epoch_end(self, loop: "Loop", record: EpochRecord) -> None:
        """After an epoch was trained and validated, with its :class:`EpochRecord`."""

    def finish(self, loop: "Loop") -> None:
        """Once, after the last epoch (before the test evaluation)."""


def shows_progress(run: Run) -> bool:
    """Whether this process draws the progress bar: the last rank, the one that sees each step
    complete with every block's loss (under the distributed executor ``on_step`` runs there)."""
    return run.rank == run.world - 1


class Metrics(Hook):
    """Losses, validation accuracy (also at every exit), learning rate and speed per epoch."""

    def __init__(self, loop: "Loop"):
        self.log = MetricsLog(loop.out if loop.run.rank == 0 else None, loop.run.cfg.tensorboard,
                              loop.progress.rows)

    def epoch_end(self, loop: "Loop", r: EpochRecord) -> None:
        """Log the epoch's rows (``metrics.csv`` on rank 0, TensorBoard) and keep them in the progress."""
        # (epoch, block or "" for the whole model, name, value); a loss of None: the block did not train
        rows: list[tuple[int, int | str, str, float]] = [
            (r.epoch, i, "train_loss", v) for i, v in enumerate(r.losses) if v is not None]
        rows += [(r.epoch, i, "val_accuracy", a) for i, a in enumerate(r.val_exits) if a is not None]
        rows += [(r.epoch, "", name, v) for name, v in (("val_accuracy", r.val_accuracy), ("lr", r.lr),
                 ("seconds", r.seconds), ("samples_per_s", r.samples / r.seconds),
                 ("train_accuracy", r.train_accuracy), ("train_clean_accuracy", r.train_clean_accuracy))
                 if v is not None]
        self.log.add(rows)
        loop.progress.rows = self.log.rows

    def finish(self, loop: "Loop") -> None:
        """Close the TensorBoard writer."""
        self.log.close()


class BestModel(Hook):
    """Keeps the weights of the best validation epoch (the last epoch without a validation split)."""

    def epoch_end(self, loop: "Loop", r: EpochRecord) -> None:
        """Copy the weights if the epoch validates best so far (every epoch, without a validation split)."""
        if r.val_accuracy is None or r.val_accuracy > loop.progress.best_val:
            loop.progress.best_val = r.val_accuracy if r.val_accuracy is not None else -1.0
            loop.progress.best_epoch = r.epoch
            loop.best = copy.deepcopy(loop.run.model.state_dict())


class Checkpoint(Hook):
    """Writes the epoch's complete checkpoint set (:mod:`scpl.runner.state`)."""

    def epoch_end(self, loop: "Loop", r: EpochRecord) -> None:
        """Save the epoch's checkpoint set into the run folder, if there is one."""
        if loop.out:
            state.save(loop.run, loop.progress, loop.out)


class ProgressBar(Hook):
    """A bar per epoch with each block's running loss and samples/s, then one log line
    (:mod:`scpl.progress`), drawn by the process that sees every step."""

    def __init__(self, run: Run):
        self.enabled = run.cfg.progress and shows_progress(run)
        self.bar: Optional[EpochBar] = None

    def epoch_start(self, loop: "Loop", epoch: int) -> None:
        """Open the epoch's bar."""
        cfg = loop.run.cfg
        self.bar = EpochBar(epoch + 1, cfg.epochs, loop.run.train_batches, self.enabled)

    def step(self, loop: "Loop", step: int, losses: list[float]) -> None:
        """Advance the bar with the step's losses."""
        assert self.bar is not None  # opened by epoch_start
        self.bar.step(losses)

    def epoch_end(self, loop: "Loop", r: EpochRecord) -> None:
        """Close the bar and log the epoch's line (in the process that sees every step)."""
        self.close()
        if shows_progress(loop.run):  # the bar's process also logs, so the two never interleave
            log.info(epoch_line(r.epoch, loop.run.cfg.epochs, r.losses, r.val_accuracy, r.seconds,
                                loop.run.cfg.method))

    def close(self) -> None:
        """Close the epoch's bar, if one is open."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Loop:
    """The training of one assembled :class:`Run`, with the caller's ``hooks`` (see the module
    docstring); :meth:`train` returns the run's summary."""

    def __init__(self, run: Run, hooks: Sequence[Hook] = (), lock: Optional[state.RunLock] = None):
        cfg = run.cfg
        self.run, self.out = run, Path(cfg.out) if cfg.out else None
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        # the folder is checked and locked here unless the caller did it before building the run
        self.lock = lock if lock is not None else state.claim(self.out, cfg.resume, run.rank)
        try:
            if cfg.resume:
                if self.out is None:  # (claim() refuses it first)
                    raise ConfigError("resume needs out: the folder of the run to continue")
                if state.resolve(cfg) != cfg:  # run() resolves first; a run built by hand may not
                    raise ConfigError("resume: build the run from scpl.runner.state.resolve(cfg), which adds "
                                      "the saved run's settings (a learning-rate restart) to cfg")
                self.progress = state.restore(run, self.out)
            else:
                self.progress = state.Progress()
            self.best = state.best_weights(run, self.out, self.progress)
            self.bar = ProgressBar(run)
            self.hooks = [*hooks, Metrics(self), BestModel(), Checkpoint(), self.bar]
        except BaseException:  # the folder is freed however the run ends, as train() does
            if self.lock is not None:
                self.lock.release()
            raise

    def train(self) -> dict:
        """Train the remaining epochs, select on validation, test once; return the summary."""
        try:
            return self._train()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _train(self) -> dict:
        run = self.run
        try:
            for epoch in range(self.progress.epoch, run.cfg.epochs):
                self._epoch(epoch)
        finally:
            self.bar.close()
        for hook in self.hooks:
            hook.finish(self)
        if self.best is not None:
            run.model.load_state_dict(self.best)
        result = summary(run, self.progress, *evaluate(run, run.test_batches), started=self.started)
        if self.out:
            export(run, self.out, result)
        return result

    def _epoch(self, epoch: int) -> None:
        run, cfg = self.run, self.run.cfg
        for hook in self.hooks:
            hook.epoch_start(self, epoch)
        optimizer = run.model.blocks[0].optimizer
        if optimizer is None:
            raise ConfigError("block 0 has no optimizer; call configure_optimizer first")
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trains with
        start = time.perf_counter()
        try:
            fitted = run.model.fit(run.train_batches, epochs=1, executor=run.executor,
                                   block_schedule=run.schedule, start_epoch=epoch, on_step=self._step,
                                   progress=False)[0]
        except (NonFiniteLossError, StageError) as exc:
            raise self._diverged(exc, epoch) or exc
        seconds = time.perf_counter() - start
        samples = len(run.train_batches) * cfg.batch_size  # source images (a two-view batch holds each twice)
        self.progress.train_seconds += seconds
        self.progress.samples += samples
        record = EpochRecord(epoch + 1, fitted["losses"], seconds, samples, lr)
        if cfg.precise_bn:
            assert run.bn_batches is not None  # build() makes them with precise_bn
            recompute_batchnorm(run.model, run.bn_batches, cfg.precise_bn)
        if run.val_batches is not None:
            record.val_accuracy, record.val_exits = evaluate(run, run.val_batches)
        if cfg.eval_train:
            record.train_accuracy, record.train_clean_accuracy = train_accuracy(run)
        self.progress.epoch = epoch + 1
        for hook in self.hooks:
            hook.epoch_end(self, record)

    def _step(self, step: int, losses: list[float]) -> None:
        for hook in self.hooks:
            hook.step(self, step, losses)

    def _diverged(self, exc: BaseException, epoch: int) -> Optional[TrainingDiverged]:
        """A :class:`TrainingDiverged` naming the block, the step, the fixes and the last good
        checkpoint, if ``exc`` is (or carries) a non-finite local loss."""
        bad = exc.cause if isinstance(exc, StageError) else exc
        if not isinstance(bad, NonFiniteLossError):
            return None
        cfg, done = self.run.cfg, self.progress.epoch
        kept = (f" The last good checkpoint (epoch {done}) is in {state.epoch_dir(self.out, done)}."
                if self.out and done else "")
        fixes = f"lower the learning rate (now {cfg.lr}), set clip_grad_norm"
        fixes += ", or train in fp32" if cfg.precision != "fp32" else ", or check the inputs for NaN/inf"
        error = TrainingDiverged(f"training stopped in epoch {epoch + 1}: block {bad.block}'s local loss "
                                 f"became {bad.value} at its step {bad.step}: {fixes}.{kept}")
        error.__cause__ = exc
        return error


def evaluate(run: Run, batches: DeviceLoader) -> tuple[float, list[Optional[float]]]:
    """(accuracy of the full model, accuracy at every exit if the blocks have exit classifiers)."""
    accuracy = run.model.evaluate(batches, executor=run.executor)["accuracy"]
    exits: list[Optional[float]] = []
    if run.model.blocks[0].classifier is not None:
        exits = run.model.evaluate_exits(batches, executor=run.executor)
    return accuracy, exits


def train_accuracy(run: Run) -> tuple[float, Optional[float]]:
    """Accuracy on the training split in eval mode without augmentation: against the labels it
    trains on (noisy, with label noise) and, with label noise, against the true labels."""
    batches = run.train_eval_batches
    if batches is None:
        raise ConfigError("train_accuracy needs the run's unaugmented training batches: set eval_train")
    labels = torch.cat([y.cpu() for _, y in batches])
    predictions = run.model.predict(batches, executor=run.executor)
    noisy = float((predictions == labels).float().mean())
    clean = None if run.clean_labels is None else float((predictions == run.clean_labels).float().mean())
    return noisy, clean


def train(run: Run, hooks: Sequence[Hook] = (), lock: Optional[state.RunLock] = None) -> dict:
    """Train an assembled run (see :class:`Loop`; ``lock``: the run folder's, from
    :func:`scpl.runner.state.claim`, if the caller took it); return its summary."""
    return Loop(run, hooks, lock).train()


def run(cfg: TrainConfig, hooks: Sequence[Hook] = ()) -> dict:
    """Resolve the settings (with a resumed run's), claim the run folder, build, train; return
    the summary (the same on every rank)."""
    cfg = state.resolve(cfg)
    lock = state.claim(Path(cfg.out) if cfg.out else None, cfg.resume, launch_rank(cfg))
    try:
        return train(build(cfg), hooks, lock)
    finally:
        if lock is not None:
            lock.release()
        if cfg.executor == "distributed" and dist.is_initialized():
            dist.destroy_process_group()
