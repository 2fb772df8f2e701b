"""``SpellCorrector``: the LightningModule that trains BART to turn typos into queries.

The module is deliberately thin around ``BartForConditionalGeneration``: the HF model
stays the unit that is saved, exported and served, and this class adds only what
training needs (loss with label smoothing, an AdamW that skips decay on norms and
biases, a warmup schedule, and correction metrics on a capped validation sample, decoded
as the trained model will be: ``spellfix.decoding`` with the run's lexicon).
Its hyper-parameters are plain dicts, so a checkpoint loads with
``torch.load(weights_only=True)`` and the exporter can rebuild the model without
importing this file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer
from torchmetrics import Metric
from transformers import BartConfig, BartForConditionalGeneration, GenerationConfig
from transformers.models.bart.modeling_bart import shift_tokens_right

from spellfix.correct import score_pairs
from spellfix.data import LABEL_PAD
from spellfix.decoding import (
    Correction,
    DecodingSettings,
    GenerativeDecoder,
    Lexicon,
    NoisyChannelDecoder,
    max_new_tokens_for,
)
from spellfix.metrics import COUNT_KEYS, metric_counts, metrics_from_counts
from spellfix.tokenizer import decode_clean, load_tokenizer


def build_bart(
    model_config: dict[str, Any] | None,
    pretrained: str | None,
    tokenizer: Any,
    attn_implementation: str = "sdpa",
    vocab_size: int | None = None,
) -> BartForConditionalGeneration:
    """A BART from a hub id or directory, else from ``model_config`` sized to the tokenizer.

    Token ids come from the tokenizer, never from the preset, so a preset cannot
    disagree with the vocabulary it is trained with. ``vocab_size`` pads the embedding
    beyond the tokenizer (benchmarks that want bart-base's 50265-row output layer).
    """
    if pretrained:
        return BartForConditionalGeneration.from_pretrained(
            pretrained, attn_implementation=attn_implementation
        )
    config = BartConfig(
        **(model_config or {}),
        vocab_size=vocab_size or len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=None,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    model = BartForConditionalGeneration._from_config(
        config, attn_implementation=attn_implementation
    )
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_length=config.max_position_embeddings,
        num_beams=1,
        do_sample=False,
    )
    return model


def decay_parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only: decaying norms and biases only hurts."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_norm_or_bias = param.ndim < 2 or "layernorm" in name.lower() or "norm" in name.lower()
        (no_decay if is_norm_or_bias else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_schedule(
    warmup_steps: int,
    total_steps: int,
    kind: str,
    time_spent: Callable[[], float] | None = None,
):
    """Linear warmup, then linear or cosine decay to zero over the remaining steps.

    ``time_spent`` (the share of ``trainer.max_time`` used, 0 to 1) makes the decay follow
    the clock when that is further along than the steps: a run that the time limit stops
    at 4,700 of 6,000 planned steps (a slower machine) still ends with its learning rate
    decayed to zero instead of a tenth of the peak, and keeps the model that budget can
    train best (Li et al., "Budgeted training", ICLR 2020). That clock is why this is not
    ``transformers.get_scheduler``: its schedules (the same linear and cosine shapes)
    follow the step count only.
    """
    if kind not in ("linear", "cosine", "constant"):
        raise ValueError(f"model.optim.schedule={kind!r}; choose linear, cosine or constant")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if time_spent is not None:
            progress = max(progress, min(1.0, time_spent()))
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def time_budget_spent(trainer: pl.Trainer) -> Callable[[], float] | None:
    """The share of ``trainer.max_time`` a run has used, as a callable; None without one.

    Under DDP every rank takes rank zero's reading: replicas stay identical only if each
    steps with the same learning rate, and their clocks differ by milliseconds.
    """
    timer = next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
    if timer is None or timer.time_remaining() is None:
        return None

    def spent() -> float:
        elapsed = timer.time_elapsed()
        share = elapsed / max(1e-9, elapsed + timer.time_remaining())
        if trainer.world_size > 1:
            share = trainer.strategy.broadcast(share, src=0)
        return share

    return spent


class CorrectionMetrics(Metric):
    """The corrector metrics of ``spellfix.metrics`` over every rank's examples.

    Each rank adds up its counts (edit distances, reference lengths, edits made); the
    ratios are taken once, on the sums of all ranks. Averaging each rank's own CER, as
    ``sync_dist`` does, weighs a rank's few long queries like another's many short ones,
    and one rank without a correct input (over-correction NaN) made the mean NaN.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for key in COUNT_KEYS:
            self.add_state(key, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sources: list[str], predictions: list[str], references: list[str]) -> None:
        for key, value in metric_counts(sources, predictions, references).items():
            setattr(self, key, getattr(self, key) + value)

    def compute(self) -> dict[str, float]:
        return metrics_from_counts({key: int(getattr(self, key)) for key in COUNT_KEYS})


# Devices with a fused AdamW kernel (torch >= 2.4).
FUSED_ADAMW_DEVICES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu"})


class SpellCorrector(pl.LightningModule):
    """BART trained with teacher forcing; validated by loss and by greedy corrections."""

    def __init__(
        self,
        tokenizer_dir: str,
        model_config: dict[str, Any] | None = None,
        pretrained: str | None = None,
        optim: dict[str, Any] | None = None,
        decoding: dict[str, Any] | None = None,
        lexicon_path: str | None = None,
        attn_implementation: str = "sdpa",
        compile: bool = False,
        val_generation_samples: int = 256,
    ) -> None:
        super().__init__()
        self.tokenizer = load_tokenizer(tokenizer_dir)
        self.model = build_bart(model_config, pretrained, self.tokenizer, attn_implementation)
        # The resolved config (with the tokenizer's sizes) is what the exporter rebuilds.
        self.save_hyperparameters(
            {
                "tokenizer_dir": str(Path(tokenizer_dir).resolve()),
                "model_config": self.model.config.to_dict(),
                "pretrained": pretrained,
                "optim": dict(optim or {}),
                "decoding": dict(decoding or {}),
                "lexicon_path": lexicon_path,
                "attn_implementation": attn_implementation,
                "compile": compile,
                "val_generation_samples": val_generation_samples,
            }
        )
        self.optim = dict(optim or {})
        # A bare module (no lexicon) generates; training passes the run's decoding.
        self.decoding = (
            DecodingSettings.from_dict(dict(decoding))
            if decoding
            else DecodingSettings(mode="generate", constraint="none")
        )
        self.lexicon_path = lexicon_path
        self.catalog: Lexicon | None = None  # set by training when decoding.catalog is given
        self._channel: tuple[tuple, NoisyChannelDecoder] | None = None
        self._lexicon: Lexicon | None = None
        self.val_generation_samples = val_generation_samples
        # The encoder-decoder stack without the LM head, compiled when asked. Kept in a
        # plain dict so the compiled wrapper is not registered as a second copy of the
        # weights in the state dict and the checkpoints.
        # Query lengths vary every batch, so the graph is compiled for dynamic shapes.
        self._compiled = (
            {"backbone": torch.compile(self.model.model, dynamic=True)} if compile else {}
        )
        self._predictions: dict[str, list[tuple[str, str, str]]] = {}
        self.correction_metrics = torch.nn.ModuleDict(
            {"val": CorrectionMetrics(), "test": CorrectionMetrics()}
        )

    # -- training ---------------------------------------------------------------------
    def loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy over the real target tokens only.

        The vocabulary projection is the largest matmul of a small BART, so it runs on
        the non-pad decoder positions alone instead of every padded position, and the
        HF model is not given ``labels`` so it does not compute a second loss.
        """
        labels = batch["labels"]
        decoder_input_ids = shift_tokens_right(
            labels, self.model.config.pad_token_id, self.model.config.decoder_start_token_id
        )
        backbone = self._compiled.get("backbone", self.model.model)
        hidden = backbone(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
        ).last_hidden_state
        real = labels != LABEL_PAD
        logits = self.model.lm_head(hidden[real]) + self.model.final_logits_bias
        return F.cross_entropy(
            logits.float(),
            labels[real],
            label_smoothing=float(self.optim.get("label_smoothing", 0.0)),
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        groups = decay_parameter_groups(self.model, float(self.optim.get("weight_decay", 0.01)))
        # One kernel for the whole update instead of a dozen foreach launches: on a small
        # model the optimizer step is a tenth of the step time otherwise (CPU included).
        fused = self.device.type in FUSED_ADAMW_DEVICES
        optimizer = torch.optim.AdamW(
            groups,
            lr=float(self.optim.get("lr", 5e-4)),
            betas=tuple(self.optim.get("betas", (0.9, 0.98))),
            eps=float(self.optim.get("eps", 1e-8)),
            fused=fused,
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.optim.get("warmup_steps", 0))
        if 0 < float(self.optim.get("warmup_ratio", 0.0)) < 1:
            warmup = int(total * float(self.optim["warmup_ratio"]))
        clock = time_budget_spent(self.trainer) if self.optim.get("decay_by_time") else None
        factor = warmup_schedule(warmup, total, self.optim.get("schedule", "linear"), clock)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- evaluation -------------------------------------------------------------------
    def corrections(self, texts: list[str]) -> list[Correction]:
        """The corrections the saved model will make, with this module's weights.

        Decoding as every back end does (``spellfix.decoding``), the model scored on
        PyTorch; a channel model needs the run's lexicon (``lexicon_path``).
        """
        was_training = self.model.training
        self.model.eval()
        try:
            return self._decoder().correct(texts)
        finally:
            self.model.train(was_training)

    def _decoder(self):
        if self.decoding.mode == "generate":
            return GenerativeDecoder(_ModuleRunner(self), self.decoding)
        if self._lexicon is None:
            if not self.lexicon_path:
                raise ValueError("a channel model decodes with a lexicon; lexicon_path is unset")
            self._lexicon = Lexicon.load(self.lexicon_path)
        # The lexicon's index (and, with a catalog, the mixed lexicon) is built once; each
        # call gets an empty score cache, since the weights move between calls.
        key = (id(self._lexicon), id(self.catalog), self.decoding.constraint)
        if self._channel is None or self._channel[0] != key:
            built = NoisyChannelDecoder(
                self._lexicon, self.decoding, _ModuleRunner(self).score, catalog=self.catalog
            )
            self._channel = (key, built)
        decoder = self._channel[1].with_scorer(_ModuleRunner(self).score)
        decoder.settings = self.decoding
        return decoder

    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def _eval_step(self, stage: str, batch: dict[str, Any]) -> None:
        batch_size = batch["input_ids"].size(0)
        self.log(f"{stage}/loss", self.loss(batch), batch_size=batch_size, sync_dist=True)
        seen = self._predictions.setdefault(stage, [])
        take = min(self.val_generation_samples - len(seen), batch_size, self._quota(stage))
        if take <= 0:
            return
        sources, references = list(batch["noisy"][:take]), list(batch["clean"][:take])
        predictions = [c.correction for c in self.corrections(sources)]
        self.correction_metrics[stage].update(sources, predictions, references)
        seen.extend(zip(sources, predictions, references, strict=True))

    def _quota(self, stage: str) -> int:
        """Examples to correct per batch, so the samples spread over every evaluated batch.

        Evaluation batches each hold queries of one length; correcting the first
        ``val_generation_samples`` examples would score two or three lengths only.
        """
        trainer = self._trainer
        if trainer is None:
            return self.val_generation_samples
        counts = trainer.num_val_batches if stage == "val" else trainer.num_test_batches
        batches = sum(counts) if counts else 0
        if not batches or math.isinf(batches):
            return self.val_generation_samples
        return math.ceil(self.val_generation_samples / batches)

    def _eval_epoch_end(self, stage: str) -> None:
        triples = self._predictions.pop(stage, [])
        counts = self.correction_metrics[stage]
        if self.trainer.sanity_checking:
            counts.reset()
            return
        if not counts.update_count:  # a rank with nothing to correct still joins the sum
            counts.update([], [], [])
        metrics = counts.compute()  # every rank calls it: the counts are summed across ranks
        counts.reset()
        n = int(metrics.pop("n"))
        if not n:
            return
        # Every rank holds the same sums; sync_dist only tells Lightning they agree.
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, sync_dist=True)
        if stage == "val" and hasattr(self, "_fit_started"):
            # Wall time of this validation, so studies can compare time-to-quality.
            self.log("time/elapsed_s", time.perf_counter() - self._fit_started)
        self.last_samples = triples[:16]
        self.last_sample_count = n

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")


class _ModuleRunner:
    """The module's model as a decoding runner: scores, and generation for forward models."""

    def __init__(self, module: SpellCorrector) -> None:
        self.module = module

    def score(self, sources: list[str], targets: list[str]):
        module = self.module
        return score_pairs(module.model, module.tokenizer, sources, targets, batch_size=512)

    @torch.no_grad()
    def correct(self, texts: list[str]) -> list[str]:
        """Greedy (or beam) generation, each query with its own budget."""
        module, settings = self.module, self.module.decoding
        results = list(texts)
        for index, text in enumerate(texts):
            if not text.strip():
                continue
            encoded = module.tokenizer([text], return_tensors="pt").to(module.device)
            budget = max_new_tokens_for(
                int(encoded["attention_mask"].sum()),
                settings.max_new_tokens_ratio,
                settings.min_new_tokens_budget,
                module.model.config.max_position_embeddings,
            )
            generated = module.model.generate(
                **encoded, max_length=1 + budget, num_beams=settings.num_beams, do_sample=False
            )
            results[index] = decode_clean(module.tokenizer, generated.tolist())[0]
        return results
