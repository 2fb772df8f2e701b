"""The throughput-seeking batch-size search: bounded by memory, agreed over ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from data_synth.paths import CONF_DIR
from spellfix.callbacks.batch_size import Probe, ThroughputTuner
from spellfix.train import train

FAST = [
    "experiment=smoke",  # a run takes seconds (conf/experiment/smoke.yaml)
    "trainer.max_steps=4",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    "run_test=false",
    "tuner.batch_size=auto",
    "tuner.steps_per_probe=2",
    "callbacks.utilization.enabled=false",
]


def test_choice_is_the_fastest_size_below_the_memory_wall() -> None:
    tuner = ThroughputTuner(".", safety_margin=0.25)
    probes = [
        Probe(size=1024, fits=True, real_tokens_per_s=100.0),
        Probe(size=2048, fits=True, real_tokens_per_s=180.0),
        Probe(size=4096, fits=True, real_tokens_per_s=170.0),
        Probe(size=8192, fits=False, error="out of memory"),
    ]
    assert tuner._choose(probes) == 2048
    probes[1].real_tokens_per_s = 160.0  # now 4096 is fastest, but it touches the wall
    assert tuner._choose(probes) == 3072


def test_search_respects_the_memory_budget_and_the_chosen_worst_case_runs(tmp_path: Path) -> None:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *FAST,
                f"paths.output_dir={tmp_path}",
                "paths.run_name=tuned",
                # A model big enough that activations, not the allocator, set the peak.
                "model.config.d_model=128",
                "model.config.encoder_ffn_dim=512",
                "model.config.decoder_ffn_dim=512",
                "tuner.memory_budget_gb=0.08",
                "tuner.patience=20",
            ],
        )
    result = train(cfg)
    run_dir = Path(result["run_dir"])
    search = json.loads((run_dir / "batch_size_search.json").read_text())
    probes = search["probes"]
    fitting = [p for p in probes if p["fits"]]
    assert fitting, search
    assert not probes[-1]["fits"] and "budget" in probes[-1]["error"], (
        "an 80 MB budget must stop the search before the whole training set fits in one batch"
    )
    assert search["chosen"] <= max(p["size"] for p in fitting)
    assert (run_dir / "batch_size_search.png").stat().st_size > 1000
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.data.max_tokens == search["chosen"] and saved.tuner.batch_size is None

    # The worst-case batch at the chosen budget runs: the longest rows, as many as fit.
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from spellfix.data import PairCollator, padded_length

    model = AutoModelForSeq2SeqLM.from_pretrained(run_dir / "model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    longest = [0] + [5] * 62 + [2]
    rows = search["chosen"] // (2 * padded_length(len(longest), 1))
    batch = PairCollator(tokenizer.pad_token_id, 1)(
        [{"input_ids": longest, "labels": longest, "noisy": "", "clean": ""}] * rows
    )
    loss = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
    ).loss
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_ranks_agree_on_one_value(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spellfix.train",
            *FAST,
            f"paths.output_dir={tmp_path}",
            "paths.run_name=ddp",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "tuner.patience=1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    search = json.loads((tmp_path / "runs" / "ddp" / "batch_size_search.json").read_text())
    assert len(search["per_rank_choice"]) == 2
    assert search["chosen"] == min(search["per_rank_choice"])
    saved = OmegaConf.load(tmp_path / "runs" / "ddp" / "config.yaml")
    assert saved.data.max_tokens == search["chosen"]


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_tuner_on_cuda_measures_device_memory_and_trains_mixed_precision(
    tmp_path: Path, precision: str
) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *FAST,
                "trainer=gpu",
                f"trainer.precision={precision}",
                f"paths.output_dir={tmp_path}",
                "paths.run_name=cuda",
                "tuner.max_size=65536",
            ],
        )
    result = train(cfg)
    search = json.loads((Path(result["run_dir"]) / "batch_size_search.json").read_text())
    fitting = [p for p in search["probes"] if p["fits"]]
    assert fitting and all(p["peak_memory_bytes"] > 0 for p in fitting)
    assert search["chosen"] <= max(p["size"] for p in fitting)
    throughput = json.loads((Path(result["run_dir"]) / "throughput.json").read_text())
    assert throughput["precision"] == {"bf16-mixed": "bf16", "16-mixed": "fp16"}[precision]
