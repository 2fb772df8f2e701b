"""The SageMaker entrypoint in a simulated ``/opt/ml``, and the launcher's job definition.

Jobs run as real subprocesses (``python -m spellfix.sagemaker``) with the environment a
SageMaker container sets, the root moved to ``tmp_path`` by ``SPELLFIX_SM_ROOT``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoModelForSeq2SeqLM

from spellfix.sagemaker import (
    SageMakerJobError,
    TrainingJob,
    hydra_value,
    job_overrides,
    parse_command_line,
)

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "experiments" / "sagemaker" / "launch.py"


def _load_launch():
    """experiments/ is not an installed package; load the launcher from its file."""
    spec = importlib.util.spec_from_file_location("sagemaker_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


launch = _load_launch()
FAST = ["experiment=smoke"]  # a run takes seconds (conf/experiment/smoke.yaml)
WORDS = [
    "love",
    "night",
    "dance",
    "heart",
    "baby",
    "girl",
    "rain",
    "fire",
    "queen",
    "river",
    "blue",
    "summer",
    "dream",
    "light",
    "home",
    "road",
    "star",
    "song",
    "ocean",
    "king",
]


def make_job_root(root: Path, hyperparameters: dict[str, Any]) -> Path:
    """A SageMaker layout: a CSV corpus in the train channel, hyperparameters JSON-encoded
    value by value as the SageMaker SDK writes them."""
    channel = root / "input" / "data" / "train"
    channel.mkdir(parents=True)
    with (channel / "songs.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["title", "artist"])
        for i in range(300):
            title = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7))
            writer.writerow([f"{title} {i}", WORDS[i % len(WORDS)]])
    config = root / "input" / "config"
    config.mkdir(parents=True)
    encoded = {key: json.dumps(value) for key, value in hyperparameters.items()}
    (config / "hyperparameters.json").write_text(json.dumps(encoded))
    return root


def job_env(root: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SM_")}
    for key in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    return {**env, "SPELLFIX_SM_ROOT": str(root), "OMP_NUM_THREADS": "1", **extra}


def run_entrypoint(env: dict[str, str], *argv: str, timeout: int = 600):
    return subprocess.run(
        [sys.executable, "-m", "spellfix.sagemaker", *argv],
        env=env,
        cwd=env["SPELLFIX_SM_ROOT"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ---- translation of the environment (fast) -------------------------------------------


def test_hyperparameters_in_both_forms_become_hydra_overrides(tmp_path: Path) -> None:
    root = make_job_root(tmp_path, {"data.corpus.columns": ["title"], "model": "bart_small"})
    job = TrainingJob.from_environment(job_env(root), root)
    overrides = job_overrides(
        job, ["--trainer.max_steps", "7", "--seed=3", "trainer.precision=bf16-mixed"]
    )
    assert "data.corpus.columns=[title]" in overrides  # JSON-encoded list, decoded
    assert "model=bart_small" in overrides
    assert "trainer.max_steps=7" in overrides
    assert "seed=3" in overrides
    assert "trainer.precision=bf16-mixed" in overrides
    assert f"data.corpus.path={root / 'input/data/train/songs.csv'}" in overrides
    assert f"paths.checkpoint_dir={root / 'checkpoints'}" in overrides
    assert not any(item.startswith("ckpt_path=") for item in overrides), "nothing to resume yet"


def test_sm_hps_wins_over_the_file_and_a_user_value_over_a_derived_one(tmp_path: Path) -> None:
    root = make_job_root(tmp_path, {"seed": 1})
    env = job_env(root, SM_HPS=json.dumps({"seed": 5, "trainer.devices": 2, "run_test": False}))
    overrides = job_overrides(TrainingJob.from_environment(env, root))
    assert "seed=5" in overrides
    assert "run_test=false" in overrides
    assert "trainer.devices=2" in overrides and "trainer.devices=1" not in overrides


def test_hosts_and_gpus_map_to_nodes_devices_and_ddp(tmp_path: Path) -> None:
    env = job_env(
        tmp_path, SM_HOSTS='["algo-1","algo-2","algo-3"]', SM_CURRENT_HOST="algo-3", SM_NUM_GPUS="8"
    )
    job = TrainingJob.from_environment(env, tmp_path)
    overrides = job_overrides(job)
    assert job.node_rank == 2
    for expected in ("trainer=gpu", "trainer.devices=8", "trainer.num_nodes=3"):
        assert expected in overrides
    assert "trainer.strategy=ddp" in overrides


def test_a_dataset_channel_is_used_as_the_dataset_dir(tmp_path: Path) -> None:
    channel = tmp_path / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "manifest.json").write_text("{}")
    overrides = job_overrides(TrainingJob.from_environment(job_env(tmp_path), tmp_path))
    assert f"data.dataset_dir={channel}" in overrides


def test_an_ambiguous_train_channel_is_refused_by_name(tmp_path: Path) -> None:
    channel = tmp_path / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "a.csv").write_text("title\nx\n")
    (channel / "b.csv").write_text("title\ny\n")
    with pytest.raises(SageMakerJobError, match=r"a\.csv, b\.csv.*data\.corpus\.path"):
        job_overrides(TrainingJob.from_environment(job_env(tmp_path), tmp_path))


def test_command_line_forms() -> None:
    parsed = parse_command_line(["--a", "1", "--b=[1, 2]", "c.d=x", "--e", "-0.5"])
    assert {key: hydra_value(value) for key, value in parsed.items()} == {
        "a": "1",
        "b": "[1,2]",
        "c.d": "x",
        "e": "-0.5",
    }
    with pytest.raises(SageMakerJobError, match="--lonely"):
        parse_command_line(["--lonely"])


@pytest.mark.parametrize(
    ("argv", "named"),
    [(["trainer.no_such_key=1"], "no_such_key"), (["--data.max_tokens", "lots"], "max_tokens")],
)
def test_a_bad_hyperparameter_writes_the_failure_file_and_exits_nonzero(
    tmp_path: Path, argv: list[str], named: str
) -> None:
    root = make_job_root(tmp_path, {})
    done = run_entrypoint(job_env(root), *argv, timeout=180)
    assert done.returncode != 0
    reason = (root / "output" / "failure").read_text()
    assert named in reason
    assert len(reason.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert not (root / "model").exists() or not any((root / "model").iterdir())


# ---- the launcher ---------------------------------------------------------------------


def test_launch_dry_run_prints_a_job_naming_the_entrypoint() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [
            sys.executable,
            str(LAUNCH),
            "--dry-run",
            "--instance-count",
            "2",
            "--train",
            "s3://bucket/songs/",
            "--checkpoints",
            "s3://bucket/ckpt/",
            "--",
            "model=bart_base",
            "data.max_tokens=16384",
        ],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    estimator = job["estimator"]
    entry = Path(estimator["source_dir"]) / estimator["entry_point"]
    assert entry.is_file() and "spellfix.sagemaker" in entry.read_text()
    assert all(Path(path).is_dir() for path in estimator["dependencies"])
    assert estimator["instance_count"] == 2
    assert estimator["distribution"] == {"torch_distributed": {"enabled": True}}
    assert estimator["checkpoint_s3_uri"] == "s3://bucket/ckpt/"
    assert estimator["hyperparameters"] == {"model": "bart_base", "data.max_tokens": "16384"}
    assert job["fit"]["inputs"] == {"train": "s3://bucket/songs/"}


# ---- real jobs (slow) -----------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_job_leaves_model_report_and_checkpoints_where_sagemaker_expects(
    tmp_path: Path,
) -> None:
    root = make_job_root(tmp_path, {"data.corpus.columns": ["title"], "trainer.max_steps": 12})
    done = run_entrypoint(
        job_env(root), *FAST, "--trainer.val_check_interval", "6", "--export", "onnx"
    )
    assert done.returncode == 0, done.stderr[-3000:]

    model = AutoModelForSeq2SeqLM.from_pretrained(root / "model")
    assert model.config.d_model == 32
    assert (root / "model" / "export" / "encoder.onnx").is_file(), "export=onnx lands beside it"
    output = root / "output" / "data"
    report = (output / "report.md").read_text()
    for plot in re.findall(r"\]\((plots/[^)]+\.png)\)", report):
        assert (output / plot).stat().st_size > 1000, plot
    assert (output / "logs" / "metrics.csv").is_file()
    assert (output / "utilization.json").is_file()
    config = OmegaConf.load(output / "config.yaml")
    assert config.data.corpus.path == str(root / "input" / "data" / "train" / "songs.csv")
    assert list(config.data.corpus.columns) == ["title"]
    assert config.trainer.val_check_interval == 6
    assert _global_step(root / "checkpoints" / "last.ckpt") == 12
    assert not (root / "output" / "failure").exists()

    # What the estimator's metric_definitions match is what the job printed.
    lines = done.stdout.splitlines()
    for definition in launch.metric_definitions():
        if definition["Name"].startswith(("train", "validation", "throughput:real")) or (
            definition["Name"] == "utilization:cpu_percent"
        ):
            assert any(re.search(definition["Regex"], line) for line in lines), definition


@pytest.mark.slow
def test_a_killed_job_started_again_resumes_from_the_checkpoints(tmp_path: Path) -> None:
    root = make_job_root(tmp_path, {"data.corpus.columns": ["title"], "run_test": False})
    argv = [
        *FAST,
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "callbacks.checkpoint.every_n_train_steps=5",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "spellfix.sagemaker", *argv],
        env=job_env(root),
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = root / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and _global_step(last) >= 10:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended before it could be killed"
    proc.send_signal(signal.SIGKILL)  # a spot interruption gives no chance to clean up
    proc.wait()
    killed_at = _global_step(last)
    assert 10 <= killed_at < 60

    done = run_entrypoint(job_env(root), *argv)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"ckpt_path={last}" in done.stdout
    assert "Restoring states from the checkpoint" in done.stdout + done.stderr
    assert _global_step(last) == 60
    AutoModelForSeq2SeqLM.from_pretrained(root / "model")


@pytest.mark.slow
@pytest.mark.distributed
def test_two_simulated_hosts_form_one_ddp_group(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    hyperparameters = {"data.corpus.columns": ["title"], "trainer.max_steps": 8}
    hosts = ["algo-1", "algo-2"]
    processes = []
    for host in hosts:
        root = make_job_root(tmp_path / host, hyperparameters)
        env = job_env(
            root,
            SM_HOSTS=json.dumps(hosts),
            SM_CURRENT_HOST=host,
            SPELLFIX_SM_MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        command = [
            sys.executable,
            "-m",
            "spellfix.sagemaker",
            *FAST,
            "trainer.val_check_interval=4",
            "callbacks.utilization.enabled=false",
        ]
        log = (tmp_path / f"{host}.log").open("w")
        processes.append(
            subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        )
    codes = [process.wait(timeout=600) for process in processes]
    logs = {host: (tmp_path / f"{host}.log").read_text() for host in hosts}
    assert codes == [0, 0], logs["algo-1"][-2000:] + logs["algo-2"][-2000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in logs["algo-1"]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs["algo-2"]
    throughput = json.loads(
        (tmp_path / "algo-1" / "output" / "data" / "throughput.json").read_text()
    )
    assert throughput["world_size"] == 2
    AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "algo-1" / "model")
    assert not (tmp_path / "algo-2" / "model").exists(), "only the first host publishes"


def _global_step(path: Path) -> int:
    for _ in range(20):  # the file may be mid-write
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
        except (RuntimeError, EOFError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"cannot read {path}")
