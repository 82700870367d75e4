"""Batched, seeded augmentation: each transform checked against its definition, sample by sample."""

import pytest
import torch
import torch.nn.functional as F

from scpl.data.augment import (
    Augment,
    ColorJitter,
    Compose,
    Normalize,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    TwoViews,
    grayscale,
    preset,
    rgb_to_hsv,
)

MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(b: int = 16, c: int = 3, h: int = 12, w: int = 12, seed: int = 0, **kw) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=gen(seed), **kw)


def all_transforms():
    return [
        RandomCrop(10, padding=2), RandomCrop((12, 8), padding=3, padding_mode="reflect"),
        RandomHorizontalFlip(), RandomGrayscale(0.5), ColorJitter(0.4, 0.4, 0.4, 0.1),
        RandomApply(ColorJitter(0.4), 0.5), Normalize(MEAN, STD), preset("scpl", 12, MEAN, STD),
    ]


# --------------------------------------------------------------------------- common contracts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_device_and_global_rng_kept(device, dtype):
    x = images(dtype=dtype).to(device)
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if device == "cuda" else None
    for t in all_transforms():
        out = t(x, gen(1, device))
        assert out.dtype == dtype and out.device == x.device, t
        assert out.shape[:2] == x.shape[:2]
    assert torch.equal(torch.get_rng_state(), cpu_rng)
    if cuda_rng is not None:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda_rng))


def test_same_seed_same_output_other_seed_other_output():
    x = images(64)
    for t in all_transforms()[:-2] + all_transforms()[-1:]:  # Normalize has no randomness
        assert torch.equal(t(x, gen(3)), t(x, gen(3))), t
        assert not torch.equal(t(x, gen(3)), t(x, gen(4))), t


def test_augment_seeded_and_keeps_global_rng():
    x, y = images(32), torch.arange(32)
    state = torch.get_rng_state()
    a, b, c = (Augment(preset("scpl", 12, MEAN, STD), seed=s) for s in (7, 7, 8))
    xa, ya = a(x, y)
    assert torch.equal(xa, b(x, y)[0]) and torch.equal(ya, y)
    assert not torch.equal(xa, c(x, y)[0])
    assert not torch.equal(xa, a(x, y)[0])  # the stream moves on between calls
    assert torch.equal(torch.get_rng_state(), state)


# --------------------------------------------------------------------------- RandomCrop


def test_crop_without_padding_at_full_size_is_identity():
    x = images()
    assert torch.equal(RandomCrop(12)(x, gen()), x)
    assert torch.equal(RandomCrop((12, 12), padding=0, padding_mode="reflect")(x, gen()), x)


@pytest.mark.parametrize("mode, size, padding", [("constant", (10, 10), 4), ("reflect", (12, 9), 3)])
def test_each_crop_is_a_slice_of_the_padded_image(mode, size, padding):
    # distinct pixel values, so that a crop matches the padded image at exactly one offset
    b, (h, w) = 24, size
    x = torch.arange(b * 2 * 12 * 12, dtype=torch.float64).view(b, 2, 12, 12) + 1.0
    out = RandomCrop(size, padding=padding, fill=-1.0, padding_mode=mode)(x, gen(5))
    padded = F.pad(x, (padding,) * 4, mode=mode, **({"value": -1.0} if mode == "constant" else {}))
    offsets = []
    for i in range(b):
        hits = [(r, c) for r in range(padded.shape[2] - h + 1) for c in range(padded.shape[3] - w + 1)
                if torch.equal(out[i], padded[i, :, r:r + h, c:c + w])]
        assert len(hits) == 1, (i, hits)
        offsets.append(hits[0])
    assert len(set(offsets)) > b // 3  # per-sample offsets, not one for the whole batch


def test_crop_fill_value_appears_in_padding():
    x = torch.ones(64, 1, 4, 4)
    out = RandomCrop(4, padding=4, fill=0.25)(x, gen())
    assert set(out.unique().tolist()) == {0.25, 1.0}


# --------------------------------------------------------------------------- flip, grayscale


def test_flip():
    x = images(64)
    assert torch.equal(RandomHorizontalFlip(1.0)(x, gen()), x.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(x, gen()), x)
    out = RandomHorizontalFlip(0.5)(x, gen())
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert bool((flipped | kept).all())
    assert 0 < int(flipped.sum()) < 64


def test_grayscale():
    x = images(16)
    out = RandomGrayscale(1.0)(x, gen())
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        torch.testing.assert_close(out[:, ch], luma)
    assert torch.equal(RandomGrayscale(0.0)(x, gen()), x)
    half = RandomGrayscale(0.5)(images(64), gen())
    gray = (half[:, 0] == half[:, 1]).flatten(1).all(1) & (half[:, 1] == half[:, 2]).flatten(1).all(1)
    assert 0 < int(gray.sum()) < 64


# --------------------------------------------------------------------------- ColorJitter


def test_jitter_all_zero_is_identity():
    x = images()
    assert torch.equal(ColorJitter()(x, gen()), x)
    g = gen()
    ColorJitter()(x, g)
    assert torch.equal(g.get_state(), gen().get_state())  # nothing drawn


def test_brightness_scales_each_sample_within_bounds():
    x = images(64) * 0.5 + 0.1  # in [0.1, 0.6): a factor up to 1.5 cannot clip
    out = ColorJitter(brightness=0.5)(x, gen())
    ratio = (out / x).flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))  # one factor per sample
    f = ratio[:, 0]
    assert bool(((f >= 0.5 - 1e-6) & (f <= 1.5 + 1e-6)).all())
    assert f.std() > 0.1
    bright = ColorJitter(brightness=3.0)(torch.full((64, 3, 2, 2), 0.9), gen())
    assert bright.min() >= 0.0 and bright.max() == 1.0  # clamped


def test_contrast_keeps_mean_gray_and_saturation_keeps_gray():
    x = images(32) * 0.2 + 0.4
    out = ColorJitter(contrast=0.4)(x, gen())
    torch.testing.assert_close(grayscale(out).mean((1, 2, 3)), grayscale(x).mean((1, 2, 3)))
    assert not torch.allclose(out, x)
    out = ColorJitter(saturation=0.4)(x, gen())
    torch.testing.assert_close(grayscale(out), grayscale(x))
    assert not torch.allclose(out, x)


def test_hue_rotates_hue_and_keeps_saturation_and_value():
    x = images(32, dtype=torch.float64)
    out = ColorJitter(hue=0.3)(x, gen())
    before, after = rgb_to_hsv(x), rgb_to_hsv(out)
    torch.testing.assert_close(after[:, 1:], before[:, 1:])
    shift = torch.remainder(after[:, 0] - before[:, 0], 1.0).flatten(1)
    circular = torch.remainder(shift - shift[:, :1] + 0.5, 1.0) - 0.5  # same shift for all pixels
    assert circular.abs().max() < 1e-6
    s = torch.remainder(shift[:, 0] + 0.5, 1.0) - 0.5
    assert s.abs().max() <= 0.3 + 1e-6 and s.std() > 0.05


def test_jitter_without_colour_works_on_one_channel():
    x = images(8, c=1)
    assert ColorJitter(0.4, 0.4)(x, gen()).shape == x.shape
    with pytest.raises(ValueError, match="3-channel"):
        ColorJitter(saturation=0.4)(x, gen())
    with pytest.raises(ValueError, match="3-channel"):
        RandomGrayscale()(x, gen())


# --------------------------------------------------------------------------- composition


def test_random_apply():
    x, jitter = images(64), ColorJitter(brightness=0.5)
    assert torch.equal(RandomApply(jitter, 0.0)(x, gen()), x)
    g = gen()
    torch.rand(64, generator=g)  # the coins RandomApply draws first
    assert torch.equal(RandomApply(jitter, 1.0)(x, gen()), jitter(x, g))
    out = RandomApply(jitter, 0.5)(x, gen())
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 64


def test_normalize_and_compose():
    x = images()
    out = Normalize(MEAN, STD)(x, gen())
    for ch in range(3):
        torch.testing.assert_close(out[:, ch], (x[:, ch] - MEAN[ch]) / STD[ch])
    torch.testing.assert_close(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)
    composed = Compose([RandomHorizontalFlip(1.0), Normalize(MEAN, STD)])(x, gen())
    torch.testing.assert_close(composed, out.flip(-1))


def test_two_views_doubles_batch_and_labels():
    x, y = images(8), torch.arange(8)
    x2, y2 = TwoViews(preset("scpl", 12, MEAN, STD))(x, y, gen())
    assert x2.shape == (16, 3, 12, 12) and torch.equal(y2, torch.cat([y, y]))
    assert not torch.equal(x2[:8], x2[8:])
    xa, ya = Augment(preset("cifar", 12, MEAN, STD), seed=0, two_views=True)(x, y)
    assert xa.shape[0] == 16 and torch.equal(ya, y2)


@pytest.mark.parametrize("name", ["none", "mnist", "cifar", "scpl"])
def test_presets(name):
    c = 1 if name == "mnist" else 3
    x = images(4, c=c)
    assert preset(name, 12, MEAN[:c], STD[:c])(x, gen()).shape == x.shape


# --------------------------------------------------------------------------- Augment


def test_state_dict_round_trip_continues_the_stream():
    x, y = images(16), torch.arange(16)
    a = Augment(preset("scpl", 12, MEAN, STD), seed=3, two_views=True)
    a(x, y)
    saved = a.state_dict()
    expected = [a(x, y)[0] for _ in range(2)]
    b = Augment(preset("scpl", 12, MEAN, STD), seed=99, two_views=True)
    b.load_state_dict(saved)
    assert b.seed == 3
    assert all(torch.equal(b(x, y)[0], e) for e in expected)
    fresh = Augment(preset("scpl", 12, MEAN, STD), seed=3, two_views=True)
    fresh.load_state_dict(Augment(fresh.transform, seed=3).state_dict())  # nothing saved yet
    assert torch.equal(fresh(x, y)[0], Augment(preset("scpl", 12, MEAN, STD), 3, True)(x, y)[0])


def test_uint8_becomes_unit_float():
    x = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8, generator=gen())
    out, _ = Augment(Compose([]), seed=0)(x, torch.zeros(4))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.float() / 255)
    assert out.max() <= 1.0
    with pytest.raises(ValueError, match="uint8 or float"):
        Augment(Compose([]), seed=0)(x.long(), torch.zeros(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_gpu_with_a_gpu_generator():
    x = images(32).cuda()
    a = Augment(preset("scpl", 12, MEAN, STD), seed=0, two_views=True)
    out, _ = a(x, torch.arange(32, device="cuda"))
    assert out.is_cuda and "cuda:0" in a.state_dict()["generators"]
    with pytest.raises(ValueError, match="generator is on cpu"):
        RandomHorizontalFlip()(x, gen())


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("make, match", [
    (lambda: RandomCrop(0), "size"),
    (lambda: RandomCrop((3, 4, 5)), "size"),
    (lambda: RandomCrop(4, padding=-1), "padding"),
    (lambda: RandomCrop(4, padding_mode="edge"), "padding_mode"),
    (lambda: RandomHorizontalFlip(1.5), "probability"),
    (lambda: RandomGrayscale(-0.1), "probability"),
    (lambda: RandomApply(ColorJitter(), 2), "probability"),
    (lambda: ColorJitter(brightness=-0.1), "brightness"),
    (lambda: ColorJitter(hue=0.6), "hue"),
    (lambda: Normalize((0.5, 0.5), (0.2, 0.2, 0.2)), "means"),
    (lambda: Normalize(0.5, 0.0), "std"),
    (lambda: Augment(TwoViews(Compose([])), seed=0, two_views=True), "already"),
    (lambda: Augment(Compose([]), seed="0"), "seed"),
    (lambda: preset("imagenet", 32, MEAN, STD), "none, mnist, cifar, scpl"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_inputs():
    x = images(4)
    with pytest.raises(ValueError, match="larger than the padded"):
        RandomCrop(20, padding=2)(x, gen())
    with pytest.raises(ValueError, match="reflect padding"):
        RandomCrop(4, padding=12, padding_mode="reflect")(x, gen())
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        RandomHorizontalFlip()(x[0], gen())
    with pytest.raises(ValueError, match="float"):
        ColorJitter(0.4)((x * 255).to(torch.uint8), gen())
    with pytest.raises(ValueError, match="torch.Generator"):
        RandomHorizontalFlip()(x, 0)
    with pytest.raises(ValueError, match="channel"):
        Normalize(MEAN, STD)(images(4, c=2))


def test_two_views_weak_and_strong_transforms():
    """SCPL's pair: the first half of the doubled batch comes from the first transform, the second half
    from the second."""
    x = torch.rand(4, 3, 8, 8)
    y = torch.arange(4)
    views, labels = TwoViews(RandomHorizontalFlip(p=1.0), RandomGrayscale(p=1.0))(
        x, y, torch.Generator().manual_seed(0))
    assert torch.equal(views[:4], x.flip(-1))
    lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        assert torch.allclose(views[4:, c], lum, atol=1e-6)
    assert torch.equal(labels, torch.cat([y, y]))
