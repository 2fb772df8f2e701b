"""Plumbing the monitors share: cross-rank gathering, logger fan-out, output files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from data_synth.files import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def gather_to_all(trainer: pl.Trainer, payload: Any) -> list[Any]:
    """Every rank's ``payload``, in rank order; a one-item list when not distributed.

    A collective: every rank must call it at the same point, which the monitors
    guarantee by calling it on step counts all ranks share and at the end of fit.
    """
    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [payload]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, payload)
    return gathered


def log_to_loggers(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Send metrics to every attached logger from rank zero, at the trainer's step.

    Callbacks go to the loggers directly rather than through ``LightningModule.log``
    because these numbers are already aggregated across ranks and must not be
    reduced again or tied to the module's logging hooks.
    """
    if not trainer.is_global_zero or not metrics:
        return
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


def output_directory(trainer: pl.Trainer, explicit: Path | str | None) -> Path:
    """Where a monitor writes its files: the given directory, else the run's log dir."""
    if explicit is not None:
        return Path(explicit)
    return Path(trainer.log_dir or trainer.default_root_dir)


def save_png(figure: Figure, path: Path) -> None:
    """Write a plot as a PNG through a temporary file, then close it.

    A run killed mid-write leaves no half-drawn plot, and pyplot does not keep every
    figure of a long session alive.
    """
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=100)
    finally:
        plt.close(figure)


def synchronize_device(trainer: pl.Trainer) -> None:
    """Wait for queued CUDA kernels, so a host-side clock measures the work, not its launch."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
