"""Seeded image augmentation on whole batches, on the batch's own device.

Design
------
* **Batched.** Every transform takes a float batch ``x`` of shape ``(B, C, H, W)`` and returns a
  batch of the same shape (``RandomCrop``: of the crop size), dtype and device. There is no Python
  loop over samples: per-sample choices (crop offsets, flips, jitter factors) are drawn as length-B
  tensors and applied with broadcasting, ``torch.gather`` and ``torch.where``. A transform
  therefore runs wherever the batch lives, e.g. on the GPU right before the forward pass, instead
  of in data-loader workers.
* **Explicit randomness.** ``transform(x, generator)`` draws every random number from
  ``generator`` (a ``torch.Generator`` on ``x.device``) and never from the global RNG, so the same
  generator state gives the same output and the caller's ``torch.manual_seed`` stream is left
  untouched. Random draws are made even where they cannot change the result (``p=0``, a crop with
  a single possible offset), so the amount of the stream consumed depends only on the batch shape.
* **Value range.** Colour transforms assume images in ``[0, 1]`` and clamp to ``[0, 1]`` after
  each operation; ``Normalize`` comes last. ``Augment`` turns uint8 batches into floats in
  ``[0, 1]`` first and owns one seeded generator per device, whose state it saves and restores.

Typical use::

    aug = Augment(preset("scpl", 32, CIFAR_MEAN, CIFAR_STD), seed=0, two_views=True)
    x2, y2 = aug(x.cuda(non_blocking=True), y.cuda())   # 2B images: x2[i] and x2[i + B] pair up
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

from ..errors import ConfigError
from ..names import AUGMENTATION_NAMES
from .transforms import (
    LUMA,
    ColorJitter,
    Compose,
    Normalize,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    Transform,
    TwoViews,
    grayscale,
    hsv_to_rgb,
    rgb_to_hsv,
)

PRESETS = AUGMENTATION_NAMES

__all__ = ["Augment", "preset", "PRESETS", "Transform", "LUMA", "ColorJitter", "Compose", "Normalize",
           "RandomApply", "RandomCrop", "RandomGrayscale", "RandomHorizontalFlip", "TwoViews", "grayscale",
           "hsv_to_rgb", "rgb_to_hsv"]


# --------------------------------------------------------------------------- driver


class Augment:
    """A transform plus a seed: ``aug(x, y) -> (x', y')`` on ``x``'s device.

    * Keeps one ``torch.Generator`` per device, created on first use on that device and seeded
      with ``seed``; the global RNG is never used.
    * uint8 batches become float32 in [0, 1] (``x.float() / 255``) before the transforms; float
      batches are used as they are (expected in [0, 1] for the colour transforms); other dtypes
      raise ValueError.
    * ``two_views=True`` (or passing a :class:`TwoViews`) doubles the batch: see TwoViews.
    * ``state_dict()`` / ``load_state_dict()`` save and restore the seed and generator states, so
      a resumed run continues the same random stream.
    """

    def __init__(self, transform: Union[Transform, TwoViews], seed: int, two_views: bool = False):
        if not callable(transform):
            raise ConfigError(f"Augment needs a callable transform, got {transform!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"Augment: seed must be an int, got {seed!r}")
        if two_views:
            if isinstance(transform, TwoViews):
                raise ConfigError("Augment: the transform is already a TwoViews; drop two_views=True")
            transform = TwoViews(transform)
        self.transform = transform
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    @property
    def two_views(self) -> bool:
        """Whether the transform is a :class:`TwoViews` (the batch doubles)."""
        return isinstance(self.transform, TwoViews)

    def generator(self, device: Union[str, torch.device]) -> torch.Generator:
        """The generator for ``device``, created and seeded with ``seed`` on first use."""
        key = str(torch.device(device))
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=key).manual_seed(self.seed)
        return self._generators[key]

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(x', y')``: the transform on ``x`` (uint8 scaled to [0, 1] first) with its device's generator."""
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise ConfigError(f"Augment takes uint8 or float images, got {x.dtype}")
        g = self.generator(x.device)
        if isinstance(self.transform, TwoViews):  # self.two_views
            return self.transform(x, y, g)
        return self.transform(x, g), y

    def state_dict(self) -> dict:
        """``{"seed": int, "generators": {device: ByteTensor state}}`` (CPU tensors)."""
        return {"seed": self.seed,
                "generators": {k: g.get_state().clone() for k, g in self._generators.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; devices absent from it start afresh from the seed."""
        try:
            seed, generators = int(state["seed"]), dict(state["generators"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"Augment.load_state_dict: not an Augment state ({exc!r})") from exc
        self.seed, self._generators = seed, {}
        for key, value in generators.items():
            self.generator(key).set_state(value.cpu())

    def __repr__(self) -> str:
        return f"Augment({self.transform!r}, seed={self.seed})"


def preset(name: str, image_size: int, mean: Union[float, Sequence[float]],
           std: Union[float, Sequence[float]]) -> Transform:
    """A standard augmentation ending in ``Normalize(mean, std)``.

    * ``"none"``: Normalize only.
    * ``"mnist"``: RandomCrop(image_size, padding=2), Normalize.
    * ``"cifar"``: RandomCrop(image_size, padding=4), RandomHorizontalFlip, Normalize.
    * ``"scpl"``: the stronger SimCLR-like views of the SCPL paper: RandomCrop(image_size,
      padding=4), RandomHorizontalFlip, ColorJitter(0.4, 0.4, 0.4, 0.1) with probability 0.8,
      RandomGrayscale(0.2), Normalize (needs RGB images).
    """
    normalize = Normalize(mean, std)
    if name == "none":
        return Compose([normalize])
    if name == "mnist":
        return Compose([RandomCrop(image_size, padding=2), normalize])
    if name == "cifar":
        return Compose([RandomCrop(image_size, padding=4), RandomHorizontalFlip(), normalize])
    if name == "scpl":
        return Compose([
            RandomCrop(image_size, padding=4),
            RandomHorizontalFlip(),
            RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8),
            RandomGrayscale(0.2),
            normalize,
        ])
    raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {', '.join(PRESETS)}")
