"""SmoothGrad against a plain loop over the same noise draws."""

import copy
from functools import partial

import pytest
import torch

from lecture_lib import attribution as A
from lecture_lib.targets import Neuron


def plain_loop(method, model, x, target, samples, noise, seed, squared=False):
    """The definition, one noisy copy at a time: noise drawn sample after sample, each of the
    batch's shape, from a generator seeded with ``seed``; sigma = noise * (max - min) per image."""
    generator = torch.Generator().manual_seed(seed)
    spread = x.flatten(1).amax(dim=1) - x.flatten(1).amin(dim=1)
    sigma = (noise * spread).view(-1, 1, 1, 1)
    total = 0
    for _ in range(samples):
        epsilon = torch.randn(x.shape, generator=generator)
        m = method(model, x + sigma * epsilon, target)
        total = total + (m.square() if squared else m)
    return total / samples


@pytest.mark.parametrize(
    "method", [A.gradient, A.saliency, A.guided_backprop, A.grad_cam], ids=lambda m: m.__name__
)
def test_smoothgrad_is_the_average_over_the_same_noise(shapes_net, shapes_batch, method):
    x = shapes_batch[0][:3]
    target = shapes_net(x).argmax(1)
    expected = plain_loop(method, shapes_net, x, target, samples=5, noise=0.15, seed=3)
    got = A.smoothgrad(method, shapes_net, x, samples=5, noise=0.15, seed=3, batch_size=7)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_squared_variant(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    expected = plain_loop(A.gradient, shapes_net, x, 1, samples=4, noise=0.2, seed=0, squared=True)
    got = A.smoothgrad(A.gradient, shapes_net, x, 1, samples=4, noise=0.2, squared=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-8)
    assert (got >= 0).all()


def test_batching_and_seed(shapes_net, shapes_batch):
    x = shapes_batch[0][:3]
    run = partial(A.smoothgrad, A.gradient, shapes_net, x, samples=6, noise=0.1)
    state = torch.get_rng_state()
    one_by_one, all_at_once = run(batch_size=1), run(batch_size=256)
    assert torch.equal(torch.get_rng_state(), state)  # the global random state is not used
    torch.testing.assert_close(one_by_one, all_at_once, rtol=1e-4, atol=1e-7)
    assert torch.equal(run(seed=5), run(seed=5))
    assert not torch.allclose(run(seed=5), run(seed=6))


def test_no_noise_gives_the_method_and_the_target_is_the_clean_prediction(shapes_net, shapes_batch):
    x = shapes_batch[0][:3]
    plain = A.gradient(shapes_net, x)
    torch.testing.assert_close(A.smoothgrad(A.gradient, shapes_net, x, samples=3, noise=0.0), plain)
    # a lot of noise changes the network's prediction; the explained class stays the clean one
    predicted = shapes_net(x).argmax(1)
    noisy = A.smoothgrad(A.gradient, shapes_net, x, samples=3, noise=1.0)
    torch.testing.assert_close(
        noisy, A.smoothgrad(A.gradient, shapes_net, x, predicted, samples=3, noise=1.0)
    )


def test_single_example_neuron_target_and_options(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    batched = A.smoothgrad(A.saliency, shapes_net, x, 2, samples=3)
    single = A.smoothgrad(A.saliency, shapes_net, x[1], 2, samples=3)
    assert single.shape == (64, 64)
    neuron = A.smoothgrad(A.guided_backprop, shapes_net, x, Neuron("conv3", 4), samples=2)
    assert neuron.shape == x.shape
    ig = partial(A.integrated_gradients, steps=4)
    assert A.smoothgrad(ig, shapes_net, x, samples=2).shape == x.shape
    assert batched.shape == (2, 64, 64)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(samples=0), ValueError, "samples must be an int >= 1, got samples=0"),
        (dict(samples=2.5), ValueError, "samples must be an int >= 1"),
        (dict(noise=-0.1), ValueError, "fraction of the input range.*noise=-0.1"),
        (dict(noise=float("inf")), ValueError, "finite number >= 0.*noise=inf"),
        (dict(noise=float("nan")), ValueError, "finite number >= 0.*noise=nan"),
        (dict(seed=-1), ValueError, "seed must be an int >= 0"),
        (dict(batch_size=0), ValueError, "batch_size must be an int >= 1"),
        (dict(target=5), ValueError, "target 5 is out of range"),
    ],
)
def test_bad_options_are_explained(shapes_net, shapes_batch, kwargs, error, message):
    with pytest.raises(error, match=message):
        A.smoothgrad(A.gradient, shapes_net, shapes_batch[0][:2], **kwargs)


def test_bad_methods_are_explained(shapes_net, shapes_batch):
    x = shapes_batch[0][:2]
    with pytest.raises(TypeError, match="method must be an attribution function"):
        A.smoothgrad("gradient", shapes_net, x)
    with pytest.raises(ValueError, match="one map per example.*returned \\(\\)"):
        A.smoothgrad(lambda m, x, t: x.sum(), shapes_net, x, samples=1)


def test_model_left_as_it_came(shapes_net, shapes_batch):
    model = copy.deepcopy(shapes_net).train()
    x = shapes_batch[0][:2]
    kept = x.clone()
    A.smoothgrad(A.gradient, model, x, samples=2)
    with pytest.raises(ValueError):
        A.smoothgrad(A.gradient, model, x, target=9, samples=2)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.equal(x, kept)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", [A.gradient, A.grad_cam])
def test_the_same_under_no_grad_and_inference_mode(shapes_net, shapes_batch, mode, method):
    x = shapes_batch[0][:2]
    want = A.smoothgrad(method, shapes_net, x, samples=3)
    with mode():
        got = A.smoothgrad(method, shapes_net, x, samples=3, target=torch.tensor([0, 1]))
    torch.testing.assert_close(got, A.smoothgrad(method, shapes_net, x, samples=3, target=[0, 1]))
    with mode():
        torch.testing.assert_close(A.smoothgrad(method, shapes_net, x, samples=3), want)
