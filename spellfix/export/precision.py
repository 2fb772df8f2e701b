"""Reduce an exported graph's precision in place: fp16 for GPUs, int8 weights for CPUs.

Both conversions rewrite a validated fp32 ONNX file and know nothing of PyTorch; what
they may cost in accuracy is measured afterwards by ``spellfix.export.validation``,
against the tolerance and greedy agreement the export config allows each precision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Ops that overflow or lose too much in fp16 inside BART (NaN engines otherwise).
FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf"]
# Weights sharing one fp32 scale in an int8 export (ONNX Runtime's smallest block).
INT8_BLOCK_SIZE = 32


def convert_to_fp16(path: Path) -> None:
    """Convert a graph to fp16 in place, keeping LayerNorm/Softmax (and friends) in fp32."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(path))
    converted = convert_float_to_float16(
        model, keep_io_types=False, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP32_OPS]
    )
    onnx.save(converted, str(path))


def quantize_int8(path: Path) -> None:
    """Store the graph's MatMul weights as int8 (blockwise, symmetric), in place.

    At batch 1 a decoder step reads every weight once and does little else, so on a CPU
    it runs at memory speed: a quarter of the bytes is most of a quarter of the time.
    ONNX Runtime's ``MatMulNBits`` keeps one fp32 scale per ``INT8_BLOCK_SIZE`` weights
    and, at accuracy level 4, multiplies in int8 with per-block activation scales.
    The output projection shares its matrix with the token embedding (a ``Transpose``
    of it); it gets its own transposed copy first so that the largest matmul of the
    step is quantized too, while the embedding lookup keeps the fp32 rows.
    """
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    for node in list(model.graph.node):
        weight = initializers.get(node.input[0]) if node.op_type == "Transpose" else None
        if weight is not None and len(weight.dims) == 2:
            transposed = np.ascontiguousarray(numpy_helper.to_array(weight).T)
            model.graph.initializer.append(numpy_helper.from_array(transposed, node.output[0]))
            model.graph.node.remove(node)
    quantizer = MatMulNBitsQuantizer(
        model, bits=8, block_size=INT8_BLOCK_SIZE, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    onnx.save(quantizer.model.model, str(path))
