"""The exercise checks: each passes a correct answer and fails a typical wrong one with a message
that says where, what was expected and which mistake the answer looks like."""

import copy
import math
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from lecture_lib import activations, attribution, checks, evaluate, perturbation
from lecture_lib.models import load_shapes_net

# The lecture's tables ("Difference in backpropagating through ReLU"), typed from the slides.
LECTURE_TABLES = {
    "gradient": [[-2, 0, -1], [6, 0, 0], [0, -1, 3]],
    "deconvnet": [[0, 3, 0], [6, 0, 1], [2, 0, 3]],
    "guided": [[0, 0, 0], [6, 0, 0], [0, 0, 3]],
}


@pytest.fixture
def printed(capsys):
    def read() -> str:
        return capsys.readouterr().out

    return read


# --- the ReLU rules -----------------------------------------------------------------------------


def numpy_rule(rule):
    def backward(x, r):
        keep = {"gradient": x > 0, "deconvnet": r > 0, "guided": (x > 0) & (r > 0)}[rule]
        return np.where(keep, r, 0)

    return backward


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_relu_backward_passes_a_correct_rule_on_the_slide_and_random_arrays(rule, printed):
    checks.check_relu_backward(numpy_rule(rule), rule)
    checks.check_relu_backward(numpy_rule(rule), rule, seed=3)
    out = printed()
    assert out.count("✓") == 2 and "lecture's 3x3 example" in out and "random arrays" in out


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_relu_backward_accepts_the_slides_own_table(rule):
    def slide(x, r):
        return np.array(LECTURE_TABLES[rule])

    checks.check_relu_backward(slide, rule)
    with pytest.raises(AssertionError):  # a table is no rule: random arrays find it out
        checks.check_relu_backward(slide, rule, seed=1)


def test_the_gradient_rule_handed_in_for_deconvnet_is_named():
    with pytest.raises(AssertionError) as error:
        checks.check_relu_backward(numpy_rule("gradient"), "deconvnet")
    message = str(error.value)
    assert "entry (0, 0): got -2, expected 0" in message
    assert "keeps R^{l+1} where R^{l+1} > 0, whatever the forward input" in message
    assert "exactly what the gradient rule gives" in message


def test_guided_without_the_forward_mask_is_named_deconvnet():
    with pytest.raises(AssertionError, match="exactly what the DeconvNet rule gives"):
        checks.check_relu_backward(numpy_rule("deconvnet"), "guided")


def test_relu_backward_that_changes_its_input_in_place_fails():
    def in_place(x, r):
        r[x <= 0] = 0
        return r

    with pytest.raises(AssertionError, match="in place"):
        checks.check_relu_backward(in_place, "gradient")


def test_relu_backward_without_return_is_explained():
    with pytest.raises(AssertionError, match="returned None"):
        checks.check_relu_backward(lambda x, r: None, "guided")


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_relu_function_passes_the_reference_function(rule, printed):
    function = checks.reference_relu_function(rule)
    checks.check_relu_function(function, rule)
    checks.check_relu_function(function, rule, seed=5)
    assert printed().count("✓") == 2


def test_relu_function_with_the_wrong_backward_or_forward_fails():
    with pytest.raises(AssertionError, match="exactly what the gradient rule gives"):
        checks.check_relu_function(checks.reference_relu_function("gradient"), "guided")

    class Identity(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad.clamp(min=0)

    with pytest.raises(AssertionError, match=r"forward, entry .*usual ReLU forward"):
        checks.check_relu_function(Identity, "deconvnet")
    with pytest.raises(AssertionError, match="subclass of torch.autograd.Function"):
        checks.check_relu_function(torch.relu, "deconvnet")


def replace_relus(model, relu_function, nested=True):
    class Layer(nn.Module):
        def forward(self, x):
            return relu_function.apply(x)

    new = copy.deepcopy(model)
    modules = new.named_modules() if nested else new.named_children()
    for name in [n for n, m in modules if isinstance(m, nn.ReLU)]:
        parent, _, child = name.rpartition(".")
        setattr(new.get_submodule(parent), child, Layer())
    return new


@pytest.mark.parametrize("rule", ["deconvnet", "guided"])
def test_relu_replacement_passes_on_shapes_net_and_nested_blocks(rule, printed):
    checks.check_relu_replacement(replace_relus, rule)
    checks.check_relu_replacement(replace_relus, rule, seed=7)
    out = printed()
    assert "ShapesNet" in out and "nested blocks" in out


def test_relu_replacement_that_misses_nested_relus_names_them():
    flat = partial(replace_relus, nested=False)
    checks.check_relu_replacement(flat, "deconvnet")  # ShapesNet's ReLUs are all children
    with pytest.raises(AssertionError, match=r"still holds nn.ReLU layers: 0.1, 1.1"):
        checks.check_relu_replacement(flat, "deconvnet", seed=7)


def test_relu_replacement_on_the_model_itself_fails():
    def in_place(model, relu_function):
        new = replace_relus(model, relu_function)
        for name, layer in new.named_children():
            setattr(model, name, layer)
        return model

    with pytest.raises(AssertionError, match=r"copy.deepcopy\(model\)"):
        checks.check_relu_replacement(in_place, "deconvnet")


def guided_hooks(model, images, target, remove=True, clamp_input=True):
    def hook(module, grad_input, grad_output):
        return ((grad_input if clamp_input else grad_output)[0].clamp(min=0),)

    handles = [
        m.register_full_backward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)
    ]
    x = images.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[torch.arange(len(x)), target].sum(), x)
    if remove:
        for handle in handles:
            handle.remove()
    return grad


def test_guided_hooks_pass_and_their_mistakes_are_named(printed):
    checks.check_guided_hooks(guided_hooks)
    checks.check_guided_hooks(guided_hooks, seed=2)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="left hooks on relu1, relu2"):
        checks.check_guided_hooks(partial(guided_hooks, remove=False))
    with pytest.raises(AssertionError, match="exactly what the DeconvNet rule gives"):
        checks.check_guided_hooks(partial(guided_hooks, clamp_input=False))
    with pytest.raises(AssertionError, match="predicted class"):
        checks.check_guided_hooks(lambda m, x, t: attribution.guided_backprop(m, x))


# --- gradients: saliency, input x gradient, class model --------------------------------------


def test_saliency_passes_the_library_and_names_typical_mistakes(printed):
    checks.check_saliency(attribution.saliency)
    checks.check_saliency(attribution.saliency, seed=4)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError) as error:
        checks.check_saliency(partial(attribution.saliency, reduce="sum"))
    assert "image 0, pixel (0, 0)" in str(error.value)
    assert "sum over colour channels of |w| (the lecture takes the max)" in str(error.value)
    with pytest.raises(AssertionError, match=r"got shape \(3, 3, 64, 64\), expected \(3, 64, 64\)"):
        checks.check_saliency(attribution.gradient)
    with pytest.raises(AssertionError, match="saliency of the predicted class"):
        checks.check_saliency(lambda m, x, t: attribution.saliency(m, x))
    with pytest.raises(AssertionError, match="without the absolute value"):
        checks.check_saliency(lambda m, x, t: attribution.gradient(m, x, t).amax(1))


def softmax_saliency(model, images, target):
    x = images.clone().requires_grad_(True)
    p = model(x).softmax(dim=1)[torch.arange(len(x)), target]
    (w,) = torch.autograd.grad(p.sum(), x)
    return w.abs().amax(dim=1)


def test_saliency_of_the_probability_is_named():
    with pytest.raises(AssertionError, match="softmax probability"):
        checks.check_saliency(softmax_saliency)


def test_input_x_gradient_passes_the_library_and_fails_the_gradient_alone():
    checks.check_input_x_gradient(attribution.input_x_gradient)
    checks.check_input_x_gradient(attribution.input_x_gradient, seed=6)
    with pytest.raises(AssertionError, match="the gradient alone"):
        checks.check_input_x_gradient(attribution.gradient)
    with pytest.raises(AssertionError, match="keep the sign"):
        checks.check_input_x_gradient(lambda m, x, t: attribution.input_x_gradient(m, x, t).abs())


def ascent(model, image, target, l2, lr, factor=2.0, sign=1.0):
    x = image.detach().clone().requires_grad_(True)
    s = model(x[None])[0, target]
    (g,) = torch.autograd.grad(s, x)
    return (x + sign * lr * (g - factor * l2 * x)).detach()


def autograd_ascent(model, image, target, l2, lr):
    x = image.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x[None])[0, target] - l2 * x.pow(2).sum(), x)
    return (x + lr * g).detach()


def test_ascent_step_passes_and_names_the_typical_mistakes(printed):
    checks.check_ascent_step(autograd_ascent)
    checks.check_ascent_step(ascent, seed=8)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="a descent step"):
        checks.check_ascent_step(partial(ascent, sign=-1.0))
    with pytest.raises(AssertionError, match="without the factor 2"):
        checks.check_ascent_step(partial(ascent, factor=1.0))
    with pytest.raises(AssertionError, match="penalty is subtracted"):
        checks.check_ascent_step(partial(ascent, factor=-2.0))
    with pytest.raises(AssertionError, match="without the L2 term"):
        checks.check_ascent_step(partial(ascent, factor=0.0))


def test_ascent_step_that_changes_the_image_in_place_fails():
    def in_place(model, image, target, l2, lr):
        new = autograd_ascent(model, image, target, l2, lr)
        image.copy_(new)
        return new

    with pytest.raises(AssertionError, match="changed `image` in place"):
        checks.check_ascent_step(in_place)


# --- perturbation and saturation ---------------------------------------------------------------


def test_saturation_by_hand_accepts_the_lectures_numbers_only():
    checks.check_saturation_by_hand(
        {"gradient": (0, 0), "single_feature": (0.0, 0.0), "integrated_gradients": (0.5, 0.5)}
    )
    with pytest.raises(AssertionError) as error:
        checks.check_saturation_by_hand(
            {"gradient": (1, 1), "single_feature": (0, 0), "integrated_gradients": (0.5, 0.5)}
        )
    assert "gradient: your value for i1 and i2 is not right. Which branch" in str(error.value)
    assert "expected" not in str(error.value)  # a hint, not the answer
    with pytest.raises(AssertionError, match=r"integrated_gradients: .* i2 .*completeness"):
        checks.check_saturation_by_hand(
            {"gradient": (0, 0), "single_feature": (0, 0), "integrated_gradients": (0.5, 1)}
        )
    with pytest.raises(AssertionError, match="no entry 'single_feature'"):
        checks.check_saturation_by_hand({"gradient": (0, 0), "integrated_gradients": (0.5, 0.5)})


def loop_integrated_gradients(model, x, baseline, steps, alpha_offset=0.5, scale=True):
    total = torch.zeros_like(x)
    for k in range(steps):
        point = (baseline + (k + alpha_offset) / steps * (x - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(model(point)[:, 0].sum(), point)
        total += grad
    return (x - baseline) * total / steps if scale else total / steps


def test_integrated_gradients_passes_a_plain_loop_and_names_mistakes(printed):
    checks.check_integrated_gradients(loop_integrated_gradients)
    checks.check_integrated_gradients(loop_integrated_gradients, seed=9)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match=r"without the factor \(x - x'\)"):
        checks.check_integrated_gradients(partial(loop_integrated_gradients, scale=False), seed=9)
    with pytest.raises(AssertionError, match="left Riemann sum"):
        checks.check_integrated_gradients(
            partial(loop_integrated_gradients, alpha_offset=0.0), seed=9
        )


def loop_occlusion(model, image, target, window, stride, baseline, mean=True):
    _, height, width = image.shape
    drops, counts = torch.zeros(height, width), torch.zeros(height, width)
    with torch.no_grad():
        score = model(image[None])[0, target]
        for top in range(0, height - window + 1, stride):
            for left in range(0, width - window + 1, stride):
                hidden = image.clone()
                hidden[:, top : top + window, left : left + window] = baseline
                drops[top : top + window, left : left + window] += (
                    score - model(hidden[None])[0, target]
                )
                counts[top : top + window, left : left + window] += 1
    return drops / counts if mean else drops


def test_occlusion_passes_a_plain_loop_and_names_mistakes(printed):
    checks.check_occlusion(loop_occlusion)
    checks.check_occlusion(loop_occlusion, window=24, stride=8, seed=3)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="not divided by the number of windows"):
        checks.check_occlusion(partial(loop_occlusion, mean=False))
    with pytest.raises(AssertionError, match="opposite sign"):
        checks.check_occlusion(lambda *args: -loop_occlusion(*args))


def test_occlusion_with_the_library_passes():
    checks.check_occlusion(
        lambda m, im, t, w, s, b: perturbation.occlusion(m, im, t, w, s, b), seed=5
    )


def loop_prediction_difference(model, image, target, window, stride, data, laplace_n, log=None):
    """The weight of evidence in float64, one window and one data image at a time."""
    log = log or math.log2
    _, height, width = image.shape

    def odds(p):
        p = p if laplace_n is None else (p * laplace_n + 1) / (laplace_n + 5)
        return log(p / (1 - p))

    def probability(x):
        return torch.softmax(model(x[None]).double(), dim=1)[0, target].item()

    total, counts = torch.zeros(height, width), torch.zeros(height, width)
    with torch.no_grad():
        whole = odds(probability(image))
        for top in range(0, height - window + 1, stride):
            for left in range(0, width - window + 1, stride):
                p = 0.0
                for other in data:
                    x = image.clone()
                    x[:, top : top + window, left : left + window] = other[
                        :, top : top + window, left : left + window
                    ]
                    p += probability(x) / len(data)
                total[top : top + window, left : left + window] += whole - odds(p)
                counts[top : top + window, left : left + window] += 1
    return total / counts


def test_prediction_difference_passes_a_plain_loop_and_names_mistakes(printed):
    checks.check_prediction_difference(loop_prediction_difference, window=32, stride=16)
    checks.check_prediction_difference(loop_prediction_difference, window=32, stride=32, seed=3)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="opposite sign"):
        checks.check_prediction_difference(
            lambda *args: -loop_prediction_difference(*args), window=32, stride=32
        )
    with pytest.raises(AssertionError, match="Laplace correction"):
        checks.check_prediction_difference(
            lambda *args: loop_prediction_difference(*args[:-1], None), window=32, stride=32
        )
    with pytest.raises(AssertionError, match="natural logarithm"):
        checks.check_prediction_difference(
            partial(loop_prediction_difference, log=math.log), window=32, stride=32
        )


# --- activations ----------------------------------------------------------------------------------


def hooked_maps(model, images, layers, remove=True, late_binding=False, keep_input=False):
    maps, handles = {}, []
    for name in layers:
        if late_binding:

            def hook(module, inputs, output):
                maps[name] = output.detach()  # noqa: B023 (the mistake under test)
        else:

            def hook(module, inputs, output, name=name):
                maps[name] = (inputs[0] if keep_input else output).detach()

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    with torch.no_grad():
        model(images)
    if remove:
        for handle in handles:
            handle.remove()
    return maps


def test_feature_maps_pass_and_their_mistakes_are_named(printed):
    checks.check_feature_maps(hooked_maps)
    checks.check_feature_maps(activations.feature_maps, layers=["conv1", "pool2", "fc1"], seed=3)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="left hooks on relu1, conv2, relu4"):
        checks.check_feature_maps(partial(hooked_maps, remove=False))
    with pytest.raises(AssertionError, match="loop variable"):
        checks.check_feature_maps(partial(hooked_maps, late_binding=True))
    with pytest.raises(AssertionError, match=r"the \*input\* of 'relu1'"):
        checks.check_feature_maps(partial(hooked_maps, keep_input=True))


def measured_receptive_fields() -> dict[str, int]:
    """An independent measurement: in a copy of ShapesNet made linear and positive (ReLU ->
    identity, max-pool -> average-pool, every weight 1), the gradient of the centre unit of a
    layer is non-zero exactly on the pixels that unit sees."""
    model = load_shapes_net()
    linear = nn.Sequential()
    for name, layer in model.named_children():
        if isinstance(layer, nn.ReLU):
            layer = nn.Identity()
        elif isinstance(layer, nn.MaxPool2d):
            layer = nn.AvgPool2d(layer.kernel_size, layer.stride)
        elif isinstance(layer, nn.Conv2d):
            layer = copy.deepcopy(layer)
            nn.init.ones_(layer.weight)
        linear.add_module(name, layer)
    fields = {}
    for name, layer in linear.named_children():
        if not isinstance(layer, (nn.Conv2d, nn.AvgPool2d)):
            continue
        x = torch.zeros(1, 3, 64, 64, requires_grad=True)
        out = linear[: list(dict(linear.named_children())).index(name) + 1](x)
        centre = out.shape[-1] // 2
        (grad,) = torch.autograd.grad(out[0, :, centre, centre].sum(), x)
        rows = grad[0].abs().sum(dim=(0, 2)).nonzero()
        fields[name] = int(rows.max() - rows.min() + 1)
    return fields


def test_receptive_fields_agree_with_a_measurement():
    assert checks.receptive_fields(load_shapes_net()) == measured_receptive_fields()
    assert checks.receptive_fields(load_shapes_net())["conv4"] == 38


def test_receptive_fields_check_explains_the_jump_without_the_answer():
    right = {"conv1": 3, "pool1": 4, "conv2": 8, "pool2": 10}
    right.update(conv3=18, pool3=22, conv4=38, pool4=46)
    checks.check_receptive_fields(right)
    without_jump = dict(right, conv2=6)
    with pytest.raises(AssertionError) as error:
        checks.check_receptive_fields(without_jump)
    assert "conv2: 6 is not right" in str(error.value) and "j = 2 pixels" in str(error.value)
    assert "8" not in str(error.value)  # a hint, not the answer
    with pytest.raises(AssertionError, match=r"missing: \['pool4'\]"):
        checks.check_receptive_fields({k: v for k, v in right.items() if k != "pool4"})


# --- evaluating explanations ---------------------------------------------------------------------


def pointing_hits(maps, masks, swap=False, batch_max=False):
    n, h, w = maps.shape
    peak = maps.flatten(1).argmax(dim=1)
    if batch_max:
        peak = torch.full((n,), int(maps.argmax()) % (h * w))
    rows, cols = peak // w, peak % w
    if swap:
        rows, cols = cols, rows
    return masks[torch.arange(n), rows, cols]


def test_pointing_game_passes_a_plain_argmax_and_names_mistakes(printed):
    checks.check_pointing_game(pointing_hits)
    checks.check_pointing_game(pointing_hits, seed=11)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="argmax of the mask"):
        checks.check_pointing_game(lambda maps, masks: torch.ones(len(maps)))
    with pytest.raises(AssertionError, match="row and the column of the maximum swapped"):
        checks.check_pointing_game(partial(pointing_hits, swap=True))
    with pytest.raises(AssertionError, match="one maximum for the whole batch"):
        checks.check_pointing_game(partial(pointing_hits, batch_max=True))
    with pytest.raises(AssertionError, match="returned one number.*one value per image"):
        checks.check_pointing_game(lambda maps, masks: pointing_hits(maps, masks).float().mean())
    with pytest.raises(AssertionError, match=r"got shape \(6, 64\), expected \(6,\)"):
        checks.check_pointing_game(lambda maps, masks: maps.argmax(dim=1))


def test_pointing_game_calling_the_library_is_noted(printed):
    checks.check_pointing_game(lambda m, k: evaluate.pointing_game(m, k, per_example=True))
    assert "Note: your answer calls lecture_lib.evaluate.pointing_game" in printed()


def loop_deletion(
    model,
    image,
    importance,
    target,
    steps,
    ascending=False,
    logits=False,
    fill="mean",
    chunks=False,
):
    c, h, w = image.shape
    order = importance.flatten().argsort(descending=not ascending)
    colour = {"mean": image.mean(dim=(1, 2)), "black": torch.zeros(c), "grey": image.mean()}[fill]
    curve = []
    for k in range(steps + 1):
        cut = k * (h * w // steps) if chunks else k * h * w // steps
        x = image.clone()
        for p in order[:cut].tolist():
            x[:, p // w, p % w] = colour
        with torch.no_grad():
            scores = model(x[None])[0]
        curve.append(scores[target] if logits else scores.softmax(dim=0)[target])
    return torch.stack(curve)


def test_deletion_curve_passes_a_pixel_loop_and_names_mistakes(printed):
    checks.check_deletion_curve(loop_deletion, steps=8)
    checks.check_deletion_curve(loop_deletion, steps=6, seed=12)
    assert printed().count("✓") == 2
    for options, named in [
        (dict(ascending=True), "least important pixels first"),
        (dict(logits=True), "instead of the probability"),
        (dict(fill="black"), r"black \(0\) instead of the image's mean colour"),
        (dict(fill="grey"), "one grey level"),
    ]:
        with pytest.raises(AssertionError, match=named):
            checks.check_deletion_curve(partial(loop_deletion, **options), steps=8)
    with pytest.raises(AssertionError, match=r"k \* \(H\*W // steps\).*leaves 4 pixels"):
        checks.check_deletion_curve(partial(loop_deletion, chunks=True), steps=6)
    with pytest.raises(AssertionError, match="step 0 is the image itself"):
        checks.check_deletion_curve(lambda *args: loop_deletion(*args)[1:], steps=8)


def test_deletion_curve_that_changes_the_image_in_place_fails():
    def in_place(model, image, importance, target, steps):
        curve = loop_deletion(model, image, importance, target, steps)
        image.zero_()
        return curve

    with pytest.raises(AssertionError, match="changed `image` in place"):
        checks.check_deletion_curve(in_place)


def average_ranks(x):
    """Rank = the number of smaller values + (the number of equal values + 1) / 2."""
    x = x.flatten().double()
    below = (x[None, :] < x[:, None]).sum(dim=1)
    equal = (x[None, :] == x[:, None]).sum(dim=1)
    return below + (equal + 1) / 2


def pearson(r, s):
    r, s = r - r.mean(), s - s.mean()
    return (r * s).sum() / ((r * r).sum() * (s * s).sum()).sqrt()


def order_ranks(x):
    return torch.argsort(torch.argsort(x.flatten(), stable=True)).double()


def test_spearman_passes_average_ranks_and_names_mistakes(printed):
    def spearman(a, b):
        return pearson(average_ranks(a), average_ranks(b))

    checks.check_spearman(spearman)
    checks.check_spearman(spearman, seed=13)
    assert printed().count("✓") == 2
    with pytest.raises(AssertionError, match="Pearson correlation of the values themselves"):
        checks.check_spearman(lambda a, b: pearson(a.flatten().double(), b.flatten().double()))
    with pytest.raises(AssertionError, match="ranks taken from argsort, which gives the order"):
        checks.check_spearman(
            lambda a, b: pearson(a.flatten().argsort().double(), b.flatten().argsort().double())
        )
    with pytest.raises(AssertionError, match="(?s)maps with tied values.*ranks that ignore ties"):
        checks.check_spearman(lambda a, b: pearson(order_ranks(a), order_ranks(b)))

    def shortcut(a, b):
        d, n = average_ranks(a) - average_ranks(b), a.numel()
        return 1 - 6 * (d * d).sum() / (n * (n * n - 1))

    with pytest.raises(AssertionError, match=r"1 - 6 Σ d² / \(n \(n² - 1\)\), exact only"):
        checks.check_spearman(shortcut)


# --- Grad-CAM, SmoothGrad, fooling images -------------------------------------------------------


def hooked_grad_cam(
    model,
    images,
    target,
    layer,
    remove=True,
    relu=True,
    average=True,
    upsample=True,
    mode="bilinear",
):
    kept = {}
    module = model.get_submodule(layer)
    handles = [
        module.register_forward_hook(lambda m, i, out: kept.update(maps=out.detach())),
        module.register_full_backward_hook(lambda m, gi, go: kept.update(grads=go[0])),
    ]
    x = images.clone().requires_grad_(True)
    torch.autograd.grad(model(x)[torch.arange(len(x)), target].sum(), x)
    if remove:
        for handle in handles:
            handle.remove()
    weights = kept["grads"].mean(dim=(2, 3), keepdim=True) if average else kept["grads"]
    cam = (weights * kept["maps"]).sum(dim=1)
    cam = cam.clamp(min=0) if relu else cam
    if not upsample:
        return cam
    options = {"align_corners": False} if mode == "bilinear" else {}
    return nn.functional.interpolate(cam[:, None], size=(64, 64), mode=mode, **options)[:, 0]


def test_grad_cam_passes_hooks_and_names_mistakes(printed):
    checks.check_grad_cam(hooked_grad_cam)
    checks.check_grad_cam(hooked_grad_cam, layer="conv3", seed=14)
    assert printed().count("✓") == 2
    for options, named in [
        (dict(relu=False), "without the ReLU"),
        (dict(average=False), "HiResCAM"),
        (dict(mode="nearest"), "nearest-neighbour"),
        (dict(upsample=False), r"the layer's resolution, 8 x 8.*mode='bilinear'"),
        (dict(remove=False), "left hooks on relu4"),
    ]:
        with pytest.raises(AssertionError, match=named):
            checks.check_grad_cam(partial(hooked_grad_cam, **options))
    with pytest.raises(AssertionError, match="summed over positions instead of averaged"):
        checks.check_grad_cam(lambda *args: 64 * hooked_grad_cam(*args))
    with pytest.raises(AssertionError, match="maps of conv4, before its ReLU"):
        checks.check_grad_cam(lambda m, x, t, layer: hooked_grad_cam(m, x, t, "conv4"))
    with pytest.raises(AssertionError, match="maps of relu3, after the ReLU"):
        checks.check_grad_cam(
            lambda m, x, t, layer: hooked_grad_cam(m, x, t, "relu3"), layer="conv3", seed=14
        )
    with pytest.raises(AssertionError, match="predicted class"):
        checks.check_grad_cam(
            lambda m, x, t, layer: hooked_grad_cam(m, x, m(x).argmax(dim=1), layer)
        )


def test_grad_cam_calling_the_library_is_noted(printed):
    checks.check_grad_cam(lambda m, x, t, layer: attribution.grad_cam(m, x, t, layer=layer))
    out = printed()
    assert "Note: your answer calls" in out and "lecture_lib.attribution.grad_cam," in out


def loop_smoothgrad(method, model, images, target, noise, reduce="mean", square=False):
    total = torch.zeros_like(method(model, images, target))
    for draw in noise:
        value = method(model, images + draw, target)
        total = total + (value.square() if square else value)
    return total / len(noise) if reduce == "mean" else total


def test_smoothgrad_passes_a_loop_and_names_mistakes(printed):
    checks.check_smoothgrad(loop_smoothgrad)
    checks.check_smoothgrad(loop_smoothgrad, method="saliency", seed=15)
    checks.check_smoothgrad(loop_smoothgrad, method="guided_backprop", seed=16)
    assert printed().count("✓") == 3
    with pytest.raises(AssertionError, match="not divided by their number"):
        checks.check_smoothgrad(partial(loop_smoothgrad, reduce="sum"))
    with pytest.raises(AssertionError, match="SmoothGrad-Squared"):
        checks.check_smoothgrad(partial(loop_smoothgrad, square=True))
    with pytest.raises(AssertionError, match="clean images"):
        checks.check_smoothgrad(lambda method, m, x, t, noise: method(m, x, t))
    with pytest.raises(AssertionError, match="last noisy copy only"):
        checks.check_smoothgrad(lambda method, m, x, t, noise: method(m, x + noise[-1], t))


def test_smoothgrad_agrees_with_the_library_on_the_library_s_own_noise():
    """The loop with the noise that attribution.smoothgrad draws gives attribution.smoothgrad."""
    model, images, target, _, method = checks._smoothgrad_case("gradient", None)
    generator = torch.Generator().manual_seed(0)
    spread = images.flatten(1).amax(dim=1) - images.flatten(1).amin(dim=1)
    draws = torch.stack([torch.randn(images.shape, generator=generator) for _ in range(5)])
    noise = 0.15 * spread.view(1, -1, 1, 1, 1) * draws
    ours = loop_smoothgrad(method, model, images, target, noise)
    library = attribution.smoothgrad(method, model, images, target, samples=5, noise=0.15)
    assert torch.allclose(ours, library, rtol=1e-4, atol=1e-7)


def signed_step(model, image, target, epsilon, margin=True, sign=True, clamp=True, towards=1.0):
    x = image.clone().requires_grad_(True)
    scores = model(x[None])[0]
    source = int(scores.argmax())
    objective = scores[target] - scores[source] if margin else scores[target]
    (g,) = torch.autograd.grad(objective, x)
    new = image + towards * epsilon * (g.sign() if sign else g)
    return new.clamp(0, 1) if clamp else new


def test_signed_step_passes_and_names_mistakes(printed):
    checks.check_signed_step(signed_step)
    checks.check_signed_step(signed_step, seed=17)
    assert printed().count("✓") == 2
    for options, named in [
        (dict(margin=False), "the gradient of S_t alone"),
        (dict(towards=-1.0), "a step away from the target"),
        (dict(sign=False), "instead of its sign"),
        (dict(clamp=False), "without clamping"),
    ]:
        with pytest.raises(AssertionError, match=named):
            checks.check_signed_step(partial(signed_step, **options))


def test_signed_step_accepts_either_sign_where_the_gradient_is_nearly_zero():
    """Two backward passes (w_t - w_c) instead of one round differently; the check allows it."""

    def two_passes(model, image, target, epsilon):
        x = image.clone().requires_grad_(True)
        source = int(model(x[None])[0].argmax())
        (w_t,) = torch.autograd.grad(model(x[None])[0, target], x)
        (w_c,) = torch.autograd.grad(model(x[None])[0, source], x)
        return (image + epsilon * (w_t - w_c).sign()).clamp(0, 1)

    checks.check_signed_step(two_passes, seed=18)


def test_signed_step_that_changes_the_image_in_place_fails():
    def in_place(model, image, target, epsilon):
        new = signed_step(model, image, target, epsilon)
        image.copy_(new)
        return new

    with pytest.raises(AssertionError, match="changed `image` in place"):
        checks.check_signed_step(in_place)
