"""Training callbacks, assembled from the ``callbacks`` config group.

``build_callbacks`` is the one place that turns ``conf/callbacks/default.yaml``
into Lightning callbacks, so ``train(cfg)``, the SageMaker entrypoint and tests
get the same set: checkpointing, learning-rate logging, a progress bar, and
spellfix's utilization and throughput monitors.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelCheckpoint,
    RichProgressBar,
    TQDMProgressBar,
)
from omegaconf import DictConfig

from spellfix.callbacks.gpu_monitor import UtilizationMonitor, diagnose
from spellfix.callbacks.samples import SampleTableLogger
from spellfix.callbacks.throughput import ThroughputMonitor, TokenCounts, count_tokens

__all__ = [
    "ThroughputMonitor",
    "TokenCounts",
    "UtilizationMonitor",
    "build_callbacks",
    "count_tokens",
    "diagnose",
]

PROGRESS_BARS = {"tqdm": TQDMProgressBar, "rich": RichProgressBar}


def build_callbacks(
    cfg: DictConfig, run_dir: Path, checkpoint_dir: Path | None = None
) -> list[Callback]:
    """The enabled callbacks of ``cfg`` (the ``callbacks`` group), writing under ``run_dir``.

    Checkpoints go to ``checkpoint_dir`` (default ``<run_dir>/checkpoints``; SageMaker
    points it at ``/opt/ml/checkpoints``); the monitors write their JSON and plot into
    ``run_dir`` itself, next to the run's saved config.
    """
    run_dir = Path(run_dir)
    callbacks: list[Callback] = []

    checkpoint = cfg.checkpoint
    if checkpoint.enabled:
        callbacks.append(
            ModelCheckpoint(
                dirpath=Path(checkpoint_dir) if checkpoint_dir else run_dir / "checkpoints",
                filename=checkpoint.filename,
                monitor=checkpoint.monitor,
                mode=checkpoint.mode,
                save_top_k=checkpoint.save_top_k,
                save_last=checkpoint.save_last,
                every_n_train_steps=checkpoint.every_n_train_steps,
            )
        )

    if cfg.lr_monitor.enabled:
        callbacks.append(LearningRateMonitor(logging_interval=cfg.lr_monitor.logging_interval))

    progress = cfg.progress_bar
    if progress.enabled:
        if progress.kind not in PROGRESS_BARS:
            raise ValueError(
                f"callbacks.progress_bar.kind={progress.kind!r} is unknown; "
                f"use one of {sorted(PROGRESS_BARS)}"
            )
        refresh_rate = progress.refresh_rate
        if not sys.stderr.isatty():
            # In a log file each redraw is a line: CI and CloudWatch get one per N batches.
            refresh_rate = max(refresh_rate, progress.get("log_refresh_rate", refresh_rate))
        callbacks.append(PROGRESS_BARS[progress.kind](refresh_rate=refresh_rate))

    utilization = cfg.utilization
    if utilization.enabled:
        callbacks.append(
            UtilizationMonitor(
                interval_s=utilization.interval_s,
                log_every_n_steps=utilization.log_every_n_steps,
                output_dir=run_dir,
                plot=utilization.plot,
            )
        )

    throughput = cfg.throughput
    if throughput.enabled:
        callbacks.append(
            ThroughputMonitor(
                window=throughput.window,
                log_every_n_steps=throughput.log_every_n_steps,
                output_dir=run_dir,
                synchronize=throughput.synchronize,
                cpu_peak_matmul_size=throughput.cpu_peak_matmul_size,
            )
        )
    if cfg.samples.enabled:
        callbacks.append(SampleTableLogger(run_dir, max_rows=cfg.samples.max_rows))

    return callbacks
