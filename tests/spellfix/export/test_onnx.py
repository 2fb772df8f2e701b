"""ONNX export: the graphs reproduce PyTorch, and a broken export never lands on disk."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_synth.paths import CONF_DIR
from spellfix.export.cli import ExportConfigError, export, load_validation_queries
from spellfix.export.ort_runner import OrtSeq2Seq
from spellfix.generation import torch_generate
from spellfix.loading import load_seq2seq

pytestmark = pytest.mark.slow


def compose_export(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("export", overrides=list(overrides))


def test_tiny_export_passes_validation_and_manifest_describes_it(onnx_export_dir: Path):
    manifest = json.loads((onnx_export_dir / "manifest.json").read_text())
    validation = manifest["validation"]
    assert validation["tolerance"] == 1e-4
    assert set(validation["max_abs_diff"]) == {
        "encoder_hidden_states",
        "logits",
        "present",
        "logits_with_past",
    }
    assert all(diff <= 1e-4 for diff in validation["max_abs_diff"].values())
    assert validation["greedy"]["queries"] >= 200
    assert validation["greedy"]["identical"] == validation["greedy"]["queries"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((onnx_export_dir / name).read_bytes()).hexdigest() == digest
    decoder_inputs = {i["name"]: i for i in manifest["graphs"]["decoder"]["inputs"]}
    # Dynamic batch and cache length, not sizes frozen from the tracing example.
    assert all(isinstance(d, str) for d in decoder_inputs["past.0.key"]["shape"][:3:2])
    for graph in ("encoder.onnx", "decoder.onnx"):
        model = onnx.load(str(onnx_export_dir / graph))
        assert model.opset_import[0].version >= 17
        ops = {node.op_type for node in model.graph.node}
        assert "If" not in ops and "Loop" not in ops  # TensorRT-friendly control flow
        assert "LayerNormalization" in ops


def test_ort_greedy_equals_torch_greedy_on_a_padded_batch(
    tiny_model_dir, onnx_export_dir, sample_queries
):
    loaded = load_seq2seq(tiny_model_dir)
    runner = OrtSeq2Seq(onnx_export_dir, intra_op_threads=1)
    queries = ["coldplay yellow", *sample_queries, "x", "beyoncé"]
    batch = loaded.tokenizer(queries, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()  # rows of different lengths: real padding
    expected = torch_generate(
        loaded.model, batch["input_ids"], batch["attention_mask"], runner.generation
    )
    actual = runner.generate(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    np.testing.assert_array_equal(actual, expected.numpy())
    # The copy-trained model emits whole queries, so the comparison covers many steps.
    assert (actual != runner.generation["pad_token_id"]).sum(axis=1).min() > 3


def test_beam_search_matches_transformers(tiny_model_dir, onnx_export_dir, sample_queries):
    loaded = load_seq2seq(tiny_model_dir)
    runner = OrtSeq2Seq(onnx_export_dir, intra_op_threads=1, num_beams=3)
    batch = loaded.tokenizer(sample_queries[:6], return_tensors="pt", padding=True)
    expected = torch_generate(
        loaded.model, batch["input_ids"], batch["attention_mask"], runner.generation, num_beams=3
    )
    actual = runner.generate(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    pad = runner.generation["pad_token_id"]
    for want, got in zip(expected.tolist(), actual.tolist(), strict=True):
        assert [t for t in got if t != pad] == [t for t in want if t != pad]


def test_cli_with_zero_tolerance_exits_nonzero_and_writes_nothing(tiny_model_dir, tmp_path):
    output = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "spellfix.export.cli",
            f"model={tiny_model_dir}",
            f"output_dir={output}",
            "validation.tolerance=0",
            "validation.num_queries=8",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 1
    assert "validation failed" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "outputs"]  # Hydra's log dir only


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["model=/nonexistent"], "spellfix-export: error: model=/nonexistent does not exist"),
        # Checked before the model is read: export fails fast, whatever else is wrong.
        (["model=/nonexistent", "onnx.opset=abc"], "onnx.opset='abc': expected int like"),
        # 0 used to fall back to the 200 built-in queries: a skipped check it did not skip.
        (
            [f"model={Path(__file__).parent}", "validation.num_queries=0"],
            "validation.num_queries=0: validation is always on; give at least 1 query",
        ),
    ],
)
def test_cli_rejects_bad_arguments_in_one_line(tmp_path, arguments, message):
    result = subprocess.run(
        [sys.executable, "-m", "spellfix.export.cli", *arguments, "output_dir=x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "x").exists()


def test_existing_output_dir_is_refused_without_overwrite(tiny_model_dir, tmp_path):
    cfg = compose_export(f"model_path={tiny_model_dir}", f"output_dir={tmp_path}")
    with pytest.raises(ExportConfigError, match="overwrite=true"):
        export(cfg)


def test_overwrite_only_replaces_an_earlier_export(tiny_model_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    cfg = compose_export(f"model_path={tiny_model_dir}", f"output_dir={tmp_path}", "overwrite=true")
    with pytest.raises(ExportConfigError, match="not a spellfix export"):
        export(cfg)
    assert notes.read_text() == "mine"


def test_validation_queries_from_a_dataset_dir_and_a_text_file(tmp_path):
    import datasets

    split = datasets.Dataset.from_dict(
        {"noisy": ["quen", "quen", "", "beatels"], "clean": ["a"] * 4}
    )
    datasets.DatasetDict({"test": split}).save_to_disk(str(tmp_path / "ds"))
    cfg = compose_export(f"validation.queries={tmp_path / 'ds'}", "validation.num_queries=5")
    queries, source = load_validation_queries(cfg.validation)
    # Duplicates and blanks dropped, then topped up from the built-in list.
    assert queries[:2] == ["quen", "beatels"] and len(queries) == 5
    assert "built-in (3)" in source

    text = tmp_path / "queries.txt"
    text.write_text("one\ntwo\n\nthree\n", encoding="utf-8")
    cfg = compose_export(f"validation.queries={text}", "validation.num_queries=2")
    assert load_validation_queries(cfg.validation) == (["one", "two"], str(text))

    cfg = compose_export(f"validation.queries={tmp_path / 'ds'}", "validation.column=typo")
    with pytest.raises(ExportConfigError, match=r"validation\.column='typo'"):
        load_validation_queries(cfg.validation)


def test_int8_cannot_feed_tensorrt(tiny_model_dir, tmp_path):
    cfg = compose_export(
        f"model_path={tiny_model_dir}",
        f"output_dir={tmp_path / 'out'}",
        "formats=[onnx,tensorrt]",
        "onnx.precision=int8",
    )
    with pytest.raises(ExportConfigError, match="int8"):
        export(cfg)
    assert not (tmp_path / "out").exists()
