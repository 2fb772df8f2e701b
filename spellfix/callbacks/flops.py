"""Training FLOPs of an encoder-decoder and the peak rate of the device it runs on.

MFU (model FLOPs utilization) is the share of the device's peak rate that the
model's own arithmetic uses. It is the honest yardstick for a batch-size or
precision change: utilization percentages from NVML say the GPU was busy, MFU
says it was busy doing useful matmuls.

What is counted (``training_flops``), for a BART-shaped model with hidden size d,
vocabulary V, Le encoder and Ld decoder layers, FFN widths Fe and Fd:

* Matmul weights, at 6 FLOPs per weight per token (2 forward, 4 backward: the
  gradient with respect to the input and to the weight):

  - each real source token passes Le * (4 d^2 + 2 d Fe) encoder weights (Q, K, V,
    output projections and the two FFN matrices) plus Ld * 2 d^2 for the
    cross-attention K and V projections every decoder layer applies to the encoder
    output;
  - each real target token passes Ld * (4 d^2 + 2 d^2 + 2 d Fd) decoder weights
    (self-attention, cross-attention Q and output, FFN) plus d V for the LM head.

* Attention scores and the weighted sum (QK^T and AV), 3 x 4 d FLOPs per query-key
  pair: per sequence of real source length s and target length t, Le s^2 pairs in
  the encoder, Ld t^2 in decoder self-attention (the full square, as a dense kernel
  computes it, not the causal half) and Ld s t in cross-attention.

Not counted: embedding lookups, positional embeddings, layer norms, softmax, GELU,
bias adds, dropout and the loss. Padding is never counted, so a run cannot raise
its MFU by padding more; that is the point of computing it from real tokens.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any

import torch

TERA = 1e12

# Dense (no structured sparsity) peak tensor rates from NVIDIA datasheets, in TFLOP/s,
# keyed by compute precision. A missing precision means the chip has no fast path for
# it (V100 and T4 have no bf16 or tf32 units): MFU is then not reported rather than
# reported against a made-up peak. Patterns are tried in order, so the more specific
# variants come first.
GPU_PEAK_TFLOPS: list[tuple[str, dict[str, float]]] = [
    (r"h200 nvl", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"h200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"h100 pcie", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    (r"h100 nvl", {"bf16": 835.0, "fp16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (r"h100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"a100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    # The A10 datasheet figures; AWS's A10G runs at lower clocks, so MFU there reads
    # somewhat low rather than flatteringly high.
    (r"a10g?\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\bl4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bt4\b", {"fp16": 65.0, "fp32": 8.1}),
    (r"v100.*pcie", {"fp16": 112.0, "fp32": 14.0}),
    (r"v100", {"fp16": 125.0, "fp32": 15.7}),
]


@dataclass(frozen=True)
class Seq2SeqShape:
    """The few numbers of a BART-style config that fix its FLOPs per token."""

    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    vocab_size: int

    @classmethod
    def from_config(cls, config: Any) -> Seq2SeqShape | None:
        """Read the shape from a ``transformers`` config; None when it is not BART-shaped."""
        names = [field for field in cls.__dataclass_fields__]
        values = [getattr(config, name, None) for name in names]
        if any(not isinstance(value, int) for value in values):
            return None
        return cls(*values)

    @property
    def weights_per_source_token(self) -> int:
        d = self.d_model
        encoder = self.encoder_layers * (4 * d * d + 2 * d * self.encoder_ffn_dim)
        cross_key_value = self.decoder_layers * 2 * d * d
        return encoder + cross_key_value

    @property
    def weights_per_target_token(self) -> int:
        d = self.d_model
        decoder = self.decoder_layers * (6 * d * d + 2 * d * self.decoder_ffn_dim)
        return decoder + d * self.vocab_size


def training_flops(
    shape: Seq2SeqShape,
    *,
    source_tokens: int,
    target_tokens: int,
    source_len_sq: int,
    target_len_sq: int,
    source_target_len_product: int,
) -> float:
    """FLOPs of one forward+backward pass over a batch, from its real (unpadded) tokens.

    ``source_len_sq`` is the sum over sequences of the squared real source length,
    ``target_len_sq`` the same for targets, ``source_target_len_product`` the sum of
    source length times target length: the query-key pair counts of the three kinds
    of attention. See the module docstring for what is and is not counted.
    """
    weight_flops = 6 * (
        shape.weights_per_source_token * source_tokens
        + shape.weights_per_target_token * target_tokens
    )
    attention_pairs = shape.encoder_layers * source_len_sq + shape.decoder_layers * (
        target_len_sq + source_target_len_product
    )
    attention_flops = 3 * 4 * shape.d_model * attention_pairs
    return float(weight_flops + attention_flops)


def compute_precision(trainer_precision: str | int | None) -> str:
    """Map Lightning's ``trainer.precision`` to the tensor-core rate that applies.

    Plain fp32 matmuls run on TF32 units when PyTorch is allowed to use them
    (``torch.set_float32_matmul_precision("high")``), so "32-true" maps to "tf32"
    in that case and to "fp32" otherwise.
    """
    text = str(trainer_precision or "32-true")
    if text.startswith("bf16"):
        return "bf16"
    if text.startswith("16"):
        return "fp16"
    if text.startswith("64"):
        return "fp64"
    if torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "fp32"


def gpu_peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of a known GPU at a precision; None for an unknown chip or precision.

    Chips without TF32 units fall back to their fp32 rate, which is what their
    "tf32" matmuls actually run at.
    """
    name = device_name.lower()
    for pattern, rates in GPU_PEAK_TFLOPS:
        if re.search(pattern, name):
            rate = rates.get(precision)
            if rate is None and precision == "tf32":
                rate = rates.get("fp32")
            return rate * TERA if rate is not None else None
    return None


_CPU_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}


@functools.lru_cache(maxsize=8)
def measured_cpu_peak_flops(precision: str, size: int = 512, repeats: int = 5) -> float:
    """The best FLOP/s of a square matmul on this CPU, measured once per precision.

    CPUs have no datasheet peak that torch reaches, so the ceiling MFU is measured
    against is what a large dense matmul attains right now, with the current thread
    count. The best of a few repeats damps interference from other processes.
    """
    dtype = _CPU_DTYPES.get(precision, torch.float32)
    left = torch.randn(size, size).to(dtype)
    right = torch.randn(size, size).to(dtype)
    torch.matmul(left, right)  # warm-up: first call pays for allocation and dispatch
    best_seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(left, right)
        best_seconds = min(best_seconds, time.perf_counter() - start)
    return 2.0 * size**3 / max(best_seconds, 1e-9)
