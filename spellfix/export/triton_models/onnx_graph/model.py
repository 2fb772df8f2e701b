"""Triton Python-backend model running one ONNX graph (``encoder`` or ``decoder``) with ORT.

A production server runs these graphs on its ``onnxruntime`` or ``tensorrt_plan`` backend;
the pip-installed server has neither, so this stands in for them with the same inputs and
outputs (config.pbtxt lists them) and the same ONNX file. Imports only
onnxruntime and the backend utilities: it runs in the server's Python.
"""

import json
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One ONNX Runtime session per model instance; each request is one ``session.run``."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        graph = Path(args["model_repository"]) / args["model_version"] / parameters["onnx_file"]
        options = ort.SessionOptions()
        if parameters.get("intra_op_threads"):
            options.intra_op_num_threads = int(parameters["intra_op_threads"])
        options.log_severity_level = 3  # ORT warns about every unused initializer otherwise
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            names = request.requested_output_names() or self.output_names
            try:
                feeds = {
                    name: pb_utils.get_input_tensor_by_name(request, name).as_numpy()
                    for name in self.input_names
                }
                outputs = self.session.run(names, feeds)
            except Exception as error:  # a bad request answers with its error, nothing more
                responses.append(
                    pb_utils.InferenceResponse(
                        output_tensors=[],
                        error=pb_utils.TritonError(f"{type(error).__name__}: {error}"),
                    )
                )
                continue
            tensors = [pb_utils.Tensor(n, o) for n, o in zip(names, outputs, strict=True)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
