"""A tiny real BART LightningModule and hand-made padded batches for the callback tests.

Kept in an importable module (not a conftest) because the DDP test runs it in a
separate script whose processes Lightning starts itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader
from transformers import BartConfig, BartForConditionalGeneration

PAD_ID = 1
VOCAB_SIZE = 64


def tiny_bart_config(**changes) -> BartConfig:
    """A one-layer BART for the monitors; ``changes`` override any of its settings."""
    settings = dict(
        vocab_size=VOCAB_SIZE,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        pad_token_id=PAD_ID,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
    )
    return BartConfig(**{**settings, **changes})


class ToySeq2Seq(pl.LightningModule):
    """The contract the monitors rely on: ``self.model`` is a BartForConditionalGeneration."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = BartForConditionalGeneration(tiny_bart_config())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self.model(**batch).loss)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def padded_batch(
    source_lengths: Sequence[int], target_lengths: Sequence[int], seed: int = 0
) -> dict[str, torch.Tensor]:
    """A batch shaped like the collator's: padded to the longest row on each side."""
    generator = torch.Generator().manual_seed(seed)
    width_source, width_target = max(source_lengths), max(target_lengths)
    rows = len(source_lengths)
    input_ids = torch.full((rows, width_source), PAD_ID)
    attention_mask = torch.zeros((rows, width_source), dtype=torch.long)
    labels = torch.full((rows, width_target), -100)
    decoder_attention_mask = torch.zeros((rows, width_target), dtype=torch.long)
    for row, (source, target) in enumerate(zip(source_lengths, target_lengths, strict=True)):
        input_ids[row, :source] = torch.randint(3, VOCAB_SIZE, (source,), generator=generator)
        attention_mask[row, :source] = 1
        labels[row, :target] = torch.randint(3, VOCAB_SIZE, (target,), generator=generator)
        decoder_attention_mask[row, :target] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "decoder_attention_mask": decoder_attention_mask,
    }


# Batches of varying size and padding, as token-budget batching produces them.
BATCH_SHAPES = [
    ([5, 3, 1], [4, 2, 1]),
    ([8, 8], [6, 7]),
    ([2, 2, 2, 2, 1], [3, 1, 2, 2, 2]),
    ([12], [10]),
    ([4, 6, 5, 3], [5, 5, 4, 2]),
    ([7, 1], [1, 7]),
]


def toy_batches(repeat: int = 1) -> list[dict[str, torch.Tensor]]:
    shapes = BATCH_SHAPES * repeat
    return [padded_batch(src, tgt, seed=index) for index, (src, tgt) in enumerate(shapes)]


def loader(batches: list[dict[str, torch.Tensor]]) -> DataLoader:
    """Yields the prepared batches unchanged, in order (batch_size=None disables collation)."""
    return DataLoader(batches, batch_size=None, shuffle=False)


class RecordingLogger(Logger):
    """A real Lightning logger that keeps every logged metric in memory for assertions."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.history.append((step, dict(metrics)))

    def logged_keys(self) -> set[str]:
        return {key for _, metrics in self.history for key in metrics}

    def values(self, key: str) -> list[float]:
        return [metrics[key] for _, metrics in self.history if key in metrics]


def cpu_trainer(tmp_path: Any, callbacks: list[pl.Callback], **overrides: Any) -> pl.Trainer:
    """A quiet single-process CPU trainer writing under ``tmp_path``."""
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "logger": RecordingLogger(),
        "callbacks": callbacks,
        "default_root_dir": str(tmp_path),
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
    }
    options.update(overrides)
    return pl.Trainer(**options)
