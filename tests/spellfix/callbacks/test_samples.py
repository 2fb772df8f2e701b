"""Sample tables and metric lines from real tiny runs; W&B checked in its offline run files."""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import WandbLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from data_synth.paths import CONF_DIR
from spellfix.callbacks.samples import (
    SAMPLE_COLUMNS,
    MetricLineLogger,
    format_metric_line,
    log_model_artifact,
    metric_regex,
    read_samples,
)
from spellfix.train import train

FAST = ["experiment=smoke", "run_test=false"]  # seconds (conf/experiment/smoke.yaml)


def train_with_samples(tmp_path: Path, *overrides: str) -> dict[str, Any]:
    """``train(cfg)`` with the default callbacks, the sample table among them."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[*FAST, f"paths.output_dir={tmp_path}", "paths.run_name=run", *overrides],
        )
    return train(cfg)


# ---- W&B offline run files -------------------------------------------------------------


def read_wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``.wandb`` file (LevelDB log format: 32 KiB blocks of
    chunks with a 7-byte header), which W&B writes for an offline run."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, header = 32 * 1024, 7
    position, pending, raw_records = 7, b"", []
    while position + header <= len(data):
        room = block - position % block
        if room < header:  # a block's tail too short for a header is padding
            position += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + header])
        chunk = data[position + header : position + header + length]
        position += header + length
        if kind == 1:  # a whole record
            raw_records.append(chunk)
        elif kind in (2, 3):  # first / middle piece
            pending += chunk
        elif kind == 4:  # last piece
            raw_records.append(pending + chunk)
            pending = b""
    records = []
    for raw in raw_records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


def read_finished_run(run_dir: Path, timeout_s: float = 60.0) -> tuple[Path, list[Any]]:
    """The offline run file and its records, once W&B's writer has flushed the exit record.

    ``wandb.finish`` returns before the background writer has flushed the file's tail.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
        records = read_wandb_records(run_file)
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return run_file, records
        assert time.monotonic() < deadline, f"{run_file} never got its exit record"
        time.sleep(0.5)


def history_rows(records: list[Any]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {
                    item.key or "/".join(item.nested_key): json.loads(item.value_json)
                    for item in record.history.item
                }
            )
    return rows


@pytest.mark.slow
def test_offline_wandb_run_records_metrics_and_the_sample_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = train_with_samples(tmp_path, "logger=wandb")
    wandb.finish()

    run_dir = Path(result["run_dir"])
    run_file, records = read_finished_run(run_dir)
    rows = history_rows(records)
    logged = {key for row in rows for key in row}
    for key in ("train/loss", "val/loss", "val/exact_match", "perf/real_tokens_per_s"):
        assert key in logged, key
    assert any(key.startswith("util/") for key in logged), "utilization reaches W&B"

    tables = [row for row in rows if row.get("val/samples/_type") == "table-file"]
    assert [row["trainer/global_step"] for row in tables] == [6, 12]
    table_file = run_file.parent / "files" / tables[-1]["val/samples/path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == SAMPLE_COLUMNS
    written = [row for row in read_samples(run_dir) if row["step"] == 12]
    assert table["data"] == [[row[column] for column in SAMPLE_COLUMNS] for row in written]


@pytest.mark.slow
def test_samples_reach_tensorboard_and_the_jsonl_file(tmp_path: Path) -> None:
    result = train_with_samples(tmp_path, "logger=tensorboard")
    run_dir = Path(result["run_dir"])

    samples = read_samples(run_dir)
    assert sorted({row["step"] for row in samples}) == [6, 12]
    for row in samples:
        assert set(row) == {"step", "epoch", *SAMPLE_COLUMNS}
        assert row["noisy"] and row["clean"], "pairs come from the validation split"
        assert row["correct"] == (row["prediction"].lower() == row["clean"].lower())

    (event_dir,) = {path.parent for path in (run_dir / "tensorboard").rglob("events.out.*")}
    events = EventAccumulator(str(event_dir), size_guidance={"tensors": 0}).Reload()
    texts = events.Tensors("val/samples/text_summary")
    assert [event.step for event in texts] == [6, 12]
    markdown = texts[-1].tensor_proto.string_val[0].decode()
    assert samples[-1]["noisy"] in markdown
    scalars = events.Tags()["scalars"]
    assert "train/loss" in scalars and "perf/real_tokens_per_s" in scalars


def test_model_directory_becomes_a_wandb_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "spellfix.json").write_text("{}")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="spellfix")
    log_model_artifact([logger], model_dir, name="run-model")
    wandb.finish()

    _, records = read_finished_run(tmp_path)
    artifacts = [
        record.artifact for record in records if record.WhichOneof("record_type") == "artifact"
    ]
    assert [(a.name, a.type) for a in artifacts] == [("run-model", "model")]
    assert [entry.path for entry in artifacts[0].manifest.contents] == ["spellfix.json"]


# ---- metric lines ------------------------------------------------------------------------


def test_metric_lines_are_what_the_regexes_read(capsys: pytest.CaptureFixture[str]) -> None:
    MetricLineLogger().log_metrics({"train/loss": 0.125, "perf/mfu": 3.5e-05, "epoch": 1}, step=7)
    (line,) = capsys.readouterr().out.splitlines()
    assert line == format_metric_line({"train/loss": 0.125, "perf/mfu": 3.5e-05, "epoch": 1}, 7)
    assert float(re.search(metric_regex("train/loss"), line).group(1)) == 0.125
    assert float(re.search(metric_regex("perf/mfu"), line).group(1)) == 3.5e-05
    assert re.search(metric_regex("loss"), line) is None, "names match whole keys only"
    assert re.search(metric_regex("val/loss"), line) is None
