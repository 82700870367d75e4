"""Any model split by the names of its submodules: torch.fx and torch.export captures, what
travels between the blocks, and the splits that cannot work."""

import dataclasses

import pytest
import torch
from torch import nn

from cases import TinyViT, tiny_bert
from scpl import ConfigError, DecoupledModel, auto_cut, seed_everything, split_model
from scpl.heads import masked_mean
from scpl.tracing.capture import capture

pytest.importorskip("transformers")


def tiny_gpt2(num_classes=3):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    return GPT2ForSequenceClassification(GPT2Config(vocab_size=30, n_embd=16, n_layer=3, n_head=2,
                                                    n_positions=16, num_labels=num_classes, pad_token_id=0))


def tokens(batch=4, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30, (batch, length), generator=g)
    ids[0, length - 3:] = 0
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


@dataclasses.dataclass
class Scores:
    scores: torch.Tensor
    features: torch.Tensor


class Outputs(nn.Module):
    """Class logits inside a dict, a dataclass or a tuple (``kind``)."""

    def __init__(self, kind):
        super().__init__()
        self.kind, self.body, self.fc = kind, nn.Sequential(nn.Linear(6, 8), nn.ReLU()), nn.Linear(8, 3)

    def forward(self, x):
        h = self.body(x)
        logits = self.fc(h)
        if self.kind == "dict":
            return {"features": h, "logits": logits}
        if self.kind == "dataclass":
            return Scores(logits, h)
        return logits, h


def run(blocks, flow):
    for b in blocks:
        flow = b(*flow) if isinstance(flow, tuple) else b(flow)
    return flow


FAMILIES = {  # model, split points, example input, how the model is called
    "vit-like (fx)": (TinyViT, ["blocks.1", "blocks.2"], lambda: torch.randn(3, 1, 8, 8)),
    "bert (export)": (tiny_bert, ["bert.encoder.layer.1", "bert.encoder.layer.2"], tokens),
    "gpt2 (export)": (tiny_gpt2, ["transformer.h.1", "transformer.h.2"], tokens),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_blocks_compute_the_model_in_eval_mode_and_share_its_parameters(family):
    make, points, example = FAMILIES[family]
    seed_everything(0)
    net = make()
    model = DecoupledModel(net, points, num_classes=net(**example()).logits.shape[1] if isinstance(
        example(), dict) else 4, example_input=example(), method="greedy")
    assert len(model.blocks) == 3
    net.eval()
    for seed in (1, 2):  # other inputs than the example, another batch size and length
        inputs = example() if not isinstance(example(), dict) else tokens(batch=5, length=6 + seed, seed=seed)
        with torch.no_grad():
            expected = net(**inputs).logits if isinstance(inputs, dict) else net(inputs)
            got = model.eval()(inputs)
        assert (got - expected).abs().max() <= 1e-6
    layers = {id(p) for b in model.blocks for p in b.layers.parameters()}
    assert layers == {id(p) for p in net.parameters()}


def test_export_graphs_switch_dropout_and_batchnorm_with_the_mode():
    """Keyword inputs force torch.export: in training mode the blocks draw the same dropout masks
    and update BatchNorm's statistics as the model does, in eval mode neither."""
    class ConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
            self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5))
            self.fc = nn.Linear(4, 2)

        def forward(self, image):
            return self.fc(self.body(self.stem(image)).mean((2, 3)))

    seed_everything(0)
    net, twin = ConvNet(), ConvNet()
    twin.load_state_dict(net.state_dict())
    blocks = split_model(net, ["body"], {"image": torch.randn(2, 1, 6, 6)})
    assert capture(twin, {"image": torch.randn(2, 1, 6, 6)}).tracer == "export"
    x = torch.randn(8, 1, 6, 6)
    for b in blocks:
        b.train()
    torch.manual_seed(3)
    got = run(blocks, x)
    torch.manual_seed(3)
    assert torch.equal(got, twin.train()(x))
    assert torch.equal(net.body[1].running_mean, twin.body[1].running_mean)
    assert int(net.body[1].num_batches_tracked) == 1
    for b in blocks:
        b.eval()
    before = net.body[1].running_mean.clone()
    assert torch.equal(run(blocks, x), run(blocks, x))  # no dropout
    assert torch.allclose(run(blocks, x), twin.eval()(x), atol=1e-6)
    assert torch.equal(net.body[1].running_mean, before) and int(net.body[1].num_batches_tracked) == 1


def test_parameters_used_outside_submodules_belong_to_the_block_that_uses_them():
    seed_everything(0)
    net = TinyViT()
    blocks = split_model(net, ["blocks.0", "norm"], torch.zeros(2, 1, 8, 8))
    owned = [{id(p) for p in b.parameters()} for b in blocks]
    assert id(net.cls_token) in owned[0] and id(net.pos_embed) in owned[0]
    assert id(net.head.weight) in owned[2] and not owned[0] & owned[1]


def test_the_attention_mask_travels_with_the_flow_and_heads_average_real_tokens():
    seed_everything(0)
    model = DecoupledModel(tiny_bert(), ["bert.encoder.layer.1"], num_classes=3, example_input=tokens(),
                           method="scpl")
    assert model.input_names == ("input_ids", "attention_mask")
    batch = tokens(batch=4, length=7, seed=5)
    model.eval()
    with torch.no_grad():
        flow = model.blocks[0](tuple(batch[n] for n in model.input_names))
    hidden, mask = flow[0], flow[1]
    assert hidden.shape == (4, 7, 16) and torch.equal(mask, batch["attention_mask"])
    head = model.blocks[0].features
    assert torch.allclose(head(flow), masked_mean(hidden, mask))
    assert not torch.allclose(head(flow), hidden.mean(1))  # the padded sample: its real tokens only


def test_gradients_stop_at_every_block_boundary():
    seed_everything(0)
    model = DecoupledModel(tiny_bert(), ["bert.encoder.layer.1", "bert.encoder.layer.2"], num_classes=3,
                           example_input=tokens(), method="greedy")
    labels = torch.tensor([0, 1, 2, 0])
    flow = tuple(tokens()[n] for n in model.input_names)
    for i, block in enumerate(model.blocks):
        out, _ = block.train_step(flow, labels)
        others = [p for j, b in enumerate(model.blocks) if j != i for p in b.parameters()]
        assert all(p.grad is None for p in others), f"block {i} sent gradients to another block"
        assert all(p.grad is not None for p in block.layers.parameters() if p.requires_grad and p.dim() > 1)
        flow = out
        for t in (flow if isinstance(flow, tuple) else (flow,)):
            assert t.grad_fn is None
        for b in model.blocks:
            b.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kind", ["dict", "dataclass", "tuple"])
def test_the_logits_are_found_in_structured_outputs(kind):
    seed_everything(0)
    net = Outputs(kind)
    output = "scores" if kind == "dataclass" else None
    model = DecoupledModel(net, ["fc"], num_classes=3, example_input=torch.randn(2, 6), output=output,
                           method="greedy")
    x = torch.randn(5, 6)
    pick = {"dict": lambda o: o["logits"], "dataclass": lambda o: o.scores, "tuple": lambda o: o[0]}[kind]
    expected = pick(net(x))
    assert torch.allclose(model.eval()(x), expected, atol=1e-6)
    if kind == "dataclass":
        with pytest.raises(ConfigError, match="none is called 'logits': name the one"):
            DecoupledModel(Outputs(kind), ["fc"], num_classes=3, example_input=torch.randn(2, 6))
        with pytest.raises(ConfigError, match="has no entry 'score'"):
            DecoupledModel(Outputs(kind), ["fc"], num_classes=3, example_input=torch.randn(2, 6),
                           output="score")


def test_weights_tied_between_blocks_are_refused():
    class Tied(nn.Module):
        def __init__(self, tie):
            super().__init__()
            self.embed, self.body, self.out = nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10)
            if tie:
                self.out.weight = self.embed.weight

        def forward(self, ids):
            return self.out(torch.relu(self.body(self.embed(ids))).mean(1))

    ids = torch.ones(2, 3, dtype=torch.long)
    for point in ("body", "out"):
        with pytest.raises(ConfigError, match=r"parameter 'embed.weight' of block 0 is also 'out.weight' of "
                                              r"block 1 \(weights tied between blocks"):
            DecoupledModel(Tied(tie=True), [point], num_classes=10, example_input=ids)
        assert len(DecoupledModel(Tied(tie=False), [point], num_classes=10, example_input=ids).blocks) == 2


def test_a_model_no_tracer_can_capture_gets_one_line():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            return self.b(h) if float(h.sum()) > 0 else -self.b(h)

    with pytest.raises(ConfigError, match="could not capture DataDependent.*pass a list of modules") as info:
        DecoupledModel(DataDependent(), ["b"], num_classes=2, example_input=torch.randn(2, 4))
    assert "\n" not in str(info.value)


def test_training_behaviour_a_trace_would_freeze_is_refused():
    """Code that draws random numbers in training outside any module that reads self.training
    is recorded as always on: the eval-mode check finds it."""
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
            self.noisy = True

        def forward(self, x):
            h = self.a(x)
            if self.noisy:
                h = h + torch.randn_like(h)
            return self.b(h)

    with pytest.raises(ConfigError, match="does not compute the model's output in eval mode"):
        DecoupledModel(Noisy(), ["b"], num_classes=2, example_input=torch.randn(2, 4))


@pytest.mark.slow
def test_auto_and_a_number_of_blocks_cut_between_the_models_units():
    seed_everything(0)
    by_count = DecoupledModel(tiny_bert(), 3, num_classes=3, example_input=tokens(), method="greedy")
    assert len(by_count.blocks) == 3
    cut = auto_cut(tiny_bert(), 2, tokens(batch=16), num_classes=3, method="greedy")
    assert cut.points is not None and len(cut.points) == 1
    # units: the 3 layers, dropout, classifier, and the embeddings before them
    assert cut.points[0].startswith("bert.encoder.layer.") and sum(cut.counts) == 6
    model = DecoupledModel(tiny_bert(), cut, num_classes=3, example_input=tokens(), method="greedy")
    assert model.balanced_cut is cut and len(model.blocks) == 2
    vit = DecoupledModel(TinyViT(), "auto", num_blocks=3, num_classes=4,
                         example_input=torch.randn(8, 1, 8, 8))
    points = vit.balanced_cut.points
    assert len(vit.blocks) == 3 and points is not None
    assert all(p.startswith(("blocks.", "norm", "head")) for p in points)
    with pytest.raises(ConfigError, match="cannot make 9 blocks"):
        DecoupledModel(TinyViT(), 9, num_classes=4, example_input=torch.randn(2, 1, 8, 8))


def test_named_batches_must_have_the_traced_keys():
    seed_everything(0)
    model = DecoupledModel(tiny_bert(), ["bert.encoder.layer.1"], num_classes=3, example_input=tokens())
    batch = tokens()
    with pytest.raises(ConfigError, match=r"missing \['attention_mask'\]"):
        model.fit([({"input_ids": batch["input_ids"]}, torch.tensor([0, 1, 2, 0]))], progress=False)
    with pytest.raises(ConfigError, match=r"not traced: \['token_type_ids'\]"):
        model.predict({**batch, "token_type_ids": batch["input_ids"] * 0})
    assert model.predict(batch).shape == (4,)
    plain = DecoupledModel(nn.Sequential(nn.Linear(6, 3)), method="bp", num_classes=3,
                           example_input=torch.zeros(2, 6))
    with pytest.raises(ConfigError, match="inputs given by name"):
        plain.predict({"x": torch.zeros(2, 6)})


def test_blocks_moved_to_another_device_create_their_tensors_there():
    """The export graph of GPT-2 creates tensors (positions, masks) on the example's device; moved
    to another device, the blocks create them there ('meta' stands in for a GPU)."""
    seed_everything(0)
    blocks = split_model(tiny_gpt2(), ["transformer.h.1"], tokens())
    for b in blocks:
        b.to("meta").eval()
    batch = {k: v.to("meta") for k, v in tokens().items()}
    out = run(blocks, (batch["input_ids"], batch["attention_mask"]))
    assert out.device.type == "meta" and out.shape == (4, 3)


def test_nested_split_points_keep_the_rest_of_the_outer_module_in_the_later_block():
    from test_partition import TinyResNet

    seed_everything(0)
    net = TinyResNet()
    blocks = split_model(net, ["layer2", "layer2.1"], torch.zeros(2, 1, 6, 6))
    x = torch.randn(3, 1, 6, 6)
    net.eval()
    for b in blocks:
        b.eval()
    assert len(blocks) == 3 and torch.allclose(run(blocks, x), net(x), atol=1e-6)
    assert {id(p) for p in blocks[2].parameters()} == {id(p) for p in [*net.layer2[1].parameters(),
                                                                        *net.fc.parameters()]}
