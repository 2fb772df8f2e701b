"""Padding-aware throughput and MFU for seq2seq training with a varying batch size.

Lightning's own ThroughputMonitor assumes every batch holds the same number of
samples and counts pad tokens as work. spellfix batches by a token budget, so
batch sizes change every step, and short queries padded to the longest in the
batch can waste a large share of each step. This monitor counts, per batch, the
real and the padded tokens on both sides of the model, and reports rates, the
padding fraction and MFU (from real tokens only; see ``flops``) per step, over a
sliding window, per rank and for the whole job. At the end of training it writes
``throughput.json`` with whole-run totals, which the run report and the batch-size
tuner read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from data_synth.files import write_json_atomic
from spellfix.callbacks._common import (
    gather_to_all,
    log_to_loggers,
    output_directory,
    synchronize_device,
)
from spellfix.callbacks.flops import (
    Seq2SeqShape,
    compute_precision,
    gpu_peak_flops,
    measured_cpu_peak_flops,
    training_flops,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label value the loss skips; marks target padding


@dataclass(frozen=True)
class TokenCounts:
    """Samples and tokens in one batch (or a sum of batches), real and padded.

    ``source_len_sq``, ``target_len_sq`` and ``source_target_len_product`` sum, over
    sequences, the squared real lengths and the source-times-target lengths: the
    numbers of query-key pairs the attention FLOPs are counted from.
    """

    samples: int = 0
    source_real: int = 0
    source_padded: int = 0
    target_real: int = 0
    target_padded: int = 0
    source_len_sq: int = 0
    target_len_sq: int = 0
    source_target_len_product: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            *(getattr(self, field.name) + getattr(other, field.name) for field in fields(self))
        )

    @property
    def real(self) -> int:
        return self.source_real + self.target_real

    @property
    def padded(self) -> int:
        return self.source_padded + self.target_padded

    @property
    def padding_fraction(self) -> float:
        """Share of the padded token slots that hold padding (0 when nothing was seen)."""
        return 1.0 - self.real / self.padded if self.padded else 0.0


def count_tokens(batch: Mapping[str, Any]) -> TokenCounts:
    """Count one training batch: padded slots are B*S and B*T, real ones come from the masks.

    Real source tokens are the ones ``attention_mask`` marks 1 (all of them without a
    mask); real target tokens are the labels other than -100. A batch without
    ``labels`` has no target side. One host transfer, so it costs one sync on a GPU.
    """
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        raise ValueError(
            "count_tokens needs a dict batch with 'input_ids' (and 'attention_mask', 'labels'); "
            f"got {type(batch).__name__}"
        )
    input_ids = batch["input_ids"]
    batch_size, source_width = input_ids.shape
    attention_mask = batch.get("attention_mask")
    if attention_mask is not None:
        source_lengths = attention_mask.long().sum(dim=1)
    else:
        source_lengths = torch.full((batch_size,), source_width, device=input_ids.device)
    labels = batch.get("labels")
    if labels is not None:
        target_width = labels.shape[1]
        target_lengths = (labels != IGNORE_INDEX).long().sum(dim=1)
    else:
        target_width = 0
        target_lengths = torch.zeros_like(source_lengths)
    source_lengths = source_lengths.long()
    target_lengths = target_lengths.long().to(source_lengths.device)
    sums = torch.stack(
        [
            source_lengths.sum(),
            (source_lengths * source_lengths).sum(),
            target_lengths.sum(),
            (target_lengths * target_lengths).sum(),
            (source_lengths * target_lengths).sum(),
        ]
    ).tolist()
    return TokenCounts(
        samples=int(batch_size),
        source_real=sums[0],
        source_padded=int(batch_size * source_width),
        target_real=sums[2],
        target_padded=int(batch_size * target_width),
        source_len_sq=sums[1],
        target_len_sq=sums[3],
        source_target_len_product=sums[4],
    )


@dataclass
class _Span:
    """Counts, seconds and FLOPs over some steps: a step, the window or the whole run."""

    counts: TokenCounts
    seconds: float
    flops: float | None
    steps: int = 1

    def rates(self, peak_flops: float | None) -> dict[str, float]:
        """Per-second rates, padding fraction, mean step time and (when known) MFU."""
        seconds = max(self.seconds, 1e-12)
        counts = self.counts
        rates = {
            "samples_per_s": counts.samples / seconds,
            "real_tokens_per_s": counts.real / seconds,
            "padded_tokens_per_s": counts.padded / seconds,
            "source_real_tokens_per_s": counts.source_real / seconds,
            "source_padded_tokens_per_s": counts.source_padded / seconds,
            "target_real_tokens_per_s": counts.target_real / seconds,
            "target_padded_tokens_per_s": counts.target_padded / seconds,
            "padding_fraction": counts.padding_fraction,
            "step_time_s": self.seconds / max(self.steps, 1),
        }
        if self.flops is not None:
            rates["flops_per_s"] = self.flops / seconds
            if peak_flops:
                rates["mfu"] = rates["flops_per_s"] / peak_flops
        return rates


# Rates summed across ranks for the job-level numbers; a job's padding fraction and
# step time are not sums, so they are recomputed or averaged separately.
_SUMMED_RATES = (
    "samples_per_s",
    "real_tokens_per_s",
    "padded_tokens_per_s",
    "source_real_tokens_per_s",
    "source_padded_tokens_per_s",
    "target_real_tokens_per_s",
    "target_padded_tokens_per_s",
    "flops_per_s",
)


class ThroughputMonitor(Callback):
    """Log samples/s, real and padded tokens/s, padding, step time, FLOP/s and MFU.

    Step time runs from the end of the previous training step to the end of this
    one, so it includes waiting for the data loader (the throughput a user gets),
    minus any validation in between. The first step of each epoch is timed from its
    own start. Logged every ``log_every_n_steps`` batches (default: the trainer's):

    * ``perf/<rate>``: this rank over the last ``window`` steps;
    * ``perf/step/<rate>``: this rank's latest step alone;
    * ``perf/job/<rate>``: summed over all ranks (only when there are several).

    ``synchronize`` waits for the GPU at each step end so the clock sees the work
    rather than the kernel launches; turning it off lets the host run ahead but
    makes step times meaningless.
    """

    def __init__(
        self,
        window: int = 50,
        log_every_n_steps: int | None = None,
        output_dir: Path | str | None = None,
        synchronize: bool = True,
        cpu_peak_matmul_size: int = 512,
    ) -> None:
        if window < 1:
            raise ValueError(f"ThroughputMonitor window must be >= 1, got {window}")
        self.window = window
        self.log_every_n_steps = log_every_n_steps
        self.output_dir = output_dir
        self.synchronize = synchronize
        self.cpu_peak_matmul_size = cpu_peak_matmul_size
        self.shape: Seq2SeqShape | None = None
        self.peak_flops: float | None = None
        self.peak_source = ""
        self.precision = ""
        self.device_name = ""
        self._recent: deque[_Span] = deque(maxlen=window)
        self._total = _Span(TokenCounts(), 0.0, None, steps=0)
        self._batches_seen = 0
        self._step_started: float | None = None
        self._previous_step_end: float | None = None
        self._validation_started: float | None = None
        self._paused_seconds = 0.0
        self._step_counts: TokenCounts | None = None
        self._warned_uncountable = False

    # ---- setup ---------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.shape = Seq2SeqShape.from_config(
            getattr(getattr(pl_module, "model", None), "config", None)
        )
        if self.shape is None:
            log.warning("ThroughputMonitor: the module has no BART-shaped .model.config; no MFU")
        # Totals cover one fit: a second fit (after a batch-size search) starts afresh.
        self._recent.clear()
        self._total = _Span(TokenCounts(), 0.0, 0.0 if self.shape else None, steps=0)
        self._batches_seen = 0
        self.precision = compute_precision(trainer.precision)
        device = trainer.strategy.root_device
        if device.type == "cuda":
            self.device_name = torch.cuda.get_device_name(device)
            self.peak_flops = gpu_peak_flops(self.device_name, self.precision)
            self.peak_source = "datasheet"
            if self.peak_flops is None:
                log.warning(
                    "ThroughputMonitor: no peak rate for %s at %s; MFU not reported",
                    self.device_name,
                    self.precision,
                )
        else:
            self.device_name = f"cpu ({torch.get_num_threads()} threads)"
            self.peak_flops = measured_cpu_peak_flops(self.precision, self.cpu_peak_matmul_size)
            self.peak_source = (
                f"measured {self.cpu_peak_matmul_size}x{self.cpu_peak_matmul_size} matmul"
            )

    # ---- timing --------------------------------------------------------------

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous_step_end = None
        self._paused_seconds = 0.0

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._validation_started is not None:
            self._paused_seconds += time.perf_counter() - self._validation_started
            self._validation_started = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_started = time.perf_counter()
        try:
            self._step_counts = count_tokens(batch)
        except ValueError as error:
            self._step_counts = None
            if not self._warned_uncountable:
                log.warning("ThroughputMonitor: token counts unavailable: %s", error)
                self._warned_uncountable = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self._step_started is None:
            return
        if self.synchronize:
            synchronize_device(trainer)
        now = time.perf_counter()
        start = (
            self._previous_step_end if self._previous_step_end is not None else self._step_started
        )
        seconds = max(now - start - self._paused_seconds, 0.0)
        self._previous_step_end = now
        self._paused_seconds = 0.0
        self._step_started = None

        counts = self._step_counts or TokenCounts()
        flops = self._flops(counts) if self._step_counts is not None else None
        step = _Span(counts, seconds, flops)
        self._recent.append(step)
        self._total = _Span(
            self._total.counts + counts,
            self._total.seconds + seconds,
            None if self._total.flops is None or flops is None else self._total.flops + flops,
            self._total.steps + 1,
        )
        self._batches_seen += 1

        every = self.log_every_n_steps or trainer.log_every_n_steps
        if every and self._batches_seen % every == 0:
            self._log(trainer, step)

    def _flops(self, counts: TokenCounts) -> float | None:
        if self.shape is None:
            return None
        return training_flops(
            self.shape,
            source_tokens=counts.source_real,
            target_tokens=counts.target_real,
            source_len_sq=counts.source_len_sq,
            target_len_sq=counts.target_len_sq,
            source_target_len_product=counts.source_target_len_product,
        )

    # ---- reporting -----------------------------------------------------------

    def window_span(self) -> _Span:
        """The last ``window`` steps merged into one span."""
        counts = TokenCounts()
        flops: float | None = 0.0
        for step in self._recent:
            counts = counts + step.counts
            flops = None if flops is None or step.flops is None else flops + step.flops
        seconds = sum(step.seconds for step in self._recent)
        return _Span(counts, seconds, flops, steps=len(self._recent))

    def window_rates(self) -> dict[str, float]:
        """This rank's rates over the current window (what ``perf/<rate>`` logs)."""
        return self.window_span().rates(self.peak_flops)

    def _log(self, trainer: pl.Trainer, last_step: _Span) -> None:
        window = self.window_rates()
        metrics = {f"perf/{name}": value for name, value in window.items()}
        step = last_step.rates(self.peak_flops)
        for name in ("step_time_s", "real_tokens_per_s", "padding_fraction", "mfu"):
            if name in step:
                metrics[f"perf/step/{name}"] = step[name]
        if trainer.world_size > 1:
            metrics.update(self._job_metrics(trainer, self.window_span()))
        log_to_loggers(trainer, metrics)

    def _job_metrics(self, trainer: pl.Trainer, span: _Span) -> dict[str, float]:
        """Sum this window's rates over ranks (a collective: every rank calls it)."""
        rates = span.rates(self.peak_flops)
        values = [rates.get(name, 0.0) for name in _SUMMED_RATES]
        values.append(self.peak_flops or 0.0)
        summed = trainer.strategy.reduce(
            torch.tensor(values, dtype=torch.float64, device=trainer.strategy.root_device),
            reduce_op="sum",
        ).tolist()
        job = dict(zip(_SUMMED_RATES, summed[:-1], strict=True))
        total_peak = summed[-1]
        if job["padded_tokens_per_s"]:
            job["padding_fraction"] = 1.0 - job["real_tokens_per_s"] / job["padded_tokens_per_s"]
        if span.flops is not None and total_peak:
            job["mfu"] = job["flops_per_s"] / total_peak
        return {f"perf/job/{name}": value for name, value in job.items()}

    def summary(self) -> dict[str, Any]:
        """This rank's whole-run totals and rates, as written into ``throughput.json``."""
        total = self._total
        return {
            "steps": total.steps,
            "seconds": total.seconds,
            "flops": total.flops,
            **asdict(total.counts),
            **total.rates(self.peak_flops),
        }

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        per_rank = gather_to_all(trainer, self.summary())
        if not trainer.is_global_zero:
            return
        report = {
            "world_size": len(per_rank),
            "device": self.device_name,
            "precision": self.precision,
            "peak_flops_per_s_per_rank": self.peak_flops,
            "peak_flops_source": self.peak_source,
            "model_shape": asdict(self.shape) if self.shape else None,
            "flops_counted": "6 x matmul weights per real token + attention QK^T/AV pairs "
            "(see spellfix.callbacks.flops)",
            "job": _job_totals(per_rank, self.peak_flops),
            "per_rank": per_rank,
        }
        path = output_directory(trainer, self.output_dir) / "throughput.json"
        write_json_atomic(path, report, sort_keys=True)
        job = report["job"]
        mfu = f", MFU {job['mfu']:.1%}" if "mfu" in job else ""
        print(
            f"throughput: {job['real_tokens_per_s']:.0f} real tokens/s, "
            f"{job['padding_fraction']:.0%} padding, {job['samples_per_s']:.1f} samples/s{mfu} "
            f"-> {path}"
        )


def _job_totals(per_rank: list[dict[str, Any]], peak_flops: float | None) -> dict[str, Any]:
    """Whole-job totals: counts add up; ranks ran side by side, so time is the slowest rank's."""
    counts = TokenCounts(
        *(sum(rank[field.name] for rank in per_rank) for field in fields(TokenCounts))
    )
    seconds = max(rank["seconds"] for rank in per_rank)
    rank_flops = [rank["flops"] for rank in per_rank]
    flops = None if any(value is None for value in rank_flops) else sum(rank_flops)
    steps = max(rank["steps"] for rank in per_rank)
    job_peak = peak_flops * len(per_rank) if peak_flops else None
    return {
        "steps": steps,
        "seconds": seconds,
        "flops": flops,
        **asdict(counts),
        **_Span(counts, seconds, flops, steps).rates(job_peak),
    }
