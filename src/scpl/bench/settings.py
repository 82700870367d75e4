"""What ``scpl bench pipeline`` runs: its settings, checked, with the defaults the command line
shows (imports no torch, so ``scpl --help`` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

WORKLOADS = ("cnn", "cnn_fc", "embed")
"""The workloads by name (:data:`scpl.bench.workloads.WORKLOADS` builds them)."""
METHODS = ("scpl", "deinforeg", "greedy")


@dataclass
class Settings:
    """One benchmark: ``stages`` blocks (x ``replicas``), batches of ``batch_size`` cut into
    micro-batches of ``micro_batch``, ``warmup`` + ``steps`` steps per run, ``repeats`` runs of
    each configuration, on workload ``model``; ``compile`` adds compiled blocks.
    """

    stages: int = 2
    batch_size: int = 256
    micro_batch: int = 64
    steps: int = 10
    warmup: int = 2
    repeats: int = 3
    method: str = "scpl"
    seed: int = 0
    model: str = "cnn"
    replicas: int = 1
    compile: bool = False
    peer_search: bool = True  # the BP pipeline's own best cut among the decoupled one's neighbours

    @property
    def micro_batches(self) -> int:
        """Micro-batches per batch."""
        return self.batch_size // self.micro_batch

    @property
    def ranks(self) -> int:
        """Ranks of the decoupled run (and of the DDP peer)."""
        return self.stages * self.replicas

    def validate(self) -> None:
        """Raise :class:`ConfigError` for settings the benchmark cannot run, naming the fix."""
        if self.stages < 2:
            raise ConfigError(f"--stages must be >= 2 (a pipeline of one stage is the sequential engine), "
                              f"got {self.stages}")
        if self.micro_batch < 1 or self.batch_size < 1:
            raise ConfigError(f"--batch-size and --micro-batch must be >= 1, got {self.batch_size} and "
                              f"{self.micro_batch}")
        if self.batch_size % self.micro_batch:
            raise ConfigError(f"--batch-size {self.batch_size} is not a multiple of "
                              f"--micro-batch {self.micro_batch}")
        if self.micro_batches < self.stages:
            raise ConfigError(f"{self.micro_batches} micro-batch(es) per batch for {self.stages} stages: the "
                              "pipelines need at least one per stage; lower --micro-batch to "
                              f"{max(self.batch_size // self.stages, 1)} or less")
        if self.warmup < 1 or self.steps < 1 or self.repeats < 1:
            raise ConfigError("--warmup, --steps and --repeats must be >= 1 "
                              "(the clock starts after the warm-up)")
        if self.replicas < 1 or self.micro_batch % self.replicas or self.batch_size % self.ranks:
            raise ConfigError(f"--replicas {self.replicas} must divide --micro-batch ({self.micro_batch}) "
                              f"and the batch must split over the {self.ranks} DDP ranks")
        if self.model not in WORKLOADS:
            raise ConfigError(f"unknown --model {self.model!r}; choose one of {sorted(WORKLOADS)}")
