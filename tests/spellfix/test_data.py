"""Batching by token budget: budget respected, every example once per epoch on all ranks."""

from __future__ import annotations

import random

import pytest
import torch

from spellfix.data import (
    LABEL_PAD,
    PairCollator,
    PairDataset,
    ResumableDataLoader,
    TokenBudgetBatchSampler,
    padded_length,
)


def make_dataset(n: int, seed: int = 0) -> PairDataset:
    rng = random.Random(seed)
    sources = [[0] + [5] * rng.randint(1, 40) + [2] for _ in range(n)]
    targets = [[0] + [6] * rng.randint(1, 40) + [2] for _ in range(n)]
    return PairDataset(sources, targets, [f"n{i}" for i in range(n)], [f"c{i}" for i in range(n)])


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_batches_respect_budget_and_cover_every_example_once(world_size: int) -> None:
    dataset = make_dataset(1001)
    budget = 1024
    per_rank = []
    for rank in range(world_size):
        sampler = TokenBudgetBatchSampler(
            dataset, max_tokens=budget, bucket_size=200, seed=3, num_replicas=world_size, rank=rank
        )
        sampler.set_epoch(1)
        per_rank.append(list(sampler))
    assert len({len(batches) for batches in per_rank}) == 1, "ranks got different batch counts"
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert sorted(seen) == list(range(len(dataset)))
    for batches in per_rank:
        for batch in batches:
            widest = max(
                padded_length(len(dataset.input_ids[i]), 8)
                + padded_length(len(dataset.labels[i]), 8)
                for i in batch
            )
            assert widest * len(batch) <= budget


def test_length_bucketing_pads_far_less_than_random_batches() -> None:
    dataset = make_dataset(2000)
    sampler = TokenBudgetBatchSampler(dataset, batch_size=32, bucket_size=2000, seed=0)
    collate = PairCollator(pad_token_id=1)
    random_order = list(range(len(dataset)))
    random.Random(0).shuffle(random_order)
    random_batches = [random_order[i : i + 32] for i in range(0, len(dataset), 32)]

    def padding_fraction(batches: list[list[int]]) -> float:
        real = padded = 0
        for batch in batches:
            out = collate([dataset[i] for i in batch])
            real += int(out["attention_mask"].sum())
            padded += out["input_ids"].numel()
        return 1 - real / padded

    assert padding_fraction(list(sampler)) < 0.5 * padding_fraction(random_batches)


def test_epochs_shuffle_differently_and_repeat_for_a_seed() -> None:
    dataset = make_dataset(300)
    first = TokenBudgetBatchSampler(dataset, max_tokens=512, seed=7)
    again = TokenBudgetBatchSampler(dataset, max_tokens=512, seed=7)
    first.set_epoch(0)
    again.set_epoch(0)
    assert list(first) == list(again)
    first.set_epoch(1)
    assert list(first) != list(again)


def test_collator_pads_to_multiple_of_8_and_masks_labels() -> None:
    collate = PairCollator(pad_token_id=1, pad_to_multiple_of=8)
    batch = collate(
        [
            {"input_ids": [0, 9, 2], "labels": [0, 9, 9, 9, 2], "noisy": "a", "clean": "b"},
            {
                "input_ids": [0, 9, 9, 9, 9, 9, 9, 9, 9, 2],
                "labels": [0, 2],
                "noisy": "c",
                "clean": "d",
            },
        ]
    )
    assert batch["input_ids"].shape == (2, 16)
    assert batch["labels"].shape == (2, 8)
    assert batch["attention_mask"].sum().item() == 3 + 10
    assert (batch["labels"][1, 2:] == LABEL_PAD).all()
    assert (batch["labels"] != LABEL_PAD).sum().item() == 5 + 2
    assert batch["input_ids"][0].tolist() == [0, 9, 2] + [1] * 13  # ids kept, in order
    assert batch["labels"][0, :5].tolist() == [0, 9, 9, 9, 2]
    assert batch["noisy"] == ["a", "c"] and batch["clean"] == ["b", "d"]


def test_loader_resumes_mid_epoch_where_it_stopped() -> None:
    dataset = make_dataset(200)

    def loader() -> ResumableDataLoader:
        sampler = TokenBudgetBatchSampler(dataset, max_tokens=512, seed=1)
        return ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=PairCollator(1))

    full = [b["noisy"] for b in loader()]
    interrupted = loader()
    iterator = iter(interrupted)
    consumed = [next(iterator)["noisy"] for _ in range(5)]
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "consumed_batches": 5}

    resumed = loader()
    resumed.load_state_dict(state)
    rest = [b["noisy"] for b in resumed]
    assert consumed + rest == full
    next_epoch = [b["noisy"] for b in resumed]
    flatten = lambda batches: sorted(text for batch in batches for text in batch)  # noqa: E731
    assert flatten(next_epoch) == flatten(full) and next_epoch != full


def test_budget_smaller_than_one_example_still_yields_it_alone() -> None:
    dataset = make_dataset(10)
    sampler = TokenBudgetBatchSampler(dataset, max_tokens=8, seed=0)
    assert all(len(batch) == 1 for batch in sampler)
    assert torch.tensor([len(b) for b in sampler]).sum().item() == 10


def test_evaluation_order_draws_across_lengths_and_repeats_every_epoch() -> None:
    dataset = make_dataset(2000)
    sampler = TokenBudgetBatchSampler(dataset, max_tokens=1024, seed=0, reshuffle=False)
    sampler.set_epoch(0)
    first_epoch = list(sampler)
    sampler.set_epoch(5)
    assert list(sampler) == first_epoch, "validations must score the same batches"
    # The first tenth of the batches (what a small limit_val_batches evaluates) spans the
    # lengths instead of being the shortest queries.
    head = [i for batch in first_epoch[: len(first_epoch) // 10] for i in batch]
    lengths = sorted(len(dataset.input_ids[i]) for i in head)
    assert lengths[0] <= 5 and lengths[-1] >= 38


def test_dynamic_noise_draws_new_typos_each_epoch_and_the_same_ones_again_on_resume() -> None:
    """A long run must not see the same typo twice (else `noise_mode=dynamic` is static
    noise under another name), yet a resumed run or another DDP rank must see the very
    typos of the epoch it is in. Real pairs keep the typos their users made."""
    from omegaconf import OmegaConf

    from data_synth.paths import CONF_DIR
    from spellfix.data import DynamicNoiseDataset, PairEncoder
    from spellfix.tokenizer import train_tokenizer

    clean = [f"query number {word}" for word in ("alpha", "bravo", "charlie", "delta")] * 50
    real = [("beatels", "beatles"), ("quen", "queen")]
    noise = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "noise" / "default.yaml"))
    encode = PairEncoder(train_tokenizer(clean, vocab_size=300, min_frequency=1), 32, 32)

    def epoch_of(dataset: DynamicNoiseDataset, epoch: int) -> list[tuple[str, str]]:
        sampler = TokenBudgetBatchSampler(dataset, max_tokens=512, seed=1)
        loader = ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=PairCollator(1))
        loader.load_state_dict({"epoch": epoch, "consumed_batches": 0})
        batches = [zip(batch["noisy"], batch["clean"], strict=True) for batch in loader]
        return sorted(pair for batch in batches for pair in batch)

    def pairs(dataset: DynamicNoiseDataset, epoch: int) -> list[tuple[str, str]]:
        dataset.set_epoch(epoch)
        return list(zip(dataset.noisy, dataset.clean, strict=True))

    run = DynamicNoiseDataset(clean, noise, seed=5, encode=encode, fixed=real)
    first, second = pairs(run, 0), pairs(run, 1)
    assert [c for _, c in first] == [c for _, c in second] == [*clean, "beatles", "queen"]
    typo_changed = sum(a != b for (a, _), (b, _) in zip(first, second, strict=True))
    assert typo_changed > 0.5 * len(clean), "epoch 1 repeats epoch 0's typos"
    assert first[-2:] == second[-2:] == real
    # The model is trained on what the texts say: the tokens follow the draw.
    row = next(i for i, (noisy, c) in enumerate(second) if noisy != c)
    assert run[row]["labels"] == encode([second[row][0]], [second[row][1]])["labels"][0]

    resumed = DynamicNoiseDataset(clean, noise, seed=5, encode=encode, fixed=real)
    assert pairs(resumed, 1) == second
    # ... and through the loader, which is where training sets the epoch.
    assert epoch_of(resumed, 1) == sorted(second) != epoch_of(resumed, 0) == sorted(first)
