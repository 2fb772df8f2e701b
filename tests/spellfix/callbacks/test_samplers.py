"""Samplers: the psutil fallback off a GPU, NVML readings on one, a thread that stops cleanly."""

from __future__ import annotations

import pytest
import torch

from spellfix.callbacks.samplers import ProcessSampler, SamplingThread, default_sampler


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvml_sampler_sees_a_matmul_load() -> None:
    device = torch.device("cuda", 0)
    sampler, fallback_reason = default_sampler(device)
    assert fallback_reason is None and sampler.backend == "nvml"
    left = torch.randn(8192, 8192, device=device)
    readings = []
    for _ in range(20):
        for _ in range(20):
            left = torch.tanh(left @ left)
        readings.append(sampler.sample()[0])
    torch.cuda.synchronize()
    sampler.close()
    assert max(reading["sm_util"] for reading in readings) > 0
    assert all(0 < reading["mem_used_gb"] <= reading["mem_total_gb"] for reading in readings)


def test_off_a_gpu_the_default_sampler_reads_this_process_and_says_why() -> None:
    sampler, fallback_reason = default_sampler(torch.device("cpu"))
    assert isinstance(sampler, ProcessSampler)
    assert fallback_reason == "training runs on cpu, not a GPU"
    (reading,) = sampler.sample()
    assert set(reading) == set(ProcessSampler.metrics)
    assert 0 < reading["rss_gb"] <= reading["mem_total_gb"]


class BrokenSampler:
    """Fails on its first reading, as a GPU lost before training starts would."""

    backend = "test"
    metrics = ("x",)

    def __init__(self) -> None:
        self.device_names = ["broken"]

    def sample(self) -> list[dict[str, float]]:
        raise RuntimeError("no device")

    def close(self) -> None:
        pass


def test_the_sampling_thread_keeps_timed_readings_and_ends_at_the_first_error() -> None:
    thread = SamplingThread(ProcessSampler(), interval_s=0.01, clock_origin=0.0)
    thread.start()
    thread.stop()
    assert not thread.is_alive() and thread.error is None
    readings = thread.snapshot()
    assert readings and all(t > 0 for t, _ in readings)
    assert thread.snapshot(len(readings)) == []

    failing = SamplingThread(BrokenSampler(), interval_s=0.01, clock_origin=0.0)
    failing.start()
    failing.join(timeout=5)
    assert not failing.is_alive()
    assert failing.error == "RuntimeError: no device" and failing.snapshot() == []
