"""Batched, seeded image transforms on tensors: crop, flip, colour jitter, grayscale, normalise.

Every transform is ``transform(x, generator) -> x'`` on a float batch ``(B, C, H, W)`` in
``[0, 1]`` (``Normalize`` last), drawing each random number from ``generator`` (on ``x``'s
device), with per-sample choices applied by broadcasting (no Python loop over samples); see
:mod:`scpl.data.augment` for the design and for :class:`~scpl.data.augment.Augment`, which
drives them.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

Transform = Callable[[Tensor, torch.Generator], Tensor]
"""What every transform here is: ``(x, generator) -> x'``."""

LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luminance weights of R, G and B."""


# --------------------------------------------------------------------------- helpers


def _check_batch(x: Tensor, who: str, need_float: bool = True) -> None:
    """Raise ConfigError unless ``x`` is a 4-D (B, C, H, W) batch (of floats when ``need_float``)."""
    if x.dim() != 4:
        raise ConfigError(f"{who} needs a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if need_float and not x.is_floating_point():
        raise ConfigError(
            f"{who} needs a float batch in [0, 1], got {x.dtype}; wrap the transforms in Augment "
            "(which converts uint8 to float) or call x.float() / 255 first"
        )


def _check_generator(x: Tensor, generator: torch.Generator, who: str) -> None:
    """Raise ConfigError unless ``generator`` is a torch.Generator on ``x``'s device."""
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"{who} needs a torch.Generator, got {type(generator).__name__}")
    if generator.device != x.device:
        raise ConfigError(
            f"{who}: the generator is on {generator.device} but the batch is on {x.device}; "
            "create the generator with torch.Generator(device=x.device) (Augment does this for you)"
        )


def _uniform(x: Tensor, generator: torch.Generator, low: float, high: float) -> Tensor:
    """B values uniform in [low, high), shaped (B, 1, 1, 1), in ``x``'s dtype and on its device."""
    u = torch.rand(x.shape[0], generator=generator, device=x.device)
    return (low + (high - low) * u).to(x.dtype).view(-1, 1, 1, 1)


def _coin(x: Tensor, generator: torch.Generator, p: float) -> Tensor:
    """B booleans, each True with probability ``p``, shaped (B, 1, 1, 1) to select samples."""
    return (torch.rand(x.shape[0], generator=generator, device=x.device) < p).view(-1, 1, 1, 1)


def _check_probability(p: float, who: str) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"{who}: p must be a probability in [0, 1], got {p}")
    return float(p)


def grayscale(x: Tensor) -> Tensor:
    """(B, 1, H, W) luminance 0.299 R + 0.587 G + 0.114 B of a 3-channel batch; a 1-channel
    batch is returned as is, other channel counts are averaged.
    """
    if x.shape[1] == 3:
        return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]
    return x.mean(dim=1, keepdim=True)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] to HSV, each in [0, 1] (hue as a fraction of the full turn)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, torch.remainder(h / 6.0, 1.0), torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel n of RGB is V - V S clamp(min(k, 4 - k), 0, 1)
    with k = (n' + 6 H) mod 6 and n' = 5, 3, 1 for R, G, B.
    """
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor((5.0, 3.0, 1.0), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


class _Repr:
    """``Name(field=value, ...)`` from the instance attributes, for logs and configs."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


# --------------------------------------------------------------------------- transforms


class Resize(_Repr):
    """Bilinear resize of the batch to ``size`` x ``size`` (e.g. 28x28 images for a model that
    needs 32x32)."""

    def __init__(self, size: int):
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"Resize: size must be a positive int, got {size!r}")
        self.size = size

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """``x`` resized (unchanged if it has the size already)."""
        _check_batch(x, "Resize")
        if x.shape[-2:] == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


class RandomCrop(_Repr):
    """Pad by ``padding`` on every side, then crop ``size`` at a per-sample random offset.

    ``size`` is an int (square) or ``(height, width)``; ``padding_mode`` is ``"constant"`` (filled
    with ``fill``) or ``"reflect"`` (mirror without repeating the edge; needs padding < H and < W).
    Each offset is uniform over every position where the crop fits inside the padded image. The
    crop is one ``torch.gather`` with per-sample flat indices, so it is vectorised over the batch.
    """

    def __init__(self, size: Union[int, tuple[int, int]], padding: int = 0, fill: float = 0.0,
                 padding_mode: str = "constant"):
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
            raise ConfigError(f"RandomCrop: size must be a positive int or (height, width), got {hw}")
        if not isinstance(padding, int) or padding < 0:
            raise ConfigError(f"RandomCrop: padding must be an int >= 0, got {padding!r}")
        if padding_mode not in ("constant", "reflect"):
            raise ConfigError("RandomCrop: padding_mode must be 'constant' or 'reflect', "
                              f"got {padding_mode!r}")
        self.size, self.padding, self.fill, self.padding_mode = hw, padding, float(fill), padding_mode

    def _pad(self, x: Tensor) -> Tensor:
        if self.padding == 0:
            return x
        p = (self.padding,) * 4
        if self.padding_mode == "reflect":
            if self.padding >= min(x.shape[-2:]):
                raise ConfigError(
                    f"RandomCrop: reflect padding {self.padding} needs images larger than it, "
                    f"got {tuple(x.shape[-2:])}; use padding_mode='constant'"
                )
            return F.pad(x, p, mode="reflect")
        return F.pad(x, p, mode="constant", value=self.fill)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """(B, C, H, W) -> (B, C, *size); any dtype; randomness: two int draws per sample."""
        _check_batch(x, "RandomCrop", need_float=False)
        _check_generator(x, generator, "RandomCrop")
        xp = self._pad(x)
        (b, c, hp, wp), (h, w) = xp.shape, self.size
        if h > hp or w > wp:
            raise ConfigError(
                f"RandomCrop: crop {self.size} is larger than the padded image {(hp, wp)}"
            )
        top = torch.randint(0, hp - h + 1, (b,), generator=generator, device=x.device)
        left = torch.randint(0, wp - w + 1, (b,), generator=generator, device=x.device)
        rows = top.view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)
        cols = left.view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)
        flat = (rows * wp + cols).view(b, 1, h * w).expand(b, c, h * w)
        return xp.reshape(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


class RandomHorizontalFlip(_Repr):
    """Mirror each sample left-right with probability ``p`` (``torch.where`` on a flipped copy)."""

    def __init__(self, p: float = 0.5):
        self.p = _check_probability(p, "RandomHorizontalFlip")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Same shape, dtype and device; randomness: one draw per sample."""
        _check_batch(x, "RandomHorizontalFlip", need_float=False)
        _check_generator(x, generator, "RandomHorizontalFlip")
        return torch.where(_coin(x, generator, self.p), x.flip(-1), x)


class RandomGrayscale(_Repr):
    """Replace each 3-channel sample, with probability ``p``, by its luminance
    0.299 R + 0.587 G + 0.114 B repeated on the 3 channels.
    """

    def __init__(self, p: float = 0.2):
        self.p = _check_probability(p, "RandomGrayscale")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """(B, 3, H, W) float -> same shape; randomness: one draw per sample."""
        _check_batch(x, "RandomGrayscale")
        _check_generator(x, generator, "RandomGrayscale")
        if x.shape[1] != 3:
            raise ConfigError(f"RandomGrayscale needs 3-channel (RGB) images, got {x.shape[1]} channels")
        return torch.where(_coin(x, generator, self.p), grayscale(x).expand_as(x), x)


class ColorJitter(_Repr):
    """Per-sample random brightness, contrast, saturation and hue, in that fixed order.

    Factors are drawn per sample, uniform in ``[max(0, 1 - v), 1 + v]`` for brightness, contrast
    and saturation, and a hue shift uniform in ``[-hue, hue]`` (``hue`` <= 0.5, in turns). A value
    of 0 disables that operation (and draws nothing for it).

    * brightness: ``x * f``
    * contrast: ``f * x + (1 - f) * mean(gray(x))`` with one mean per sample
    * saturation: ``f * x + (1 - f) * gray(x)`` pixelwise
    * hue: RGB -> HSV, ``H = (H + shift) mod 1``, HSV -> RGB

    Inputs are assumed in [0, 1]; the result is clamped to [0, 1] after each operation. ``gray``
    is the BT.601 luminance for RGB (the image itself for 1 channel), so brightness and contrast
    work on any channel count; saturation and hue need 3 channels (ValueError otherwise).
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0):
        for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not float(v) >= 0.0:
                raise ConfigError(f"ColorJitter: {name} must be >= 0, got {v}")
        if not 0.0 <= float(hue) <= 0.5:
            raise ConfigError("ColorJitter: hue must be in [0, 0.5] (a fraction of the colour wheel), "
                              f"got {hue}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Same shape, dtype and device; randomness: one draw per sample per enabled operation."""
        _check_batch(x, "ColorJitter")
        _check_generator(x, generator, "ColorJitter")
        if (self.saturation or self.hue) and x.shape[1] != 3:
            raise ConfigError(
                f"ColorJitter: saturation and hue need 3-channel (RGB) images, got {x.shape[1]} channels"
            )
        if self.brightness:
            f = _uniform(x, generator, max(0.0, 1.0 - self.brightness), 1.0 + self.brightness)
            x = (x * f).clamp(0.0, 1.0)
        if self.contrast:
            f = _uniform(x, generator, max(0.0, 1.0 - self.contrast), 1.0 + self.contrast)
            mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
            x = (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)
        if self.saturation:
            f = _uniform(x, generator, max(0.0, 1.0 - self.saturation), 1.0 + self.saturation)
            x = (f * x + (1.0 - f) * grayscale(x)).clamp(0.0, 1.0)
        if self.hue:
            shift = _uniform(x, generator, -self.hue, self.hue)
            hsv = rgb_to_hsv(x)
            hsv = torch.cat((torch.remainder(hsv[:, 0:1] + shift, 1.0), hsv[:, 1:]), dim=1)
            x = hsv_to_rgb(hsv).clamp(0.0, 1.0)
        return x


class Normalize(_Repr):
    """``(x - mean[c]) / std[c]`` per channel; deterministic (the generator is accepted and ignored).

    ``mean`` and ``std`` are numbers or sequences of one value per channel (or of one value for all).
    """

    def __init__(self, mean: Union[float, Sequence[float]], std: Union[float, Sequence[float]]):
        mean = (float(mean),) if isinstance(mean, (int, float)) else tuple(float(m) for m in mean)
        std = (float(std),) if isinstance(std, (int, float)) else tuple(float(s) for s in std)
        if not mean or not std:
            raise ConfigError("Normalize: mean and std must not be empty")
        if len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise ConfigError(f"Normalize: {len(mean)} means but {len(std)} stds")
        if not all(s > 0 for s in std):
            raise ConfigError(f"Normalize: every std must be > 0, got {std}")
        self.mean, self.std = mean, std
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _tensors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        key = (x.device, x.dtype)
        if key not in self._cache:
            mean, std = (torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
                         for v in (self.mean, self.std))
            self._cache[key] = mean, std
        return self._cache[key]

    def __call__(self, x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Same shape, dtype and device; raises ConfigError when the channel count does not match."""
        _check_batch(x, "Normalize")
        n = max(len(self.mean), len(self.std))
        if n not in (1, x.shape[1]):
            raise ConfigError(f"Normalize has {n} channel values but the batch has {x.shape[1]} channels")
        mean, std = self._tensors(x)
        return (x - mean) / std


class RandomApply(_Repr):
    """Apply ``transform`` to each sample with probability ``p``.

    Vectorised: ``transform`` runs on the whole batch and ``torch.where`` keeps, per sample, either
    its result or the input, so its cost is paid for every sample. ``transform`` must keep the shape.
    """

    def __init__(self, transform: Transform, p: float = 0.5):
        if not callable(transform):
            raise ConfigError(f"RandomApply needs a callable transform, got {transform!r}")
        self.transform, self.p = transform, _check_probability(p, "RandomApply")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Randomness: one draw per sample, then whatever ``transform`` draws."""
        _check_batch(x, "RandomApply", need_float=False)
        _check_generator(x, generator, "RandomApply")
        keep = _coin(x, generator, self.p)
        return torch.where(keep, self.transform(x, generator), x)


class Compose(_Repr):
    """Apply ``transforms`` in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise ConfigError(f"Compose: every transform must be callable, got {t!r}")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Each transform's output fed to the next; randomness: whatever each draws, in order."""
        for t in self.transforms:
            x = t(x, generator)
        return x


class TwoViews(_Repr):
    """Two independently augmented views of every sample, for contrastive (SupCon) objectives.

    ``(x, y) -> (cat([t(x), u(x)]), cat([y, y]))`` with ``u = second or t``: the batch **doubles**
    to 2B, with sample ``i`` at rows ``i`` and ``i + B``; both views share the label, so they form
    a positive pair. SCPL's recipe pairs a weak view (crop + flip) with a strong one (weak +
    colour jitter + grayscale): ``TwoViews(preset("cifar", ...), preset("scpl", ...))``.
    """

    def __init__(self, transform: Transform, second: Optional[Transform] = None):
        for t in (transform, second if second is not None else transform):
            if not callable(t):
                raise ConfigError(f"TwoViews needs callable transforms, got {t!r}")
        self.transform = transform
        self.second = second

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(B, ...) images and labels -> (2B, ...) views and labels; randomness: both views', in order."""
        first = self.transform(x, generator)
        second = (self.second or self.transform)(x, generator)
        return torch.cat((first, second)), torch.cat((y, y))
