"""The thread policy: one thread on a busy machine, the caller's setting on an idle one, and the
caller's setting back afterwards whatever happens."""

import time

import pytest
import torch
from torch import nn

from lecture_lib import threads
from lecture_lib.targets import explaining


@pytest.fixture
def two_threads():
    """The caller has set two threads (restored after the test); no decision is remembered."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    threads.forget()
    yield
    threads.forget()
    torch.set_num_threads(before)


def machine(monkeypatch, free: float | None, speedup: float = 1.0) -> list[str]:
    """Pretend other programs leave ``free`` cores (``None``: the system cannot count them, and
    the probe measures ``speedup``); returns the list of measurements taken."""
    measured = []

    def free_cores():
        measured.append("free cores")
        return free

    def probe(count):
        measured.append(f"probe {count}")
        return speedup

    monkeypatch.setattr(threads, "free_cores", free_cores)
    monkeypatch.setattr(threads, "probe", probe)
    return measured


def test_a_busy_machine_gets_one_thread_and_the_setting_back(two_threads, monkeypatch):
    machine(monkeypatch, free=1.0)
    with threads.policy() as chosen:
        assert chosen == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_an_idle_machine_keeps_the_callers_threads(two_threads, monkeypatch):
    machine(monkeypatch, free=2.0)
    with threads.policy() as chosen:
        assert chosen == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_the_setting_comes_back_when_the_work_raises(two_threads, monkeypatch):
    machine(monkeypatch, free=1.0)
    with pytest.raises(RuntimeError, match="boom"), threads.policy():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_one_thread_set_by_the_caller_is_kept_without_probing(monkeypatch):
    probes = machine(monkeypatch, free=2.0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threads.policy() as chosen:
            assert chosen == 1
    finally:
        torch.set_num_threads(before)
    assert probes == []


def test_a_decision_is_kept_for_a_while_then_measured_again(two_threads, monkeypatch):
    probes = machine(monkeypatch, free=1.0)
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        with threads.policy(), threads.policy():  # nested: the inner one sees one thread
            pass
    assert probes == ["free cores"]
    clock[0] += threads.DECIDE_EVERY_S + 1  # the laptop may have become idle
    look = (time.perf_counter() - 1.0, 0.0, 0.0, 2)  # a look a second ago: a count can decide
    monkeypatch.setattr(threads, "_look", look)
    machine(monkeypatch, free=2.0)
    with threads.policy() as chosen:
        assert chosen == 2


def test_every_method_runs_under_the_policy(two_threads, monkeypatch, shapes_net):
    from lecture_lib import attribution

    machine(monkeypatch, free=1.0)
    seen = []
    handle = shapes_net.conv1.register_forward_hook(
        lambda *args: seen.append(torch.get_num_threads())
    )
    try:
        attribution.gradient(shapes_net, torch.rand(3, 64, 64))
    finally:
        handle.remove()
    assert seen == [1] and torch.get_num_threads() == 2
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError), explaining(model):
        assert torch.get_num_threads() == 1
        raise ValueError("a method failed midway")
    assert torch.get_num_threads() == 2


def test_the_probe_measures_and_restores_the_setting(two_threads):
    speedup = threads.probe(2)
    assert 0 < speedup < 10
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    ("free", "speedup", "chosen"),
    [
        (2.0, 1.0, 2),
        (1.8, 1.0, 2),
        (1.7, 1.0, 1),
        (1.0, 1.9, 1),
        (0.0, 1.9, 1),
        (None, 1.9, 2),
        (None, 1.1, 1),
    ],
)
def test_threads_follow_the_free_cores_or_else_the_probe(
    two_threads, monkeypatch, free, speedup, chosen
):
    measured = machine(monkeypatch, free=free, speedup=speedup)
    assert threads.threads_for_small_work() == chosen
    assert measured == (["free cores"] if free is not None else ["free cores", "probe 2"])


def test_after_a_long_pause_the_last_decision_holds_until_a_count_is_ready(
    two_threads, monkeypatch
):
    """A decision 100 s old and no look at the CPU time for 100 s (a student reading): the next
    call keeps the last decision without a pause and takes a look; so does a call 10 ms later;
    a call after SAMPLE_S or more decides from the count since that look."""
    measured = machine(monkeypatch, free=2.0)
    now = time.perf_counter()
    monkeypatch.setattr(threads, "_decisions", {2: (time.monotonic() - 100.0, 1)})
    monkeypatch.setattr(threads, "_look", (now - 100.0, 0.0, 0.0, 2))
    start = time.perf_counter()
    assert threads.threads_for_small_work() == 1  # the last decision ...
    assert time.perf_counter() - start < threads.SAMPLE_S  # ... at once
    assert measured == [] and threads._look[0] >= now  # a fresh look, for the next call
    assert threads.threads_for_small_work() == 1 and measured == []  # too soon to count
    monkeypatch.setattr(threads, "_look", (time.perf_counter() - 1.0, 0.0, 0.0, 2))
    assert threads.threads_for_small_work() == 2 and measured == ["free cores"]  # decided anew
    assert threads.threads_for_small_work() == 2 and measured == ["free cores"]  # now fresh


def test_free_cores_are_all_cores_minus_the_other_programs_cpu_time(monkeypatch):
    """Counts of CPU seconds (when, all programs, this process, cores): over the 10 s between two
    looks the others computed 25 - 5 = 20 CPU seconds on 4 cores, two cores' worth."""
    counts = iter([(100.0, 1000.0, 50.0, 4), (110.0, 1025.0, 55.0, 4)])
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: next(counts))
    monkeypatch.setattr(threads, "_look", None)
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    assert threads.free_cores() == pytest.approx(2.0)  # no earlier look: a pause, then a count
    counts = iter([(200.0, 2000.0, 60.0, 4)])  # 90 s later: too old a window, so a new pause
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: next(counts, (200.05, 2000.1, 60.0, 4)))
    assert threads.free_cores() == pytest.approx(2.0)
    monkeypatch.setattr(threads, "_cpu_seconds", lambda: None)
    assert threads.free_cores() is None  # no /proc/stat: the probe decides


STAT = """cpu  700 0 100 900 50 0 0 0 0 0
cpu0 100 0 0 400 50 0 0 0 0 0
cpu1 300 0 50 100 0 0 0 0 0 0
cpu2 0 0 0 400 0 0 0 0 0 0
cpu3 300 0 50 0 0 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def test_busy_seconds_count_only_the_cores_the_process_may_run_on():
    """Everything but idle (4th) and waiting for the disk (5th) on each cpuN line; the "cpu"
    line of all cores and the other lines are left out."""
    tick = threads.os.sysconf("SC_CLK_TCK")
    assert threads._busy_seconds(STAT) == (800 / tick, 4)
    assert threads._busy_seconds(STAT, {1, 3}) == (700 / tick, 2)  # taskset -c 1,3
    assert threads._busy_seconds(STAT, {2}) == (0.0, 1)
    assert threads._busy_seconds(STAT, {7}) is None  # none of the counted cores
    assert threads._busy_seconds("cpu0 1 2\n") is None  # too few fields
    assert threads._busy_seconds("") is None


def _spin(seconds, started):
    started.set()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(threads._cpu_seconds() is None, reason="this system does not count CPU time")
def test_free_cores_see_a_program_that_keeps_a_core_busy():
    import multiprocessing

    def free_over(seconds):
        threads.free_cores()  # a fresh look ...
        time.sleep(seconds)
        return threads.free_cores()  # ... and the count since

    threads.forget()
    spawn = multiprocessing.get_context("spawn")
    started = spawn.Event()
    helper = spawn.Process(target=_spin, args=(30.0, started))
    helper.start()
    try:
        # the helper imports this module first: wait until it spins, however long that takes
        assert started.wait(timeout=60), "the spinning helper did not start"
        busy = free_over(0.5)
    finally:
        helper.terminate()
        helper.join()
        threads.forget()
    # whatever else runs (other tests in parallel, other jobs), the spinner's core is not free
    cores = threads._cpu_seconds()[3]
    assert busy <= cores - 0.6, f"{busy:.2f} of {cores} cores seen free next to a spinning core"


# --- every operation of a public function runs under the policy -------------------------------


class _ThreadsPerOperation(torch.overrides.TorchFunctionMode):
    """Records the thread setting at each torch operation called inside the block."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, int]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append((getattr(func, "__name__", str(func)), torch.get_num_threads()))
        return func(*args, **(kwargs or {}))


def _public_calls(net: nn.Module, images: torch.Tensor) -> dict:
    """One call of each kind of public function that computes with torch on a batch: methods,
    measures, data, training's accuracy and figures."""
    from lecture_lib import (
        activations,
        attribution,
        class_model,
        data,
        evaluate,
        fooling,
        perturbation,
        plot,
        prediction_difference,
        train,
    )

    maps = images[:, 0]
    masks = maps > 0.5
    labels = torch.zeros(len(images), dtype=torch.long)
    small = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    features = torch.rand(2, 6, generator=torch.Generator().manual_seed(0))
    gaussian = (torch.zeros(3), torch.eye(3), torch.tensor([True, False, False]), torch.ones(2))
    return {
        "attribution.gradient": lambda: attribution.gradient(net, images),
        "attribution.saliency": lambda: attribution.saliency(net, images),
        "attribution.input_x_gradient": lambda: attribution.input_x_gradient(net, images),
        "attribution.guided_backprop": lambda: attribution.guided_backprop(net, images),
        "attribution.integrated_gradients": lambda: attribution.integrated_gradients(
            net, images, steps=2, return_gap=True
        ),
        "attribution.deeplift": lambda: attribution.deeplift(net, images, return_gap=True),
        "attribution.lrp": lambda: attribution.lrp(net, images, composite="epsilon-gamma-box"),
        "attribution.grad_cam": lambda: attribution.grad_cam(net, images),
        "attribution.guided_grad_cam": lambda: attribution.guided_grad_cam(net, images),
        "attribution.hires_cam": lambda: attribution.hires_cam(net, images),
        "attribution.smoothgrad": lambda: attribution.smoothgrad(
            attribution.saliency, net, images, samples=2
        ),
        "perturbation.occlusion": lambda: perturbation.occlusion(net, images, window=16, stride=16),
        "perturbation.single_feature": lambda: perturbation.single_feature(small, features),
        "perturbation.prediction_difference (marginal)": lambda: perturbation.prediction_difference(
            net, images, window=16, stride=16, sampler="marginal", data=images, samples=2
        ),
        "perturbation.prediction_difference (conditional)": lambda: (
            perturbation.prediction_difference(
                net, images, window=16, stride=16, data=images, samples=2
            )
        ),
        "prediction_difference.condition": lambda: prediction_difference.condition(*gaussian),
        "activations.feature_maps": lambda: activations.feature_maps(net, images, ["conv1"]),
        "class_model.visualize": lambda: class_model.visualize(net, [0, 1], steps=2),
        "fooling.fast_gradient_sign": lambda: fooling.fast_gradient_sign(net, images, 1),
        "fooling.taylor_estimate": lambda: fooling.taylor_estimate(net, images, 1),
        "evaluate.importance": lambda: evaluate.importance(images),
        "evaluate.deletion_curve": lambda: evaluate.deletion_curve(net, images, maps, steps=4),
        "evaluate.pointing_game": lambda: evaluate.pointing_game(maps, masks),
        "data.make_shapes": lambda: data.make_shapes(4, seed=1),
        "data.make_shortcut_shapes": lambda: data.make_shortcut_shapes(4, seed=1),
        "data.gaussian_blur": lambda: data.gaussian_blur(images, 1.0),
        "train.accuracy": lambda: train.accuracy(net, images, labels),
        "plot.overlay_grid": lambda: plot.overlay_grid(images, maps),
        "plot.compare_methods": lambda: plot.compare_methods(images, {"a": maps, "b": maps}),
    }


PUBLIC_CALLS = list(_public_calls(nn.Identity(), torch.zeros(1, 1, 1, 1)))


@pytest.mark.parametrize("name", PUBLIC_CALLS)
def test_every_operation_of_a_public_function_runs_under_the_policy(
    two_threads, monkeypatch, shapes_net, name
):
    """Busy machine: each torch operation inside the call, also the checks of the input before
    the model runs and the finishing of the map after it, runs on one thread (a single
    operation on two threads next to a busy core waits a time slice for the second thread);
    afterwards the caller's two threads are back."""
    import matplotlib.pyplot as plt

    machine(monkeypatch, free=1.0)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    call = _public_calls(shapes_net, images)[name]
    with _ThreadsPerOperation() as recorded:
        call()
    plt.close("all")
    outside = sorted({op for op, count in recorded.seen if count != 1})
    assert recorded.seen, "the recorder saw no operation"
    assert not outside, f"{name}: operations on the caller's threads: {outside}"
    assert torch.get_num_threads() == 2
