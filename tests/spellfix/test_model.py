"""The Lightning module: which examples its accuracy metrics are computed on, and the
learning-rate schedule a time-limited run ends with."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest

from spellfix.data import PairCollator, PairDataset, ResumableDataLoader, TokenBudgetBatchSampler
from spellfix.model import SpellCorrector, warmup_schedule

# Four query lengths, ten queries each: with batches of ten, every batch holds one length.
QUERIES = [f"{' '.join(['abc'] * words)} q{index}" for words in (1, 2, 4, 8) for index in range(10)]


def copy_loader(module: SpellCorrector, shuffle: bool = False) -> ResumableDataLoader:
    """Batches of ten QUERIES, each its own target."""
    tokenizer = module.tokenizer
    ids = [tokenizer(query)["input_ids"] for query in QUERIES]
    dataset = PairDataset(ids, ids, QUERIES, QUERIES)
    sampler = TokenBudgetBatchSampler(dataset, batch_size=10, shuffle=shuffle)
    return ResumableDataLoader(
        dataset, batch_sampler=sampler, collate_fn=PairCollator(tokenizer.pad_token_id)
    )


def quiet_trainer(**options) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )


def test_generated_samples_come_from_every_evaluated_batch(tiny_model_dir: Path) -> None:
    module = SpellCorrector(
        tokenizer_dir=str(tiny_model_dir), pretrained=str(tiny_model_dir), val_generation_samples=8
    )
    loader = copy_loader(module)
    trainer = quiet_trainer()
    trainer.test(module, loader, verbose=False)

    assert module.last_sample_count == 8
    lengths = {len(query.split()) for query, _, _ in module.last_samples}
    assert lengths == {2, 3, 5, 9}, "the metrics must not score the shortest batch alone"


def test_schedule_decays_by_the_clock_when_it_is_further_along_than_the_steps() -> None:
    by_steps = warmup_schedule(10, 1010, "cosine")
    by_clock = warmup_schedule(10, 1010, "cosine", time_spent=lambda: 0.5)
    assert by_steps(5) == by_clock(5) == pytest.approx(0.6), "warmup follows the steps"
    assert by_steps(110) == pytest.approx(0.9755, abs=1e-4)
    assert by_clock(110) == pytest.approx(0.5), "half the time spent: cosine at its middle"
    assert by_clock(1010) == pytest.approx(0.0), "the steps can still finish the decay"
    linear = warmup_schedule(0, 100, "linear", time_spent=lambda: 1.0)
    assert linear(1) == pytest.approx(0.0)


@pytest.mark.parametrize("decay_by_time", [True, False])
def test_a_run_stopped_by_max_time_ends_annealed_only_with_decay_by_time(
    tiny_model_dir: Path, decay_by_time: bool
) -> None:
    optim = {"lr": 1e-3, "warmup_steps": 0, "schedule": "cosine", "decay_by_time": decay_by_time}
    module = SpellCorrector(
        tokenizer_dir=str(tiny_model_dir), pretrained=str(tiny_model_dir), optim=optim
    )
    trainer = quiet_trainer(max_steps=1_000_000, max_time={"seconds": 3}, limit_val_batches=0)
    trainer.fit(module, copy_loader(module, shuffle=True))

    assert 0 < trainer.global_step < 1_000_000, "the clock, not the steps, ended the run"
    last_lr = trainer.optimizers[0].param_groups[0]["lr"]
    if decay_by_time:
        assert last_lr < 0.05e-3, f"ended at lr {last_lr:.2e}: not annealed"
    else:
        assert last_lr > 0.9e-3, "without decay_by_time the plan of max_steps is followed"
