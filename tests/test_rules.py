"""The ReLU backward rules: the lecture's tables, and one mechanism for every way to write a ReLU."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lecture_lib import attribution as A
from lecture_lib.rules import RULES, relu_backward, use_rule

# The lecture's worked example ("Difference in backpropagating through ReLU").
FORWARD_INPUT = [[1, -1, 5], [2, -5, -7], [-3, 2, 4]]
GRAD_FROM_ABOVE = [[-2, 3, -1], [6, -3, 1], [2, -1, 3]]
LECTURE_TABLES = {
    "gradient": [[-2, 0, -1], [6, 0, 0], [0, -1, 3]],
    "deconvnet": [[0, 3, 0], [6, 0, 1], [2, 0, 3]],
    "guided": [[0, 0, 0], [6, 0, 0], [0, 0, 3]],
}


@pytest.mark.parametrize("rule", RULES)
def test_relu_backward_reproduces_the_lectures_tables(rule):
    result = relu_backward(np.array(FORWARD_INPUT), np.array(GRAD_FROM_ABOVE), rule)
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, LECTURE_TABLES[rule])
    as_tensor = relu_backward(torch.tensor(FORWARD_INPUT), torch.tensor(GRAD_FROM_ABOVE), rule)
    assert isinstance(as_tensor, torch.Tensor)
    assert as_tensor.tolist() == LECTURE_TABLES[rule]


@pytest.mark.parametrize("rule", RULES)
def test_use_rule_on_a_lone_relu_matches_relu_backward(rule):
    x = torch.tensor(FORWARD_INPUT, dtype=torch.float32, requires_grad=True)
    with use_rule(rule):
        y = torch.relu(x)
    (r,) = torch.autograd.grad(
        y, x, grad_outputs=torch.tensor(GRAD_FROM_ABOVE, dtype=torch.float32)
    )
    assert r.tolist() == LECTURE_TABLES[rule]
    assert y.tolist() == [[1, 0, 5], [2, 0, 0], [0, 2, 4]]  # the lecture's forward pass


def test_masked_entries_are_exact_zeros_not_negative_zeros():
    result = relu_backward(
        np.array(FORWARD_INPUT, float), np.array(GRAD_FROM_ABOVE, float), "gradient"
    )
    assert not np.signbit(result[result == 0]).any()


def test_unknown_rule_and_shape_mismatch_are_explained():
    with pytest.raises(ValueError, match="'guided'"):
        relu_backward(np.ones(3), np.ones(3), "guidedbackprop")
    with pytest.raises(ValueError, match="expected one of"):
        with use_rule("saliency"):
            pass
    with pytest.raises(ValueError, match=r"shape \(3,\).*\(2,\)"):
        relu_backward(np.ones(3), np.ones(2), "gradient")


# --- every way of writing a ReLU follows the rule ----------------------------------------------


class SmallNet(nn.Module):
    """conv -> ReLU -> max-pool -> conv -> ReLU -> linear, the ReLUs written in one of many ways."""

    def __init__(self, relu: str):
        super().__init__()
        self.kind = relu
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 4)
        self.relu = nn.ReLU(inplace=relu == "inplace module")  # reused twice in "module" variants
        self.relu2 = nn.ReLU()
        self.threshold = nn.Threshold(0, 0)
        self.register_buffer("zero", torch.zeros(1, 1, 1))

    def act(self, h, second=False):
        if self.kind == "module":
            return (self.relu2 if second else self.relu)(h)
        if self.kind in ("reused module", "inplace module"):
            return self.relu(h)
        if self.kind == "F.relu":
            return F.relu(h)
        if self.kind == "F.relu inplace":
            return F.relu(h, inplace=True)
        if self.kind == "torch.relu":
            return torch.relu(h)
        if self.kind == "torch.relu_":
            return torch.relu_(h)
        if self.kind == "Tensor.relu":
            return h.relu()
        # max(x, 0) written without "relu"
        if self.kind == "clamp(min=0)":
            return h.clamp(min=0)
        if self.kind == "torch.clamp(x, 0.0)":
            return torch.clamp(h, 0.0)
        if self.kind == "clamp_ inplace":
            return h.clamp_(min=0)
        if self.kind == "clamp_min":
            return torch.clamp_min(h, 0)
        if self.kind == "clip":
            return h.clip(min=0)
        if self.kind == "torch.maximum(x, zero)":
            return torch.maximum(h, self.zero)
        if self.kind == "torch.maximum(zeros_like, x)":
            return torch.maximum(torch.zeros_like(h), h)
        if self.kind == "torch.max(x, zero)":
            return torch.max(h, torch.tensor(0.0))
        if self.kind == "F.threshold(x, 0, 0)":
            return F.threshold(h, 0.0, 0.0)
        if self.kind == "F.threshold inplace":
            return F.threshold(h, 0, 0, inplace=True)
        if self.kind == "nn.Threshold(0, 0)":
            return self.threshold(h)
        if self.kind == "mixed":  # one nn.ReLU, one clamp
            return h.clamp(min=0) if second else self.relu(h)
        raise AssertionError(self.kind)

    def forward(self, x):
        h = F.max_pool2d(self.act(self.conv1(x)), 2)
        h = self.act(self.conv2(h), second=True)
        return self.fc(h.flatten(1))


VARIANTS = [
    "module",
    "reused module",
    "inplace module",
    "F.relu",
    "F.relu inplace",
    "torch.relu",
    "torch.relu_",
    "Tensor.relu",
    "clamp(min=0)",
    "torch.clamp(x, 0.0)",
    "clamp_ inplace",
    "clamp_min",
    "clip",
    "torch.maximum(x, zero)",
    "torch.maximum(zeros_like, x)",
    "torch.max(x, zero)",
    "F.threshold(x, 0, 0)",
    "F.threshold inplace",
    "nn.Threshold(0, 0)",
    "mixed",
]


def _explain(model, x, rule):
    x = x.clone().requires_grad_(True)
    with use_rule(rule) as mode:
        score = model(x)[:, 1].sum()
    (r,) = torch.autograd.grad(score, x)
    return r, mode.relu_calls


@pytest.mark.parametrize("rule", RULES)
def test_every_relu_variant_gives_identical_results(rule):
    torch.manual_seed(0)
    reference = SmallNet("module")
    x = torch.randn(3, 3, 8, 8)
    expected, calls = _explain(reference, x, rule)
    assert calls == 2
    for kind in VARIANTS[1:]:
        model = SmallNet(kind)
        model.load_state_dict(reference.state_dict())
        result, calls = _explain(model, x, rule)
        assert calls == 2, kind
        torch.testing.assert_close(result, expected, rtol=0, atol=0, msg=kind)


def test_deeplift_treats_every_relu_variant_alike():
    torch.manual_seed(0)
    reference = SmallNet("module")
    x, baseline = torch.randn(3, 3, 8, 8), torch.randn(3, 8, 8)
    expected, gap = A.deeplift(reference, x, target=1, baseline=baseline, return_gap=True)
    assert gap.abs().max() < 1e-4
    for kind in VARIANTS[1:]:
        model = SmallNet(kind)
        model.load_state_dict(reference.state_dict())
        result = A.deeplift(model, x, target=1, baseline=baseline)
        torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-6, msg=kind)


class Lookalike(nn.Module):
    """Not a ReLU, though written like one: every rule must leave it to plain autograd."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        h = self.linear(x)
        if self.kind == "clamp(min=0.5)":
            h = h.clamp(min=0.5)
        elif self.kind == "clamp(0, 6)":
            h = h.clamp(0, 6)
        elif self.kind == "maximum(x, ones)":
            h = torch.maximum(h, torch.ones(4))
        elif self.kind == "threshold(x, 0, -1)":
            h = F.threshold(h, 0.0, -1.0)
        elif self.kind == "max(x, dim)":
            h = torch.max(h, 1, keepdim=True).values * h
        return h[:, :2]


@pytest.mark.parametrize(
    "kind",
    ["clamp(min=0.5)", "clamp(0, 6)", "maximum(x, ones)", "threshold(x, 0, -1)", "max(x, dim)"],
)
def test_lookalikes_that_are_not_relus_are_left_alone(kind):
    torch.manual_seed(0)
    model = Lookalike(kind)
    x = torch.randn(5, 4) * 3
    plain = x.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(model(plain)[:, 1].sum(), plain)
    for rule in RULES:
        r, calls = _explain(model, x, rule)
        assert calls == 0, (kind, rule)
        torch.testing.assert_close(r, autograd, rtol=0, atol=0)


def test_the_rules_differ_from_each_other_and_gradient_is_autograd():
    torch.manual_seed(0)
    model = SmallNet("F.relu")
    x = torch.randn(2, 3, 8, 8)
    maps = {rule: _explain(model, x, rule)[0] for rule in RULES}
    plain = x.clone().requires_grad_(True)
    (autograd,) = torch.autograd.grad(model(plain)[:, 1].sum(), plain)
    torch.testing.assert_close(maps["gradient"], autograd)
    assert not torch.allclose(maps["gradient"], maps["deconvnet"])
    assert not torch.allclose(maps["gradient"], maps["guided"])
    assert not torch.allclose(maps["deconvnet"], maps["guided"])


def test_rule_is_gone_after_the_block_also_after_an_error():
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="boom"):
        with use_rule("deconvnet"):
            raise RuntimeError("boom")
    (r,) = torch.autograd.grad(torch.relu(x), x, torch.tensor([3.0, -1.0]))
    assert r.tolist() == [0.0, -1.0]  # the plain gradient again


def test_no_grad_forward_inside_the_rule_is_untouched():
    x = torch.tensor([-1.0, 2.0])
    with use_rule("guided"), torch.no_grad():
        assert torch.relu(x).tolist() == [0.0, 2.0]
