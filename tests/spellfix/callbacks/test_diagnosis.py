"""diagnose: each rule fires on the summary that shows its symptom, and names the fix."""

from __future__ import annotations

from typing import Any

from spellfix.callbacks.diagnosis import diagnose


def gpu_metrics(sm_mean: float, sm_p10: float, used_gb: float) -> dict[str, Any]:
    """The readings diagnose looks at, on an 80 GB GPU."""
    return {
        "sm_util": {"mean": sm_mean, "p10": sm_p10},
        "mem_used_gb": {"max": used_gb},
        "mem_total_gb": {"max": 80.0},
    }


def gpu_summary(**overrides: Any) -> dict[str, Any]:
    """A synthetic NVML summary of a healthy run; each test changes what it is about."""
    summary: dict[str, Any] = {
        "backend": "nvml",
        "sampler_error": None,
        "metrics": gpu_metrics(sm_mean=93.0, sm_p10=85.0, used_gb=60.0),
        "time": {"data_wait_fraction": 0.02, "compute_fraction": 0.95, "validation_fraction": 0.03},
        "batch": {"max_padded_tokens": 2048},
        "precision": "bf16-mixed",
        "bf16_supported": True,
        "num_workers": 4,
        "cpu_count": 8,
        "devices_per_node": 1,
    }
    summary.update(overrides)
    return summary


def test_diagnose_finds_nothing_to_fix_in_a_busy_run() -> None:
    assert diagnose(gpu_summary()) == ["no bottleneck found: SMs busy 93% (p10 85%)"]


def test_diagnose_reports_an_input_bound_run_and_the_worker_count_to_use() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.4, "compute_fraction": 0.55, "validation_fraction": 0.05},
        metrics=gpu_metrics(sm_mean=35.0, sm_p10=0.0, used_gb=60.0),
        num_workers=0,
    )
    lines = diagnose(summary)
    assert lines == [
        "input-bound: 40% of training time is spent waiting for batches -> data.num_workers=4"
    ]  # no batch-size advice: a larger batch would only wait longer


def test_diagnose_spreads_the_cores_over_the_gpus_of_a_node() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.3, "compute_fraction": 0.7, "validation_fraction": 0.0},
        num_workers=2,
        cpu_count=64,
        devices_per_node=8,
    )
    assert "data.num_workers=4" in diagnose(summary)[0]


def test_diagnose_with_enough_workers_already_suggests_keeping_them_alive() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.3, "compute_fraction": 0.7, "validation_fraction": 0.0},
        num_workers=8,
    )
    assert "persistent workers" in diagnose(summary)[0]


def test_diagnose_names_the_reference_teams_fixes_for_a_small_fp32_batch() -> None:
    # The reference study: 35% busy, little memory used, fp32 on a bf16-capable GPU.
    summary = gpu_summary(
        metrics=gpu_metrics(sm_mean=35.0, sm_p10=12.0, used_gb=8.0),
        precision="32-true",
    )
    lines = diagnose(summary)
    assert len(lines) == 3
    # 10% of memory used: aim at 70%, so 7x the widest batch's 2048 tokens.
    assert lines[0].startswith("batch too small for the device: SMs busy 35%")
    assert "raise data.max_tokens to about 14k" in lines[0]
    assert lines[1].startswith("memory headroom: at most 8.0 of 80.0 GB used (10%)")
    assert lines[2].endswith("use trainer.precision=bf16-mixed")


def test_diagnose_caps_the_batch_growth_and_falls_back_to_a_factor_without_token_counts() -> None:
    summary = gpu_summary(
        metrics=gpu_metrics(sm_mean=20.0, sm_p10=5.0, used_gb=0.5),
        batch={"max_padded_tokens": 0},
    )
    assert "raise the batch size about 8x" in diagnose(summary)[0]


def test_diagnose_advises_fp16_on_a_gpu_without_bf16() -> None:
    summary = gpu_summary(precision="32-true", bf16_supported=False)
    assert diagnose(summary) == [
        "fp32 training (precision 32-true) on a GPU without bf16 -> use trainer.precision=16-mixed"
    ]


def test_diagnose_flags_validation_that_eats_the_run() -> None:
    summary = gpu_summary(
        time={"data_wait_fraction": 0.0, "compute_fraction": 0.6, "validation_fraction": 0.4}
    )
    assert "trainer.val_check_interval" in diagnose(summary)[0]


def test_diagnose_flags_time_lost_between_steps() -> None:
    summary = gpu_summary(
        time={
            "data_wait_fraction": 0.05,
            "compute_fraction": 0.6,
            "validation_fraction": 0.0,
            "overhead_fraction": 0.35,
        }
    )
    line = diagnose(summary)[0]
    assert line.startswith("step overhead: 35% of training time")
    assert "trainer.log_every_n_steps" in line


def test_diagnose_gives_no_gpu_advice_for_a_cpu_run() -> None:
    summary = {
        "backend": "psutil",
        "metrics": {"cpu_percent": {"mean": 95.0, "p10": 80.0}},
        "time": {"data_wait_fraction": 0.01, "compute_fraction": 0.99, "validation_fraction": 0.0},
        "precision": "32-true",
    }
    assert diagnose(summary) == ["no bottleneck found in the step-time split"]
