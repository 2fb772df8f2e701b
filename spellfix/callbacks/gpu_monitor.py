"""GPU utilization during training, where step time goes, and what to change.

The reference team found its GPUs 35% busy only by watching nvidia-smi by hand.
``UtilizationMonitor`` measures the same numbers from inside training and explains
them: it samples the devices on a background thread (``samplers``), splits each
step's wall time into data wait, compute, validation and overhead (``step_timer``),
and at the end writes and prints a summary (``utilization_report``) that ends in
concrete config changes (``diagnosis``). Lightning's DeviceStatsMonitor logs memory
but no utilization, and explains nothing.

Without a GPU or NVML it samples this process's CPU and memory with psutil, so a
CPU run still produces the same files and the step-time diagnosis.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from data_synth.files import write_json_atomic
from spellfix.callbacks._common import (
    gather_to_all,
    log_to_loggers,
    output_directory,
    synchronize_device,
)
from spellfix.callbacks.diagnosis import diagnose
from spellfix.callbacks.samplers import Sampler, SamplingThread, default_sampler
from spellfix.callbacks.step_timer import StepTimer, time_fractions
from spellfix.callbacks.utilization_report import (
    format_report,
    plot_timeline,
    pool_metric_values,
    summarize,
    timeline_rows,
    value_statistics,
)

log = logging.getLogger(__name__)


class UtilizationMonitor(Callback):
    """Sample device utilization in the background, time each step, diagnose, advise.

    Every ``log_every_n_steps`` training batches (default: the trainer's) it logs,
    to every attached logger, the mean and 10th percentile of each reading since
    the last log, pooled over all ranks' devices (``util/sm_util_mean``,
    ``util/sm_util_p10``, ... or ``util/cpu_percent_mean`` on the psutil fallback)
    and the running split of wall time (``util/data_wait_fraction``, ...; what each
    part covers is in ``step_timer``).

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
        self._thread: SamplingThread | None = None
        self._sampler_closed = False
        self._timer = StepTimer()
        self._logged_upto = 0
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
        self._timer.start(trainer.profiler)
        self._sampler_closed = False
        self._thread = SamplingThread(self.sampler, self.interval_s, self._timer.origin)
        self._thread.start()

    def _stop_sampling(self) -> None:
        self._timer.stop()
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
        self._timer.epoch_started()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._timer.validation_started()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._timer.validation_ended()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._timer.step_started()
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
        if not self._timer.in_step:
            return
        synchronize_device(trainer)
        self._timer.step_ended()
        every = self.log_every_n_steps or trainer.log_every_n_steps
        if every and self._timer.steps % every == 0:
            self._log_interval(trainer)

    def _log_interval(self, trainer: pl.Trainer) -> None:
        """Log mean and p10 of the readings since the last log, pooled over ranks."""
        fresh = self._thread.snapshot(self._logged_upto) if self._thread else []
        self._logged_upto += len(fresh)
        per_rank = gather_to_all(trainer, pool_metric_values(fresh))
        if not trainer.is_global_zero:
            return
        pooled: dict[str, list[float]] = {}
        for rank_values in per_rank:
            for metric, values in rank_values.items():
                pooled.setdefault(metric, []).extend(values)
        metrics: dict[str, float] = {}
        for metric, values in pooled.items():
            statistics = value_statistics(values)
            metrics[f"util/{metric}_mean"] = statistics["mean"]
            metrics[f"util/{metric}_p10"] = statistics["p10"]
        metrics.update(
            {f"util/{name}": value for name, value in time_fractions(self._timer.times).items()}
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
            "times": self._timer.totals(),
            "batch_padded_tokens": self._batch_padded_tokens,
            "batch_samples": self._batch_samples,
        }
        per_rank = gather_to_all(trainer, payload)
        if not trainer.is_global_zero:
            return
        self.summary = summarize(per_rank, self.fallback_reason, self.interval_s, self._context)
        advice = diagnose(self.summary)
        directory = output_directory(trainer, self.output_dir)
        timeline = timeline_rows(per_rank)
        write_json_atomic(
            directory / "utilization.json",
            {**self.summary, "diagnosis": advice, "timeline": timeline},
            sort_keys=True,
        )
        if self.plot:
            plot_timeline(
                timeline, self._timer.validation_spans, self.summary, directory / "utilization.png"
            )
        print(format_report(self.summary, advice, directory))
