"""StepTimer: a step's wall time booked as data wait, compute, validation or overhead."""

from __future__ import annotations

import pytest
from lightning.pytorch.profilers import PassThroughProfiler

from spellfix.callbacks import step_timer
from spellfix.callbacks.step_timer import StepTimer, mean_times, time_fractions

FETCH = "[_TrainingEpochLoop].train_dataloader_next"


class Clock:
    """A ``time.perf_counter`` that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(step_timer.time, "perf_counter", clock)
    return clock


def fetch(profiler: PassThroughProfiler, clock: Clock, seconds: float) -> None:
    profiler.start(FETCH)
    clock.now += seconds
    profiler.stop(FETCH)


def test_fetches_are_data_wait_and_the_rest_of_a_gap_is_overhead(clock: Clock) -> None:
    profiler = PassThroughProfiler()
    timer = StepTimer()
    clock.now = 10.0
    timer.start(profiler)
    timer.epoch_started()
    fetch(profiler, clock, 1.0)
    timer.step_started()  # the epoch's first step: only its own fetch counts
    clock.now += 2.0
    timer.step_ended()
    clock.now += 0.5
    fetch(profiler, clock, 1.0)
    clock.now += 0.5
    timer.validation_started()
    clock.now += 2.0
    timer.validation_ended()
    clock.now += 1.0
    timer.step_started()  # a 5 s gap: 1 s fetch, 2 s validation, 2 s overhead
    clock.now += 1.0
    timer.step_ended()

    assert timer.totals() == {
        "data_wait_s": 2.0,
        "compute_s": 3.0,
        "validation_s": 2.0,
        "overhead_s": 2.0,
        "steps": 2,
    }
    assert timer.validation_spans == [(5.0, 7.0)]  # seconds since start()
    timer.stop()
    assert "start" not in vars(profiler) and "stop" not in vars(profiler)


def test_without_fetch_reports_the_whole_gap_is_data_wait(clock: Clock) -> None:
    timer = StepTimer()
    timer.start(PassThroughProfiler())
    timer.step_started()
    clock.now += 1.0
    timer.step_ended()
    clock.now += 3.0
    timer.step_started()
    assert timer.times["data_wait_s"] == 3.0 and timer.times["overhead_s"] == 0.0
    assert timer.in_step


def test_ranks_are_averaged_and_parts_become_fractions() -> None:
    ranks = [
        {"data_wait_s": 1.0, "compute_s": 3.0, "validation_s": 0.0, "overhead_s": 0.0, "steps": 4},
        {"data_wait_s": 3.0, "compute_s": 5.0, "validation_s": 0.0, "overhead_s": 0.0, "steps": 5},
    ]
    times = mean_times(ranks)
    assert times == {
        "data_wait_s": 2.0,
        "compute_s": 4.0,
        "validation_s": 0.0,
        "overhead_s": 0.0,
        "steps": 5,
    }
    assert time_fractions(times) == {
        "data_wait_fraction": pytest.approx(1 / 3),
        "compute_fraction": pytest.approx(2 / 3),
        "validation_fraction": 0.0,
        "overhead_fraction": 0.0,
    }
    assert set(time_fractions({}).values()) == {0.0}
