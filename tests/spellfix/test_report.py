"""Run reports from real tiny runs: every plot a non-empty image, comparisons side by side."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from matplotlib import image

from data_synth.paths import CONF_DIR
from spellfix.report import compare_runs, read_metrics_csv, write_report
from spellfix.train import train

FAST = ["experiment=smoke"]  # a run takes seconds (conf/experiment/smoke.yaml)


def _train(output_dir: Path, name: str, *overrides: str) -> Path:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *FAST,
                f"paths.output_dir={output_dir}",
                f"paths.run_name={name}",
                *overrides,
            ],
        )
    return Path(train(cfg)["run_dir"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A plain run and one whose batch size the tuner searched (the before/after pair)."""
    output = tmp_path_factory.mktemp("runs")
    return {
        "baseline": _train(output, "baseline"),
        "tuned": _train(
            output,
            "tuned",
            "tuner.batch_size=auto",
            "tuner.max_size=2048",
            "tuner.steps_per_probe=1",
            "tuner.patience=1",
        ),
    }


def assert_is_a_drawn_png(path: Path) -> None:
    pixels = image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100, path
    assert float(np.std(pixels)) > 0.01, f"{path} is blank"


def referenced_images(markdown: Path) -> list[Path]:
    return [markdown.parent / p for p in re.findall(r"\]\(([^)]+\.png)\)", markdown.read_text())]


@pytest.mark.slow
def test_report_draws_every_plot_a_run_has_evidence_for(runs: dict[str, Path]) -> None:
    report = write_report(runs["tuned"])
    text = report.read_text()
    for section in ("## Loss", "## Validation", "## Utilization", "## Throughput"):
        assert section in text
    assert "## Batch-size search" in text, "the tuned run has a tuner curve"
    images = referenced_images(report)
    assert len(images) == 5
    for path in images:
        assert_is_a_drawn_png(path)
    result = json.loads((runs["tuned"] / "result.json").read_text())
    assert f"| {result['samples'][0][0]} |" in text, "sample corrections are in the report"
    assert "## Batch-size search" not in write_report(runs["baseline"]).read_text()


@pytest.mark.slow
def test_cli_compares_runs_side_by_side(runs: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "comparison"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spellfix.report",
            *map(str, runs.values()),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    comparison = output / "comparison.md"
    text = comparison.read_text()
    for name, run_dir in runs.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
        tokens_per_s = json.loads((run_dir / "throughput.json").read_text())["job"]
        assert f"{tokens_per_s['real_tokens_per_s']:,.0f}" in row
        assert (run_dir / "report.md").is_file(), "each run's own report is rebuilt too"
    for path in referenced_images(comparison):
        assert_is_a_drawn_png(path)
    assert compare_runs(list(runs.values()), output) == comparison


def test_cli_names_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "spellfix.report", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"spellfix-report: error: {tmp_path}: not a spellfix run")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "report.md").exists()


def test_metrics_csv_rows_become_series_per_key(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/loss\n0,1,2.5,\n0,3,2.0,\n0,3,,2.25\n0,5,nan,\n")
    assert read_metrics_csv(path) == {
        "train/loss": [(1, 2.5), (3, 2.0)],
        "val/loss": [(3, 2.25)],
    }
