"""The sequential engine on real computations: isolation, BP equivalence, reproducibility, state."""

import copy

import pytest
import torch
from torch import nn

from conftest import synthetic_loader, tiny_cnn
from scpl import DecoupledModel, seed_everything
from scpl.errors import ConfigError
from scpl.executors import SequentialExecutor

EXAMPLE = torch.zeros(2, 1, 8, 8)
BLOCKS = [3, 3, 2]


def build(method="scpl", seed=0, **kw):
    seed_everything(seed)
    return DecoupledModel(tiny_cnn(), BLOCKS, method=method, num_classes=4, example_input=EXAMPLE, **kw)


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a, b, keys=None):
    keys = keys if keys is not None else a.keys()
    return all(torch.equal(a[k], b[k]) for k in keys)


class Scaled(nn.Module):
    def __init__(self, inner, factor):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, f, y):
        return self.inner(f, y) * self.factor


@pytest.mark.parametrize("method", ["scpl", "deinforeg", "greedy"])
def test_perturbing_one_block_loss_leaves_other_blocks_unchanged(method, loader):
    base, perturbed = build(method), build(method)
    perturbed.blocks[1].objective = Scaled(perturbed.blocks[1].objective, 7.0)
    batch = next(iter(loader))
    for m in (base, perturbed):
        m.fit([batch], epochs=1)
    a, b = params(base), params(perturbed)
    for k in a:
        if k.startswith("blocks.1."):
            continue
        assert torch.equal(a[k], b[k]), f"{k} changed though only block 1's loss was perturbed"
    assert not same(a, b, [k for k in a if k.startswith("blocks.1.layers")])

    # Over many steps, blocks before the perturbed one never see a difference.
    base2, perturbed2 = build(method), build(method)
    perturbed2.blocks[2].objective = Scaled(perturbed2.blocks[2].objective, 100.0)
    base2.fit(loader, epochs=2)
    perturbed2.fit(loader, epochs=2)
    a, b = params(base2), params(perturbed2)
    assert same(a, b, [k for k in a if k.startswith(("blocks.0.", "blocks.1."))])
    assert not same(a, b, [k for k in a if k.startswith("blocks.2.")])


def test_train_step_output_is_detached_and_precomputed(loader):
    model = build()
    x, y = next(iter(loader))
    block = model.blocks[0]
    block.eval()
    with torch.no_grad():
        expected = block(x)  # eval mode: BN running stats, but parameters before the update
    out, loss = block.train_step(x, y)
    assert not out.requires_grad and isinstance(loss, float)
    block.train()
    # Output must come from the parameters *before* this step's update.
    model2 = build()
    with torch.no_grad():
        before_update = model2.blocks[0].train()(x)
    assert torch.equal(out, before_update)
    assert not torch.equal(expected, out)  # sanity: train-mode BN differs from eval mode


def plain_loop(net, loader, epochs, lr=1e-3):
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        for x, y in loader:
            net.train()
            loss = nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append([p.detach().clone() for p in net.parameters()])
    return history


def test_bp_mode_equals_plain_pytorch_loop_step_for_step(loader):
    seed_everything(0)
    net = tiny_cnn()
    reference = copy.deepcopy(net)
    model = DecoupledModel(net, BLOCKS, method="bp", num_classes=4, example_input=EXAMPLE)
    assert len(model.blocks) == 1
    expected = plain_loop(reference, loader, epochs=2)
    got = []
    model.fit(loader, epochs=2,
              on_step=lambda step, losses: got.append([p.detach().clone() for p in net.parameters()]))
    assert len(got) == len(expected) == 8
    for step, (g, e) in enumerate(zip(got, expected)):
        assert all(torch.equal(a, b) for a, b in zip(g, e)), f"BP differs from the plain loop at step {step}"
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize("method", ["bp", "scpl", "deinforeg", "greedy"])
def test_seeded_run_repeats_bit_for_bit(method):
    runs = []
    for _ in range(2):
        model = build(method, seed=3, exits=True)
        gen = seed_everything(3)
        data = synthetic_loader(seed=1)
        shuffled = torch.utils.data.DataLoader(data.dataset, batch_size=16, shuffle=True, generator=gen)
        hist = model.fit(shuffled, epochs=2)
        runs.append((params(model), hist[-1]["losses"]))
    assert same(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]


def test_state_dict_round_trip(loader):
    trained = build("scpl", exits=True)
    trained.fit(loader, epochs=1)
    fresh = build("scpl", seed=99, exits=True)
    x, _ = next(iter(loader))
    trained.eval(), fresh.eval()
    assert not torch.equal(trained(x), fresh(x))
    fresh.load_state_dict(trained.state_dict())
    fresh.eval()
    assert torch.equal(trained(x), fresh(x))
    assert same(params(trained), params(fresh))


def test_training_learns_and_evaluate_predict(loader):
    model = build("scpl")
    before = model.evaluate(loader)["accuracy"]
    hist = model.fit(loader, epochs=8, val_loader=loader)
    assert hist[-1]["losses"][0] < hist[0]["losses"][0]
    after = model.evaluate(loader)
    assert after["accuracy"] > max(before, 0.6)
    assert hist[-1]["val_accuracy"] == after["accuracy"]
    preds = model.predict(loader)
    labels = torch.cat([y for _, y in loader])
    assert preds.shape == labels.shape
    assert (preds == labels).float().mean().item() == pytest.approx(after["accuracy"])


def test_batchnorm_mode_per_block(loader):
    model = build("scpl")
    bn = model.blocks[0].layers[1]
    stats = bn.running_mean.clone()
    model.evaluate(loader)
    assert torch.equal(bn.running_mean, stats), "evaluation must not update BatchNorm statistics"
    model.fit([next(iter(loader))], epochs=1)
    assert not torch.equal(bn.running_mean, stats), "training must update BatchNorm statistics"


def test_per_block_lr_schedules(loader):
    sched = [
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        None,
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1),
    ]
    opt = [lambda p, lr=lr: torch.optim.SGD(p, lr=lr) for lr in (0.1, 0.2, 0.3)]
    model = build("scpl", optimizer=opt, scheduler=sched)
    model.fit(loader, epochs=2)
    lrs = [b.optimizer.param_groups[0]["lr"] for b in model.blocks]
    assert lrs == pytest.approx([0.1 * 0.25, 0.2, 0.3 * 0.01])


def test_block_lr_ramps_the_later_blocks_by_default_and_uniform_keeps_one_rate():
    rates = lambda m: [b.optimizer.param_groups[0]["lr"] for b in m.blocks]  # noqa: E731
    assert rates(build("scpl")) == pytest.approx([1e-3, 1.5e-3, 2e-3])
    assert rates(build("deinforeg", block_lr="uniform")) == pytest.approx([1e-3] * 3)
    assert rates(build("greedy", block_lr=[1, 3, 0.5])) == pytest.approx([1e-3, 3e-3, 5e-4])
    assert rates(build("bp")) == pytest.approx([1e-3])
    # one optimizer per block: the rates are the user's, not ramped
    own = [lambda p, lr=lr: torch.optim.SGD(p, lr=lr) for lr in (0.1, 0.2, 0.3)]
    assert rates(build("scpl", optimizer=own)) == pytest.approx([0.1, 0.2, 0.3])


def test_a_ramped_block_trains_bit_for_bit_as_one_built_at_its_scaled_rate(loader):
    ramped = build("scpl")
    built = build("scpl", optimizer=[lambda p, s=s: torch.optim.Adam(p, lr=1e-3 * s) for s in (1, 1.5, 2)])
    for m in (ramped, built):
        m.fit(loader, epochs=1)
    assert same(params(ramped), params(built))


@pytest.mark.parametrize("block_lr, message", [("fast", "unknown block_lr rule 'fast'"),
                                               ([1, 2], "must be 3 positive multipliers"),
                                               ([], "must be 3 positive multipliers"),
                                               ([1, float("inf"), 2], "must be 3 positive multipliers"),
                                               ([1, 0, 2], "must be 3 positive multipliers")])
def test_bad_block_lr_names_the_cause(block_lr, message):
    with pytest.raises(ConfigError, match=message):
        build("scpl", block_lr=block_lr)


def test_bp_is_one_block_at_the_rate_under_every_rule_and_refuses_a_list_for_more_blocks():
    rates = lambda m: [b.optimizer.param_groups[0]["lr"] for b in m.blocks]  # noqa: E731
    assert build("bp").block_lr == build("bp", block_lr="ramp").block_lr == [1.0]
    assert rates(build("bp", block_lr=[2])) == pytest.approx([2e-3])
    with pytest.raises(ConfigError, match="must be 1 positive multipliers"):
        build("bp", block_lr=[1, 1.5, 2])  # not silently ignored


def test_a_cosine_schedule_anneals_every_ramped_block_from_its_own_peak_to_one_floor(loader):
    from scpl.optim import build_scheduler

    model = build("scpl", scheduler=lambda opt: build_scheduler("cosine", opt, 2, min_lr=1e-4))
    rates = []
    for _ in range(2):
        rates.append([b.optimizer.param_groups[0]["lr"] for b in model.blocks])
        model.fit(loader, epochs=1)
    rates.append([b.optimizer.param_groups[0]["lr"] for b in model.blocks])
    assert rates[0] == pytest.approx([1e-3, 1.5e-3, 2e-3])  # each block's own peak
    assert rates[1] == pytest.approx([(p + 1e-4) / 2 for p in rates[0]])  # half way down the cosine
    assert rates[2] == pytest.approx([1e-4] * 3)  # one floor for every block
    # a multiplier below 1 can put a block under min_lr: the error names block_lr
    with pytest.raises(ConfigError, match="above this optimizer's lr 0.0005.*block_lr"):
        build("scpl", block_lr=[1, 0.5, 1],
              scheduler=lambda opt: build_scheduler("cosine", opt, 4, min_lr=8e-4))


def test_each_block_optimizer_owns_exactly_its_parameters():
    model = build("scpl", exits=True)
    seen = set()
    for block in model.blocks:
        owned = {id(p) for g in block.optimizer.param_groups for p in g["params"]}
        assert owned == {id(p) for p in block.parameters()}
        assert not owned & seen
        seen |= owned
    assert seen == {id(p) for p in model.parameters()}


def test_exit_classifier_trains_on_detached_features(loader):
    trained, silent = build("scpl", exits=True), build("scpl", exits=True)
    for block in silent.blocks[:-1]:
        block.classifier_weight = 0.0
    batch = next(iter(loader))
    trained.fit([batch], epochs=1)
    silent.fit([batch], epochs=1)
    a, b = params(trained), params(silent)
    # The exit classifier's cross-entropy must not reach the layers or the projector ...
    assert same(a, b, [k for k in a if ".classifier." not in k])
    # ... but it does train the classifier.
    assert not same(a, b, [k for k in a if ".classifier." in k])


def test_executor_reports_losses_per_block_per_step(loader):
    model = build("greedy")
    hist = SequentialExecutor().train_epoch(list(model.blocks), loader)
    assert len(hist) == 4 and all(len(s) == 3 for s in hist)
    assert all(v > 0 for s in hist for v in s)


def test_scheduler_steps_only_after_epochs_in_which_the_block_trained(loader):
    import warnings

    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # noqa: E731
    model = build("scpl", optimizer=lambda p: torch.optim.SGD(p, lr=0.1), scheduler=sched,
                  block_lr="uniform")

    class FirstTwoBlocks(SequentialExecutor):
        """Trains blocks 0 and 1 only, as a distributed rank trains only its own block."""

        def train_epoch(self, blocks, batches, on_step=None):
            return [losses + [0.0] for losses in super().train_epoch(blocks[:2], batches, on_step)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch warns when a scheduler steps before its optimizer
        model.fit(loader, epochs=2, executor=FirstTwoBlocks())
    assert [b.optimizer.param_groups[0]["lr"] for b in model.blocks] == pytest.approx([0.025, 0.025, 0.1])


def test_block_outputs_are_the_pieces_of_the_network():
    """block_outputs yields one output per block, the last being forward's logits, and each
    output is what the original network's layers compute up to that cut."""
    model = build().eval()
    seed_everything(0)
    net = tiny_cnn().eval()  # the same weights as the model's, before it was split
    x = torch.randn(5, 1, 8, 8)
    outputs = list(model.block_outputs(x))
    assert len(outputs) == len(BLOCKS)
    assert torch.equal(outputs[-1], model(x))
    flow, start = x, 0
    for size, out in zip(BLOCKS, outputs):
        flow = net[start:start + size](flow)
        start += size
        assert torch.allclose(flow, out)
