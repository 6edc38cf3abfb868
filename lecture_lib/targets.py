"""What an explanation explains, and the checks every method shares.

Every method of the course explains one number per example, the lecture's *f*:

- a class score S_c(I) (the unnormalised logit): ``target=None`` (the predicted class), an
  int (the same class for every example) or one int per example;
- or the activity of one channel of a named layer, ``target=Neuron("conv3", 7)``: "f is
  visualized neuron activity" (Zeiler & Fergus).

This module turns ``inputs`` and ``target`` into that number (``score``), checks what a student
passes in (``as_batch``, ``target_indices``), brings the inputs to the model's device and dtype
(``prepare``), keeps autograd on where a method needs it (``gradients_on``) and leaves the
model as it came (``explaining``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import threads


@dataclass(frozen=True)
class Neuron:
    """One channel of a named layer as the explained quantity.

    ``f = max`` over positions of the channel's activation map (``reduce="max"``, the single
    strongest activation that Zeiler & Fergus project back), or its ``sum`` over positions.
    """

    layer: str
    channel: int
    reduce: str = "max"

    def __post_init__(self) -> None:
        if self.reduce not in ("max", "sum"):
            raise ValueError(f"Neuron: reduce must be 'max' or 'sum', got reduce={self.reduce!r}.")


# --- inputs ---------------------------------------------------------------------------------


def as_tensor(value, name: str, method: str) -> torch.Tensor:
    """A tensor from a tensor or numpy array, its floating-point values finite, or a clear error."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{method}: {name} must be a torch.Tensor, got {type(value).__name__}. "
            "Convert with torch.as_tensor(...)."
        )
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise ValueError(f"{method}: {name} contain NaN or infinite values.")
    return value


def as_batch(inputs: torch.Tensor, method: str) -> tuple[torch.Tensor, bool]:
    """``inputs`` as a batch, and whether it was one example without batch dimension.

    Images are ``[N, C, H, W]`` (a batch) or ``[C, H, W]`` (one image); vectors are ``[N, D]``
    or ``[D]``. The tensor must hold finite floating-point numbers.
    """
    inputs = as_tensor(inputs, "inputs", method)
    if not inputs.is_floating_point():
        raise TypeError(
            f"{method}: inputs must be floating point (images in [0, 1]), got dtype {inputs.dtype}. "
            "Convert with inputs.float() (and divide 8-bit images by 255)."
        )
    if inputs.ndim not in (1, 2, 3, 4):
        raise ValueError(
            f"{method}: inputs must be a batch [N, C, H, W] or one image [C, H, W] "
            f"(or vectors [N, D] / [D]), got shape {tuple(inputs.shape)}."
        )
    if inputs.numel() == 0:
        raise ValueError(f"{method}: inputs is empty (shape {tuple(inputs.shape)}).")
    single = inputs.ndim in (1, 3)
    return (inputs.unsqueeze(0) if single else inputs), single


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a parameter-free model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The dtype of the model's first floating-point parameter or buffer (``default`` if none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return default


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The model's first linear or convolution layer, in the order the model defines them."""
    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            return name, module
    return None


def _as_image_batch(model: nn.Module, batch: torch.Tensor, single: bool, method: str):
    """A ``[H, W]`` input for a model whose first layer is a 2-D convolution: one grey image
    ``[1, 1, H, W]`` for a one-channel model (``single`` becomes 2, the axes added), otherwise
    an error that says how to pass images."""
    first = _first_layer(model)
    if single or batch.ndim != 2 or first is None or not isinstance(first[1], nn.Conv2d):
        return batch, single
    name, conv = first
    if conv.in_channels == 1:
        return batch[None, None], 2
    raise ValueError(
        f"{method}: inputs of shape {tuple(batch.shape)} look like one image [H, W] without a "
        f"channel axis, but the model's first layer {name!r} (Conv2d) expects "
        f"{conv.in_channels} channels. Pass one image as [{conv.in_channels}, H, W] (a grey "
        f"image: x.expand({conv.in_channels}, -1, -1)) or a batch [N, {conv.in_channels}, H, W]."
    )


def check_channels(model: nn.Module, batch: torch.Tensor, method: str) -> None:
    """Images ``[N, C, H, W]`` whose C is what the model's first ``Conv2d`` takes, or a clear
    error (a grey image for a colour model, say)."""
    first = _first_layer(model)
    if batch.ndim != 4 or first is None or not isinstance(first[1], nn.Conv2d):
        return
    name, conv = first
    if batch.shape[1] != conv.in_channels:
        hint = ""
        if batch.shape[1] == 1:
            hint = f" (a grey image: x.expand(-1, {conv.in_channels}, -1, -1))"
        raise ValueError(
            f"{method}: inputs have {batch.shape[1]} channels (shape {tuple(batch.shape)}), but "
            f"the model's first layer {name!r} (Conv2d) takes {conv.in_channels}. Pass images "
            f"[N, {conv.in_channels}, H, W]{hint}."
        )


# --- targets --------------------------------------------------------------------------------


def target_indices(target, logits: torch.Tensor, method: str) -> torch.Tensor:
    """One class index per example, as int64 ``[N]`` on the logits' device.

    ``None`` picks the predicted class (the argmax of the logits ``[N, K]``).
    """
    n, k = logits.shape[0], logits.shape[-1]
    if target is None:
        return logits.detach().argmax(dim=-1)
    indices = class_indices(target, n, method)
    bad = (indices < 0) | (indices >= k)
    if bad.any():
        raise ValueError(
            f"{method}: target {indices[bad][0].item()} is out of range; the model has {k} "
            f"classes, so a target must lie in 0..{k - 1}."
        )
    return indices.to(logits.device)


def class_indices(target, n: int, method: str) -> torch.Tensor:
    """An int (the same class for all) or one int per example as int64 ``[n]``, without a model:
    their range is checked against the logits by ``target_indices``."""
    if isinstance(target, Neuron):
        raise TypeError(f"{method}: a Neuron target is not a class index.")
    if isinstance(target, bool):
        raise TypeError(f"{method}: target must be a class index, got the bool {target}.")
    if isinstance(target, (int, np.integer)):
        return torch.full((n,), int(target), dtype=torch.long)
    try:
        indices = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{method}: target must be None, an int or one int per example, got {target!r}."
        ) from error
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise TypeError(
            f"{method}: target must hold integer class indices, got dtype {indices.dtype}."
        )
    indices = indices.reshape(-1).long().clone()  # never an inference tensor outside that mode
    if indices.numel() == 1:
        indices = indices.expand(n)
    if indices.numel() != n:
        raise ValueError(
            f"{method}: target has {indices.numel()} entries but inputs hold {n} examples; "
            "give one class index per example, or a single int for all."
        )
    return indices


def fix_target(model: nn.Module, batch: torch.Tensor, target, method: str):
    """``(f(x), target)`` with ``target=None`` resolved once on the unchanged inputs (their
    predicted class), so that perturbed copies or points on a path to a baseline all explain
    the class of the input itself. A Neuron stays as it is. No gradient is recorded."""
    with torch.no_grad():
        f, logits = score(model, batch, target, method)
    if not isinstance(target, Neuron):
        target = target_indices(target, logits, method)
    return f, target


def select(target, examples: torch.Tensor):
    """The target of copies made from ``examples``: class indices follow their example,
    a Neuron or ``None`` (each copy's predicted class) is shared."""
    return target if target is None or isinstance(target, Neuron) else target[examples]


def baseline_batch(baseline, batch: torch.Tensor, method: str) -> torch.Tensor:
    """The reference input x' as a batch: ``None`` (zeros, a black image) or a number gives
    ``[1, ...]``; one example ``[C, H, W]`` gives ``[1, C, H, W]``; or one per example."""
    reference = torch.as_tensor(0.0 if baseline is None else baseline)
    if reference.is_floating_point() and not torch.isfinite(reference).all():
        raise ValueError(
            f"{method}: baseline contains NaN or infinite values; give a finite number (0.0 "
            "black, 0.5 grey) or a finite image."
        )
    reference = reference.to(dtype=batch.dtype, device=batch.device)
    if reference.ndim == 0:
        reference = reference.expand(1, *batch.shape[1:])
    elif reference.ndim == batch.ndim - 1:
        reference = reference.unsqueeze(0)
    if reference.shape[1:] != batch.shape[1:] or reference.shape[0] not in (1, batch.shape[0]):
        raise ValueError(
            f"{method}: baseline of shape {tuple(torch.as_tensor(baseline).shape)} does not fit "
            f"inputs of shape {tuple(batch.shape)}; give a number, one example of shape "
            f"{tuple(batch.shape[1:])} or one baseline per example."
        )
    return reference


# --- how much goes through the model at once -------------------------------------------------

PASS_VALUES = 2**19
"""Input values per forward (and backward) pass of the library's batched work: about 40 shapes
of 3 x 64 x 64, or 3 photos of 3 x 224 x 224. On a CPU a pass of that size costs the least per
image: a pass of 256 shapes costs about twice as much per shape (its activations no longer stay
in the processor's caches), and passes of a few images pay the per-operation overhead."""


def pass_size(batch: torch.Tensor) -> int:
    """How many examples of ``batch`` [N, ...] make one pass: ``PASS_VALUES`` input values, at
    least one example."""
    return max(1, PASS_VALUES // max(1, batch[0].numel()))


def passes(n: int, size: int) -> list[slice]:
    """``n`` examples cut into as few passes of at most ``size`` as possible, of nearly equal
    length (64 examples in passes of 42: 32 + 32)."""
    count = -(-n // size)
    edges = [n * k // count for k in range(count + 1)]
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


def layer_names(model: nn.Module) -> list[str]:
    """The names of the model's layers that a ``Neuron`` or ``feature_maps`` can ask for."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str, method: str) -> nn.Module:
    """The submodule called ``name``; an unknown name lists the valid ones."""
    modules = dict(model.named_modules())
    if not isinstance(name, str) or not name or name not in modules:
        valid = ", ".join(layer_names(model))
        raise ValueError(f"{method}: the model has no layer named {name!r}. Valid layers: {valid}.")
    return modules[name]


def score(
    model: nn.Module, batch: torch.Tensor, target, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the model on ``batch`` and return ``(f, logits)``: f ``[N]`` is the explained number
    for each example (the target class score, or the Neuron's activity)."""
    if isinstance(target, Neuron):
        return _neuron_activity(model, batch, target, method)
    logits = model(batch)
    if logits.ndim != 2:
        raise ValueError(
            f"{method}: the model must return class scores of shape [N, K], got {tuple(logits.shape)}."
        )
    index = target_indices(target, logits, method)
    return logits.gather(1, index[:, None]).squeeze(1), logits


def _neuron_activity(model, batch, neuron: Neuron, method: str):
    layer = get_layer(model, neuron.layer, method)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, output: keep_output(output, captured))
    try:
        logits = model(batch)
    finally:
        handle.remove()
    activation = captured[-1]  # a layer run twice (a reused ReLU) explains its last call
    channels = activation.shape[1] if activation.ndim >= 2 else 0
    if not 0 <= neuron.channel < channels:
        raise ValueError(
            f"{method}: layer {neuron.layer!r} has {channels} channels, so the Neuron's channel "
            f"must lie in 0..{channels - 1}; got channel={neuron.channel}."
        )
    maps = activation[:, neuron.channel].reshape(len(batch), -1)
    f = maps.amax(dim=1) if neuron.reduce == "max" else maps.sum(dim=1)
    return f, logits


def keep_output(output, captured: list):
    """A forward hook's body that records a layer's own output: the rest of the model goes on
    with a copy, so that an in-place layer after it (torchvision's ``ReLU(inplace=True)``) cannot
    overwrite what was recorded. Gradients flow through both."""
    if not isinstance(output, torch.Tensor):
        return None
    captured.append(output)
    return output.clone()


# --- the model is left as it came -----------------------------------------------------------


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for an explanation and restore every module's mode afterwards,
    also when the explanation raises. Methods never set ``.grad`` on parameters (they ask autograd
    for the input's gradient only) and remove every hook they add.

    Modes change through ``train(mode)``, as ``model.eval()`` does, so a module whose ``train``
    does more (freezes its batch norms, say) is restored too: parents before children, each
    module whose mode differs from the one it came with."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        check_batch_independent(model)
        with threads.policy():  # one thread on a busy machine (lecture_lib.threads)
            yield model
    finally:
        for module, training in modes:
            if module.training != training:
                module.train(training)


_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm,)
"""Layers that may normalise with the statistics of the batch they are given."""


def check_batch_independent(model: nn.Module) -> None:
    """Refuse a model (already in eval mode) whose output for one example depends on the other
    examples of its batch: a batch norm without running statistics, or one still in train mode
    after ``model.eval()`` (its ``train`` keeps it so). Every method runs many examples (copies,
    windows, path points) in one batch, so each explanation would depend on how they are batched."""
    for name, module in model.named_modules():
        if not isinstance(module, _BATCH_NORMS):
            continue
        if module.running_mean is None or module.training:
            why = (
                "has no running statistics"
                if module.running_mean is None
                else "stays in train mode"
            )
            raise ValueError(
                f"the model's layer {name or type(module).__name__!r} ({type(module).__name__}) "
                f"{why}, so it normalises each example with the statistics of its whole batch: "
                "every explanation would depend on the other examples batched with it. Give it "
                "running statistics (track_running_stats=True, then train the model) and let "
                "model.eval() use them."
            )


@contextmanager
def gradients_on() -> Iterator[None]:
    """Autograd on inside, also when the caller is in ``torch.no_grad()`` or
    ``torch.inference_mode()``: a gradient method needs it, and its answer does not depend on
    the caller's mode. The caller's mode is back afterwards."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def with_gradients(function):
    """Decorator: ``function`` runs inside ``gradients_on()``, so that a method that takes
    gradients (an ascent, a fooling image) works the same under ``torch.no_grad()`` or
    ``torch.inference_mode()``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with gradients_on():
            return function(*args, **kwargs)

    return wrapper


def prepare(model: nn.Module, inputs: torch.Tensor, method: str) -> tuple[torch.Tensor, int]:
    """The usual first step of a method: a detached copy of the batch on the model's device, in
    the model's dtype (float64 inputs for a float32 model become float32), never an inference
    tensor; and how many axes were added to make it a batch (0, 1, or 2 for one grey image
    ``[H, W]`` for a model whose first layer is a one-channel ``Conv2d``)."""
    batch, single = as_batch(inputs, method)
    batch, single = _as_image_batch(model, batch, single, method)
    check_channels(model, batch, method)
    with torch.inference_mode(False):
        dtype = model_dtype(model, batch.dtype)
        return batch.detach().to(model_device(model), dtype, copy=True), int(single)


def finish(result: torch.Tensor, inputs: torch.Tensor, single: int) -> torch.Tensor:
    """The usual last step: detach, back to the inputs' device and floating dtype, drop the axes
    that ``prepare`` added (only the batch axis of a result without channel axis)."""
    result = result.detach()
    if isinstance(inputs, torch.Tensor):
        dtype = inputs.dtype if inputs.is_floating_point() and result.is_floating_point() else None
        result = result.to(inputs.device, dtype)
    else:
        result = result.cpu()
    if single == 2 and result.ndim == 4 and result.shape[:2] == (1, 1):
        return result[0, 0]
    return result[0] if single else result
