"""Reduced-precision exports: fp16 keeps the overflow-prone ops in fp32, int8 quantizes
every weight matmul, and both still agree with PyTorch within their limits."""

from __future__ import annotations

import onnx
import pytest

from spellfix.export.onnx import export_onnx
from spellfix.export.ort_runner import OrtSeq2Seq
from spellfix.loading import load_seq2seq

pytestmark = pytest.mark.slow


def test_fp16_export_keeps_layernorm_and_softmax_in_fp32(tiny_model_dir, tmp_path, sample_queries):
    manifest = export_onnx(
        tiny_model_dir, tmp_path / "fp16", precision="fp16", validation_queries=sample_queries
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
    tiny_model_dir, onnx_export_dir, tmp_path, sample_queries
):
    manifest = export_onnx(
        tiny_model_dir, tmp_path / "int8", precision="int8", validation_queries=sample_queries
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
    fp32 = OrtSeq2Seq(onnx_export_dir, intra_op_threads=1).correct(sample_queries)
    int8 = OrtSeq2Seq(tmp_path / "int8", intra_op_threads=1).correct(sample_queries)
    assert sum(a == b for a, b in zip(fp32, int8, strict=True)) >= len(sample_queries) - 1
