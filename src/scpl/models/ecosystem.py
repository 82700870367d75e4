"""Models of the ecosystem by name, built from their configurations (no download):
``timm:NAME`` (any timm architecture, ``pip install "scpl[timm]"``) and ``hf:NAME`` (a
Hugging Face ``model_type`` such as ``bert`` or ``gpt2``, or a local folder holding a
``config.json`` and perhaps weights, ``pip install "scpl[hf]"``).

They are plain ``nn.Module`` s that scpl cuts by tracing (:mod:`scpl.tracing`): ``blocks=K``
cuts between their units at near-equal FLOPs, ``"auto"`` by measured time, or give split points
by name. A Hugging Face text model takes ``{"input_ids", "attention_mask"}`` batches (the
training runner builds them from its token ids, padding id 0) and returns a ``ModelOutput``
whose ``logits`` scpl trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from torch import Tensor, nn

from ..errors import ConfigError

PREFIXES = ("timm", "hf")


def ecosystem(name: str) -> Optional[tuple[str, str]]:
    """``("timm", "resnet18")`` for ``"timm:resnet18"``; None for a name without a known prefix."""
    prefix, sep, rest = name.partition(":")
    return (prefix, rest) if sep and prefix in PREFIXES and rest else None


def create(name: str, num_classes: int, in_channels: Optional[int] = None, image_size: Optional[int] = None,
           vocab_size: Optional[int] = None, max_len: Optional[int] = None, **kwargs: Any) -> nn.Module:
    """The ecosystem model ``name`` (``timm:...`` or ``hf:...``) for ``num_classes`` classes,
    sized for the data: image channels and size, or the vocabulary and longest sequence.
    ``kwargs`` go to ``timm.create_model`` or into the Hugging Face configuration."""
    found = ecosystem(name)
    if found is None:
        raise ConfigError(f"{name!r} is not an ecosystem model name: timm:NAME or hf:NAME")
    prefix, rest = found
    if prefix == "timm":
        return timm_model(rest, num_classes, in_channels, image_size, **kwargs)
    return hf_model(rest, num_classes, in_channels, image_size, vocab_size, max_len, **kwargs)


def _require(module: str, extra: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:
        raise ConfigError(f"{module} is not installed: pip install \"scpl[{extra}]\" ({exc})") from exc


def timm_model(name: str, num_classes: int, in_channels: Optional[int] = None,
               image_size: Optional[int] = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, ...)``. For images smaller than 64 pixels,
    a model with patches (ViT, DeiT) gets 4-pixel patches unless ``patch_size`` is given."""
    timm = _require("timm", "timm")
    if name not in timm.list_models():
        raise ConfigError(f"timm has no model {name!r}; `timm.list_models('*vit*')` lists them")
    args: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, **kwargs}
    if in_channels is not None:
        args.setdefault("in_chans", in_channels)
    if image_size is not None:
        try:
            model = timm.create_model(name, **{"img_size": image_size, **args})
        except TypeError:  # a model of any input size (a CNN) takes no img_size
            return timm.create_model(name, **args)
        if image_size < 64 and "patch_size" not in kwargs and hasattr(model, "patch_embed"):
            return timm.create_model(name, **{"img_size": image_size, "patch_size": 4, **args})
        return model
    return timm.create_model(name, **args)


def hf_model(name: str, num_classes: int, in_channels: Optional[int] = None,
             image_size: Optional[int] = None, vocab_size: Optional[int] = None,
             max_len: Optional[int] = None, **config: Any) -> nn.Module:
    """A Hugging Face ``AutoModelForSequenceClassification`` (text) or
    ``AutoModelForImageClassification`` (images) from the configuration of ``model_type``
    ``name`` or of the local folder ``name``, with ``config`` overriding its values (e.g.
    ``hidden_size``, ``num_hidden_layers``). A folder with weights loads them (locally only)."""
    transformers = _require("transformers", "hf")
    folder = Path(name).expanduser()
    if folder.is_dir():
        base = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    else:
        try:
            base = transformers.AutoConfig.for_model(name)
        except ValueError as exc:
            raise ConfigError(f"hf:{name} is neither a Hugging Face model_type (bert, gpt2, roberta, ...) "
                              f"nor a local folder with a config.json ({exc})") from exc
    values: dict[str, Any] = {"num_labels": num_classes}
    if vocab_size is not None:
        values.update(vocab_size=vocab_size, pad_token_id=0)
        if max_len is not None:
            for key in ("max_position_embeddings", "n_positions"):
                if hasattr(base, key):
                    values[key] = max(getattr(base, key), max_len)
    else:
        values.update({k: v for k, v in (("num_channels", in_channels), ("image_size", image_size))
                       if v is not None and hasattr(base, k)})
    values.update(config)
    for key, value in values.items():
        setattr(base, key, value)
    auto = (transformers.AutoModelForSequenceClassification if vocab_size is not None or in_channels is None
            else transformers.AutoModelForImageClassification)
    if folder.is_dir() and (any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))):
        return auto.from_pretrained(folder, config=base, local_files_only=True, ignore_mismatched_sizes=True)
    return auto.from_config(base)


class NamedInputs:
    """A collate function whose token-id batches become Hugging Face keyword inputs:
    ``{"input_ids": ids, "attention_mask": ids != 0}`` (padding id 0)."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, batch: Any) -> tuple[dict[str, Tensor], Tensor]:
        """The collated batch with its ids as named inputs."""
        ids, labels = self.collate(batch)
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}, labels
