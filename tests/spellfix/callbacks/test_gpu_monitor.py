"""UtilizationMonitor: real readings during a real fit, survival of a failing sampler, advice."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
import torch
from callback_toys import (
    BATCH_SHAPES,
    RecordingLogger,
    ToySeq2Seq,
    cpu_trainer,
    loader,
    toy_batches,
)
from torch.utils.data import DataLoader, Dataset

from spellfix.callbacks import UtilizationMonitor, diagnose
from spellfix.callbacks.gpu_monitor import ProcessSampler

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cpu_fallback_records_real_readings_and_writes_both_files(tmp_path, capsys) -> None:
    batches = toy_batches(repeat=2)
    monitor = UtilizationMonitor(interval_s=0.02, log_every_n_steps=3, output_dir=tmp_path)
    trainer = cpu_trainer(tmp_path, [monitor])
    trainer.fit(
        ToySeq2Seq(), train_dataloaders=loader(batches), val_dataloaders=loader(batches[:2])
    )

    report = json.loads((tmp_path / "utilization.json").read_text())
    assert report["backend"] == "psutil"
    assert "not a GPU" in report["fallback_reason"]
    assert report["sampler_error"] is None
    metrics = report["metrics"]
    assert metrics["rss_gb"]["samples"] >= 1
    assert metrics["rss_gb"]["mean"] > 0.01  # torch alone keeps more than 10 MB resident
    assert metrics["cpu_percent"]["max"] > 0.0  # training keeps this process busy
    assert report["timeline"] and {"t", "rank", "cpu_percent", "rss_gb"} <= set(
        report["timeline"][0]
    )

    time_split = report["time"]
    assert time_split["steps"] == len(batches)
    assert time_split["compute_s"] > 0
    assert time_split["validation_s"] > 0  # one validation pass at the epoch end
    parts = ("data_wait", "compute", "validation", "overhead")
    fractions = [time_split[f"{part}_fraction"] for part in parts]
    assert sum(fractions) == pytest.approx(1.0)
    # padded source + target slots, what data.max_tokens budgets: 4 x 6 + 4 x 5 is the largest
    largest = max(len(src) * (max(src) + max(tgt)) for src, tgt in BATCH_SHAPES)
    assert report["batch"]["max_padded_tokens"] == largest == 44
    assert report["num_workers"] == 0
    assert report["diagnosis"]

    assert (tmp_path / "utilization.png").read_bytes()[:8] == PNG_MAGIC

    logger = trainer.logger
    assert isinstance(logger, RecordingLogger)
    # One log per 3 batches, each from the samples taken since the last; an interval the
    # thread had no turn in (two shared cores) logs nothing rather than stale numbers.
    assert 1 <= len(logger.values("util/rss_gb_mean")) <= len(batches) // 3
    assert len(logger.values("util/compute_fraction")) == len(batches) // 3
    assert {"util/cpu_percent_p10", "util/compute_fraction"} <= logger.logged_keys()

    printed = capsys.readouterr().out
    assert "utilization (psutil" in printed
    assert "diagnosis:" in printed


class SlowBatches(Dataset):
    """Prepared batches handed out after a delay, like a loader that tokenizes too slowly."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], delay_s: float) -> None:
        self.batches = batches
        self.delay_s = delay_s

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        time.sleep(self.delay_s)
        return self.batches[index]


@pytest.mark.slow
def test_a_slow_loader_is_diagnosed_as_input_bound(tmp_path) -> None:
    batches = toy_batches()
    monitor = UtilizationMonitor(interval_s=0.05, output_dir=tmp_path, plot=False)
    trainer = cpu_trainer(tmp_path, [monitor])
    slow_loader = DataLoader(SlowBatches(batches, delay_s=0.3), batch_size=None)
    trainer.fit(ToySeq2Seq(), train_dataloaders=slow_loader)

    report = json.loads((tmp_path / "utilization.json").read_text())
    time_split = report["time"]
    # Each fetch sleeps 0.3 s; the hook counts it as data wait, not as overhead.
    assert time_split["data_wait_s"] >= 0.3 * len(batches) * 0.9
    assert time_split["data_wait_s"] > 5 * time_split["overhead_s"]
    assert report["diagnosis"][0].startswith("input-bound:")
    assert "data.num_workers=" in report["diagnosis"][0]
    assert "start" not in vars(trainer.profiler)  # the fetch hook was removed


class FailingSampler:
    """Real psutil readings, then an error on the third call, as a lost NVML handle gives."""

    backend = "psutil"
    metrics = ProcessSampler.metrics

    def __init__(self, fail_on_call: int = 3) -> None:
        self._inner = ProcessSampler()
        self.device_names = self._inner.device_names
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.closed = threading.Event()

    def sample(self) -> list[dict[str, float]]:
        self.calls += 1
        if self.calls >= self.fail_on_call:
            raise RuntimeError("GPU is lost")
        return self._inner.sample()

    def close(self) -> None:
        self.closed.set()


@pytest.mark.slow
def test_a_sampler_that_raises_mid_run_does_not_stop_training(tmp_path, caplog) -> None:
    batches = toy_batches(repeat=2)
    sampler = FailingSampler()
    monitor = UtilizationMonitor(interval_s=0.01, output_dir=tmp_path, sampler=sampler)
    trainer = cpu_trainer(tmp_path, [monitor])
    with caplog.at_level(logging.WARNING, logger="spellfix.callbacks.gpu_monitor"):
        trainer.fit(ToySeq2Seq(), train_dataloaders=loader(batches))

    assert trainer.state.finished
    assert trainer.global_step == len(batches)
    assert sampler.calls == sampler.fail_on_call  # sampling stopped at the first error
    assert sampler.closed.is_set()
    warnings = [record for record in caplog.records if "GPU is lost" in record.getMessage()]
    assert len(warnings) == 1

    report = json.loads((tmp_path / "utilization.json").read_text())
    assert "RuntimeError: GPU is lost" in report["sampler_error"]
    assert report["metrics"]["rss_gb"]["samples"] == sampler.fail_on_call - 1
    assert report["diagnosis"][0].startswith("sampling stopped early")
    assert (tmp_path / "utilization.png").read_bytes()[:8] == PNG_MAGIC


def gpu_summary(**overrides: Any) -> dict[str, Any]:
    """A synthetic NVML summary of a healthy run; each test changes what it is about."""
    summary: dict[str, Any] = {
        "backend": "nvml",
        "sampler_error": None,
        "metrics": {
            "sm_util": {"mean": 93.0, "p10": 85.0},
            "mem_used_gb": {"max": 60.0},
            "mem_total_gb": {"max": 80.0},
        },
        "time": {"data_wait_fraction": 0.02, "compute_fraction": 0.95, "validation_fraction": 0.03},
        "batch": {"max_padded_tokens": 2048},
        "precision": "bf16-mixed",
        "bf16_supported": True,
        "num_workers": 4,
        "cpu_count": 8,
        "devices_per_node": 1,
    }
    summary.update(overrides)
    return summary


def test_diagnose_finds_nothing_to_fix_in_a_busy_run() -> None:
    assert diagnose(gpu_summary()) == ["no bottleneck found: SMs busy 93% (p10 85%)"]


def test_diagnose_reports_an_input_bound_run_and_the_worker_count_to_use() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.4, "compute_fraction": 0.55, "validation_fraction": 0.05},
        metrics={
            "sm_util": {"mean": 35.0, "p10": 0.0},
            "mem_used_gb": {"max": 60.0},
            "mem_total_gb": {"max": 80.0},
        },
        num_workers=0,
    )
    lines = diagnose(summary)
    assert lines == [
        "input-bound: 40% of training time is spent waiting for batches -> data.num_workers=4"
    ]  # no batch-size advice: a larger batch would only wait longer


def test_diagnose_spreads_the_cores_over_the_gpus_of_a_node() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.3, "compute_fraction": 0.7, "validation_fraction": 0.0},
        num_workers=2,
        cpu_count=64,
        devices_per_node=8,
    )
    assert "data.num_workers=4" in diagnose(summary)[0]


def test_diagnose_with_enough_workers_already_suggests_keeping_them_alive() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.3, "compute_fraction": 0.7, "validation_fraction": 0.0},
        num_workers=8,
    )
    assert "persistent workers" in diagnose(summary)[0]


def test_diagnose_names_the_reference_teams_fixes_for_a_small_fp32_batch() -> None:
    # The reference study: 35% busy, little memory used, fp32 on a bf16-capable GPU.
    summary = gpu_summary(
        metrics={
            "sm_util": {"mean": 35.0, "p10": 12.0},
            "mem_used_gb": {"max": 8.0},
            "mem_total_gb": {"max": 80.0},
        },
        precision="32-true",
    )
    lines = diagnose(summary)
    assert len(lines) == 3
    # 10% of memory used: aim at 70%, so 7x the widest batch's 2048 tokens.
    assert lines[0].startswith("batch too small for the device: SMs busy 35%")
    assert "raise data.max_tokens to about 14k" in lines[0]
    assert lines[1].startswith("memory headroom: at most 8.0 of 80.0 GB used (10%)")
    assert lines[2].endswith("use trainer.precision=bf16-mixed")


def test_diagnose_caps_the_batch_growth_and_falls_back_to_a_factor_without_token_counts() -> None:
    summary = gpu_summary(
        metrics={
            "sm_util": {"mean": 20.0, "p10": 5.0},
            "mem_used_gb": {"max": 0.5},
            "mem_total_gb": {"max": 80.0},
        },
        batch={"max_padded_tokens": 0},
    )
    assert "raise the batch size about 8x" in diagnose(summary)[0]


def test_diagnose_advises_fp16_on_a_gpu_without_bf16() -> None:
    summary = gpu_summary(precision="32-true", bf16_supported=False)
    assert diagnose(summary) == [
        "fp32 training (precision 32-true) on a GPU without bf16 -> use trainer.precision=16-mixed"
    ]


def test_diagnose_flags_validation_that_eats_the_run() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.0, "compute_fraction": 0.6, "validation_fraction": 0.4}
    )
    assert "trainer.val_check_interval" in diagnose(summary)[0]


def test_diagnose_flags_time_lost_between_steps() -> None:
    summary = gpu_summary(
        time={
            "data_wait_fraction": 0.05,
            "compute_fraction": 0.6,
            "validation_fraction": 0.0,
            "overhead_fraction": 0.35,
        }
    )
    line = diagnose(summary)[0]
    assert line.startswith("step overhead: 35% of training time")
    assert "trainer.log_every_n_steps" in line


def test_diagnose_gives_no_gpu_advice_for_a_cpu_run() -> None:
    summary = {
        "backend": "psutil",
        "metrics": {"cpu_percent": {"mean": 95.0, "p10": 80.0}},
        "time": {"data_wait_fraction": 0.01, "compute_fraction": 0.99, "validation_fraction": 0.0},
        "precision": "32-true",
    }
    assert diagnose(summary) == ["no bottleneck found in the step-time split"]


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        UtilizationMonitor(interval_s=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nvml_sampler_sees_a_matmul_load() -> None:
    from spellfix.callbacks.gpu_monitor import default_sampler

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


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_fit_reports_nvml_readings(tmp_path) -> None:
    monitor = UtilizationMonitor(interval_s=0.05, output_dir=tmp_path)
    trainer = cpu_trainer(
        tmp_path, [monitor], accelerator="gpu", precision="bf16-mixed", max_epochs=3
    )
    trainer.fit(ToySeq2Seq(), train_dataloaders=loader(toy_batches(repeat=4)))
    report = json.loads((tmp_path / "utilization.json").read_text())
    assert report["backend"] == "nvml"
    assert {"sm_util", "mem_util", "mem_used_gb", "sm_clock_mhz"} <= set(report["metrics"])
