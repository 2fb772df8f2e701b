"""Ship a trained corrector: validated ONNX graphs, TensorRT engines, and their runners.

``onnx`` exports the encoder and KV-cache decoder, ``validation`` checks them against
PyTorch (``spellfix.generation`` is the reference), ``precision`` converts them to fp16 or
int8, ``ort_runner`` decodes with them under ONNX Runtime (self-contained, so Triton can
load it), ``tensorrt`` builds and runs engines from the same graphs, ``triton`` writes the
model repository, and ``cli`` is ``spellfix-export``.
"""
