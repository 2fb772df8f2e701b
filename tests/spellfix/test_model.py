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


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_on_real_tokens_only_is_the_hf_loss_of_the_padded_batch(
    tiny_model_dir: Path, smoothing: float
) -> None:
    """Projecting only the real decoder positions onto the vocabulary is a speed-up, not a
    different objective: the loss equals HF's own over the padded batch, and with label
    smoothing the smoothed cross-entropy of HF's padded logits."""
    import torch

    module = SpellCorrector(
        tokenizer_dir=str(tiny_model_dir),
        pretrained=str(tiny_model_dir),
        optim={"label_smoothing": smoothing},
    )
    module.model.eval()  # no dropout, so both passes see the same network
    batch = PairCollator(module.tokenizer.pad_token_id)(
        [
            {"input_ids": ids, "labels": ids, "noisy": text, "clean": text}
            for text in ["the beatles let it be", "coldplay yellow", "adele"]
            for ids in [module.tokenizer(text)["input_ids"]]
        ]
    )
    assert (batch["labels"] == -100).any(), "the batch must hold padding to mean anything"
    with torch.no_grad():
        ours = module.loss(batch)
        hf = module.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
    # HF's BART loss has no smoothing option: smooth its full padded logits the same way.
    smoothed = torch.nn.functional.cross_entropy(
        hf.logits.flatten(0, 1), batch["labels"].flatten(), label_smoothing=smoothing
    )
    assert ours.item() == pytest.approx(smoothed.item(), rel=1e-5)
    if not smoothing:
        assert ours.item() == pytest.approx(hf.loss.item(), rel=1e-5)


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


# Two ranks' validation samples: rank 0 has a long query fixed and a correct one broken,
# rank 1 only short typos (no correct input, so its own over-correction rate is NaN).
RANK_SAMPLES = [
    (
        ["teh beatles let it be please", "coldplay yellow"],
        ["the beatles let it be please", "coldplay yelow"],
        ["the beatles let it be please", "coldplay yellow"],
    ),
    (["adle", "quen"], ["adele", "quen"], ["adele", "queen"]),
]

# One DDP rank: its own samples in, the metrics after the cross-rank sum out (JSON).
RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from spellfix.model import CorrectionMetrics
rank, port, samples = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
metric = CorrectionMetrics()
metric.update(*samples)
print(json.dumps(metric.compute()))
dist.destroy_process_group()
"""


@pytest.mark.distributed
def test_metrics_over_ddp_ranks_are_those_of_all_their_examples_together() -> None:
    """Corpus CER and over-correction under DDP are ratios of summed counts: the same
    numbers one process gets on every rank's examples, on every rank."""
    import json
    import math
    import os
    import subprocess
    import sys

    from spellfix.metrics import compute_metrics
    from spellfix.serve import free_ports

    (port,) = free_ports(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(rank), str(port), json.dumps(samples)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for rank, samples in enumerate(RANK_SAMPLES)
    ]
    got = []
    for process in ranks:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-2000:]
        got.append(json.loads(out.strip().splitlines()[-1]))

    columns = [[text for samples in RANK_SAMPLES for text in samples[i]] for i in range(3)]
    together = compute_metrics(*columns)
    assert got[0] == got[1] == pytest.approx(together)
    assert got[0]["n"] == 4 and got[0]["overcorrection_rate"] == 1.0  # the one correct input
    assert got[0]["exact_match"] == 0.5
    ranks_alone = [compute_metrics(*samples) for samples in RANK_SAMPLES]
    assert math.isnan(ranks_alone[1]["overcorrection_rate"])
    mean_of_ranks = sum(r["cer"] for r in ranks_alone) / 2
    assert got[0]["cer"] != pytest.approx(mean_of_ranks), "a mean of ranks is not the corpus"
