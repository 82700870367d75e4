"""Third-party models built from their configurations (no download), cut by name, by a number
of blocks and automatically, trained a step with each local objective, and equal to the
original model in eval mode.

The timm tests need timm and torchvision, which does not load beside this project's CPU build of
torch 2.13: ``.ci/run`` runs this file a second time in an environment with torch 2.14.1 and
torchvision 0.29.1 (README: "Your model, decoupled").
"""

import pytest
import torch

from scpl import DecoupledModel, seed_everything
from scpl.models import create_model
from scpl.models.ecosystem import NamedInputs

IMAGES = torch.randn(8, 1, 28, 28)
LABELS = torch.arange(8) % 4
TIMM = {  # name: (model arguments, split points or None: K=3 between its units)
    "resnet18": ({}, ["layer2", "layer3", "layer4"]),
    "vit_tiny_patch16_224": ({}, ["blocks.4", "blocks.8"]),
    "convnext_atto": ({"image_size": 32}, None),
    "deit_tiny_patch16_224": ({}, None),
    "efficientnet_b0": ({}, None),
    "mobilenetv3_small_100": ({}, None),
    "regnetx_002": ({}, ["s2", "s3"]),
    "swin_tiny_patch4_window7_224": ({}, None),
    "mixer_s16_224": ({}, None),
    "poolformer_s12": ({}, None),
}
HF = {  # model_type: (configuration, split points or None)
    "bert": (dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64),
             ["bert.encoder.layer.2"]),
    "gpt2": (dict(n_embd=32, n_layer=3, n_head=2), ["transformer.h.2"]),
    "distilbert": (dict(dim=32, n_layers=3, n_heads=2, hidden_dim=64), None),
    "roberta": (dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64), None),
    "llama": (dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2,
                   intermediate_size=64), ["model.layers.1"]),
}

pytestmark = pytest.mark.slow  # learning checks and third-party traces


def timm_net(name):
    args, _ = TIMM[name]
    size = args.get("image_size", 28)
    return create_model(f"timm:{name}", num_classes=4, in_channels=1, image_size=size), size


def text_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (8, 12), generator=g)
    ids[:3, 8:] = 0
    return NamedInputs(lambda batch: batch)((ids, LABELS))


def check(model, net, inputs, call):
    """Eval mode: the blocks equal the model within 1e-6; every block trains a step."""
    net.eval()
    with torch.no_grad():
        expected = call(net, inputs)
        got = model.eval()(inputs)
    assert (got - expected).abs().max() <= 1e-6
    before = [p.detach().clone() for b in model.blocks for p in b.layers.parameters()][:1]
    history = model.fit([(inputs, LABELS)], progress=False)
    assert all(loss is not None for loss in history[0]["losses"])
    assert not torch.equal(before[0], next(model.blocks[0].layers.parameters()))


@pytest.mark.parametrize("name", TIMM)
def test_timm_models_split_train_and_equal_the_original(name):
    pytest.importorskip("timm")
    seed_everything(0)
    net, size = timm_net(name)
    points = TIMM[name][1] or 3
    x = torch.nn.functional.interpolate(IMAGES, size=size) if size != 28 else IMAGES
    model = DecoupledModel(net, points, method="scpl", num_classes=4, example_input=x[:2])
    assert len(model.blocks) == (len(points) + 1 if isinstance(points, list) else 3)
    check(model, net, x, lambda m, i: m(i))


@pytest.mark.parametrize("method", ["deinforeg", "greedy"])
def test_timm_models_cut_automatically_train_with_every_objective(method):
    pytest.importorskip("timm")
    seed_everything(0)
    net, size = timm_net("convnext_atto")
    x = torch.nn.functional.interpolate(IMAGES, size=size)
    model = DecoupledModel(net, "auto", num_blocks=3, method=method, num_classes=4, example_input=x)
    assert model.balanced_cut.points is not None and len(model.blocks) == 3
    check(model, net, x, lambda m, i: m(i))


@pytest.mark.parametrize("name", HF)
def test_hugging_face_models_split_train_and_equal_the_original(name):
    pytest.importorskip("transformers")
    config, points = HF[name]
    seed_everything(0)
    net = create_model(f"hf:{name}", num_classes=4, vocab_size=50, max_len=16, **config)
    batch, _ = text_batch()
    model = DecoupledModel(net, points or 3, method="scpl", num_classes=4, example_input=batch)
    check(model, net, batch, lambda m, i: m(**i).logits)


@pytest.mark.parametrize("method", ["deinforeg", "greedy"])
def test_hugging_face_models_cut_automatically_train_with_every_objective(method):
    pytest.importorskip("transformers")
    seed_everything(0)
    net = create_model("hf:gpt2", num_classes=4, vocab_size=50, max_len=16, **HF["gpt2"][0])
    batch, _ = text_batch()
    model = DecoupledModel(net, "auto", num_blocks=2, method=method, num_classes=4, example_input=batch)
    assert model.balanced_cut.points[0].startswith("transformer.h.")
    check(model, net, batch, lambda m, i: m(**i).logits)


PEER_TABLE = {  # the models a user tried first (issue 23), as they cut them
    "timm:resnet18": (["layer2", "layer3", "layer4"], {}),
    "timm:vit_tiny_patch16_224": (["blocks.4", "blocks.8"], {"image_size": 32, "patch_size": 8}),
    "timm:convnext_atto": ("auto", {"image_size": 32}),
    "hf:bert": (["bert.encoder.layer.2"], HF["bert"][0]),
    "hf:gpt2": (["transformer.h.2"], HF["gpt2"][0]),
}


@pytest.mark.parametrize("method", ["scpl", "deinforeg", "greedy"])
@pytest.mark.parametrize("name", PEER_TABLE)
def test_the_first_models_users_bring_train_with_every_local_objective(name, method):
    blocks, args = PEER_TABLE[name]
    pytest.importorskip("timm" if name.startswith("timm:") else "transformers")
    seed_everything(0)
    if name.startswith("timm:"):
        net = create_model(name, num_classes=4, in_channels=1, **args)
        inputs = torch.nn.functional.interpolate(IMAGES, size=args.get("image_size", 28))
        call = lambda m, i: m(i)  # noqa: E731
    else:
        net = create_model(name, num_classes=4, vocab_size=50, max_len=16, **args)
        inputs, call = text_batch()[0], lambda m, i: m(**i).logits
    model = DecoupledModel(net, blocks, num_blocks=3 if blocks == "auto" else None, method=method,
                           num_classes=4, example_input=inputs)
    check(model, net, inputs, call)
