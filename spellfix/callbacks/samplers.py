"""Reading device utilization in the background while training runs.

nvidia-smi shows a GPU's load to a person watching it; training needs the same
numbers as data. A ``Sampler`` reads the devices a rank uses (NVML on a GPU, psutil
for this process on a CPU or where NVML is missing) and ``SamplingThread`` calls it
every few tenths of a second beside training, keeping timestamped readings. Both are
kept apart from ``UtilizationMonitor`` so another backend can be plugged in and a test
can inject a sampler that fails.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

import psutil
import torch

log = logging.getLogger(__name__)

GIB = 1024**3

# One sample: seconds since training started, and one dict of readings per device.
Reading = tuple[float, list[dict[str, float]]]


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


class SamplingThread(threading.Thread):
    """Reads the sampler every ``interval_s`` seconds until stopped or until it fails once.

    Readings are timed from ``clock_origin`` (a ``time.perf_counter`` value), the clock
    the step timer's validation spans use too, so the two line up on one timeline.
    """

    def __init__(self, sampler: Sampler, interval_s: float, clock_origin: float) -> None:
        super().__init__(name="spellfix-utilization", daemon=True)
        self.sampler = sampler
        self.interval_s = interval_s
        self.clock_origin = clock_origin
        self.readings: list[Reading] = []
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

    def snapshot(self, start: int = 0) -> list[Reading]:
        """The readings from index ``start`` on, copied under the lock."""
        with self._lock:
            return list(self.readings[start:])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=max(5.0, 2 * self.interval_s))
