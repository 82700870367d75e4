"""Each objective against an independent, loop-by-loop implementation of its formula."""

import math

import pytest
import torch

from scpl.errors import ConfigError
from scpl.objectives import CrossEntropyLoss, DeInfoRegLoss, SupConLoss, build_objective

torch.manual_seed(0)


def supcon_reference(f, y, tau, original=False):
    z = [[x / math.sqrt(sum(u * u for u in v)) for x in v] for v in f.tolist()]
    y = y.tolist()
    n = len(z)
    s = [[sum(a * b for a, b in zip(z[i], z[j])) / tau for j in range(n)] for i in range(n)]
    total, anchors = 0.0, 0
    for i in range(n):
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        log_den = math.log(sum(math.exp(s[i][a]) for a in range(n) if a != i))
        term = sum(s[i][p] - log_den for p in pos)
        if original:
            total += term / (len(pos) + 1)
            anchors += 1
        elif pos:
            total += term / len(pos)
            anchors += 1
    return -total / anchors if anchors else 0.0


LABEL_CASES = {
    "mixed": torch.tensor([0, 1, 0, 2, 1, 2, 0, 3]),
    "one_class": torch.zeros(6, dtype=torch.long),
    "batch_of_2": torch.tensor([1, 1]),
    "some_without_positive": torch.tensor([0, 0, 1, 2, 3]),
}


@pytest.mark.parametrize("case", LABEL_CASES)
@pytest.mark.parametrize("original", [False, True])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_supcon_matches_reference(case, original, tau):
    y = LABEL_CASES[case]
    f = torch.randn(len(y), 5, dtype=torch.float64)
    got = SupConLoss(tau, original=original)(f, y)
    assert got.item() == pytest.approx(supcon_reference(f, y, tau, original), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n", [2, 7])
def test_supcon_all_distinct_is_zero_with_warning_not_nan(n):
    f = torch.randn(n, 3, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="no sample in this batch has a positive"):
        loss = SupConLoss()(f, torch.arange(n))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(f.grad).all()


def test_supcon_gradient_finite_and_pulls_positives_together():
    f = torch.randn(8, 4, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss_fn = SupConLoss(0.1)
    before = loss_fn(f, y)
    before.backward()
    assert torch.isfinite(f.grad).all()
    with torch.no_grad():
        after = loss_fn(f - 0.1 * f.grad, y)
    assert after < before


def deinforeg_reference(f, y, c, a=1.0, b=1.0, cc=1.0, gamma=1.0, eps=1e-4, original=False):
    rows = f.tolist()
    n, d = len(rows), len(rows[0])
    zn = [[x / math.sqrt(sum(v * v for v in r)) for x in r] for r in rows]
    y = y.tolist()

    def corr(u, v):
        mu, mv = sum(u) / len(u), sum(v) / len(v)
        cu, cv = [x - mu for x in u], [x - mv for x in v]
        return sum(p * q for p, q in zip(cu, cv)) / (math.sqrt(sum(p * p for p in cu))
                                                     * math.sqrt(sum(q * q for q in cv)))

    inv = 0.0
    for i in range(n):
        for j in range(n):
            target = 1.0 if y[i] == y[j] else -1.0 / (c - 1)
            inv += (target - corr(zn[i], zn[j])) ** 2
    inv /= n * n
    src = zn if original else rows
    var = 0.0
    for k in range(d):
        col = [r[k] for r in src]
        m = sum(col) / n
        variance = sum((x - m) ** 2 for x in col) / (n - 1)
        var += max(0.0, gamma - math.sqrt(variance + eps))
    var /= d
    if original:
        var /= n
    means = [sum(r[k] for r in zn) / n for k in range(d)]
    cov = 0.0
    for p in range(d):
        for q in range(d):
            if p != q:
                cpq = sum((r[p] - means[p]) * (r[q] - means[q]) for r in zn) / (n - 1)
                cov += cpq * cpq
    cov /= d
    return a * inv + b * var + cc * cov


@pytest.mark.parametrize("case", ["mixed", "one_class", "batch_of_2", "some_without_positive"])
@pytest.mark.parametrize("original", [False, True])
def test_deinforeg_matches_reference(case, original):
    y = LABEL_CASES[case]
    f = torch.randn(len(y), 6, dtype=torch.float64) * 2
    got = DeInfoRegLoss(5, original=original)(f, y)
    assert got.item() == pytest.approx(deinforeg_reference(f, y, 5, original=original), rel=1e-9)


def test_deinforeg_weights_and_all_classes_distinct():
    y = torch.arange(4)
    f = torch.randn(4, 3, dtype=torch.float64)
    got = DeInfoRegLoss(4, inv_weight=0.5, var_weight=2.0, cov_weight=0.1)(f, y)
    assert got.item() == pytest.approx(deinforeg_reference(f, y, 4, 0.5, 2.0, 0.1), rel=1e-9)


def test_deinforeg_keeps_device_and_dtype():
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    loss = DeInfoRegLoss(3)(f, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert loss.dtype == torch.float64 and loss.device == f.device
    loss.backward()
    assert torch.isfinite(f.grad).all()


def test_deinforeg_variance_term_default_is_satisfiable_original_is_not():
    # Wide, spread features: the default hinge on raw z is satisfied (0), the original on unit rows is not.
    f = torch.randn(64, 32, dtype=torch.float64) * 5
    default = DeInfoRegLoss(2, inv_weight=0, cov_weight=0)(f, torch.zeros(64, dtype=torch.long))
    original = DeInfoRegLoss(2, inv_weight=0, cov_weight=0, original=True)(
        f, torch.zeros(64, dtype=torch.long))
    assert default.item() == 0.0
    assert original.item() > 0.0


def test_cross_entropy_matches_reference():
    logits = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 1, 0])
    ref = -sum(math.log(math.exp(row[t]) / sum(math.exp(v) for v in row))
               for row, t in zip(logits.tolist(), y.tolist())) / 5
    assert CrossEntropyLoss()(logits, y).item() == pytest.approx(ref, rel=1e-12)


def test_build_objective_by_name_module_and_callable():
    assert isinstance(build_objective("supcon", 3, temperature=0.2), SupConLoss)
    assert isinstance(build_objective("deinforeg", 3), DeInfoRegLoss)
    custom = build_objective(lambda f, y: f.pow(2).mean(), 3)
    assert custom(torch.ones(2, 2), torch.zeros(2)).item() == 1.0
    with pytest.raises(ConfigError, match="unknown objective 'nope'.*supcon"):
        build_objective("nope", 3)
