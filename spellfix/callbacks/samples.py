"""Evidence a person reads during a run: sample corrections, and metric lines for SageMaker.

Loss curves say a model improves; a handful of real corrections says what it does.
``SampleTableLogger`` takes the ``(noisy, prediction, clean)`` triples the module keeps
after each validation (``SpellCorrector.last_samples``) and logs them as a table to
W&B, as text to TensorBoard, and always to ``<run_dir>/samples.jsonl`` so the run
directory holds them with no service running.

``MetricLineLogger`` is a Lightning logger that prints every logged metric set as one
``spellfix-metric`` line. SageMaker charts a training job's metrics by matching regexes
against its stdout; ``metric_regex`` builds the matching regex next to the line format,
so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from argparse import Namespace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

SAMPLES_FILE = "samples.jsonl"
SAMPLE_COLUMNS = ["noisy", "prediction", "clean", "correct"]
METRIC_LINE_PREFIX = "spellfix-metric"
_NUMBER = r"([-+]?(?:[0-9]*\.)?[0-9]+(?:[eE][-+]?[0-9]+)?)"


class SampleTableLogger(Callback):
    """After each validation, log the module's latest sample corrections everywhere.

    Rows are the module's ``last_samples``; a validation that produced none (the module
    keeps the previous list) is not logged twice.
    """

    def __init__(self, run_dir: Path | str | None = None, max_rows: int = 16) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.max_rows = max_rows
        self._logged: object | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = getattr(pl_module, "last_samples", None)
        if trainer.sanity_checking or not samples or samples is self._logged:
            return
        self._logged = samples
        if not trainer.is_global_zero:
            return
        rows = [
            [noisy, prediction, clean, prediction.strip().lower() == clean.strip().lower()]
            for noisy, prediction, clean in samples[: self.max_rows]
        ]
        step = trainer.global_step
        self._append_jsonl(trainer, rows, step)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table(key="val/samples", columns=SAMPLE_COLUMNS, data=rows, step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/samples", markdown_table(rows), global_step=step)

    def _append_jsonl(self, trainer: pl.Trainer, rows: list[list[Any]], step: int) -> None:
        """One JSON object per sample, appended in a single write (a reader sees whole lines)."""
        directory = self.run_dir or Path(trainer.default_root_dir)
        directory.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps(
                {
                    "step": step,
                    "epoch": trainer.current_epoch,
                    **dict(zip(SAMPLE_COLUMNS, row, strict=True)),
                },
                ensure_ascii=False,
            )
            for row in rows
        ]
        with (directory / SAMPLES_FILE).open("a", encoding="utf-8") as stream:
            stream.write("\n".join(lines) + "\n")


def markdown_table(rows: list[list[Any]]) -> str:
    """Rows as a markdown table; TensorBoard's text plugin renders markdown."""
    header = "| " + " | ".join(SAMPLE_COLUMNS) + " |\n|" + "---|" * len(SAMPLE_COLUMNS)
    body = ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join([header, *body])


def read_samples(run_dir: Path | str) -> list[dict[str, Any]]:
    """Every sample row a run wrote to ``samples.jsonl``, oldest first."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def format_metric_line(metrics: dict[str, float], step: int | None) -> str:
    """``spellfix-metric step=12 train/loss=0.8963 ...``: one line, space separated."""
    parts = [METRIC_LINE_PREFIX]
    if step is not None:
        parts.append(f"step={step}")
    parts += [f"{name}={float(value):.6g}" for name, value in sorted(metrics.items())]
    return " ".join(parts)


def metric_regex(name: str) -> str:
    """The regex that captures metric ``name``'s value from a ``spellfix-metric`` line."""
    return rf"{METRIC_LINE_PREFIX} .*?(?<= ){re.escape(name)}={_NUMBER}"


class MetricLineLogger(Logger):
    """Prints each logged metric set as a ``spellfix-metric`` line on global rank zero.

    A logger, not a callback, because loggers receive everything: the module's own
    ``self.log`` values and the metrics the monitors send straight to the loggers.
    """

    @property
    def name(self) -> str:
        return "metric_lines"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Hyperparameters are in the run's config.yaml; nothing to print."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        numeric = {key: value for key, value in metrics.items() if _is_number(value)}
        if numeric:
            print(format_metric_line(numeric, step), flush=True)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def log_model_artifact(loggers: list[Logger], model_dir: Path | str, name: str = "model") -> None:
    """Attach the saved model directory to every W&B run as a ``model`` artifact.

    Lightning's own ``log_model`` uploads raw checkpoints; this uploads the HF directory
    a user loads (weights, tokenizer, spellfix.json), which is what a dashboard reader
    wants to download.
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            artifact = wandb.Artifact(name=name, type="model")
            artifact.add_dir(str(model_dir))
            logger.experiment.log_artifact(artifact)
