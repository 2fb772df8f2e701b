"""Search the token budget (or batch size) that trains fastest, not the largest that fits.

Lightning's ``BatchSizeFinder`` doubles the batch size until it runs out of memory and
keeps the largest size that fit. That is the wrong target twice over: past some size
throughput stops growing (the device is already busy) while memory still fills, and
it probes on whatever batch comes first, so a later batch of long queries can still
run out of memory hours into training. It also refuses distributed strategies.

``ThroughputTuner`` runs at the start of ``fit`` on every rank. For each candidate
(doubling from ``start``):

1. one optimizer step on the worst-case batch at that budget (every row at the
   longest source and target lengths of the training set) measures peak memory; a
   candidate that runs out of memory, or adds more than the configured memory budget
   above what model and optimizer held at the start, ends the search;
2. a few optimizer steps on real batches of the training set at that budget measure
   real (non-pad) tokens per second.

The search stops when throughput has not improved by ``plateau_gain`` for ``patience``
candidates. It keeps the fastest candidate that also leaves ``safety_margin`` of the
largest memory that fit, agrees on one value over all ranks (the minimum), restores
the model, optimizer and RNG states, sets ``data.max_tokens`` (or ``data.batch_size``)
for training, and writes the curve (``batch_size_search.json`` / ``.png``) and the
chosen value into the run's ``config.yaml``, so a rerun can skip the search.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import psutil
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from data_synth.files import write_json_atomic
from spellfix.callbacks._common import gather_to_all, save_png
from spellfix.callbacks.throughput import count_tokens
from spellfix.data import PairDataset, TokenBudgetBatchSampler, padded_length

log = logging.getLogger(__name__)


@dataclass
class Probe:
    """What one candidate size measured on this rank."""

    size: int
    fits: bool
    peak_memory_bytes: int = 0
    real_tokens_per_s: float = 0.0
    examples_per_batch: float = 0.0
    error: str = ""


class MemoryBudgetExceeded(RuntimeError):
    """The worst-case batch used more memory than the configured budget."""


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


class PeakRss:
    """Highest resident memory of this process while the block runs (sampled every 2 ms).

    CPU tensors are invisible to ``tracemalloc`` and ``ru_maxrss`` only ever grows, so
    the peak of a single step is sampled directly.
    """

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._process = psutil.Process()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRss:
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


class ThroughputTuner(Callback):
    """Pick ``data.max_tokens`` (or ``data.batch_size``) by measured real tokens/s."""

    def __init__(
        self,
        run_dir: Path | str,
        start: int | None = None,
        max_size: int | None = None,
        steps_per_probe: int = 3,
        plateau_gain: float = 0.05,
        patience: int = 2,
        safety_margin: float = 0.1,
        memory_budget_gb: float | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.start = start
        self.max_size = max_size
        self.steps_per_probe = steps_per_probe
        self.plateau_gain = plateau_gain
        self.patience = patience
        self.safety_margin = safety_margin
        self.memory_budget_bytes = int(memory_budget_gb * 2**30) if memory_budget_gb else None
        self.probes: list[Probe] = []
        self.chosen: int | None = None

    # -- the search -------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        datamodule.setup("fit")
        by_tokens = datamodule.cfg.batching == "tokens"
        key = "max_tokens" if by_tokens else "batch_size"
        dataset: PairDataset = datamodule.splits["train"]
        saved = _snapshot(pl_module, trainer)
        try:
            self.probes = self._search(trainer, pl_module, dataset, datamodule, by_tokens)
        finally:
            _restore(saved, pl_module, trainer)
        local_choice = self._choose(self.probes)
        choices = gather_to_all(trainer, local_choice)
        self.chosen = min(int(c) for c in choices)
        datamodule.cfg[key] = self.chosen
        if trainer.is_global_zero:
            self._report(key, choices)

    def _candidates(self, dataset: PairDataset, pad: int, by_tokens: bool) -> list[int]:
        widest = padded_length(int(dataset.source_lengths().max()), pad) + padded_length(
            int(dataset.target_lengths().max()), pad
        )
        if by_tokens:
            size = self.start or widest * 8
            limit = self.max_size or widest * len(dataset)
        else:
            size = self.start or 8
            limit = self.max_size or len(dataset)
        sizes = []
        while size <= limit:
            sizes.append(size)
            size *= 2
        return sizes

    def _search(
        self,
        trainer: pl.Trainer,
        module: pl.LightningModule,
        dataset: PairDataset,
        datamodule: Any,
        by_tokens: bool,
    ) -> list[Probe]:
        pad = datamodule.cfg.pad_to_multiple_of
        optimizer = trainer.optimizers[0]
        # One small step first, so the optimizer state and the allocator's pools exist
        # before the baseline: the budget then bounds what a larger batch adds.
        warm_up = datamodule.collate([dataset[i] for i in range(min(8, len(dataset)))])
        self._step(trainer, module, optimizer, warm_up)
        self._baseline_bytes = _memory_in_use(module.device)
        probes: list[Probe] = []
        best, stale = 0.0, 0
        for size in self._candidates(dataset, pad, by_tokens):
            probe = Probe(size=size, fits=False)
            try:
                probe.peak_memory_bytes = self._worst_case_step(
                    trainer, module, optimizer, dataset, datamodule, size, by_tokens
                )
                probe.real_tokens_per_s, probe.examples_per_batch = self._timed_steps(
                    trainer, module, optimizer, dataset, datamodule, size, by_tokens
                )
                probe.fits = True
            except MemoryBudgetExceeded as error:
                probe.error = str(error)
            except (RuntimeError, torch.OutOfMemoryError) as error:
                if not _is_out_of_memory(error):
                    raise
                probe.error = "out of memory"
            finally:
                optimizer.zero_grad(set_to_none=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            probes.append(probe)
            log.info("batch-size probe %s", asdict(probe))
            if not probe.fits:
                break
            if probe.real_tokens_per_s > best * (1 + self.plateau_gain):
                best, stale = probe.real_tokens_per_s, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        return probes

    def _step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer, batch) -> None:
        batch = module.transfer_batch_to_device(batch, module.device, 0)
        with trainer.precision_plugin.forward_context():
            loss = module.loss(batch)
        trainer.strategy.backward(loss, optimizer)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def _worst_case_step(
        self, trainer, module, optimizer, dataset, datamodule, size: int, by_tokens: bool
    ) -> int:
        """One step with every row at the longest lengths; returns the peak memory."""
        source = int(np.argmax(dataset.source_lengths()))
        target = int(np.argmax(dataset.target_lengths()))
        pad = datamodule.cfg.pad_to_multiple_of
        width = padded_length(len(dataset.input_ids[source]), pad) + padded_length(
            len(dataset.labels[target]), pad
        )
        rows = max(1, size // width) if by_tokens else size
        example = {
            "input_ids": dataset.input_ids[source],
            "labels": dataset.labels[target],
            "noisy": "",
            "clean": "",
        }
        batch = datamodule.collate([example] * rows)
        if module.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(module.device)
            self._step(trainer, module, optimizer, batch)
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated(module.device)
        else:
            with PeakRss() as rss:
                self._step(trainer, module, optimizer, batch)
            peak = rss.peak
        used = peak - self._baseline_bytes
        if self.memory_budget_bytes and used > self.memory_budget_bytes:
            raise MemoryBudgetExceeded(
                f"{used / 2**30:.2f} GiB above the start > budget "
                f"{self.memory_budget_bytes / 2**30:.2f} GiB"
            )
        return int(peak)

    def _timed_steps(
        self, trainer, module, optimizer, dataset, datamodule, size: int, by_tokens: bool
    ) -> tuple[float, float]:
        sampler = TokenBudgetBatchSampler(
            dataset,
            max_tokens=size if by_tokens else None,
            batch_size=None if by_tokens else size,
            pad_to_multiple_of=datamodule.cfg.pad_to_multiple_of,
            bucket_size=datamodule.cfg.bucket_size,
            seed=trainer.global_rank,
        )
        chosen = sampler.batches()[: self.steps_per_probe + 1]
        batches = [datamodule.collate([dataset[i] for i in b]) for b in chosen]
        self._step(trainer, module, optimizer, batches[0])  # warm-up, not timed
        timed = batches[1:] or batches
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for batch in timed:
            self._step(trainer, module, optimizer, batch)
        if module.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens = sum(count_tokens(b).real for b in timed)
        return tokens / seconds, sum(len(b["noisy"]) for b in timed) / len(timed)

    def _choose(self, probes: list[Probe]) -> int:
        fitting = [p for p in probes if p.fits]
        if not fitting:
            raise RuntimeError(
                f"tuner.batch_size=auto: even {probes[0].size} does not fit ({probes[0].error}); "
                "lower tuner.start or raise tuner.memory_budget_gb"
            )
        largest = max(p.size for p in fitting)
        hit_the_wall = any(not p.fits for p in probes)
        ceiling = int(largest * (1 - self.safety_margin)) if hit_the_wall else largest
        fastest = max(fitting, key=lambda p: p.real_tokens_per_s)
        return min(fastest.size, ceiling)

    # -- evidence ---------------------------------------------------------------------
    def _report(self, key: str, choices: list[Any]) -> None:
        rows = [asdict(p) for p in self.probes]
        write_json_atomic(
            self.run_dir / "batch_size_search.json",
            {
                "key": f"data.{key}",
                "chosen": self.chosen,
                "per_rank_choice": choices,
                "probes": rows,
            },
            sort_keys=True,
        )
        _plot(self.probes, self.chosen, key, self.run_dir / "batch_size_search.png")
        lines = [
            f"| data.{key} | real tokens/s | peak memory (GiB) | fits |",
            "|---:|---:|---:|:-:|",
        ]
        for p in self.probes:
            lines.append(
                f"| {p.size} | {p.real_tokens_per_s:,.0f} | {p.peak_memory_bytes / 2**30:.2f} | "
                f"{'yes' if p.fits else p.error} |"
            )
        print("\n".join(["Batch-size search:", *lines, f"chosen: data.{key}={self.chosen}"]))
        config_path = self.run_dir / "config.yaml"
        if config_path.is_file():
            saved = OmegaConf.load(config_path)
            saved.data[key] = self.chosen
            saved.tuner.batch_size = None
            config_path.write_text(OmegaConf.to_yaml(saved))


def _memory_in_use(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return psutil.Process().memory_info().rss


def _snapshot(module: pl.LightningModule, trainer: pl.Trainer) -> dict[str, Any]:
    return {
        "model": copy.deepcopy({k: v.detach().cpu() for k, v in module.state_dict().items()}),
        "optimizers": [copy.deepcopy(o.state_dict()) for o in trainer.optimizers],
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": random.getstate(),
        "numpy_rng": np.random.get_state(),
    }


def _restore(saved: dict[str, Any], module: pl.LightningModule, trainer: pl.Trainer) -> None:
    module.load_state_dict(saved["model"])
    for optimizer, state in zip(trainer.optimizers, saved["optimizers"], strict=True):
        optimizer.load_state_dict(state)
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    random.setstate(saved["python_rng"])
    np.random.set_state(saved["numpy_rng"])


def _plot(probes: list[Probe], chosen: int | None, key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fitting = [p for p in probes if p.fits]
    fig, speed = plt.subplots(figsize=(6, 3.5))
    speed.plot(
        [p.size for p in fitting],
        [p.real_tokens_per_s for p in fitting],
        "o-",
        label="real tokens/s",
    )
    speed.set_xscale("log", base=2)
    speed.set_xlabel(f"data.{key}")
    speed.set_ylabel("real tokens/s")
    memory = speed.twinx()
    memory.plot(
        [p.size for p in fitting],
        [p.peak_memory_bytes / 2**30 for p in fitting],
        "s--",
        color="gray",
    )
    memory.set_ylabel("peak memory (GiB)")
    if chosen:
        speed.axvline(chosen, color="green", linestyle=":", label=f"chosen {chosen}")
    speed.legend(loc="lower right")
    speed.set_title("Throughput-seeking batch-size search")
    fig.tight_layout()
    save_png(fig, path)


def load_search(run_dir: Path) -> dict[str, Any] | None:
    """The search a run made, for reports; None when it made none."""
    path = Path(run_dir) / "batch_size_search.json"
    return json.loads(path.read_text()) if path.is_file() else None
