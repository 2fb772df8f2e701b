"""ONNX export: the graphs reproduce PyTorch, and a broken export never lands on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_synth.paths import CONF_DIR
from spellfix.export.cli import ExportConfigError, export, load_validation_queries
from spellfix.export.onnx import (
    ExportValidationError,
    generation_settings,
    load_seq2seq,
    torch_generate,
    validate_export,
)
from spellfix.export.ort_runner import OrtSeq2Seq

PROJECT_ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow
# Queries the shared tiny model was taught to copy (tests/conftest.py), so greedy output
# runs for many steps instead of stopping at once.
SAMPLE_QUERIES = [
    "queen bohemian rhapsody",
    "the beatles let it be",
    "news podcasts",
    "beyoncé halo",
    "daft punk get lucky",
    "coldplay yellow",
    "michael jackson thriller",
]


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


def test_ort_greedy_equals_torch_greedy_on_a_padded_batch(tiny_model_dir, onnx_export_dir):
    loaded = load_seq2seq(tiny_model_dir)
    runner = OrtSeq2Seq(onnx_export_dir, intra_op_threads=1)
    queries = ["coldplay yellow", *SAMPLE_QUERIES, "x", "beyoncé"]
    batch = loaded.tokenizer(queries, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()  # rows of different lengths: real padding
    expected = torch_generate(
        loaded.model, batch["input_ids"], batch["attention_mask"], runner.generation
    )
    actual = runner.generate(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    np.testing.assert_array_equal(actual, expected.numpy())
    # The copy-trained model emits whole queries, so the comparison covers many steps.
    assert (actual != runner.generation["pad_token_id"]).sum(axis=1).min() > 3


def test_beam_search_matches_transformers(tiny_model_dir, onnx_export_dir):
    loaded = load_seq2seq(tiny_model_dir)
    runner = OrtSeq2Seq(onnx_export_dir, intra_op_threads=1, num_beams=3)
    batch = loaded.tokenizer(SAMPLE_QUERIES[:6], return_tensors="pt", padding=True)
    expected = torch_generate(
        loaded.model, batch["input_ids"], batch["attention_mask"], runner.generation, num_beams=3
    )
    actual = runner.generate(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    pad = runner.generation["pad_token_id"]
    for want, got in zip(expected.tolist(), actual.tolist(), strict=True):
        assert [t for t in got if t != pad] == [t for t in want if t != pad]


def test_corrupted_graph_fails_validation(tiny_model_dir, onnx_export_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(onnx_export_dir, broken)
    _perturb_largest_weight(broken / "decoder.onnx")
    with pytest.raises(ExportValidationError, match="differs from PyTorch"):
        validate_export(
            broken, load_seq2seq(tiny_model_dir), tolerance=1e-4, queries=SAMPLE_QUERIES
        )


def test_export_that_fails_validation_leaves_no_output_dir(tiny_model_dir, tmp_path, monkeypatch):
    import spellfix.export.onnx as onnx_export

    original = onnx_export._export_decoder

    def export_then_corrupt(model, path, *args):
        original(model, path, *args)
        _perturb_largest_weight(path)

    monkeypatch.setattr(onnx_export, "_export_decoder", export_then_corrupt)
    output = tmp_path / "exports" / "tiny"
    cfg = compose_export(f"model_path={tiny_model_dir}", f"output_dir={output}")
    with pytest.raises(ExportValidationError):
        export(cfg)
    assert list((tmp_path / "exports").iterdir()) == []  # neither output nor staging dir


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


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json"])
def test_a_model_directory_missing_a_file_is_named(tiny_model_dir, tmp_path, missing):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_seq2seq(copy)


def test_a_model_that_is_not_bart_is_named(tiny_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(ValueError, match="a t5 model; spellfix runs BART models"):
        load_seq2seq(copy)


def test_lightning_checkpoint_loads_to_the_same_model(tiny_model_dir, tmp_path):
    loaded = load_seq2seq(tiny_model_dir)
    checkpoint = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in loaded.model.state_dict().items()},
            "hyper_parameters": {
                "model_config": loaded.model.config.to_dict(),
                "tokenizer_dir": str(tiny_model_dir),
            },
        },
        checkpoint,
    )
    from_checkpoint = load_seq2seq(checkpoint)
    assert from_checkpoint.source_kind == "lightning_ckpt"
    settings = generation_settings(loaded.model, 1.5, 8)
    batch = loaded.tokenizer(SAMPLE_QUERIES, return_tensors="pt", padding=True)
    args = (batch["input_ids"], batch["attention_mask"], settings)
    assert torch.equal(
        torch_generate(from_checkpoint.model, *args), torch_generate(loaded.model, *args)
    )


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


def _perturb_largest_weight(path: Path) -> None:
    """Simulate a broken exporter: scale the biggest weight matrix of a graph by 1.5."""
    model = onnx.load(str(path))
    largest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(largest) * 1.5
    largest.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), largest.name))
    onnx.save(model, str(path))


def test_fp16_export_keeps_layernorm_and_softmax_in_fp32(tiny_model_dir, tmp_path):
    from spellfix.export.onnx import export_onnx

    manifest = export_onnx(
        tiny_model_dir, tmp_path / "fp16", precision="fp16", validation_queries=SAMPLE_QUERIES
    )
    assert manifest["precision"] == "fp16"
    assert all(d <= 5e-2 for d in manifest["validation"]["max_abs_diff"].values())
    model = onnx.load(str(tmp_path / "fp16" / "decoder.onnx"))
    producers = {out: node for node in model.graph.node for out in node.output}
    sensitive = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert sensitive
    for node in sensitive:
        cast = producers[node.input[0]]
        assert cast.op_type == "Cast"
        assert onnx.helper.get_attribute_value(cast.attribute[0]) == onnx.TensorProto.FLOAT
    past = next(i for i in model.graph.input if i.name == "past.0.key")
    assert past.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16  # cache halves in size


def test_int8_export_quantizes_every_weight_matmul_and_still_agrees(
    tiny_model_dir, onnx_export_dir, tmp_path
):
    from spellfix.export.onnx import export_onnx

    manifest = export_onnx(
        tiny_model_dir, tmp_path / "int8", precision="int8", validation_queries=SAMPLE_QUERIES
    )
    assert manifest["precision"] == "int8"
    greedy = manifest["validation"]["greedy"]
    assert greedy["identical"] / greedy["queries"] >= 0.95
    vocab = load_seq2seq(tiny_model_dir).model.config.vocab_size
    decoder = onnx.load(str(tmp_path / "int8" / "decoder.onnx"))
    weights = {tensor.name for tensor in decoder.graph.initializer}
    float_matmuls = [
        n for n in decoder.graph.node if n.op_type == "MatMul" and n.input[1] in weights
    ]
    assert float_matmuls == []
    quantized = [n for n in decoder.graph.node if n.op_type == "MatMulNBits"]
    widths = {
        onnx.helper.get_attribute_value(a) for n in quantized for a in n.attribute if a.name == "N"
    }
    assert vocab in widths  # the output projection over the vocabulary is int8 too
    fp32 = OrtSeq2Seq(onnx_export_dir, intra_op_threads=1).correct(SAMPLE_QUERIES)
    int8 = OrtSeq2Seq(tmp_path / "int8", intra_op_threads=1).correct(SAMPLE_QUERIES)
    assert sum(a == b for a, b in zip(fp32, int8, strict=True)) >= len(SAMPLE_QUERIES) - 1


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
