"""The Lightning module's evaluation: which examples its accuracy metrics are computed on."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl

from spellfix.data import PairCollator, PairDataset, ResumableDataLoader, TokenBudgetBatchSampler
from spellfix.model import SpellCorrector

# Four query lengths, ten queries each: with batches of ten, every batch holds one length.
QUERIES = [f"{' '.join(['abc'] * words)} q{index}" for words in (1, 2, 4, 8) for index in range(10)]


def test_generated_samples_come_from_every_evaluated_batch(tiny_model_dir: Path) -> None:
    module = SpellCorrector(
        tokenizer_dir=str(tiny_model_dir), pretrained=str(tiny_model_dir), val_generation_samples=8
    )
    tokenizer = module.tokenizer
    ids = [tokenizer(query)["input_ids"] for query in QUERIES]
    dataset = PairDataset(ids, ids, QUERIES, QUERIES)
    sampler = TokenBudgetBatchSampler(dataset, batch_size=10, shuffle=False)
    loader = ResumableDataLoader(
        dataset, batch_sampler=sampler, collate_fn=PairCollator(tokenizer.pad_token_id)
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(module, loader, verbose=False)

    assert module.last_sample_count == 8
    lengths = {len(query.split()) for query, _, _ in module.last_samples}
    assert lengths == {2, 3, 5, 9}, "the metrics must not score the shortest batch alone"
