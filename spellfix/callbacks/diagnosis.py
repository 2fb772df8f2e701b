"""What to change when a run underuses its GPU, from the numbers that show it.

The reference team went from 35% to 89% GPU utilization by reading nvidia-smi and
knowing the fixes: a larger batch, mixed precision, more loader workers. ``diagnose``
writes that knowledge down as rules over a utilization summary, each finding ending
in the config change to make. It lives apart from the monitor that measures, since it
needs only the summary: the rules run on synthetic summaries in tests and on an old
run's ``utilization.json``.
"""

from __future__ import annotations

import math
from typing import Any

# Thresholds of the diagnosis. Each says when a symptom is large enough to act on.
INPUT_BOUND_FRACTION = 0.15  # share of training time spent waiting for batches
VALIDATION_HEAVY_FRACTION = 0.25  # share of training time spent validating
BUSY_SM_PERCENT = 80.0  # mean SM utilization under which the GPU is underused
MEMORY_HEADROOM_FRACTION = 0.5  # peak memory share under which a larger batch fits
TARGET_MEMORY_FRACTION = 0.7  # memory share to aim a larger batch at, leaving a margin
OVERHEAD_FRACTION = 0.25  # share of training time spent between steps on logging and such


def diagnose(summary: dict[str, Any]) -> list[str]:
    """Turn a utilization summary into findings, each ending in what to change.

    A pure function of the summary that ``utilization.json`` holds (keys ``backend``,
    ``metrics``, ``time``, ``batch``, ``precision``, ``bf16_supported``,
    ``num_workers``, ``cpu_count``, ``devices_per_node``, ``sampler_error``), so the
    rules can be tested on synthetic readings and rerun on an old run's file.
    """
    lines: list[str] = []
    metrics = summary.get("metrics", {})
    time_split = summary.get("time", {})
    on_gpu = summary.get("backend") == "nvml"

    if summary.get("sampler_error"):
        lines.append(
            f"sampling stopped early ({summary['sampler_error']}): the readings cover only "
            "the start of the run"
        )

    data_wait = time_split.get("data_wait_fraction", 0.0)
    input_bound = data_wait >= INPUT_BOUND_FRACTION
    if input_bound:
        workers = summary.get("num_workers")
        per_device_cores = summary.get("cpu_count", 1) // max(summary.get("devices_per_node", 1), 1)
        suggested = max(1, min(8, per_device_cores // 2))
        finding = f"input-bound: {data_wait:.0%} of training time is spent waiting for batches"
        if workers is None or workers < suggested:
            lines.append(f"{finding} -> data.num_workers={suggested}")
        else:
            lines.append(
                f"{finding} with {workers} workers already -> keep workers alive between epochs "
                "(persistent workers) and tokenize the dataset ahead of time"
            )

    validation = time_split.get("validation_fraction", 0.0)
    if validation >= VALIDATION_HEAVY_FRACTION:
        lines.append(
            f"validation takes {validation:.0%} of training time -> validate less often "
            "(trainer.val_check_interval) or on fewer batches (trainer.limit_val_batches)"
        )

    overhead = time_split.get("overhead_fraction", 0.0)
    if overhead >= OVERHEAD_FRACTION:
        lines.append(
            f"step overhead: {overhead:.0%} of training time goes to logging, progress bar and "
            "checkpoints between steps -> raise trainer.log_every_n_steps and "
            "callbacks.progress_bar.refresh_rate, or make each step longer (data.max_tokens)"
        )

    sm = metrics.get("sm_util")
    memory_fraction = _peak_memory_fraction(metrics)
    if on_gpu and sm is not None and sm["mean"] < BUSY_SM_PERCENT and not input_bound:
        grow = _batch_growth_factor(memory_fraction)
        max_tokens = summary.get("batch", {}).get("max_padded_tokens", 0)
        if max_tokens:
            advice = f"raise data.max_tokens to about {_round_budget(max_tokens * grow)}"
        else:
            advice = f"raise the batch size about {grow:g}x"
        lines.append(
            f"batch too small for the device: SMs busy {sm['mean']:.0f}% on average "
            f"(p10 {sm['p10']:.0f}%) -> {advice}, or let tuner.batch_size=auto pick it"
        )

    if on_gpu and memory_fraction is not None and memory_fraction < MEMORY_HEADROOM_FRACTION:
        used = metrics["mem_used_gb"]["max"]
        total = metrics["mem_total_gb"]["max"]
        lines.append(
            f"memory headroom: at most {used:.1f} of {total:.1f} GB used "
            f"({memory_fraction:.0%}) -> room for a larger batch (data.max_tokens)"
        )

    precision = str(summary.get("precision", ""))
    if on_gpu and precision.startswith(("32", "64")):
        if summary.get("bf16_supported"):
            lines.append(
                f"fp32 training (precision {precision}) where bf16 would do -> "
                "use trainer.precision=bf16-mixed"
            )
        else:
            lines.append(
                f"fp32 training (precision {precision}) on a GPU without bf16 -> "
                "use trainer.precision=16-mixed"
            )

    if not lines:
        if on_gpu and sm is not None:
            lines.append(f"no bottleneck found: SMs busy {sm['mean']:.0f}% (p10 {sm['p10']:.0f}%)")
        else:
            lines.append("no bottleneck found in the step-time split")
    return lines


def _peak_memory_fraction(metrics: dict[str, dict[str, float]]) -> float | None:
    used, total = metrics.get("mem_used_gb"), metrics.get("mem_total_gb")
    if not used or not total or not total["max"]:
        return None
    return used["max"] / total["max"]


def _batch_growth_factor(memory_fraction: float | None) -> float:
    """How much larger a batch should fit: toward TARGET_MEMORY_FRACTION, between 2x and 8x."""
    if not memory_fraction:
        return 2.0
    # the epsilon keeps 0.7 / 0.1 (6.9999...) from rounding down to 6
    return float(min(8, max(2, math.floor(TARGET_MEMORY_FRACTION / memory_fraction + 1e-9))))


def _round_budget(tokens: float) -> str:
    """A token budget as a config value a person would type: 12k, 1.5k, 800."""
    if tokens >= 10_000:
        return f"{round(tokens / 1000)}k"
    if tokens >= 1_000:
        return f"{round(tokens / 500) * 0.5:g}k"
    return f"{round(tokens / 100) * 100}"
