"""A run's saved state: complete checkpoint sets, random streams, the best epoch, resume.

``OUT/epochs/{e}/`` holds epoch e's block files (``block-{k}.pt``, see :mod:`scpl.checkpoint`)
and every rank's trainer state (``trainer-{rank}.pt``: progress, metrics, random streams).
Only after all of them are on disk (all ranks past a barrier) does rank 0 replace
``OUT/latest.json`` (atomically) to name epoch e; so a crash at any moment leaves the previous
complete set in charge, never a mix of epochs. Sets other than the latest and the best
(validation) epoch's are then deleted. Resuming restores the blocks, their optimizers and
schedulers, and every random stream (torch, NumPy, Python, the loader's shuffling,
augmentation), so the run continues bit for bit on CPU.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist

from ..checkpoint import atomic_save, atomic_write_text, load, load_blocks, read_json, save_blocks
from ..errors import ConfigError
from ..optim import block_lr_scales
from .assemble import Run
from .config import TrainConfig, legacy_config

LATEST = "latest.json"

RESUMABLE_CHANGES = ("resume", "progress", "out", "tensorboard", "plots", "threads")
"""Settings that may differ on resume (they do not change what is computed)."""


@dataclass
class Progress:
    """Per-run bookkeeping saved with every checkpoint."""

    epoch: int = 0  # epochs completed
    rows: list = field(default_factory=list)  # metrics rows {epoch, block, name, value}
    best_val: float = -1.0
    best_epoch: int = 0
    train_seconds: float = 0.0
    samples: int = 0


# --------------------------------------------------------------------------- checkpoint sets

def epoch_dir(out: Path, epoch: int) -> Path:
    """The folder of epoch ``epoch``'s checkpoint set."""
    return out / "epochs" / str(epoch)


def write(model, out: Path, epoch: int, rank: int, blocks: Optional[Iterable[int]],
          trainer: dict[str, Any]) -> None:
    """This rank's part of epoch ``epoch``'s set: its blocks and its trainer state."""
    folder = epoch_dir(out, epoch)
    save_blocks(model, folder, blocks)
    atomic_save(trainer, folder / f"trainer-{rank}.pt")


def commit(out: Path, epoch: int, keep: Iterable[int]) -> None:
    """Name ``epoch`` the latest complete set (call once, after every rank wrote); drop sets not
    in ``keep`` (never through a symbolic link)."""
    atomic_write_text(json.dumps({"epoch": epoch}), out / LATEST)
    kept = {str(e) for e in (*keep, epoch)}
    refuse_links(out)
    for folder in (out / "epochs").iterdir():
        if folder.name not in kept:
            shutil.rmtree(folder, ignore_errors=True)


def refuse_links(out: Path) -> None:
    """ConfigError naming the first symbolic link inside the run folder ``out`` (the folder itself
    may be one): scpl writes, locks and deletes there, and must not do so elsewhere."""
    for root, dirs, files in os.walk(out, followlinks=False):
        for name in sorted(dirs + files):
            if (Path(root) / name).is_symlink():
                raise ConfigError(f"{Path(root) / name} is a symbolic link; scpl does not write, lock or "
                                  "delete through links in a run folder: remove it, or choose another --out "
                                  "folder")


def latest(out: Path) -> Optional[int]:
    """The epoch of the latest complete set, or None if there is none."""
    path = out / LATEST
    if not path.exists():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("epoch"), int):
        raise ConfigError(f"{path} is damaged (no epoch number in it); it names the latest complete "
                          f"checkpoint set: write {{\"epoch\": E}} with the highest E among {out / 'epochs'} "
                          "to resume from it")
    return data["epoch"]


def read_trainer(out: Path, epoch: int, rank: int) -> dict[str, Any]:
    """The trainer state that rank ``rank`` wrote into epoch ``epoch``'s set: tensors, numbers and
    strings only, loaded with ``weights_only=True`` (a file from elsewhere is data, never code)."""
    path = epoch_dir(out, epoch) / f"trainer-{rank}.pt"
    try:
        return load(path)
    except ConfigError as exc:
        if "weights_only" not in str(exc.__cause__) and "Unsupported global" not in str(exc.__cause__):
            raise
        raise ConfigError(f"{path} holds Python objects that a safe load refuses to run (a trainer file "
                          "written before 2026-12-03, or not by scpl); scpl does not unpickle run folders: "
                          f"start the run afresh in another folder") from exc


# --------------------------------------------------------------------------- the run folder

class RunLock:
    """Exclusive use of a run folder: ``OUT/.lock``, locked with ``flock`` for the life of the run
    (the operating system releases it when the process ends, however it ends)."""

    def __init__(self, out: Path):
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder (it is created if needed)")
        try:
            out.mkdir(parents=True, exist_ok=True)
            for folder in (out, out / "epochs"):
                if folder.is_dir():  # a read-only folder would be found only when the first epoch is saved
                    probe = folder / f".write-check-{os.getpid()}"
                    probe.touch(exist_ok=False)
                    probe.unlink()
            fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            self.file = os.fdopen(fd, "r+")
        except OSError as exc:
            raise ConfigError(f"--out {out} cannot be written ({exc.strerror}: {exc.filename}); "
                              "choose a writable folder") from exc
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            owner = self.file.read().strip() or "unknown"
            self.file.close()
            raise ConfigError(f"{out} is in use by another scpl train (process {owner}); wait for it to end "
                              "or choose another --out folder") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        """Unlock and close the lock file (a second call does nothing)."""
        if not self.file.closed:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()


def claim(out: Optional[Path], resume: bool, rank: int = 0) -> Optional[RunLock]:
    """Check a run's folder before anything is built (so that a wrong folder fails in a moment,
    not after the data has loaded) and lock it in rank 0; the lock, or None on other ranks and
    without a folder. Refuses resume without a folder or with nothing to resume in it (a
    mistyped folder is not created), and a new run in a folder that holds one. A folder in use
    is refused by the lock, which is held for the whole run."""
    if resume and not out:
        raise ConfigError("resume needs out: the folder of the run to continue")
    if not out:
        return None
    if out.is_dir():
        refuse_links(out)
    epoch = latest(out)
    if resume and epoch is None:
        raise ConfigError(f"resume: {out / LATEST} not found; there is nothing to resume in {out} "
                          "(drop --resume to start a new run)")
    if not resume and epoch is not None:
        raise ConfigError(f"{out} already holds a run (epoch {epoch}); continue it "
                          "with --resume or choose a new --out folder")
    return RunLock(out) if rank == 0 else None


# --------------------------------------------------------------------------- a run's state

def own_blocks(run: Run, saving: bool = False) -> Optional[list[int]]:
    """The blocks this process loads (all, or its stage's under the distributed executor) and
    saves (a stage's block is written once, by its first replica)."""
    if run.cfg.executor != "distributed":
        return None
    return [] if saving and run.rank % run.cfg.replicas else [run.stage]


def rng_state(run: Run) -> dict:
    """The run's random generator states: torch, NumPy, Python, the data loader, augmentation, CUDA,
    as tensors and plain numbers only (a trainer file is read back with ``weights_only=True``)."""
    state = np.random.get_state(legacy=True)  # (numpy's stubs type the default call as the dict form)
    assert isinstance(state, tuple)  # the global generator is an MT19937: its legacy state is a tuple
    name, keys, pos, has_gauss, gauss = state
    version, words, python_gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64),
                       "gauss": python_gauss},
            "loader": run.generator.get_state(), "augment": run.augment.state_dict() if run.augment else None,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(run: Run, state: dict) -> None:
    """Restore the random generators from a :func:`rng_state` dict."""
    numpy, python = state["numpy"], state["python"]
    torch.set_rng_state(state["torch"])
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["gauss"]))
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss"]))
    run.generator.set_state(state["loader"])
    if run.augment is not None and state["augment"] is not None:
        run.augment.load_state_dict(state["augment"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run: Run, progress: Progress, out: Path) -> None:
    """Write this epoch's complete checkpoint set (all ranks), then name it the latest."""
    write(run.model, out, progress.epoch, run.rank, own_blocks(run, saving=True),
          {"progress": asdict(progress), "rng": rng_state(run), "config": asdict(run.cfg)})
    if run.cfg.executor == "distributed":
        dist.barrier()  # every rank's files are on disk before the set is named
    if run.rank == 0:
        commit(out, progress.epoch, keep=[progress.best_epoch])


def resolve(cfg: TrainConfig) -> TrainConfig:
    """The run's final settings, before anything is built: ``cfg`` checked and, on ``--resume``,
    compared with the saved run's (read with the defaults it trained under,
    :func:`~scpl.runner.config.legacy_config`; a changed setting is refused, naming it). A
    finished run continued to more ``epochs`` gets a learning-rate restart at its old end
    (``restarts``, see :func:`scpl.optim.build_scheduler`)."""
    cfg.validate()
    out = Path(cfg.out) if cfg.out else None
    if not (cfg.resume and out and out.is_dir()):
        return cfg  # a new run, or nothing to resume (claim() says so)
    refuse_links(out)
    epoch = latest(out)
    if epoch is None:
        return cfg
    saved = legacy_config(read_trainer(out, epoch, 0)["config"])  # every rank's config is the same
    if cfg.restarts is None and saved.get("restarts"):  # an extended run, resumed again
        cfg = replace(cfg, restarts=list(saved["restarts"]))
    if cfg.epochs > saved["epochs"] == epoch and cfg.restarts == saved.get("restarts"):
        cfg = replace(cfg, restarts=[*(saved.get("restarts") or []), saved["epochs"]])
    _refuse_changes(cfg, saved, epoch)
    return cfg


def _same_rates(cfg: TrainConfig, saved_rule: Any) -> bool:
    """Whether a checkpoint's ``block_lr`` gives the blocks the multipliers ``cfg``'s does
    (``"ramp"`` and ``[1, 1.5, 2, 2]`` are one setting for K=4; every rule is 1 for BP's one block)."""
    now = cfg.block_lr
    if cfg.method == "bp" or now == saved_rule:
        return True
    lists = [r for r in (now, saved_rule) if isinstance(r, list)]
    if not lists or now is None:
        return False
    try:
        k = len(lists[0])
        return block_lr_scales(now, k) == block_lr_scales(saved_rule, k)
    except ConfigError:  # a list of another length or a rule this version does not know
        return False


def _refuse_changes(cfg: TrainConfig, saved_config: dict, epoch: int) -> None:
    """ConfigError naming the settings ``cfg`` changes from the checkpoint's (those that change
    what is computed), with the fix."""
    saved = {k: v for k, v in saved_config.items() if k not in RESUMABLE_CHANGES}
    now = asdict(cfg)
    changed = sorted(k for k in saved if saved[k] != now.get(k)
                     and not (k == "block_lr" and _same_rates(cfg, saved[k])))
    extended = bool(cfg.restarts and cfg.restarts[-1] == epoch == saved["epochs"])
    refused = sorted(set(changed) - {"restarts"} - ({"epochs"} if extended else set()))
    if not refused:
        return
    more = (" Only a finished run continues to more epochs (--resume --epochs N; the learning rate then "
            "restarts its schedule over the added epochs)." if "epochs" in refused else "")
    if "model_args" in refused and cfg.model == "text_lstm":
        more += (f" The checkpoint's model_args are {saved['model_args']}, now {now['model_args']} "
                 "(text_lstm normalises its blocks' inputs by default since 2026-12-01; to resume "
                 "a run saved before, add input_norm: false to model_args).")
    if "block_lr" in refused:
        more += f" The checkpoint's block_lr is {saved['block_lr']!r}, now {now['block_lr']!r}"
        if saved["block_lr"] == "uniform" and now["block_lr"] == "ramp":
            more += " (the decoupled methods ramp the later blocks' rates by default since 2026-12-01)"
        more += f": resume with block_lr: {saved['block_lr']!r}."
    raise ConfigError(f"resume: the config differs from the checkpoint's in {refused}; resume with the "
                      f"same settings.{more}")


def restore(run: Run, out: Path) -> Progress:
    """Load the latest complete set into ``run`` (whose settings :func:`resolve` checked against
    it) and return its progress."""
    epoch = latest(out)  # claim() has checked that there is one
    if epoch is None:
        raise ConfigError(f"resume: {out / LATEST} not found; there is nothing to resume in {out}")
    state = read_trainer(out, epoch, run.rank)
    load_blocks(run.model, epoch_dir(out, epoch), own_blocks(run))
    if run.cfg.restarts and run.cfg.restarts[-1] == epoch:  # extended: the optimizers hold the old
        for block in run.model.blocks:  # schedule's last rate, so the new cycle starts here
            sched = block.scheduler
            if isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
                for group, rate, base in zip(sched.optimizer.param_groups, sched.lr_lambdas, sched.base_lrs):
                    group["lr"] = base * rate(sched.last_epoch)
    set_rng_state(run, state["rng"])
    return Progress(**state["progress"])


def best_weights(run: Run, out: Optional[Path], progress: Progress) -> Optional[dict]:
    """On resume, the best epoch's weights (from its kept set); else None until an epoch is done."""
    if not (out and progress.epoch):
        return None
    current = copy.deepcopy(run.model.state_dict())
    load_blocks(run.model, epoch_dir(out, progress.best_epoch), own_blocks(run), weights_only=True)
    best = copy.deepcopy(run.model.state_dict())
    run.model.load_state_dict(current)
    return best
