"""ThroughputMonitor: token counts, FLOPs and MFU bookkeeping, checked against hand counts."""

from __future__ import annotations

import json
import math

import pytest
import torch
from callback_toys import (
    BATCH_SHAPES,
    RecordingLogger,
    ToySeq2Seq,
    cpu_trainer,
    loader,
    padded_batch,
    tiny_bart_config,
    toy_batches,
)

from spellfix.callbacks.flops import (
    Seq2SeqShape,
    compute_precision,
    gpu_peak_flops,
    measured_cpu_peak_flops,
    training_flops,
)
from spellfix.callbacks.throughput import ThroughputMonitor, TokenCounts, count_tokens


def test_count_tokens_matches_a_hand_count_of_a_padded_batch() -> None:
    # Source rows of 5, 3 and 1 real tokens padded to 5; targets of 4, 2, 1 padded to 4.
    counts = count_tokens(padded_batch([5, 3, 1], [4, 2, 1]))
    assert counts == TokenCounts(
        samples=3,
        source_real=9,
        source_padded=15,
        target_real=7,
        target_padded=12,
        source_len_sq=25 + 9 + 1,
        target_len_sq=16 + 4 + 1,
        source_target_len_product=5 * 4 + 3 * 2 + 1 * 1,
    )
    assert counts.real == 16
    assert counts.padded == 27
    assert counts.padding_fraction == pytest.approx(11 / 27)


def test_count_tokens_treats_a_batch_without_masks_or_labels_as_all_real() -> None:
    counts = count_tokens({"input_ids": torch.ones(4, 6, dtype=torch.long)})
    assert (counts.samples, counts.source_real, counts.source_padded) == (4, 24, 24)
    assert (counts.target_real, counts.target_padded) == (0, 0)
    assert counts.padding_fraction == 0.0


def test_count_tokens_rejects_a_batch_it_cannot_read_with_one_clear_line() -> None:
    with pytest.raises(ValueError, match="input_ids"):
        count_tokens((torch.ones(2, 3), torch.ones(2, 3)))


def test_token_counts_add_field_by_field() -> None:
    first = count_tokens(padded_batch([5, 3, 1], [4, 2, 1]))
    second = count_tokens(padded_batch([8, 8], [6, 7]))
    total = first + second
    assert total.samples == 5
    assert total.source_padded == 15 + 16
    assert total.target_real == 7 + 13
    assert total.source_target_len_product == 27 + 8 * 6 + 8 * 7


def test_training_flops_follow_the_documented_formula() -> None:
    shape = Seq2SeqShape(
        d_model=2,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=4,
        decoder_ffn_dim=4,
        vocab_size=10,
    )
    # Encoder: 4*d^2 + 2*d*Fe = 16 + 16, plus cross-attention K,V: 2*d^2 = 8  -> 40 per token.
    assert shape.weights_per_source_token == 40
    # Decoder: 6*d^2 + 2*d*Fd = 24 + 16, plus the LM head d*V = 20  -> 60 per token.
    assert shape.weights_per_target_token == 60
    flops = training_flops(
        shape,
        source_tokens=9,
        target_tokens=7,
        source_len_sq=35,
        target_len_sq=21,
        source_target_len_product=27,
    )
    weights = 6 * (40 * 9 + 60 * 7)
    attention = 3 * 4 * 2 * (35 + 21 + 27)
    assert flops == weights + attention == 6672


def test_training_flops_are_what_torch_counts_for_a_real_bart_step() -> None:
    """The formula against torch's own FLOP counter on a BART forward and backward: a
    wrong layer count, FFN width or attention term would show here, not in a hand count
    that repeats the formula. Eager attention, since the counter has no rule for the CPU
    SDPA kernel; a batch without padding, since the formula counts real tokens."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import BartForConditionalGeneration

    # Encoder and decoder differ in depth and width, so swapping them in the formula shows.
    config = tiny_bart_config(
        encoder_layers=2, decoder_layers=3, decoder_ffn_dim=96, attn_implementation="eager"
    )
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config)
    batch, source_length, target_length = 3, 11, 7
    source = torch.randint(4, config.vocab_size, (batch, source_length))
    target = torch.randint(4, config.vocab_size, (batch, target_length))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=source, decoder_input_ids=target).logits.sum().backward()
    expected = training_flops(
        Seq2SeqShape.from_config(config),
        source_tokens=batch * source_length,
        target_tokens=batch * target_length,
        source_len_sq=batch * source_length**2,
        target_len_sq=batch * target_length**2,
        source_target_len_product=batch * source_length * target_length,
    )
    assert expected == counter.get_total_flops()


def test_shape_is_read_from_a_bart_config_and_refused_for_other_objects() -> None:
    shape = Seq2SeqShape.from_config(tiny_bart_config())
    assert shape == Seq2SeqShape(32, 1, 1, 64, 64, 64)
    assert Seq2SeqShape.from_config(object()) is None
    assert Seq2SeqShape.from_config(None) is None


@pytest.mark.parametrize(
    ("device_name", "precision", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA H100 PCIe", "bf16", 756.0),
        ("NVIDIA H200", "fp16", 989.4),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
        ("NVIDIA A10G", "bf16", 125.0),
        ("NVIDIA L4", "fp16", 121.0),
        ("Tesla T4", "fp16", 65.0),
        ("Tesla T4", "tf32", 8.1),  # no TF32 units: its fp32 matmuls run at the fp32 rate
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
        ("Tesla V100-PCIE-16GB", "fp32", 14.0),
    ],
)
def test_peak_table_knows_the_common_training_gpus(
    device_name: str, precision: str, tflops: float
) -> None:
    assert gpu_peak_flops(device_name, precision) == pytest.approx(tflops * 1e12)


def test_peak_table_gives_none_rather_than_a_wrong_peak() -> None:
    assert gpu_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 units
    assert gpu_peak_flops("NVIDIA L40S", "bf16") is None  # not an L4
    assert gpu_peak_flops("Some Future GPU", "bf16") is None


def test_trainer_precision_maps_to_the_matmul_rate_that_applies() -> None:
    assert compute_precision("bf16-mixed") == "bf16"
    assert compute_precision("16-mixed") == "fp16"
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert compute_precision("32-true") == "fp32"
        torch.set_float32_matmul_precision("high")
        assert compute_precision("32-true") == "tf32"
    finally:
        torch.set_float32_matmul_precision(previous)


def test_cpu_peak_is_measured_once_and_cached() -> None:
    first = measured_cpu_peak_flops("fp32", 128)
    assert math.isfinite(first) and first > 1e6  # any CPU does a million FLOP/s
    assert measured_cpu_peak_flops("fp32", 128) == first


@pytest.mark.slow
def test_a_real_fit_logs_and_writes_totals_equal_to_the_hand_counts(tmp_path) -> None:
    batches = toy_batches()
    expected = TokenCounts()
    for source_lengths, target_lengths in BATCH_SHAPES:
        width_source, width_target = max(source_lengths), max(target_lengths)
        rows = len(source_lengths)
        expected = expected + TokenCounts(
            samples=rows,
            source_real=sum(source_lengths),
            source_padded=rows * width_source,
            target_real=sum(target_lengths),
            target_padded=rows * width_target,
            source_len_sq=sum(n * n for n in source_lengths),
            target_len_sq=sum(n * n for n in target_lengths),
            source_target_len_product=sum(
                s * t for s, t in zip(source_lengths, target_lengths, strict=True)
            ),
        )
    monitor = ThroughputMonitor(window=3, log_every_n_steps=2, output_dir=tmp_path)
    trainer = cpu_trainer(tmp_path, [monitor])
    trainer.fit(ToySeq2Seq(), train_dataloaders=loader(batches))

    report = json.loads((tmp_path / "throughput.json").read_text())
    job = report["job"]
    assert report["world_size"] == 1
    assert job["steps"] == len(batches)
    for field, value in vars(expected).items():
        assert job[field] == value, field
    assert job["padding_fraction"] == pytest.approx(expected.padding_fraction)
    assert job["real_tokens_per_s"] == pytest.approx(expected.real / job["seconds"])
    assert job["padded_tokens_per_s"] == pytest.approx(expected.padded / job["seconds"])
    assert job["samples_per_s"] == pytest.approx(expected.samples / job["seconds"])
    shape = Seq2SeqShape.from_config(tiny_bart_config())
    expected_flops = training_flops(
        shape,
        source_tokens=expected.source_real,
        target_tokens=expected.target_real,
        source_len_sq=expected.source_len_sq,
        target_len_sq=expected.target_len_sq,
        source_target_len_product=expected.source_target_len_product,
    )
    assert job["flops"] == pytest.approx(expected_flops)
    # A model this small cannot reach the measured matmul peak, yet it did real work.
    assert 0.0 < job["mfu"] < 1.0
    assert report["per_rank"][0]["source_real"] == expected.source_real

    # The window holds the last three batches only.
    last_three = sum((count_tokens(batch) for batch in batches[-3:]), TokenCounts())
    assert monitor.window_span().counts == last_three

    logger = trainer.logger
    assert isinstance(logger, RecordingLogger)
    logged = logger.logged_keys()
    for name in (
        "perf/samples_per_s",
        "perf/real_tokens_per_s",
        "perf/padded_tokens_per_s",
        "perf/source_real_tokens_per_s",
        "perf/target_padded_tokens_per_s",
        "perf/padding_fraction",
        "perf/step_time_s",
        "perf/flops_per_s",
        "perf/mfu",
        "perf/step/step_time_s",
    ):
        assert name in logged, name
    assert len(logger.values("perf/real_tokens_per_s")) == len(batches) // 2
    assert all(value > 0 for value in logger.values("perf/step_time_s"))
    assert not any(key.startswith("perf/job/") for key in logged)  # one rank: no job sums


class ModelUnderAnotherName(ToySeq2Seq):
    """A module the FLOPs count cannot read: its network is not at ``self.model``."""

    def __init__(self) -> None:
        super().__init__()
        self.seq2seq = self.model
        del self.model

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.seq2seq(**batch).loss


@pytest.mark.slow
def test_without_a_readable_model_config_counts_are_kept_and_mfu_is_left_out(tmp_path) -> None:
    batches = toy_batches()[:2]
    monitor = ThroughputMonitor(log_every_n_steps=1, output_dir=tmp_path)
    trainer = cpu_trainer(tmp_path, [monitor])
    trainer.fit(ModelUnderAnotherName(), train_dataloaders=loader(batches))

    job = json.loads((tmp_path / "throughput.json").read_text())["job"]
    assert job["samples"] == 3 + 2
    assert job["flops"] is None
    assert "mfu" not in job and "flops_per_s" not in job
    assert "perf/mfu" not in trainer.logger.logged_keys()
