"""Triton Python-backend model ``spellfix``: a dynamic batch of queries in, corrections out.

Runs inside tritonserver's Python, which has numpy, tokenizers and onnxruntime but neither
torch nor spellfix; ``ort_runner.py`` and ``decoding.py`` are copied next to this file by
``spellfix.export.triton``, so the server decodes (lexicon, confidence, suggestions) as
every other back end does. The ``layout`` parameter of config.pbtxt decides who runs the
graphs:

- ``inprocess``: ONNX Runtime sessions in this process (``ort_runner.OrtSeq2Seq``);
- ``bls``: the ``encoder`` and ``decoder`` models of the same server, called through
  Business Logic Scripting, so they can run on the onnxruntime or TensorRT backends.

Either way every request of the dynamic batch is corrected in one ``correct`` call, so the
model runs once for the whole batch. A request with bytes that are not UTF-8 gets an
error response of its own; the others in the batch are still answered.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from decoding import load_decoder
from ort_runner import OrtSeq2Seq


class BlsSession:
    """A Triton model presented as the part of ``onnxruntime.InferenceSession`` that
    ``OrtSeq2Seq`` calls (``run``), so the greedy loop is the same code whether the graphs
    run in this process or in other models of the server."""

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name

    def run(self, output_names: list[str], feeds: dict) -> list[np.ndarray]:
        request = pb_utils.InferenceRequest(
            model_name=self.model_name,
            requested_output_names=list(output_names),
            inputs=[
                pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in feeds.items()
            ],
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{self.model_name}: {response.error().message()}")
        return [
            pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names
        ]


class BlsSeq2Seq(OrtSeq2Seq):
    """``OrtSeq2Seq`` whose encoder and decoder are the server's ``encoder``/``decoder`` models.

    It shares the runner's manifest/tokenizer set-up (as the TensorRT runner does) but opens
    no ONNX Runtime session; the tests compare this layout with the in-process runner.
    """

    def __init__(self, export_dir: Path, batch_size: int) -> None:
        self._load_manifest_and_tokenizer(
            export_dir, num_beams=1, max_new_tokens_ratio=None, batch_size=batch_size
        )
        self.encoder = BlsSession("encoder")
        self.decoder = BlsSession("decoder")
        self.on_cuda = False  # the cache travels between models as host tensors
        self.compacts_finished_rows = True
        graphs = self.manifest["graphs"]
        past = next(i for i in graphs["decoder"]["inputs"] if i["name"] == self.kv["past"][0])
        self.cache_dtype = np.dtype(past["dtype"]).type


def _error(message: str):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))


class TritonPythonModel:
    """The Python backend's entry point: ``initialize`` once per instance, ``execute`` per batch."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        export_dir = version_dir / parameters["export_dir"]
        batch_size = max(1, int(config.get("max_batch_size", 1)))
        if parameters["layout"] == "bls":
            runner = BlsSeq2Seq(export_dir, batch_size=batch_size)
        else:
            threads = parameters.get("intra_op_threads")
            runner = OrtSeq2Seq(
                export_dir,
                intra_op_threads=int(threads) if threads else None,
                batch_size=batch_size,
            )
        self.decoder = load_decoder(export_dir, runner, warn=print)

    def execute(self, requests: list) -> list:
        responses = [None] * len(requests)
        texts_of = {}  # request index -> its decoded queries
        for index, request in enumerate(requests):
            values = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            try:
                texts_of[index] = [value.decode("utf-8") for value in values]
            except UnicodeDecodeError as error:
                responses[index] = _error(f"TEXT is not valid UTF-8: {error}")
        batch = [text for texts in texts_of.values() for text in texts]
        try:
            corrections = iter(self.decoder.correct(batch))
        except Exception as error:  # one failed batch must not take the model down
            message = f"correction failed: {type(error).__name__}: {error}"
            return [response or _error(message) for response in responses]
        for index, texts in texts_of.items():
            answers = [next(corrections) for _ in texts]
            strings = [a.correction.encode("utf-8") for a in answers]
            offered = [(a.suggestion or "").encode("utf-8") for a in answers]
            confidence = np.array([a.confidence for a in answers], np.float32).reshape(-1, 1)
            responses[index] = pb_utils.InferenceResponse(
                [
                    pb_utils.Tensor("CORRECTED", np.array(strings, np.object_).reshape(-1, 1)),
                    pb_utils.Tensor("CONFIDENCE", confidence),
                    pb_utils.Tensor("SUGGESTION", np.array(offered, np.object_).reshape(-1, 1)),
                ]
            )
        return responses
