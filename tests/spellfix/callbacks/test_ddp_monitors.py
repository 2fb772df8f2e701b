"""Both monitors under 2-process DDP on CPU: each rank measures, rank zero gathers and writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from callback_toys import toy_batches

from spellfix.callbacks.throughput import TokenCounts, count_tokens

SCRIPT = Path(__file__).with_name("ddp_monitors.py")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_report_per_rank_and_whole_job_numbers(tmp_path: Path) -> None:
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    throughput = json.loads((tmp_path / "throughput.json").read_text())
    assert throughput["world_size"] == 2
    ranks = throughput["per_rank"]
    assert len(ranks) == 2 and all(rank["steps"] > 0 for rank in ranks)
    # The distributed sampler splits the batches between the ranks; together they saw all.
    everything = sum((count_tokens(batch) for batch in toy_batches(repeat=2)), TokenCounts())
    job = throughput["job"]
    assert job["samples"] == everything.samples == sum(rank["samples"] for rank in ranks)
    assert job["source_real"] == everything.source_real
    assert job["target_padded"] == everything.target_padded
    assert job["seconds"] == max(rank["seconds"] for rank in ranks)

    utilization = json.loads((tmp_path / "utilization.json").read_text())
    assert sorted(device["rank"] for device in utilization["devices"]) == [0, 1]
    assert {row["rank"] for row in utilization["timeline"]} == {0, 1}

    logged = set(json.loads((tmp_path / "logged_keys.json").read_text()))
    assert {"perf/job/real_tokens_per_s", "perf/job/mfu", "util/rss_gb_mean"} <= logged
