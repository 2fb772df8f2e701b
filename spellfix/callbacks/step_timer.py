"""Where a training step's wall time goes: data wait, compute, validation, overhead.

A busy-percent reading says a GPU idles, not why; each cause has its own fix (more
loader workers, less validation, less logging, a larger batch). ``StepTimer`` splits
one rank's training time into those parts from Lightning's hooks, which
``UtilizationMonitor`` forwards to it:

- *compute* runs from ``on_train_batch_start`` to ``on_train_batch_end`` (forward,
  backward, optimizer; the caller synchronizes the GPU first so queued kernels count);
- *validation* covers the validation loops;
- *data wait* is the time spent inside the train loader's ``next()``, read from the
  action Lightning reports to its profiler around each fetch;
- *overhead* is the rest of the gap between two steps: logging, progress bar,
  checkpoint saves, host-to-device copies.

Should Lightning stop reporting the fetch action, the whole gap is counted as data wait.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from lightning.pytorch.profilers import Profiler

# The parts of training time, as keys of StepTimer.times.
TIME_PARTS = ("data_wait_s", "compute_s", "validation_s", "overhead_s")
# The profiler action Lightning wraps around each train-loader fetch.
FETCH_ACTION = "train_dataloader_next"


class StepTimer:
    """Adds up one rank's training time by part, from the hooks of a callback.

    ``times`` holds the seconds per part of ``TIME_PARTS``, ``steps`` the timed steps and
    ``validation_spans`` each validation's (start, end) in seconds since ``origin``, the
    clock the sampled readings are timed by too.
    """

    def __init__(self) -> None:
        self.times = {key: 0.0 for key in TIME_PARTS}
        self.steps = 0
        self.validation_spans: list[tuple[float, float]] = []
        self.origin = time.perf_counter()
        self._step_started: float | None = None
        self._previous_step_end: float | None = None
        self._validation_started: float | None = None
        self._validation_in_gap = 0.0
        self._fetch_started: float | None = None
        self._fetch_in_gap = 0.0
        self._fetches_seen = 0
        self._profiler_restore: tuple[Profiler, dict[str, Any]] | None = None

    def start(self, profiler: Profiler) -> None:
        """Training starts: time from now on, and time each train-loader fetch.

        Lightning brackets every fetch with ``profiler.start/stop`` of an action ending
        in ``train_dataloader_next``, whatever profiler is configured; the wrappers pass
        every call through unchanged and ``stop`` removes them.
        """
        original_start, original_stop = profiler.start, profiler.stop
        overridden_before = {
            name: vars(profiler)[name] for name in ("start", "stop") if name in vars(profiler)
        }

        def start(action_name: str) -> None:
            if action_name.endswith(FETCH_ACTION):
                self._fetch_started = time.perf_counter()
            original_start(action_name)

        def stop(action_name: str) -> None:
            original_stop(action_name)
            if action_name.endswith(FETCH_ACTION) and self._fetch_started is not None:
                self._fetch_in_gap += time.perf_counter() - self._fetch_started
                self._fetches_seen += 1
                self._fetch_started = None

        profiler.start, profiler.stop = start, stop
        self._profiler_restore = (profiler, overridden_before)
        self.origin = time.perf_counter()

    def stop(self) -> None:
        """Put the profiler back as it was: its own methods, or what someone else set."""
        if self._profiler_restore is None:
            return
        profiler, overridden_before = self._profiler_restore
        for name in ("start", "stop"):
            if name in overridden_before:
                setattr(profiler, name, overridden_before[name])
            else:
                delattr(profiler, name)
        self._profiler_restore = None

    def epoch_started(self) -> None:
        """A new epoch: its first step books only its own fetch, not the time since the last."""
        self._previous_step_end = None
        self._validation_in_gap = 0.0
        self._fetch_in_gap = 0.0

    def validation_started(self) -> None:
        self._validation_started = time.perf_counter()

    def validation_ended(self) -> None:
        if self._validation_started is None:
            return
        now = time.perf_counter()
        self.times["validation_s"] += now - self._validation_started
        self._validation_in_gap += now - self._validation_started
        self.validation_spans.append((self._validation_started - self.origin, now - self.origin))
        self._validation_started = None

    def step_started(self) -> None:
        """Book the gap since the previous step: its fetches as data wait, the rest overhead."""
        now = time.perf_counter()
        fetch = self._fetch_in_gap
        if self._previous_step_end is not None:
            gap = max(now - self._previous_step_end - self._validation_in_gap, 0.0)
            if self._fetches_seen:
                self.times["data_wait_s"] += min(fetch, gap)
                self.times["overhead_s"] += max(gap - fetch, 0.0)
            else:
                self.times["data_wait_s"] += gap
        else:  # the first step of an epoch: only its own fetch counts
            self.times["data_wait_s"] += fetch
        self._validation_in_gap = 0.0
        self._fetch_in_gap = 0.0
        self._step_started = now

    @property
    def in_step(self) -> bool:
        """Whether a step started and has not ended yet."""
        return self._step_started is not None

    def step_ended(self) -> None:
        """Book the step as compute; call while ``in_step``, after synchronizing the device."""
        now = time.perf_counter()
        self.times["compute_s"] += now - self._step_started
        self._previous_step_end = now
        self._step_started = None
        self.steps += 1

    def totals(self) -> dict[str, float]:
        """Seconds per part and the step count, as a rank sends them to rank zero."""
        return dict(self.times, steps=self.steps)


def mean_times(per_rank_times: list[dict[str, float]]) -> dict[str, float]:
    """Each part averaged over ranks (they run in lockstep), and the most steps any took."""
    means = {key: float(np.mean([times[key] for times in per_rank_times])) for key in TIME_PARTS}
    means["steps"] = max(int(times["steps"]) for times in per_rank_times)
    return means


def time_fractions(times: dict[str, float]) -> dict[str, float]:
    """``<part>_fraction``: each part's share of the total (all zero before any time)."""
    parts = {key[: -len("_s")]: times.get(key, 0.0) for key in TIME_PARTS}
    total = sum(parts.values())
    return {f"{name}_fraction": (value / total if total else 0.0) for name, value in parts.items()}
