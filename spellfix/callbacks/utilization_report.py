"""What a run's utilization readings add up to, in the forms a person reads them.

At the end of training rank zero holds every rank's readings, step times and batch
sizes. This module turns them into the summary that ``utilization.json`` keeps (and
``diagnose`` reads), the thinned timeline stored beside it, the lines printed at the
end of the run and the ``utilization.png`` plot. The live log during training uses
the same statistics, so a logged mean and the final summary agree on what a mean is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spellfix.callbacks._common import save_png
from spellfix.callbacks.samplers import Reading
from spellfix.callbacks.step_timer import mean_times, time_fractions

MAX_TIMELINE_POINTS = 5000  # per device, in utilization.json; longer runs are thinned


def value_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, 10th and 50th percentile, maximum and count of one reading's values."""
    array = np.asarray(values, dtype=float)
    return {
        "mean": float(array.mean()),
        "p10": float(np.percentile(array, 10)),
        "p50": float(np.percentile(array, 50)),
        "max": float(array.max()),
        "samples": int(array.size),
    }


def pool_metric_values(readings: Sequence[Reading]) -> dict[str, list[float]]:
    """Metric name -> every value over time and devices."""
    pooled: dict[str, list[float]] = {}
    for _, devices in readings:
        for device_reading in devices:
            for metric, value in device_reading.items():
                pooled.setdefault(metric, []).append(value)
    return pooled


def summarize(
    per_rank: list[dict[str, Any]],
    fallback_reason: str | None,
    interval_s: float,
    context: dict[str, Any],
) -> dict[str, Any]:
    """The summary of a run from what each rank sent (``UtilizationMonitor.on_train_end``).

    Each rank's dict holds ``rank``, ``backend``, ``device_names``, ``readings``,
    ``error``, ``times`` (``StepTimer.totals``), ``batch_padded_tokens`` and
    ``batch_samples``; ``context`` (precision, loader workers, cores, devices) is
    copied in for ``diagnose``.
    """
    devices = []
    all_readings = []
    for rank in per_rank:
        all_readings.extend(rank["readings"])
        for position, name in enumerate(rank["device_names"]):
            series = [(t, devices_now[position]) for t, devices_now in rank["readings"]]
            pooled = pool_metric_values([(t, [reading]) for t, reading in series])
            devices.append(
                {
                    "rank": rank["rank"],
                    "name": name,
                    "metrics": {m: value_statistics(v) for m, v in pooled.items()},
                    "times": rank["times"],
                }
            )
    pooled_all = pool_metric_values(all_readings)
    times = mean_times([rank["times"] for rank in per_rank])
    padded_tokens = [n for rank in per_rank for n in rank["batch_padded_tokens"]]
    samples = [n for rank in per_rank for n in rank["batch_samples"]]
    errors = [f"rank {rank['rank']}: {rank['error']}" for rank in per_rank if rank["error"]]
    return {
        "backend": per_rank[0]["backend"],
        "fallback_reason": fallback_reason,
        "interval_s": interval_s,
        "sampler_error": "; ".join(errors) or None,
        "metrics": {metric: value_statistics(values) for metric, values in pooled_all.items()},
        "devices": devices,
        "time": {**times, **time_fractions(times)},
        "batch": {
            "max_padded_tokens": max(padded_tokens, default=0),
            "mean_padded_tokens": float(np.mean(padded_tokens)) if padded_tokens else 0.0,
            "mean_samples": float(np.mean(samples)) if samples else 0.0,
        },
        **context,
    }


def timeline_rows(per_rank: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows (time, rank, device, readings), thinned to MAX_TIMELINE_POINTS per device."""
    rows = []
    for rank in per_rank:
        readings = rank["readings"]
        stride = max(1, math.ceil(len(readings) / MAX_TIMELINE_POINTS))
        for t, devices in readings[::stride]:
            for position, reading in enumerate(devices):
                rows.append({"t": round(t, 3), "rank": rank["rank"], "device": position, **reading})
    return rows


def format_report(summary: dict[str, Any], advice: list[str], directory: Path) -> str:
    """What the run prints at its end: readings, time split, diagnosis, where files went."""
    metrics = summary["metrics"]
    if summary["backend"] == "nvml":
        names = ", ".join(sorted({device["name"] for device in summary["devices"]}))
        head = f"utilization (NVML, {len(summary['devices'])} GPU: {names}):"
        parts = [
            _describe(metrics, "sm_util", "SM", "%"),
            _describe(metrics, "mem_util", "mem bus", "%"),
        ]
        if "mem_used_gb" in metrics and "mem_total_gb" in metrics:
            used, total = metrics["mem_used_gb"]["max"], metrics["mem_total_gb"]["max"]
            parts.append(f"memory up to {used:.1f}/{total:.1f} GB")
        if "power_w" in metrics and "power_limit_w" in metrics:
            parts.append(
                f"power {metrics['power_w']['mean']:.0f}/{metrics['power_limit_w']['max']:.0f} W"
            )
    else:
        reason = summary.get("fallback_reason") or "no GPU sampler"
        head = f"utilization (psutil, {reason}):"
        parts = [_describe(metrics, "cpu_percent", "CPU", "% of a core")]
        if "rss_gb" in metrics:
            parts.append(f"RSS up to {metrics['rss_gb']['max']:.2f} GB")
    time_split = summary["time"]
    lines = [
        f"{head} " + ", ".join(part for part in parts if part),
        f"step time over {time_split['steps']} steps: {time_split['data_wait_fraction']:.0%} "
        f"data wait, {time_split['compute_fraction']:.0%} compute, "
        f"{time_split['validation_fraction']:.0%} validation, "
        f"{time_split['overhead_fraction']:.0%} logging/checkpoint overhead",
        "diagnosis:",
        *(f"  - {line}" for line in advice),
        f"wrote utilization.json and utilization.png to {directory}",
    ]
    return "\n".join(lines)


def _describe(metrics: dict[str, dict[str, float]], name: str, label: str, unit: str) -> str:
    if name not in metrics:
        return ""
    statistics = metrics[name]
    return f"{label} {statistics['mean']:.0f}{unit} mean / {statistics['p10']:.0f}{unit} p10"


# Readings drawn as a line each; the constant ones (totals, limits) are drawn dashed
# on the panel of what they bound.
_PANELS = {
    "nvml": [
        ("utilization %", ["sm_util", "mem_util"]),
        ("memory GB", ["mem_used_gb", "mem_total_gb"]),
        ("power W", ["power_w", "power_limit_w"]),
        ("SM clock MHz", ["sm_clock_mhz"]),
    ],
    "psutil": [("CPU % (100 = one core)", ["cpu_percent"]), ("memory GB", ["rss_gb"])],
}
_DASHED = {"mem_total_gb", "power_limit_w"}


def plot_timeline(
    timeline: list[dict[str, Any]],
    validation_spans: list[tuple[float, float]],
    summary: dict[str, Any],
    path: Path,
) -> None:
    """Draw each reading over time per device, validation shaded, into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _PANELS.get(summary["backend"], [])
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(10, 2.4 * len(panels)), sharex=True, squeeze=False
    )
    series_keys = sorted({(row["rank"], row["device"]) for row in timeline})
    for axis, (title, metric_names) in zip(axes[:, 0], panels, strict=True):
        for rank, device in series_keys:
            rows = [row for row in timeline if row["rank"] == rank and row["device"] == device]
            for metric in metric_names:
                points = [(row["t"], row[metric]) for row in rows if metric in row]
                if points:
                    times, values = zip(*points, strict=True)
                    style = "--" if metric in _DASHED else "-"
                    axis.plot(times, values, style, label=f"{metric} r{rank}d{device}")
        for start, end in validation_spans:
            axis.axvspan(start, end, color="grey", alpha=0.2)
        axis.set_ylabel(title)
        if axis.has_data():
            axis.legend(loc="upper right", fontsize="x-small")
    axes[-1, 0].set_xlabel("seconds since training start (grey: validation)")
    figure.suptitle(f"utilization ({summary['backend']})")
    figure.tight_layout()
    save_png(figure, path)
