"""Ship a trained corrector: validated ONNX graphs, TensorRT engines, and their runners.

``onnx`` exports and validates the encoder and KV-cache decoder, ``ort_runner`` decodes
with them under ONNX Runtime (self-contained, so Triton can load it), ``tensorrt`` builds
and runs engines from the same graphs, and ``cli`` is ``spellfix-export``.
"""
