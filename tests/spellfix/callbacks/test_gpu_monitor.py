"""UtilizationMonitor: real readings during a real fit, survival of a failing sampler."""

from __future__ import annotations

import json
import logging
import threading
import time

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

from spellfix.callbacks.gpu_monitor import UtilizationMonitor
from spellfix.callbacks.samplers import ProcessSampler

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
    with caplog.at_level(logging.WARNING, logger="spellfix.callbacks.samplers"):
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


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        UtilizationMonitor(interval_s=0)


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
