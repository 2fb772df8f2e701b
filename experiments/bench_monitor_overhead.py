"""What spellfix's training monitors cost per step, against Lightning's own monitors.

A user who wants utilization and throughput numbers from Lightning would add its
``DeviceStatsMonitor`` and ``ThroughputMonitor`` (the latter needs a batch-size and
a length function, given here as rows and padded tokens). spellfix adds
``UtilizationMonitor`` (background NVML/psutil sampler, step-time split, diagnosis)
and its padding-aware ``ThroughputMonitor`` (real/padded tokens, MFU). This
benchmark trains the same BART on the same varying-size batches three ways:

- ``none``: no monitors (the floor);
- ``lightning``: DeviceStatsMonitor + lightning ThroughputMonitor;
- ``spellfix``: UtilizationMonitor + spellfix ThroughputMonitor.

The runners alternate for ``--rounds`` rounds in one process; each times
``--steps`` steps after ``--warmup`` untimed ones, logging every step (the worst
case for a monitor), and the median round counts. The table gives seconds per
step and the ratio to ``none``, and which questions each runner's logs answer.

    python -m experiments.bench_monitor_overhead                        # full run
    python -m experiments.bench_monitor_overhead --steps 5 --rounds 1   # quick check
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, DeviceStatsMonitor
from lightning.pytorch.callbacks import ThroughputMonitor as LightningThroughputMonitor
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader
from transformers import BartConfig, BartForConditionalGeneration

from experiments.common import write_results
from spellfix.callbacks.gpu_monitor import UtilizationMonitor
from spellfix.callbacks.throughput import ThroughputMonitor

RUNNERS = ("none", "lightning", "spellfix")
PAD_ID = 1


class Seq2Seq(pl.LightningModule):
    def __init__(self, d_model: int, layers: int, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        config = BartConfig(
            vocab_size=vocab,
            d_model=d_model,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=4 * d_model,
            decoder_ffn_dim=4 * d_model,
            max_position_embeddings=128,
            pad_token_id=PAD_ID,
            decoder_start_token_id=2,
        )
        self.model = BartForConditionalGeneration(config)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


def token_budget_batches(count: int, budget: int, vocab: int) -> list[dict[str, torch.Tensor]]:
    """Batches of random query lengths, as many rows as fit ``budget`` padded tokens."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        width = int(torch.randint(8, 33, (1,), generator=generator))
        rows = max(1, budget // (2 * width))
        lengths = torch.randint(2, width + 1, (rows,), generator=generator)
        lengths[0] = width
        positions = torch.arange(width)
        mask = (positions[None, :] < lengths[:, None]).long()
        input_ids = torch.randint(3, vocab, (rows, width), generator=generator)
        input_ids = input_ids.masked_fill(mask == 0, PAD_ID)
        labels = torch.randint(3, vocab, (rows, width), generator=generator)
        labels = labels.masked_fill(mask == 0, -100)
        batches.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels})
    return batches


class KeysLogger(Logger):
    """Remembers which metric names were logged, to say what each runner reports."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    @property
    def name(self) -> str:
        return "keys"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.names.update(metrics)


class StepClock(Callback):
    """Wall time of the steps after the warm-up ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.started: float | None = None
        self.seconds = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.warmup and self.started is None:
            self.started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - (self.started or time.perf_counter())


def monitors(runner: str, out_dir: Path) -> list[Callback]:
    if runner == "lightning":
        return [
            DeviceStatsMonitor(),
            LightningThroughputMonitor(
                batch_size_fn=lambda batch: batch["input_ids"].shape[0],
                length_fn=lambda batch: batch["input_ids"].numel() + batch["labels"].numel(),
                window_size=10,
            ),
        ]
    if runner == "spellfix":
        return [
            UtilizationMonitor(interval_s=0.5, output_dir=out_dir),
            ThroughputMonitor(window=10, output_dir=out_dir),
        ]
    return []


def run_once(runner: str, args: argparse.Namespace, batches: list, out_dir: Path) -> tuple:
    clock = StepClock(args.warmup)
    logger = KeysLogger()
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        max_steps=args.warmup + args.steps,
        logger=logger,
        callbacks=[clock, *monitors(runner, out_dir)],
        default_root_dir=str(out_dir),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    module = Seq2Seq(args.d_model, args.layers, args.vocab)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return clock.seconds / args.steps, logger.names


def answers(names: set[str]) -> str:
    """Which of the questions a tuning engineer asks the logged names answer."""
    questions = {
        "GPU/CPU busy %": any(
            "util" in n or "gpu_utilization" in n or "cpu_percent" in n for n in names
        ),
        "real vs padded tokens/s": any("padded_tokens" in n for n in names),
        "MFU": any("mfu" in n for n in names),
        "step-time split": any("data_wait" in n for n in names),
    }
    return ", ".join(f"{q}: {'yes' if ok else 'no'}" for q, ok in questions.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--d-model", type=int, default=256, help="BART hidden size")
    parser.add_argument("--layers", type=int, default=3, help="encoder and decoder layers")
    parser.add_argument("--vocab", type=int, default=8000, help="vocabulary size")
    parser.add_argument("--budget", type=int, default=2048, help="padded tokens per batch")
    parser.add_argument("--name", default="bench_monitor_overhead", help="results file name")
    args = parser.parse_args()

    batches = token_budget_batches(args.warmup + args.steps, args.budget, args.vocab)
    seconds: dict[str, list[float]] = {runner: [] for runner in RUNNERS}
    logged: dict[str, set[str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            order = RUNNERS if round_index % 2 == 0 else tuple(reversed(RUNNERS))
            for runner in order:
                per_step, names = run_once(runner, args, batches, Path(scratch) / runner)
                seconds[runner].append(per_step)
                logged[runner] = names
                print(f"round {round_index} {runner}: {per_step * 1000:.2f} ms/step")

    floor = statistics.median(seconds["none"])
    rows = [
        "| runner | ms/step (median) | ratio to none | what its logs answer |",
        "|---|---|---|---|",
    ]
    for runner in RUNNERS:
        median = statistics.median(seconds[runner])
        rows.append(
            f"| {runner} | {median * 1000:.2f} | {median / floor:.3f} | {answers(logged[runner])} |"
        )
    setup = (
        f"BART d_model={args.d_model}, {args.layers}+{args.layers} layers, vocab {args.vocab}; "
        f"token-budget batches of {args.budget} padded tokens (8-32 tokens a row); "
        f"{args.steps} timed steps after {args.warmup}, logging every step; "
        f"median of {args.rounds} alternating rounds."
    )
    path = write_results(
        args.name, "Monitor overhead per training step", setup + "\n\n" + "\n".join(rows)
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
