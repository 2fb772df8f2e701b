"""The Triton repository writer: each config.pbtxt is Triton's own ModelConfig protobuf with
the configured values, and without the serve extra the error names the fix.

What the repository holds and how a server runs it is tested in tests/spellfix/serve.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from spellfix.export.triton import RepositorySettings, TritonConfigError, write_repository

pytestmark = pytest.mark.slow

SETTINGS = RepositorySettings(
    max_batch_size=32,
    max_queue_delay_microseconds=250,
    preferred_batch_size=(8, 16),
    instance_count=2,
    intra_op_threads=3,
)


def _read(path: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(encoding="utf-8"), config)
    return config


def _tensors(values) -> list[tuple[str, str, list[int]]]:
    return [(v.name, model_config_pb2.DataType.Name(v.data_type), list(v.dims)) for v in values]


def test_public_model_config_parses_into_model_config_with_the_settings(onnx_export_dir, tmp_path):
    write_repository(onnx_export_dir, tmp_path / "triton", SETTINGS)
    config = _read(tmp_path / "triton" / "spellfix" / "config.pbtxt")
    assert (config.name, config.backend, config.max_batch_size) == ("spellfix", "python", 32)
    assert _tensors(config.input) == [("TEXT", "TYPE_STRING", [1])]
    assert _tensors(config.output) == [
        ("CORRECTED", "TYPE_STRING", [1]),
        ("CONFIDENCE", "TYPE_FP32", [1]),
        ("SUGGESTION", "TYPE_STRING", [1]),
    ]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    kinds = model_config_pb2.ModelInstanceGroup.Kind
    assert [(g.count, kinds.Name(g.kind)) for g in config.instance_group] == [(2, "KIND_CPU")]
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == {"layout": "inprocess", "export_dir": "export", "intra_op_threads": "3"}


def test_no_dynamic_batching_writes_no_dynamic_batching_block(onnx_export_dir, tmp_path):
    settings = RepositorySettings(dynamic_batching=False, intra_op_threads=None)
    write_repository(onnx_export_dir, tmp_path / "triton", settings)
    config = _read(tmp_path / "triton" / "spellfix" / "config.pbtxt")
    assert not config.HasField("dynamic_batching")
    assert "intra_op_threads" not in config.parameters


def test_bls_graph_configs_describe_the_graphs_for_each_backend(onnx_export_dir, tmp_path):
    bls = RepositorySettings(layout="bls", intra_op_threads=None)
    write_repository(onnx_export_dir, tmp_path / "python" / "triton", bls)
    decoder = _read(tmp_path / "python" / "triton" / "decoder" / "config.pbtxt")
    assert (decoder.name, decoder.backend, decoder.max_batch_size) == ("decoder", "python", 0)
    inputs = {name: (dtype, dims) for name, dtype, dims in _tensors(decoder.input)}
    assert inputs["decoder_input_ids"] == ("TYPE_INT64", [-1, -1])  # named dims are -1
    assert inputs["past.0.key"][0] == "TYPE_FP32"
    assert _tensors(decoder.output)[0][:2] == ("logits", "TYPE_FP32")
    assert set(decoder.parameters) == {"onnx_file"}

    ort = RepositorySettings(layout="bls", backend="onnxruntime")
    write_repository(onnx_export_dir, tmp_path / "ort" / "triton", ort)
    encoder = _read(tmp_path / "ort" / "triton" / "encoder" / "config.pbtxt")
    assert encoder.platform == "onnxruntime_onnx"
    assert encoder.default_model_filename == "encoder.onnx"
    assert encoder.backend == "" and len(encoder.parameters) == 0


def test_without_the_serve_extra_the_error_names_the_fix(onnx_export_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # as if not installed
    with pytest.raises(TritonConfigError, match=r"pip install 'spellfix\[serve\]'"):
        SETTINGS.check()
    with pytest.raises(TritonConfigError, match=r"pip install 'spellfix\[serve\]'"):
        write_repository(onnx_export_dir, tmp_path / "triton", SETTINGS)
    assert list(tmp_path.iterdir()) == []
