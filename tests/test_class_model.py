"""Class model visualization: every class is reached, the objective is the one on the slide."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lecture_lib.class_model import GREY, NOISE, visualize
from lecture_lib.data import CLASSES
from lecture_lib.targets import Neuron


@pytest.fixture(scope="module")
def class_models(shapes_net):
    """The default class model of every class, computed once."""
    return {c: visualize(shapes_net, c) for c in range(len(CLASSES))}


def start_image(seed=0):
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(3, 64, 64, generator=generator, dtype=torch.float64)  # as visualize draws
    return (GREY + NOISE * noise).clamp(0, 1).float()


@pytest.mark.parametrize("c", range(len(CLASSES)))
def test_every_class_model_is_classified_as_its_class(shapes_net, class_models, c):
    image, _ = class_models[c]
    with torch.no_grad():
        probability = shapes_net(image[None]).softmax(dim=1)[0, c].item()
    assert probability >= 0.9, f"class {c} ({CLASSES[c]}): P_c = {probability:.3f}"


@pytest.mark.parametrize("c", range(len(CLASSES)))
def test_image_shape_range_and_scores(shapes_net, class_models, c):
    image, scores = class_models[c]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1
    assert scores.shape == (100,)
    with torch.no_grad():
        final = shapes_net(image[None])[0, c].item()
        start = shapes_net(start_image()[None])[0, c].item()
    assert scores[-1].item() == pytest.approx(final, abs=1e-4)  # S_c of the returned image
    assert scores[-1].item() > start  # the ascent raised the class score


def test_score_objective_raises_the_score_overall(shapes_net):
    _, scores = visualize(shapes_net, 2, objective="score", steps=40, l2=1e-3)
    assert scores[-1] > scores[0] + 10
    assert scores[-10:].mean() > scores[:10].mean()
    assert (scores.diff() > 0).float().mean() > 0.8


@pytest.mark.parametrize("objective", ["score", "log_softmax", "softmax"])
def test_first_step_is_adams_step_along_the_slides_gradient(shapes_net, objective):
    """Adam's first step moves every value by lr * sign(gradient) of O_c(I) - l2 ||I - 0.5||^2."""
    lr, l2, c = 0.01, 0.05, 3
    image, _ = visualize(
        shapes_net, c, steps=1, lr=lr, l2=l2, objective=objective, jitter=0, blur_every=0
    )
    start = start_image().requires_grad_(True)
    logits = shapes_net(start[None])[0]
    value = {
        "score": logits[c],
        "log_softmax": logits.log_softmax(0)[c],
        "softmax": logits.softmax(0)[c],
    }[objective]
    (grad,) = torch.autograd.grad(value - l2 * ((start - 0.5) ** 2).sum(), start)
    expected = (start.detach() + lr * grad.sign()).clamp(0, 1)
    clear = grad.abs() > 1e-4  # Adam's epsilon 1e-8 shifts the step of tiny gradients
    torch.testing.assert_close(image[clear], expected[clear], atol=1e-5, rtol=0)
    assert clear.float().mean() > 0.5
    for p in shapes_net.parameters():
        p.grad = None


def test_stronger_l2_keeps_the_image_closer_to_grey(shapes_net):
    distances = []
    for l2 in (1e-4, 1e-2, 1.0):
        image, _ = visualize(shapes_net, 0, objective="score", steps=40, l2=l2)
        distances.append((image - 0.5).norm().item())
    assert distances[0] > distances[1] > distances[2]


def test_deterministic_for_a_seed_and_the_global_rng_untouched(shapes_net):
    state = torch.get_rng_state()
    first = visualize(shapes_net, 4, steps=12)
    torch.manual_seed(123)
    torch.rand(10)
    state = torch.get_rng_state()
    second = visualize(shapes_net, 4, steps=12)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    other = visualize(shapes_net, 4, steps=12, seed=1)
    assert not torch.equal(first[0], other[0])


def test_regularisers_change_the_image(shapes_net):
    plain, _ = visualize(shapes_net, 1, steps=8, jitter=0, blur_every=0)
    jittered, _ = visualize(shapes_net, 1, steps=8, jitter=3, blur_every=0)
    blurred, _ = visualize(shapes_net, 1, steps=8, jitter=0, blur_every=2, blur_sigma=1.0)
    assert not torch.equal(plain, jittered)
    # blurring smooths: neighbouring pixels differ less
    roughness = lambda im: (im[:, 1:] - im[:, :-1]).abs().mean().item()  # noqa: E731
    assert roughness(blurred) < roughness(plain)


def test_model_left_as_it_came(shapes_net):
    shapes_net.train()
    try:
        state = {k: v.clone() for k, v in shapes_net.state_dict().items()}
        visualize(shapes_net, 1, steps=3)
        assert all(m.training for m in shapes_net.modules())
        assert all(p.grad is None for p in shapes_net.parameters())
        assert all(p.requires_grad for p in shapes_net.parameters())
        for k, v in shapes_net.state_dict().items():
            assert torch.equal(v, state[k])
        with pytest.raises(ValueError):
            visualize(shapes_net, 9, steps=3)
        assert all(m.training for m in shapes_net.modules())
        for m in shapes_net.modules():
            assert not m._forward_hooks and not m._backward_hooks
    finally:
        shapes_net.eval()


def test_target_may_be_a_numpy_or_tensor_integer(shapes_net):
    a, _ = visualize(shapes_net, 2, steps=3)
    b, _ = visualize(shapes_net, np.int64(2), steps=3)
    c, _ = visualize(shapes_net, torch.tensor(2), steps=3)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_neuron_target_raises_the_channels_activity(shapes_net):
    neuron = Neuron("conv3", 7)
    image, scores = visualize(shapes_net, neuron, objective="score", steps=20, l2=1e-3)
    assert scores[-1] > scores[0]
    with pytest.raises(ValueError, match="channel"):
        visualize(shapes_net, Neuron("conv3", 99), objective="score", steps=2)
    with pytest.raises(ValueError, match="Neuron target has no softmax"):
        visualize(shapes_net, neuron, steps=2, objective="softmax")


@pytest.mark.parametrize(
    "target, error, message",
    [
        (5, ValueError, r"out of range.*0\.\.4"),
        (-1, ValueError, "out of range"),
        (1.0, TypeError, "a class index"),
        ([0, "square"], TypeError, "a list of class indices"),
        ([0, 7], ValueError, r"out of range.*0\.\.4"),
        ([], ValueError, "empty list"),
        (True, TypeError, "a class index"),
        ("circle", TypeError, "a class index"),
    ],
)
def test_bad_target_says_what_is_wrong(shapes_net, target, error, message):
    with pytest.raises(error, match=message):
        visualize(shapes_net, target, steps=2)


@pytest.mark.parametrize("objective", ["score", "log_softmax", "softmax"])
def test_several_classes_in_one_batch_equal_each_class_alone(shapes_net, objective):
    """The batched ascent is each class's own ascent: the same start, jitter, Adam state per
    pixel and blur (a list of three classes against three separate calls). In float64: Adam
    divides each gradient by its own running size, so once log P_c nears 0 the rounding of
    float32 passes of different batch sizes shows in the images."""
    model = copy.deepcopy(shapes_net).double()
    options = dict(steps=12, blur_every=3, objective=objective)
    images, scores = visualize(model, [4, 0, 2], **options)
    assert images.shape == (3, 3, 64, 64) and scores.shape == (3, 12)
    assert images.dtype == torch.float64
    for k, c in enumerate([4, 0, 2]):
        image, score = visualize(model, c, **options)
        torch.testing.assert_close(images[k], image, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(scores[k], score, rtol=1e-6, atol=1e-6)
    seen = []
    visualize(
        shapes_net, [1, 3], steps=2, callback=lambda step, im, sc: seen.append((im.shape, sc.shape))
    )
    assert seen == [((2, 3, 64, 64), (2, 1)), ((2, 3, 64, 64), (2, 2))]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be an int >= 1"),
        (dict(lr=0), "lr must be positive"),
        (dict(l2=-1.0), "l2 must be a number >= 0"),
        (dict(jitter=-2), "jitter must be an int >= 0"),
        (dict(objective="posterior"), "objective must be one of"),
        (dict(size=32), "does not accept an image of shape"),
        (dict(channels=1), "does not accept an image of shape"),
    ],
)
def test_bad_options_say_what_is_wrong(shapes_net, kwargs, message):
    with pytest.raises(ValueError, match=message):
        visualize(shapes_net, 0, **kwargs)


def test_works_for_any_classifier_and_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    image, scores = visualize(
        model, 2, objective="score", steps=20, size=8, channels=1, jitter=0, blur_every=0
    )
    assert image.shape == (1, 8, 8) and scores.shape == (20,)
    assert scores[-1] > scores[0]


def test_the_ascent_runs_on_the_threads_of_the_policy_and_restores_the_setting(
    shapes_net, monkeypatch
):
    import lecture_lib.class_model as cm
    from lecture_lib import threads as policy

    seen = []
    original = cm._objective

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    threads = torch.get_num_threads()
    monkeypatch.setattr(policy, "threads_for_small_work", lambda caller=None: 1)  # a busy machine
    monkeypatch.setattr(cm, "_objective", spy)
    visualize(shapes_net, 1, steps=2)
    with pytest.raises(ValueError):
        visualize(shapes_net, 9, steps=2)
    assert seen == [1, 1]
    assert torch.get_num_threads() == threads
