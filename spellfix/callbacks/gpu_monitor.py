"""GPU utilization during training, where step time goes, and what to change.

The reference team found its GPUs 35% busy only by watching nvidia-smi by hand.
``UtilizationMonitor`` measures the same numbers from inside training (a
background thread reading NVML), times where each step's wall time goes (data
loader, compute, validation), and turns the readings into a diagnosis with
concrete config changes. Lightning's DeviceStatsMonitor logs memory but no
utilization, and explains nothing.

Without a GPU or NVML it samples this process's CPU and memory with psutil, so a
CPU run still produces the same files and the step-time diagnosis.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import numpy as np
import psutil
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from data_synth.files import atomic_path, write_json_atomic
from spellfix.callbacks._common import (
    gather_to_all,
    log_to_loggers,
    output_directory,
    synchronize_device,
)

log = logging.getLogger(__name__)

GIB = 1024**3

# Thresholds of the diagnosis. Each says when a symptom is large enough to act on.
INPUT_BOUND_FRACTION = 0.15  # share of training time spent waiting for batches
VALIDATION_HEAVY_FRACTION = 0.25  # share of training time spent validating
BUSY_SM_PERCENT = 80.0  # mean SM utilization under which the GPU is underused
MEMORY_HEADROOM_FRACTION = 0.5  # peak memory share under which a larger batch fits
TARGET_MEMORY_FRACTION = 0.7  # memory share to aim a larger batch at, leaving a margin
OVERHEAD_FRACTION = 0.25  # share of training time spent between steps on logging and such
MAX_TIMELINE_POINTS = 5000  # per device, in utilization.json; longer runs are thinned

# Where a training step's wall time goes (see UtilizationMonitor).
TIME_PARTS = ("data_wait_s", "compute_s", "validation_s", "overhead_s")
# The profiler action Lightning wraps around each train-loader fetch.
FETCH_ACTION = "train_dataloader_next"


class Sampler(Protocol):
    """Reads the current utilization of the devices a rank uses.

    ``sample`` returns one dict per device, keyed by the names in ``metrics``. It may
    raise; the monitor then stops sampling and training carries on.
    """

    backend: str
    device_names: list[str]
    metrics: tuple[str, ...]

    def sample(self) -> list[dict[str, float]]: ...

    def close(self) -> None: ...


class NvmlSampler:
    """SM and memory-controller utilization, memory, power, temperature and SM clock via NVML."""

    backend = "nvml"
    metrics = (
        "sm_util",
        "mem_util",
        "mem_used_gb",
        "mem_total_gb",
        "power_w",
        "power_limit_w",
        "temperature_c",
        "sm_clock_mhz",
    )

    def __init__(self, nvml_indices: Sequence[int]) -> None:
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(index) for index in nvml_indices]
        self.device_names = [str(pynvml.nvmlDeviceGetName(handle)) for handle in self._handles]
        # Some boards do not report every reading (power on many consumer cards);
        # probe once so an unsupported reading is left out instead of ending sampling.
        self._supported: list[set[str]] = []
        for handle in self._handles:
            supported = set()
            for metric in self.metrics:
                try:
                    self._read(handle, metric)
                    supported.add(metric)
                except pynvml.NVMLError_NotSupported:
                    pass
            self._supported.append(supported)

    def _read(self, handle: Any, metric: str) -> float:
        nvml = self._nvml
        if metric == "sm_util":
            return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        if metric == "mem_util":
            return float(nvml.nvmlDeviceGetUtilizationRates(handle).memory)
        if metric == "mem_used_gb":
            return nvml.nvmlDeviceGetMemoryInfo(handle).used / GIB
        if metric == "mem_total_gb":
            return nvml.nvmlDeviceGetMemoryInfo(handle).total / GIB
        if metric == "power_w":
            return nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
        if metric == "power_limit_w":
            return nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        if metric == "temperature_c":
            return float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        if metric == "sm_clock_mhz":
            return float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))
        raise KeyError(metric)

    def sample(self) -> list[dict[str, float]]:
        return [
            {metric: self._read(handle, metric) for metric in self.metrics if metric in supported}
            for handle, supported in zip(self._handles, self._supported, strict=True)
        ]

    def close(self) -> None:
        self._nvml.nvmlShutdown()


class ProcessSampler:
    """This process's CPU use (100 = one core busy) and resident memory, via psutil."""

    backend = "psutil"
    metrics = ("cpu_percent", "rss_gb", "mem_total_gb")

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts psutil's interval
        self._total_gb = psutil.virtual_memory().total / GIB
        self._cores = len(self._process.cpu_affinity() or []) or psutil.cpu_count() or 1
        self.device_names = [f"cpu ({psutil.cpu_count()} cores)"]

    def sample(self) -> list[dict[str, float]]:
        return [
            {
                # psutil can overshoot right after a busy interval; no process uses
                # more than every core.
                "cpu_percent": min(self._process.cpu_percent(None), 100.0 * self._cores),
                "rss_gb": self._process.memory_info().rss / GIB,
                "mem_total_gb": self._total_gb,
            }
        ]

    def close(self) -> None:
        pass


def default_sampler(device: torch.device) -> tuple[Sampler, str | None]:
    """NVML for a CUDA device when it works, else psutil; the reason when it fell back."""
    if device.type != "cuda":
        return ProcessSampler(), f"training runs on {device.type}, not a GPU"
    try:
        try:
            nvml_index = torch.cuda._get_nvml_device_index(device)
        except (AttributeError, RuntimeError):
            nvml_index = device.index or 0
        return NvmlSampler([nvml_index]), None
    except Exception as error:  # NVMLError_LibraryNotFound, driver mismatch, ImportError
        return ProcessSampler(), f"NVML unavailable ({type(error).__name__}: {error})"


class _SamplingThread(threading.Thread):
    """Reads the sampler every ``interval_s`` seconds until stopped or until it fails once."""

    def __init__(self, sampler: Sampler, interval_s: float, clock_origin: float) -> None:
        super().__init__(name="spellfix-utilization", daemon=True)
        self.sampler = sampler
        self.interval_s = interval_s
        self.clock_origin = clock_origin
        self.readings: list[tuple[float, list[dict[str, float]]]] = []
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                reading = self.sampler.sample()
            except Exception as error:
                self.error = f"{type(error).__name__}: {error}"
                log.warning("UtilizationMonitor: sampling stopped after an error: %s", self.error)
                return
            with self._lock:
                self.readings.append((time.perf_counter() - self.clock_origin, reading))
            if self._stop_event.wait(self.interval_s):
                return

    def snapshot(self, start: int = 0) -> list[tuple[float, list[dict[str, float]]]]:
        with self._lock:
            return list(self.readings[start:])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=max(5.0, 2 * self.interval_s))


def _statistics(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "p10": float(np.percentile(array, 10)),
        "p50": float(np.percentile(array, 50)),
        "max": float(array.max()),
        "samples": int(array.size),
    }


def _pool_metric_values(
    readings: Sequence[tuple[float, list[dict[str, float]]]],
) -> dict[str, list[float]]:
    """Metric name -> every value over time and devices."""
    pooled: dict[str, list[float]] = {}
    for _, devices in readings:
        for device_reading in devices:
            for metric, value in device_reading.items():
                pooled.setdefault(metric, []).append(value)
    return pooled


class UtilizationMonitor(Callback):
    """Sample device utilization in the background, time each step, diagnose, advise.

    Every ``log_every_n_steps`` training batches (default: the trainer's) it logs,
    to every attached logger, the mean and 10th percentile of each reading since
    the last log, pooled over all ranks' devices (``util/sm_util_mean``,
    ``util/sm_util_p10``, ... or ``util/cpu_percent_mean`` on the psutil fallback)
    and the running split of wall time (``util/data_wait_fraction``, ...).

    Time split, per rank: *compute* runs from ``on_train_batch_start`` to
    ``on_train_batch_end`` (forward, backward, optimizer; the GPU is synchronized
    first so queued kernels are counted); *validation* covers the validation loops;
    *data wait* is the time spent inside the train loader's ``next()``, read from
    the action Lightning reports to its profiler around each fetch; *overhead* is
    the rest of the gap between two steps: logging, progress bar, checkpoint saves,
    host-to-device copies. Should Lightning stop reporting that action, the whole
    gap is counted as data wait.

    At the end of training it writes ``utilization.json`` (summary, diagnosis,
    timeline) and ``utilization.png`` to ``output_dir`` (default: the trainer's log
    dir) and prints a summary that ends in advice. A sampler error is logged once
    and ends sampling, never the run. Under DDP every rank samples its own device
    and rank zero gathers, logs and writes.

    ``sampler`` replaces the default NVML/psutil sampler (tests inject one that
    fails; another backend can be plugged in).
    """

    def __init__(
        self,
        interval_s: float = 0.5,
        log_every_n_steps: int | None = None,
        output_dir: Path | str | None = None,
        plot: bool = True,
        sampler: Sampler | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"UtilizationMonitor interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.log_every_n_steps = log_every_n_steps
        self.output_dir = output_dir
        self.plot = plot
        self.sampler = sampler
        self.fallback_reason: str | None = None
        self.summary: dict[str, Any] | None = None
        self._thread: _SamplingThread | None = None
        self._sampler_closed = False
        self._clock_origin = time.perf_counter()
        self._logged_upto = 0
        self._batches_seen = 0
        self._times = {key: 0.0 for key in TIME_PARTS}
        self._validation_spans: list[tuple[float, float]] = []
        self._step_started: float | None = None
        self._previous_step_end: float | None = None
        self._validation_started: float | None = None
        self._validation_in_gap = 0.0
        self._fetch_started: float | None = None
        self._fetch_in_gap = 0.0
        self._fetches_seen = 0
        self._profiler_restore: tuple[Any, dict[str, Any]] | None = None
        self._batch_padded_tokens: list[int] = []
        self._batch_samples: list[int] = []
        self._context: dict[str, Any] = {}

    # ---- start and stop ----------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        if self.sampler is None:
            self.sampler, self.fallback_reason = default_sampler(device)
            if self.fallback_reason:
                rank_zero_info(
                    f"UtilizationMonitor: {self.fallback_reason}; sampling this process's "
                    "CPU% and memory with psutil instead of GPU utilization."
                )
        loader = trainer.train_dataloader
        self._context = {
            "precision": str(trainer.precision),
            "bf16_supported": device.type == "cuda" and torch.cuda.is_bf16_supported(),
            "num_workers": getattr(loader, "num_workers", None),
            "cpu_count": os.cpu_count() or 1,
            "devices_per_node": trainer.num_devices,
            "world_size": trainer.world_size,
        }
        self._time_loader_fetches(trainer)
        self._clock_origin = time.perf_counter()
        self._sampler_closed = False
        self._thread = _SamplingThread(self.sampler, self.interval_s, self._clock_origin)
        self._thread.start()

    def _time_loader_fetches(self, trainer: pl.Trainer) -> None:
        """Hook the trainer's profiler to time each train-loader ``next()``.

        Lightning brackets every fetch with ``profiler.start/stop`` of an action
        ending in ``train_dataloader_next``, whatever profiler is configured; the
        wrappers pass every call through unchanged and are removed at the end.
        """
        profiler = trainer.profiler
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

    def _untime_loader_fetches(self) -> None:
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

    def _stop_sampling(self) -> None:
        self._untime_loader_fetches()
        if self._thread is not None and self._thread.is_alive():
            self._thread.stop()
        if self.sampler is not None and not self._sampler_closed:
            self._sampler_closed = True
            try:
                self.sampler.close()
            except Exception as error:
                log.warning("UtilizationMonitor: closing the sampler failed: %s", error)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._stop_sampling()

    # ---- step timing -------------------------------------------------------

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous_step_end = None
        self._validation_in_gap = 0.0
        self._fetch_in_gap = 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validation_started is None:
            return
        now = time.perf_counter()
        self._times["validation_s"] += now - self._validation_started
        self._validation_in_gap += now - self._validation_started
        self._validation_spans.append(
            (self._validation_started - self._clock_origin, now - self._clock_origin)
        )
        self._validation_started = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        fetch = self._fetch_in_gap
        if self._previous_step_end is not None:
            gap = max(now - self._previous_step_end - self._validation_in_gap, 0.0)
            if self._fetches_seen:
                self._times["data_wait_s"] += min(fetch, gap)
                self._times["overhead_s"] += max(gap - fetch, 0.0)
            else:
                self._times["data_wait_s"] += gap
        else:  # the first step of an epoch: only its own fetch counts
            self._times["data_wait_s"] += fetch
        self._validation_in_gap = 0.0
        self._fetch_in_gap = 0.0
        self._step_started = now
        # Padded source + target slots: the quantity data.max_tokens budgets.
        if isinstance(batch, Mapping) and isinstance(batch.get("input_ids"), torch.Tensor):
            labels = batch.get("labels")
            target_slots = labels.numel() if isinstance(labels, torch.Tensor) else 0
            self._batch_samples.append(int(batch["input_ids"].shape[0]))
            self._batch_padded_tokens.append(int(batch["input_ids"].numel() + target_slots))

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._step_started is None:
            return
        synchronize_device(trainer)
        now = time.perf_counter()
        self._times["compute_s"] += now - self._step_started
        self._previous_step_end = now
        self._step_started = None
        self._batches_seen += 1
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if every and self._batches_seen % every == 0:
            self._log_interval(trainer)

    def _log_interval(self, trainer: pl.Trainer) -> None:
        """Log mean and p10 of the readings since the last log, pooled over ranks."""
        fresh = self._thread.snapshot(self._logged_upto) if self._thread else []
        self._logged_upto += len(fresh)
        per_rank = gather_to_all(trainer, _pool_metric_values(fresh))
        if not trainer.is_global_zero:
            return
        pooled: dict[str, list[float]] = {}
        for rank_values in per_rank:
            for metric, values in rank_values.items():
                pooled.setdefault(metric, []).extend(values)
        metrics: dict[str, float] = {}
        for metric, values in pooled.items():
            statistics = _statistics(values)
            metrics[f"util/{metric}_mean"] = statistics["mean"]
            metrics[f"util/{metric}_p10"] = statistics["p10"]
        metrics.update(
            {f"util/{name}": value for name, value in _time_fractions(self._times).items()}
        )
        log_to_loggers(trainer, metrics)

    # ---- the end-of-training report ----------------------------------------

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_sampling()
        thread = self._thread
        payload = {
            "rank": trainer.global_rank,
            "backend": self.sampler.backend if self.sampler else "none",
            "device_names": list(self.sampler.device_names) if self.sampler else [],
            "readings": thread.snapshot() if thread else [],
            "error": thread.error if thread else None,
            "times": dict(self._times, steps=self._batches_seen),
            "batch_padded_tokens": self._batch_padded_tokens,
            "batch_samples": self._batch_samples,
        }
        per_rank = gather_to_all(trainer, payload)
        if not trainer.is_global_zero:
            return
        self.summary = self._summarize(per_rank)
        advice = diagnose(self.summary)
        directory = output_directory(trainer, self.output_dir)
        timeline = _timeline(per_rank)
        write_json_atomic(
            directory / "utilization.json",
            {**self.summary, "diagnosis": advice, "timeline": timeline},
            sort_keys=True,
        )
        if self.plot:
            _plot_timeline(
                timeline, self._validation_spans, self.summary, directory / "utilization.png"
            )
        print(_format_report(self.summary, advice, directory))

    def _summarize(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        devices = []
        all_readings = []
        for rank in per_rank:
            all_readings.extend(rank["readings"])
            for position, name in enumerate(rank["device_names"]):
                series = [(t, devices_now[position]) for t, devices_now in rank["readings"]]
                pooled = _pool_metric_values([(t, [reading]) for t, reading in series])
                devices.append(
                    {
                        "rank": rank["rank"],
                        "name": name,
                        "metrics": {m: _statistics(v) for m, v in pooled.items()},
                        "times": rank["times"],
                    }
                )
        pooled_all = _pool_metric_values(all_readings)
        times = _mean_times([rank["times"] for rank in per_rank])
        padded_tokens = [n for rank in per_rank for n in rank["batch_padded_tokens"]]
        samples = [n for rank in per_rank for n in rank["batch_samples"]]
        errors = [f"rank {rank['rank']}: {rank['error']}" for rank in per_rank if rank["error"]]
        return {
            "backend": per_rank[0]["backend"],
            "fallback_reason": self.fallback_reason,
            "interval_s": self.interval_s,
            "sampler_error": "; ".join(errors) or None,
            "metrics": {metric: _statistics(values) for metric, values in pooled_all.items()},
            "devices": devices,
            "time": {**times, **_time_fractions(times)},
            "batch": {
                "max_padded_tokens": max(padded_tokens, default=0),
                "mean_padded_tokens": float(np.mean(padded_tokens)) if padded_tokens else 0.0,
                "mean_samples": float(np.mean(samples)) if samples else 0.0,
            },
            **self._context,
        }


def _mean_times(per_rank_times: list[dict[str, float]]) -> dict[str, float]:
    means = {key: float(np.mean([times[key] for times in per_rank_times])) for key in TIME_PARTS}
    means["steps"] = max(int(times["steps"]) for times in per_rank_times)
    return means


def _time_fractions(times: dict[str, float]) -> dict[str, float]:
    parts = {key[: -len("_s")]: times.get(key, 0.0) for key in TIME_PARTS}
    total = sum(parts.values())
    return {f"{name}_fraction": (value / total if total else 0.0) for name, value in parts.items()}


def _timeline(per_rank: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (time, rank, device, readings), thinned to MAX_TIMELINE_POINTS per device."""
    rows = []
    for rank in per_rank:
        readings = rank["readings"]
        stride = max(1, math.ceil(len(readings) / MAX_TIMELINE_POINTS))
        for t, devices in readings[::stride]:
            for position, reading in enumerate(devices):
                rows.append({"t": round(t, 3), "rank": rank["rank"], "device": position, **reading})
    return rows


# ---- diagnosis ------------------------------------------------------------------


def _round_budget(tokens: float) -> str:
    """A token budget as a config value a person would type: 12k, 1.5k, 800."""
    if tokens >= 10_000:
        return f"{round(tokens / 1000)}k"
    if tokens >= 1_000:
        return f"{round(tokens / 500) * 0.5:g}k"
    return f"{round(tokens / 100) * 100}"


def diagnose(summary: dict[str, Any]) -> list[str]:
    """Turn a utilization summary into findings, each ending in what to change.

    A pure function of the summary that ``utilization.json`` holds (keys ``backend``,
    ``metrics``, ``time``, ``batch``, ``precision``, ``bf16_supported``,
    ``num_workers``, ``cpu_count``, ``devices_per_node``, ``sampler_error``), so the
    rules can be tested on synthetic readings and rerun on an old run's file.
    """
    lines: list[str] = []
    metrics = summary.get("metrics", {})
    time_split = summary.get("time", {})
    on_gpu = summary.get("backend") == "nvml"

    if summary.get("sampler_error"):
        lines.append(
            f"sampling stopped early ({summary['sampler_error']}): the readings cover only "
            "the start of the run"
        )

    data_wait = time_split.get("data_wait_fraction", 0.0)
    input_bound = data_wait >= INPUT_BOUND_FRACTION
    if input_bound:
        workers = summary.get("num_workers")
        per_device_cores = summary.get("cpu_count", 1) // max(summary.get("devices_per_node", 1), 1)
        suggested = max(1, min(8, per_device_cores // 2))
        finding = f"input-bound: {data_wait:.0%} of training time is spent waiting for batches"
        if workers is None or workers < suggested:
            lines.append(f"{finding} -> data.num_workers={suggested}")
        else:
            lines.append(
                f"{finding} with {workers} workers already -> keep workers alive between epochs "
                "(persistent workers) and tokenize the dataset ahead of time"
            )

    validation = time_split.get("validation_fraction", 0.0)
    if validation >= VALIDATION_HEAVY_FRACTION:
        lines.append(
            f"validation takes {validation:.0%} of training time -> validate less often "
            "(trainer.val_check_interval) or on fewer batches (trainer.limit_val_batches)"
        )

    overhead = time_split.get("overhead_fraction", 0.0)
    if overhead >= OVERHEAD_FRACTION:
        lines.append(
            f"step overhead: {overhead:.0%} of training time goes to logging, progress bar and "
            "checkpoints between steps -> raise trainer.log_every_n_steps and "
            "callbacks.progress_bar.refresh_rate, or make each step longer (data.max_tokens)"
        )

    sm = metrics.get("sm_util")
    memory_fraction = _peak_memory_fraction(metrics)
    if on_gpu and sm is not None and sm["mean"] < BUSY_SM_PERCENT and not input_bound:
        grow = _batch_growth_factor(memory_fraction)
        max_tokens = summary.get("batch", {}).get("max_padded_tokens", 0)
        if max_tokens:
            advice = f"raise data.max_tokens to about {_round_budget(max_tokens * grow)}"
        else:
            advice = f"raise the batch size about {grow:g}x"
        lines.append(
            f"batch too small for the device: SMs busy {sm['mean']:.0f}% on average "
            f"(p10 {sm['p10']:.0f}%) -> {advice}, or let tuner.batch_size=auto pick it"
        )

    if on_gpu and memory_fraction is not None and memory_fraction < MEMORY_HEADROOM_FRACTION:
        used = metrics["mem_used_gb"]["max"]
        total = metrics["mem_total_gb"]["max"]
        lines.append(
            f"memory headroom: at most {used:.1f} of {total:.1f} GB used "
            f"({memory_fraction:.0%}) -> room for a larger batch (data.max_tokens)"
        )

    precision = str(summary.get("precision", ""))
    if on_gpu and precision.startswith(("32", "64")):
        if summary.get("bf16_supported"):
            lines.append(
                f"fp32 training (precision {precision}) where bf16 would do -> "
                "use trainer.precision=bf16-mixed"
            )
        else:
            lines.append(
                f"fp32 training (precision {precision}) on a GPU without bf16 -> "
                "use trainer.precision=16-mixed"
            )

    if not lines:
        if on_gpu and sm is not None:
            lines.append(f"no bottleneck found: SMs busy {sm['mean']:.0f}% (p10 {sm['p10']:.0f}%)")
        else:
            lines.append("no bottleneck found in the step-time split")
    return lines


def _peak_memory_fraction(metrics: dict[str, dict[str, float]]) -> float | None:
    used, total = metrics.get("mem_used_gb"), metrics.get("mem_total_gb")
    if not used or not total or not total["max"]:
        return None
    return used["max"] / total["max"]


def _batch_growth_factor(memory_fraction: float | None) -> float:
    """How much larger a batch should fit: toward TARGET_MEMORY_FRACTION, between 2x and 8x."""
    if not memory_fraction:
        return 2.0
    # the epsilon keeps 0.7 / 0.1 (6.9999...) from rounding down to 6
    return float(min(8, max(2, math.floor(TARGET_MEMORY_FRACTION / memory_fraction + 1e-9))))


# ---- output -----------------------------------------------------------------------


def _format_report(summary: dict[str, Any], advice: list[str], directory: Path) -> str:
    metrics = summary["metrics"]
    if summary["backend"] == "nvml":
        names = ", ".join(sorted({device["name"] for device in summary["devices"]}))
        head = f"utilization (NVML, {len(summary['devices'])} GPU: {names}):"
        parts = [
            _describe(metrics, "sm_util", "SM", "%"),
            _describe(metrics, "mem_util", "mem bus", "%"),
        ]
        if "mem_used_gb" in metrics and "mem_total_gb" in metrics:
            used, total = metrics["mem_used_gb"]["max"], metrics["mem_total_gb"]["max"]
            parts.append(f"memory up to {used:.1f}/{total:.1f} GB")
        if "power_w" in metrics and "power_limit_w" in metrics:
            parts.append(
                f"power {metrics['power_w']['mean']:.0f}/{metrics['power_limit_w']['max']:.0f} W"
            )
    else:
        reason = summary.get("fallback_reason") or "no GPU sampler"
        head = f"utilization (psutil, {reason}):"
        parts = [_describe(metrics, "cpu_percent", "CPU", "% of a core")]
        if "rss_gb" in metrics:
            parts.append(f"RSS up to {metrics['rss_gb']['max']:.2f} GB")
    time_split = summary["time"]
    lines = [
        f"{head} " + ", ".join(part for part in parts if part),
        f"step time over {time_split['steps']} steps: {time_split['data_wait_fraction']:.0%} "
        f"data wait, {time_split['compute_fraction']:.0%} compute, "
        f"{time_split['validation_fraction']:.0%} validation, "
        f"{time_split['overhead_fraction']:.0%} logging/checkpoint overhead",
        "diagnosis:",
        *(f"  - {line}" for line in advice),
        f"wrote utilization.json and utilization.png to {directory}",
    ]
    return "\n".join(lines)


def _describe(metrics: dict[str, dict[str, float]], name: str, label: str, unit: str) -> str:
    if name not in metrics:
        return ""
    statistics = metrics[name]
    return f"{label} {statistics['mean']:.0f}{unit} mean / {statistics['p10']:.0f}{unit} p10"


# Readings drawn as a line each; the constant ones (totals, limits) are drawn dashed
# on the panel of what they bound.
_PANELS = {
    "nvml": [
        ("utilization %", ["sm_util", "mem_util"]),
        ("memory GB", ["mem_used_gb", "mem_total_gb"]),
        ("power W", ["power_w", "power_limit_w"]),
        ("SM clock MHz", ["sm_clock_mhz"]),
    ],
    "psutil": [("CPU % (100 = one core)", ["cpu_percent"]), ("memory GB", ["rss_gb"])],
}
_DASHED = {"mem_total_gb", "power_limit_w"}


def _plot_timeline(
    timeline: list[dict[str, Any]],
    validation_spans: list[tuple[float, float]],
    summary: dict[str, Any],
    path: Path,
) -> None:
    """Draw each reading over time per device, validation shaded; write via a temp file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _PANELS.get(summary["backend"], [])
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True, squeeze=False
    )
    series_keys = sorted({(row["rank"], row["device"]) for row in timeline})
    for axis, (title, metric_names) in zip(axes[:, 0], panels, strict=True):
        for rank, device in series_keys:
            rows = [row for row in timeline if row["rank"] == rank and row["device"] == device]
            for metric in metric_names:
                points = [(row["t"], row[metric]) for row in rows if metric in row]
                if points:
                    times, values = zip(*points, strict=True)
                    style = "--" if metric in _DASHED else "-"
                    axis.plot(times, values, style, label=f"{metric} r{rank}d{device}")
        for start, end in validation_spans:
            axis.axvspan(start, end, color="grey", alpha=0.2)
        axis.set_ylabel(title)
        if axis.has_data():
            axis.legend(loc="upper right", fontsize="x-small")
    axes[-1, 0].set_xlabel("seconds since training start (grey: validation)")
    figure.suptitle(f"utilization ({summary['backend']})")
    figure.tight_layout()
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=100)
    finally:
        plt.close(figure)
