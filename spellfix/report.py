"""``report.md`` for a run directory: the run's evidence as PNG plots, readable offline.

Dashboards (W&B, TensorBoard) need a service and an account; a run directory copied off
a SageMaker job or a colleague's machine should still explain itself. ``write_report``
reads only files every run leaves behind (``logs/metrics.csv`` from the CSV logger,
``utilization.json``, ``throughput.json``, ``batch_size_search.json``, ``result.json``)
and draws the loss curves, validation accuracy/CER, the utilization timeline, the
throughput and the batch-size tuner's curve. ``compare_runs`` puts several runs side by
side (the utilization study's before/after). ``spellfix-report`` rebuilds either.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_synth.files import atomic_path, write_text_atomic

PLOTS_DIR = "plots"  # under the run directory (or the comparison directory)
# Utilization readings worth a line in the comparison table, per sampler back end.
UTILIZATION_HEADLINES = ("sm_util", "mem_util", "mem_used_gb", "cpu_percent", "rss_gb")
# Scalars of the CSV log shown in the final-metrics table.
METRIC_PREFIXES = ("val/", "test/")


class ReportError(ValueError):
    """A directory that is not a run directory (no metrics log and no result)."""


@dataclass
class RunData:
    """What a run directory holds, loaded once; absent files are empty or ``None``."""

    run_dir: Path
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    utilization: dict[str, Any] | None = None
    throughput: dict[str, Any] | None = None
    batch_search: dict[str, Any] | None = None
    result: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name

    def last(self, key: str) -> float | None:
        points = self.series.get(key)
        return points[-1][1] if points else None


def read_metrics_csv(path: Path) -> dict[str, list[tuple[int, float]]]:
    """CSVLogger rows (one per step and logging call, blanks elsewhere) as series by key."""
    series: dict[str, list[tuple[int, float]]] = {}
    if not path.is_file():
        return series
    with path.open(newline="") as stream:
        for row in csv.DictReader(stream):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key in ("step", "epoch") or value in (None, ""):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number):
                    series.setdefault(key, []).append((step, number))
    return series


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_run(run_dir: Path | str) -> RunData:
    run_dir = Path(run_dir)
    metrics_csv = run_dir / "logs" / "metrics.csv"
    if not metrics_csv.is_file() and not (run_dir / "result.json").is_file():
        raise ReportError(
            f"{run_dir}: not a spellfix run directory (no logs/metrics.csv or result.json); "
            "pass the directory spellfix-train printed"
        )
    return RunData(
        run_dir=run_dir,
        series=read_metrics_csv(metrics_csv),
        utilization=_read_json(run_dir / "utilization.json"),
        throughput=_read_json(run_dir / "throughput.json"),
        batch_search=_read_json(run_dir / "batch_size_search.json"),
        result=_read_json(run_dir / "result.json"),
    )


# ---- plots ----------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    """Save through a temporary file so a reader never sees half a PNG."""
    plt = _pyplot()
    try:
        figure.tight_layout()
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png", dpi=90)
    finally:
        plt.close(figure)
    return path


def _plot_series(
    runs: Sequence[RunData], panels: Sequence[tuple[str, Sequence[str]]], path: Path
) -> Path | None:
    """One panel per (title, keys); a line per run and key; ``None`` when nothing to draw."""
    drawable = [
        (title, keys)
        for title, keys in panels
        if any(run.series.get(key) for run in runs for key in keys)
    ]
    if not drawable:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(drawable), figsize=(5.5 * len(drawable), 3.6), squeeze=False)
    for axis, (title, keys) in zip(axes[0], drawable, strict=True):
        for run in runs:
            for key in keys:
                points = run.series.get(key)
                if not points:
                    continue
                steps, values = zip(*points, strict=True)
                label = key if len(runs) == 1 else f"{run.name}: {key}"
                axis.plot(steps, values, marker="." if len(points) < 30 else None, label=label)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend(fontsize="x-small")
    return _save(figure, path)


def _plot_utilization(runs: Sequence[RunData], path: Path) -> Path | None:
    """Each run's utilization timeline (GPU SM busy %, or CPU % on the psutil fallback)."""
    timelines = [(run, (run.utilization or {}).get("timeline") or []) for run in runs]
    timelines = [(run, rows) for run, rows in timelines if rows]
    if not timelines:
        return None
    plt = _pyplot()
    figure, (busy_axis, memory_axis) = plt.subplots(1, 2, figsize=(11, 3.6))
    for run, rows in timelines:
        busy_key = "sm_util" if "sm_util" in rows[0] else "cpu_percent"
        memory_key = "mem_used_gb" if "mem_used_gb" in rows[0] else "rss_gb"
        for rank_device in sorted({(row["rank"], row["device"]) for row in rows}):
            own = [row for row in rows if (row["rank"], row["device"]) == rank_device]
            times = [row["t"] for row in own]
            suffix = f" r{rank_device[0]}d{rank_device[1]}"
            name = ("" if len(runs) == 1 else f"{run.name} ") + suffix.strip()
            busy_axis.plot(times, [row.get(busy_key, 0.0) for row in own], label=name)
            memory_axis.plot(times, [row.get(memory_key, 0.0) for row in own], label=name)
        busy_axis.set_ylabel(busy_key)
        memory_axis.set_ylabel(memory_key)
    for axis, title in ((busy_axis, "busy"), (memory_axis, "memory")):
        axis.set_title(f"utilization: {title}")
        axis.set_xlabel("seconds since training start")
        axis.legend(fontsize="x-small")
    return _save(figure, path)


def _plot_batch_search(run: RunData, path: Path) -> Path | None:
    """The tuner's curve: candidate size -> real tokens/s, the chosen value marked."""
    search = run.batch_search
    probes = [probe for probe in (search or {}).get("probes", []) if probe.get("fits")]
    if not probes:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.6))
    sizes = [probe["size"] for probe in probes]
    axis.plot(sizes, [probe["real_tokens_per_s"] for probe in probes], marker="o")
    if search.get("chosen") is not None:
        axis.axvline(search["chosen"], color="green", linestyle="--", label="chosen")
        axis.legend()
    axis.set_xscale("log", base=2)
    axis.set_xlabel(search.get("key", "size"))
    axis.set_ylabel("real tokens/s")
    axis.set_title("batch-size search")
    return _save(figure, path)


LOSS_PANELS = [("loss", ["train/loss", "val/loss"])]
VALIDATION_PANELS = [
    ("validation accuracy", ["val/exact_match", "val/exact_match_cased"]),
    ("validation CER", ["val/cer"]),
]
THROUGHPUT_PANELS = [
    ("tokens/s", ["perf/real_tokens_per_s", "perf/padded_tokens_per_s"]),
    ("padding fraction", ["perf/padding_fraction"]),
]


# ---- markdown -------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _final_metrics(run: RunData) -> dict[str, float]:
    metrics = dict((run.result or {}).get("metrics", {}))
    for key in run.series:
        if key.startswith(METRIC_PREFIXES) and key not in metrics:
            metrics[key] = run.last(key)
    return {key: metrics[key] for key in sorted(metrics) if key.startswith(METRIC_PREFIXES)}


def _image(title: str, path: Path | None, relative_to: Path) -> list[str]:
    if path is None:
        return []
    return [f"## {title}", "", f"![{title}]({path.relative_to(relative_to).as_posix()})", ""]


def write_report(run_dir: Path | str) -> Path:
    """Write ``<run_dir>/report.md`` and its plots under ``<run_dir>/plots``; return the path."""
    run = load_run(run_dir)
    root = run.run_dir
    plots = root / PLOTS_DIR
    lines = [f"# spellfix run `{run.name}`", ""]
    metrics = _final_metrics(run)
    if metrics:
        lines += ["| metric | value |", "|---|---:|"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in metrics.items()]
        lines.append("")
    samples = (run.result or {}).get("samples") or []
    if samples:
        lines += [
            "## Sample corrections",
            "",
            "| query | corrected | confidence |",
            "|---|---|---:|",
        ]
        # Runs from before confidences were recorded hold (query, corrected) pairs.
        lines += [
            f"| {row[0]} | {row[1]} | {_fmt(row[2]) if len(row) > 2 else '-'} |" for row in samples
        ]
        lines.append("")
    lines += _image("Loss", _plot_series([run], LOSS_PANELS, plots / "loss.png"), root)
    lines += _image(
        "Validation", _plot_series([run], VALIDATION_PANELS, plots / "validation.png"), root
    )
    lines += _image("Utilization", _plot_utilization([run], plots / "utilization.png"), root)
    if run.utilization:
        advice = run.utilization.get("diagnosis") or []
        lines += [f"- {line}" for line in advice] + ([""] if advice else [])
    lines += _image(
        "Throughput", _plot_series([run], THROUGHPUT_PANELS, plots / "throughput.png"), root
    )
    if run.throughput:
        job = run.throughput.get("job", {})
        lines += ["| throughput (whole run) | value |", "|---|---:|"]
        for key in ("real_tokens_per_s", "padded_tokens_per_s", "padding_fraction", "mfu"):
            if key in job:
                lines.append(f"| {key} | {_fmt(job[key])} |")
        lines.append("")
    lines += _image("Batch-size search", _plot_batch_search(run, plots / "batch_size.png"), root)
    return _write_text(root / "report.md", "\n".join(lines))


def _write_text(path: Path, text: str) -> Path:
    return write_text_atomic(path, text.rstrip() + "\n")


def run_headline(run: RunData) -> dict[str, Any]:
    """One row of the comparison table: quality, speed and how busy the device was."""
    row: dict[str, Any] = {"run": run.name}
    metrics = _final_metrics(run)
    for key in ("val/loss", "val/exact_match", "val/cer", "test/exact_match", "test/cer"):
        row[key] = metrics.get(key)
    job = (run.throughput or {}).get("job", {})
    row["real tokens/s"] = job.get("real_tokens_per_s")
    row["padding"] = job.get("padding_fraction")
    row["MFU"] = job.get("mfu")
    readings = (run.utilization or {}).get("metrics", {})
    for name in UTILIZATION_HEADLINES:
        if name in readings:
            row[f"{name} mean"] = readings[name].get("mean")
    return row


def compare_runs(run_dirs: Sequence[Path | str], output_dir: Path | str) -> Path:
    """Rebuild each run's report and write ``<output_dir>/comparison.md`` side by side."""
    runs = [load_run(path) for path in run_dirs]
    for run in runs:
        write_report(run.run_dir)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rows = [run_headline(run) for run in runs]
    columns = [
        c
        for c in dict.fromkeys(k for row in rows for k in row)
        if c == "run" or any(row.get(c) is not None for row in rows)
    ]
    lines = [f"# spellfix: {len(runs)} runs compared", ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    lines.append("")
    lines += [f"- `{run.name}`: [{run.run_dir}/report.md]({run.run_dir}/report.md)" for run in runs]
    lines.append("")
    plots = output / PLOTS_DIR
    lines += _image("Loss", _plot_series(runs, LOSS_PANELS, plots / "loss.png"), output)
    lines += _image(
        "Validation", _plot_series(runs, VALIDATION_PANELS, plots / "validation.png"), output
    )
    lines += _image("Utilization", _plot_utilization(runs, plots / "utilization.png"), output)
    lines += _image(
        "Throughput", _plot_series(runs, THROUGHPUT_PANELS, plots / "throughput.png"), output
    )
    return _write_text(output / "comparison.md", "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> None:
    """``spellfix-report RUN_DIR [RUN_DIR ...] [--output DIR]``."""
    parser = argparse.ArgumentParser(prog="spellfix-report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories to report on")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("spellfix-comparison"),
        help="where the comparison of several runs goes (default: ./spellfix-comparison)",
    )
    args = parser.parse_args(argv)
    try:
        if len(args.run_dirs) == 1:
            print(write_report(args.run_dirs[0]))
        else:
            print(compare_runs(args.run_dirs, args.output))
    except (ReportError, json.JSONDecodeError) as error:
        print(f"spellfix-report: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
