"""The thread policy: one thread on a busy machine, the caller's setting on an idle one, and the
caller's setting back afterwards whatever happens."""

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


def machine(monkeypatch, speedup: float) -> list[int]:
    """Pretend the probe measures ``speedup``; returns the list of probes run."""
    probes = []

    def probe(count):
        probes.append(count)
        return speedup

    monkeypatch.setattr(threads, "probe", probe)
    return probes


def test_a_busy_machine_gets_one_thread_and_the_setting_back(two_threads, monkeypatch):
    machine(monkeypatch, speedup=1.0)
    with threads.policy() as chosen:
        assert chosen == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_an_idle_machine_keeps_the_callers_threads(two_threads, monkeypatch):
    machine(monkeypatch, speedup=1.9)
    with threads.policy() as chosen:
        assert chosen == 2 and torch.get_num_threads() == 2
    assert torch.get_num_threads() == 2


def test_the_setting_comes_back_when_the_work_raises(two_threads, monkeypatch):
    machine(monkeypatch, speedup=1.0)
    with pytest.raises(RuntimeError, match="boom"), threads.policy():
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_one_thread_set_by_the_caller_is_kept_without_probing(monkeypatch):
    probes = machine(monkeypatch, speedup=1.9)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threads.policy() as chosen:
            assert chosen == 1
    finally:
        torch.set_num_threads(before)
    assert probes == []


def test_a_decision_is_kept_for_a_while_then_measured_again(two_threads, monkeypatch):
    probes = machine(monkeypatch, speedup=1.0)
    clock = [100.0]
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock[0])
    for _ in range(3):
        with threads.policy(), threads.policy():  # nested: the inner one sees one thread
            pass
    assert probes == [2]
    clock[0] += threads.PROBE_EVERY_S + 1  # the laptop may have become idle
    machine(monkeypatch, speedup=1.9)
    with threads.policy() as chosen:
        assert chosen == 2


def test_every_method_runs_under_the_policy(two_threads, monkeypatch, shapes_net):
    from lecture_lib import attribution

    machine(monkeypatch, speedup=1.0)
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
