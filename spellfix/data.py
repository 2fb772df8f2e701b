"""Data for training: a dataset of (noisy, clean) pairs, batched by a token budget.

Search queries are short and their lengths vary a lot ("adele" vs a full song title
plus artist). Fixed-size batches of randomly ordered queries therefore waste much of
every step on padding, and a fixed batch size that fits the longest batch leaves the
device idle on the short ones. ``TokenBudgetBatchSampler`` groups queries of similar
length (shuffled buckets, so the order stays random at the scale of an epoch) and fills
each batch up to a budget of padded tokens: little padding and a near-constant amount
of work per step.

Two noise modes:
- ``static``: the dataset's own pairs, tokenized once with ``datasets.map`` (cached);
- ``dynamic``: fresh typos from the clean side at every epoch, seeded by the epoch, so
  a long run never sees the same typo twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from datasets import Dataset, DatasetDict
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from data_synth.app import UserConfigError
from data_synth.build import build_dataset, dataset_fingerprint, load_dataset_dir
from data_synth.cli import summary
from data_synth.noise import NoiseModel

LABEL_PAD = -100  # ignored by the loss


def padded_length(length: int, multiple: int) -> int:
    return int(math.ceil(length / multiple) * multiple)


def pad_multiple_for(accelerator: str) -> int:
    """Tensor cores want lengths in multiples of 8; on a CPU the extra padding is waste."""
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return 8 if on_gpu else 1


def resolve_dataset_dir(data_cfg: DictConfig, noise_cfg: DictConfig) -> Path:
    """The dataset to train on: the one named by ``data.dataset_dir``, or one synthesized.

    A synthesized dataset is cached under its config fingerprint, so a second run with
    the same corpus, noise and build settings reuses it instead of synthesizing again.
    """
    if data_cfg.dataset_dir:
        path = Path(data_cfg.dataset_dir)
        if not path.is_dir():
            raise FileNotFoundError(
                f"data.dataset_dir={path} does not exist; build one with spellfix-synth "
                "or set data.dataset_dir=null to synthesize from data.corpus"
            )
        return path
    corpus = OmegaConf.to_container(data_cfg.corpus, resolve=True)
    build = OmegaConf.to_container(data_cfg.build, resolve=True)
    noise = OmegaConf.to_container(noise_cfg, resolve=True)
    cached = Path(data_cfg.cache_dir) / dataset_fingerprint(corpus, noise, build)
    if not (cached / "manifest.json").is_file():
        build_dataset(corpus, noise, build, cached)
        print(summary(cached, show_examples=10))
    return cached


DIRECTIONS = ("channel", "forward")


class PairEncoder:
    """Tokenizes (noisy, clean) pairs into the model's inputs and labels, truncated.

    ``direction`` says what the model learns. ``channel``: how people misspell, clean ->
    noisy, in lower case (the decoder lower-cases what it scores; see
    ``spellfix.decoding``). ``forward``: the classic corrector, noisy -> clean.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_source_length: int,
        max_target_length: int,
        direction: str = "channel",
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"data.direction={direction!r}: choose one of {', '.join(DIRECTIONS)}")
        self.tokenizer = tokenizer
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.direction = direction

    def __call__(self, noisy: list[str], clean: list[str]) -> dict[str, list[list[int]]]:
        if self.direction == "channel":
            noisy, clean = [t.casefold() for t in clean], [t.casefold() for t in noisy]
        source = self.tokenizer(noisy, truncation=True, max_length=self.max_source_length)
        target = self.tokenizer(clean, truncation=True, max_length=self.max_target_length)
        return {"input_ids": source["input_ids"], "labels": target["input_ids"]}


class PairDataset(torch.utils.data.Dataset):
    """Tokenized pairs kept as Python lists: indexing is cheap and picklable for workers."""

    def __init__(
        self,
        input_ids: list[list[int]],
        labels: list[list[int]],
        noisy: list[str],
        clean: list[str],
    ) -> None:
        self.input_ids = input_ids
        self.labels = labels
        self.noisy = noisy
        self.clean = clean

    @classmethod
    def from_hf(cls, dataset: Dataset) -> PairDataset:
        columns = dataset.select_columns(["input_ids", "labels", "noisy", "clean"]).to_dict()
        return cls(columns["input_ids"], columns["labels"], columns["noisy"], columns["clean"])

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids[index],
            "labels": self.labels[index],
            "noisy": self.noisy[index],
            "clean": self.clean[index],
        }

    def source_lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self))

    def target_lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.labels), dtype=np.int64, count=len(self))

    def set_epoch(self, epoch: int) -> None:
        """Static pairs do not change between epochs."""


class DynamicNoiseDataset(PairDataset):
    """Pairs whose noisy side is drawn afresh from the clean side at every epoch.

    The draw is seeded by ``seed + epoch``, so a resumed run and every DDP rank see the
    same typos for the same epoch, and no two epochs see the same ones.
    """

    def __init__(
        self,
        clean: list[str],
        noise_cfg: Mapping,
        seed: int,
        encode: PairEncoder,
        fixed: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._noise_cfg = noise_cfg
        self._seed = seed
        self._encode = encode
        self._epoch: int | None = None
        self._drawn = len(clean)
        self._fixed_noisy = [noisy for noisy, _ in fixed]  # real pairs keep their typos
        super().__init__(input_ids=[], labels=[], noisy=[], clean=[*clean, *(c for _, c in fixed)])
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        noise = NoiseModel.from_config(self._noise_cfg, seed=self._seed + epoch)
        drawn = [c.noisy for c in noise.corrupt_batch(self.clean[: self._drawn])]
        self.noisy = drawn + self._fixed_noisy
        encoded = self._encode(self.noisy, self.clean)
        self.input_ids, self.labels = encoded["input_ids"], encoded["labels"]
        self._epoch = epoch


def split_real_pairs(
    data_cfg: DictConfig, raw: DatasetDict | None
) -> dict[str, list[tuple[str, str]]]:
    """Real (typo, correct) pairs from ``data.pairs``, assigned to splits by their clean side.

    A clean query the synthetic dataset already holds goes to that query's split, any
    other one to a split drawn from its hash in the dataset's proportions, so no test
    query is trained on. Training pairs are repeated until they make up
    ``data.pairs_share`` of the training rows (at least once each). With ``raw`` None
    the file is only read, so that a bad one fails before any work.
    """
    from data_synth.build import split_key
    from spellfix.evaluate import load_pairs

    columns = data_cfg.get("pairs_columns") or {}
    path = Path(data_cfg.pairs)
    if path.is_dir():
        raise UserConfigError(f"data.pairs={path}: is a directory; name a TSV/CSV file of pairs")
    loaded = load_pairs(
        path,
        pairs_columns=(columns.get("source", "misspelled"), columns.get("target", "correct")),
        columns_key="data.pairs_columns",
        path_key="data.pairs",
    )
    if raw is None:  # checking the file only
        return {}
    owner = {split_key(text): name for name, split in raw.items() for text in split["clean"]}
    sizes = {name: len(split) for name, split in raw.items()}
    total = sum(sizes.values())
    assigned: dict[str, list[tuple[str, str]]] = {name: [] for name in raw}
    for noisy, clean in zip(loaded.sources, loaded.references, strict=True):
        if not noisy.strip() or not clean.strip():
            continue
        key = split_key(clean)
        name = owner.get(key)
        if name is None:
            point = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 * total
            bounds = accumulate(sizes.values())
            name = next(n for n, bound in zip(sizes, bounds, strict=True) if point < bound)
        assigned[name].append((noisy, clean))
    share = float(data_cfg.get("pairs_share", 0.3))
    if not 0 < share < 1:
        raise ValueError(f"data.pairs_share={share!r}: expected a number in (0, 1)")
    train = assigned.get("train", [])
    if train:
        wanted = share / (1 - share) * sizes["train"]
        assigned["train"] = train * max(1, round(wanted / len(train)))
    return assigned


def _with_rows(split: Dataset, rows: list[tuple[str, str]]) -> Dataset:
    """``split`` with (noisy, clean) rows appended (their ops: ``real``)."""
    from datasets import concatenate_datasets

    if not rows:
        return split
    extra = Dataset.from_dict(
        {
            "noisy": [noisy for noisy, _ in rows],
            "clean": [clean for _, clean in rows],
            "ops": [["real"] for _ in rows],
        },
        features=split.features,
    )
    return concatenate_datasets([split, extra])


class TokenBudgetBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Length-bucketed batches under a budget of padded tokens, split evenly over ranks.

    Each epoch: shuffle all indices, cut them into buckets of ``bucket_size`` examples,
    sort each bucket by length and fill batches greedily so that
    ``batch_size * (padded source length + padded target length) <= max_tokens`` (or
    ``batch_size`` examples when no token budget is set), then shuffle the batches.
    With several ranks the batch count is made a multiple of the world size by
    splitting the largest batches, so every rank gets the same number of distinct
    batches and every example is seen exactly once per epoch.

    ``reshuffle=False`` keeps epoch 0's order in every epoch, which is what evaluation
    wants: the same batches at each validation so curves compare, yet drawn across all
    lengths, so a ``limit_val_batches`` subset is not just the shortest queries.
    """

    def __init__(
        self,
        dataset: PairDataset,
        *,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        pad_to_multiple_of: int = 8,
        bucket_size: int = 4096,
        shuffle: bool = True,
        reshuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if (max_tokens is None) == (batch_size is None):
            raise ValueError("give exactly one of max_tokens and batch_size")
        self.dataset = dataset
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.pad_to_multiple_of = pad_to_multiple_of
        self.bucket_size = bucket_size
        self.shuffle = shuffle
        self.reshuffle = reshuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self._batches: list[list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        if self.reshuffle:
            self.epoch = epoch
            self._batches = None

    def _cost(self, source_length: int, target_length: int) -> int:
        multiple = self.pad_to_multiple_of
        return padded_length(source_length, multiple) + padded_length(target_length, multiple)

    def _all_batches(self) -> list[list[int]]:
        self.dataset.set_epoch(self.epoch)
        source, target = self.dataset.source_lengths(), self.dataset.target_lengths()
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(source)))
        if self.shuffle:
            rng.shuffle(order)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.bucket_size):
            bucket = sorted(
                order[start : start + self.bucket_size], key=lambda i: (source[i], target[i])
            )
            batches.extend(self._fill(bucket, source, target))
        if self.shuffle:
            rng.shuffle(batches)
        return self._balance(batches, source, target)

    def _fill(self, bucket: list[int], source: np.ndarray, target: np.ndarray) -> list[list[int]]:
        batches, current, widest = [], [], 0
        for index in bucket:
            cost = self._cost(int(source[index]), int(target[index]))
            if self.max_tokens is not None:
                full = current and max(widest, cost) * (len(current) + 1) > self.max_tokens
            else:
                full = len(current) == self.batch_size
            if full:
                batches.append(current)
                current, widest = [], 0
            current.append(index)
            widest = max(widest, cost)
        if current:
            batches.append(current)
        return batches

    def _balance(
        self, batches: list[list[int]], source: np.ndarray, target: np.ndarray
    ) -> list[list[int]]:
        """Split the largest batches until every rank can take the same number."""
        while len(batches) % self.num_replicas:
            largest = max(range(len(batches)), key=lambda b: len(batches[b]))
            batch = batches[largest]
            if len(batch) < 2:
                raise ValueError(
                    f"cannot give {self.num_replicas} ranks the same number of batches from "
                    f"{len(batches)} single-example batches; use more data or fewer devices"
                )
            half = len(batch) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
        return batches

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (computed once per epoch)."""
        if self._batches is None:
            self._batches = self._all_batches()[self.rank :: self.num_replicas]
        return self._batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class PairCollator:
    """Pads a batch to a multiple of 8 (tensor cores) and keeps the texts for metrics."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 8) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def _pad(self, rows: Sequence[list[int]], value: int) -> torch.Tensor:
        # One flat copy and one masked assignment, not a tensor per row: collation runs
        # in the training process whenever num_workers=0 (the CPU default).
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        width = padded_length(int(lengths.max()), self.pad_to_multiple_of)
        out = np.full((len(rows), width), value, dtype=np.int64)
        out[np.arange(width) < lengths[:, None]] = np.fromiter(
            chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum())
        )
        return torch.from_numpy(out)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        input_ids = self._pad([e["input_ids"] for e in examples], self.pad_token_id)
        labels = self._pad([e["labels"] for e in examples], LABEL_PAD)
        return {
            "input_ids": input_ids,
            "attention_mask": (input_ids != self.pad_token_id).long(),
            "labels": labels,
            "noisy": [e["noisy"] for e in examples],
            "clean": [e["clean"] for e in examples],
        }


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning can checkpoint mid-epoch (it has ``state_dict``).

    It owns the epoch counter of its batch sampler and how many batches of the current
    epoch the training loop has consumed; after a restart the same epoch's batches are
    replayed from where the killed run stopped, not from the start.
    """

    def __init__(
        self, *args: Any, consumed_batches: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._skip = 0
        self._yielded = 0
        self._consumed_batches = consumed_batches

    def __iter__(self) -> Iterator[Any]:
        self.batch_sampler.set_epoch(self._epoch)
        skip, self._skip = self._skip, 0
        self._yielded = skip
        iterator = super().__iter__()
        for _ in range(skip):
            next(iterator)  # cheap: batches are made of ready-tokenized lists
        for batch in iterator:
            self._yielded += 1
            yield batch
        self._epoch += 1
        self._yielded = 0

    def state_dict(self) -> dict[str, int]:
        consumed = self._consumed_batches() if self._consumed_batches else self._yielded
        return {"epoch": self._epoch, "consumed_batches": consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._epoch = int(state["epoch"])
        self._skip = int(state["consumed_batches"])


class SpellDataModule(pl.LightningDataModule):
    """Reads or synthesizes the dataset, tokenizes it, and serves token-budget batches."""

    def __init__(
        self,
        data_cfg: DictConfig,
        noise_cfg: DictConfig,
        tokenizer: PreTrainedTokenizerBase,
        seed: int = 0,
        accelerator: str = "auto",
    ) -> None:
        super().__init__()
        if data_cfg.pad_to_multiple_of is None:
            data_cfg = data_cfg.copy()
            data_cfg.pad_to_multiple_of = pad_multiple_for(accelerator)
        self.cfg = data_cfg
        self.noise_cfg = noise_cfg
        self.tokenizer = tokenizer
        self.seed = seed
        self.encode = PairEncoder(
            tokenizer,
            data_cfg.max_source_length,
            data_cfg.max_target_length,
            data_cfg.get("direction", "channel"),
        )
        self.collate = PairCollator(tokenizer.pad_token_id, data_cfg.pad_to_multiple_of)
        self.dataset_dir: Path | None = None
        self.splits: dict[str, PairDataset] = {}

    @property
    def manifest(self) -> dict[str, Any]:
        path = self.dataset_dir / "manifest.json" if self.dataset_dir else None
        return json.loads(path.read_text()) if path and path.is_file() else {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.dataset_dir = resolve_dataset_dir(self.cfg, self.noise_cfg)
        raw: DatasetDict = load_dataset_dir(self.dataset_dir)
        real = split_real_pairs(self.cfg, raw) if self.cfg.get("pairs") else {}
        for name, split in raw.items():
            if name in real:
                split = _with_rows(split, real[name])
            if name == "train" and self.cfg.noise_mode == "dynamic":
                noise = OmegaConf.to_container(self.noise_cfg, resolve=True)
                self.splits[name] = DynamicNoiseDataset(
                    list(raw[name]["clean"]), noise, self.seed, self.encode, real.get(name, [])
                )
                continue
            tokenized = split.map(
                lambda rows: self.encode(rows["noisy"], rows["clean"]),
                batched=True,
                desc=f"tokenizing {name}",
                new_fingerprint=self._tokenized_fingerprint(split),
            )
            self.splits[name] = PairDataset.from_hf(tokenized)

    def _tokenized_fingerprint(self, split: Dataset) -> str:
        """The cache key of a tokenized split: the split, the tokenizer and the lengths.

        Given explicitly because ``datasets`` would otherwise hash the mapped function by
        pickling it together with the tokenizer, which takes seconds on every start.
        """
        parts = [
            split._fingerprint,
            self.tokenizer.backend_tokenizer.to_str(),
            str(self.cfg.max_source_length),
            str(self.cfg.max_target_length),
            self.encode.direction,
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def batch_sampler(self, split: str, reshuffle: bool = True) -> TokenBudgetBatchSampler:
        world, rank = 1, 0
        if self.trainer is not None:
            world, rank = self.trainer.world_size, self.trainer.global_rank
        by_tokens = self.cfg.batching == "tokens"
        return TokenBudgetBatchSampler(
            self.splits[split],
            max_tokens=self.cfg.max_tokens if by_tokens else None,
            batch_size=None if by_tokens else self.cfg.batch_size,
            pad_to_multiple_of=self.cfg.pad_to_multiple_of,
            bucket_size=self.cfg.bucket_size,
            reshuffle=reshuffle,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
        )

    def _consumed_batches(self) -> int:
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return progress.processed

    def _loader(self, split: str, training: bool) -> ResumableDataLoader:
        return ResumableDataLoader(
            self.splits[split],
            batch_sampler=self.batch_sampler(split, reshuffle=training),
            collate_fn=self.collate,
            num_workers=self.cfg.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
            consumed_batches=self._consumed_batches if training and self.trainer else None,
        )

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, dataloader_idx: int
    ) -> dict[str, Any]:
        """Move the tensors and leave the texts: Lightning's generic transfer walks every
        string of the ``noisy``/``clean`` lists, a millisecond or two a step on CPU."""
        return {
            key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for key, value in batch.items()
        }

    def train_dataloader(self) -> ResumableDataLoader:
        return self._loader("train", training=True)

    def val_dataloader(self) -> ResumableDataLoader:
        return self._loader("validation", training=False)

    def test_dataloader(self) -> ResumableDataLoader:
        return self._loader("test", training=False)
