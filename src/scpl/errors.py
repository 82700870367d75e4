"""Exceptions raised by scpl. Each message names the cause and, where one exists, the fix."""

from __future__ import annotations

from typing import Optional


class ScplError(Exception):
    """Base class of every error scpl raises on purpose."""


class ConfigError(ScplError, ValueError):
    """A configuration cannot work: bad block split, unknown objective or projector, ..."""


class LabelError(ScplError, ValueError):
    """Labels outside ``[0, num_classes)`` or of the wrong dtype or shape."""


class DataError(ScplError, ValueError):
    """A data file cannot be read as its format says: the message names the file and the line."""


class BlockInputError(ScplError, RuntimeError):
    """A block rejected its input (usually a shape mismatch with the model's first layer)."""


class NonFiniteLossError(ScplError, FloatingPointError):
    """A local loss became NaN or infinite; carries the block index and the step."""

    def __init__(self, block: int, step: int, value: float):
        self.block, self.step, self.value = block, step, value
        super().__init__(
            f"block {block} local loss is {value} at step {step}. Lower the learning rate, "
            "add gradient clipping or check the inputs of this block for NaN/inf."
        )


class StageError(ScplError, RuntimeError):
    """A pipeline stage (thread or rank) failed; carries its index, the original exception
    (``cause``, also ``__cause__``) and its traceback. Stage -1 is the data loader; None a
    stage on another rank that could not be told (the process group's store was lost)."""

    def __init__(self, stage: Optional[int], cause: BaseException, traceback_text: str):
        self.stage, self.cause, self.traceback_text = stage, cause, traceback_text
        where = {-1: "the data loader (stage -1)",
                 None: "a stage on another rank"}.get(stage, f"stage {stage}")
        super().__init__(
            f"{where} failed with {type(cause).__name__}: {cause}\n"
            f"--- original traceback of {where} ---\n{traceback_text.rstrip()}"
        )


class TrainingDiverged(ScplError):
    """A run stopped because a local loss became NaN/inf; the message names the block, the step
    and the last good checkpoint."""


class WriteError(ScplError, OSError):
    """A file of a run could not be written (a full disk, a folder without write permission). The
    file being written is left untouched (writes are atomic), so nothing already saved is lost."""
