"""``scpl train``'s runner under its old name: see :mod:`scpl.runner`."""

from .runner import EpochRecord, Hook, Loop, Run, TrainConfig, build, load_recipe, run, train

__all__ = ["TrainConfig", "load_recipe", "Run", "build", "Hook", "EpochRecord", "Loop", "train", "run"]
