"""Correct queries with a trained model, whatever runs it: ``Corrector`` and ``spellfix-correct``.

One interface over back ends, so evaluation, benchmarks and the CLI do not care what
executes the model:

- ``torch``: the HF model directory (or Lightning checkpoint) with transformers ``generate``;
- ``onnx``: an export directory (``spellfix-export``) run by ONNX Runtime, CPU or CUDA;
- ``tensorrt``: the same export directory with engines built by ``spellfix.export.tensorrt``.

A back end is any object with ``correct(texts) -> list[str]``; ``BACKENDS`` maps a name to
the function that loads one from a path. A remote back end (Triton) that has no local path
plugs in as another constructor, ``Corrector.from_triton(url)``, building
``Corrector(backend_object, name)``.

Every back end shares the same contract: empty or blank strings come back unchanged,
inputs longer than the model's limit are truncated with a logged warning, decoding is
greedy unless ``num_beams > 1``, and the generation budget scales with the input length.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from spellfix.export.ort_runner import MANIFEST_NAME, max_new_tokens_for

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS_RATIO = 1.5
DEFAULT_MIN_NEW_TOKENS_BUDGET = 8


class CorrectionBackend(Protocol):
    """What ``Corrector`` needs from a back end."""

    def correct(self, texts: list[str]) -> list[str]: ...


class TorchBackend:
    """transformers ``generate`` on the HF model, with the same settings the exports use."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        batch_size: int = 64,
        num_beams: int = 1,
        max_new_tokens_ratio: float | None = None,
    ) -> None:
        from spellfix.export.onnx import generation_settings, load_seq2seq

        loaded = load_seq2seq(path)
        self.model = loaded.model.to(device)
        self.tokenizer = loaded.tokenizer
        self.device = device
        self.batch_size = batch_size
        self.num_beams = num_beams
        self.settings = generation_settings(
            self.model,
            max_new_tokens_ratio or DEFAULT_MAX_NEW_TOKENS_RATIO,
            DEFAULT_MIN_NEW_TOKENS_BUDGET,
        )

    def correct(self, texts: list[str]) -> list[str]:
        from spellfix.export.onnx import torch_generate
        from spellfix.tokenizer import decode_clean

        results = list(texts)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if not todo:
            return results
        limit = self.settings["max_input_tokens"]
        lengths = [len(ids) for ids in self.tokenizer([texts[i] for i in todo])["input_ids"]]
        too_long = [texts[i] for i, n in zip(todo, lengths, strict=True) if n > limit]
        if too_long:
            logger.warning(
                "%d input(s) longer than %d tokens were truncated (first: %.60r)",
                len(too_long),
                limit,
                too_long[0],
            )
        # Similar lengths share a batch, so little compute goes to padding.
        order = [todo[k] for k in sorted(range(len(todo)), key=lambda k: lengths[k])]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in chunk],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=limit,
            ).to(self.device)
            generated = torch_generate(
                self.model,
                encoded["input_ids"],
                encoded["attention_mask"],
                self.settings,
                num_beams=self.num_beams,
                max_new_tokens=max_new_tokens_for(
                    int(encoded["attention_mask"].sum(dim=1).max()),
                    self.settings["max_new_tokens_ratio"],
                    self.settings["min_new_tokens_budget"],
                    self.settings["max_decoder_positions"],
                ),
            )
            for index, text in zip(chunk, decode_clean(self.tokenizer, generated), strict=True):
                results[index] = text
        return results


class TritonBackend:
    """The ``spellfix`` model of a running Triton server (``spellfix-serve``), over HTTP or gRPC.

    Requests carry up to the model's ``max_batch_size`` queries; the server's dynamic
    batcher merges requests from many clients. An HTTP client must not be shared between
    threads (give each thread its own ``Corrector``); a gRPC one may be.
    """

    def __init__(self, url: str, protocol: str = "http", model_name: str = "spellfix") -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol={protocol!r}: choose 'http' or 'grpc'")
        if protocol == "http":
            import tritonclient.http as client_module
        else:
            import tritonclient.grpc as client_module
        self.client_module = client_module
        self.model_name = model_name
        address = url.split("://", 1)[-1].rstrip("/")
        self.client = client_module.InferenceServerClient(address)
        try:
            ready = self.client.is_model_ready(model_name)
        except Exception as error:  # refused connection, DNS, wrong protocol: one message
            raise RuntimeError(f"cannot reach Triton at {url} over {protocol}: {error}") from None
        if not ready:
            raise RuntimeError(f"Triton at {url} has no ready model {model_name!r}")
        if protocol == "http":
            config = self.client.get_model_config(model_name)
        else:
            config = self.client.get_model_config(model_name, as_json=True)["config"]
        self.batch_size = max(1, int(config.get("max_batch_size", 1)))

    def correct(self, texts: list[str]) -> list[str]:
        import numpy as np

        results = list(texts)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            encoded = np.array([texts[i].encode("utf-8") for i in chunk], dtype=np.object_)
            request = self.client_module.InferInput("TEXT", [len(chunk), 1], "BYTES")
            request.set_data_from_numpy(encoded.reshape(-1, 1))
            output = self.client_module.InferRequestedOutput("CORRECTED")
            reply = self.client.infer(self.model_name, [request], outputs=[output])
            for index, value in zip(chunk, reply.as_numpy("CORRECTED").reshape(-1), strict=True):
                results[index] = value.decode("utf-8")
        return results


def _require_export_dir(path: Path, backend: str) -> None:
    if not (path / MANIFEST_NAME).is_file():
        hint = " (it is a model directory)" if (path / "config.json").is_file() else ""
        raise FileNotFoundError(
            f"{path} has no {MANIFEST_NAME}{hint}: backend '{backend}' runs an export; "
            f"create one with `spellfix-export model={path} output_dir=<dir>`"
        )


def _onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError(
            f"device={device!r} needs onnxruntime's CUDA provider; install onnxruntime-gpu"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _load_torch(path: Path, **options) -> CorrectionBackend:
    if (path / MANIFEST_NAME).is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is an export directory; use backend='onnx' (or 'tensorrt') for it, "
            f"or pass the model directory for backend='torch'"
        )
    return TorchBackend(
        path,
        device=options["device"],
        batch_size=options["batch_size"],
        num_beams=options["num_beams"],
        max_new_tokens_ratio=options["max_new_tokens_ratio"],
    )


def _load_onnx(path: Path, **options) -> CorrectionBackend:
    from spellfix.export.ort_runner import OrtSeq2Seq

    _require_export_dir(path, "onnx")
    return OrtSeq2Seq(
        path,
        providers=_onnx_providers(options["device"]),
        intra_op_threads=options["intra_op_threads"],
        num_beams=options["num_beams"],
        max_new_tokens_ratio=options["max_new_tokens_ratio"],
        batch_size=options["batch_size"],
    )


def _load_tensorrt(path: Path, **options) -> CorrectionBackend:
    from spellfix.export.tensorrt import TrtSeq2Seq

    _require_export_dir(path, "tensorrt")
    return TrtSeq2Seq(
        path,
        num_beams=options["num_beams"],
        max_new_tokens_ratio=options["max_new_tokens_ratio"],
        batch_size=options["batch_size"],
    )


# Back-end name -> loader taking (path, **options). "onnxruntime" is the name for "onnx".
BACKENDS: dict[str, Callable[..., CorrectionBackend]] = {
    "torch": _load_torch,
    "onnx": _load_onnx,
    "onnxruntime": _load_onnx,
    "tensorrt": _load_tensorrt,
}


class Corrector:
    """Batch spell correction through any back end; see the module docstring."""

    def __init__(self, backend: CorrectionBackend, name: str) -> None:
        self.backend = backend
        self.name = name

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: str = "torch",
        device: str = "cpu",
        batch_size: int = 64,
        num_beams: int = 1,
        max_new_tokens_ratio: float | None = None,
        intra_op_threads: int | None = None,
    ) -> Corrector:
        """Load a model dir (``torch``) or an export dir (``onnx``, ``tensorrt``).

        ``max_new_tokens_ratio`` overrides the exported budget (tokens generated per input
        token); ``intra_op_threads`` caps ONNX Runtime's thread pool.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
        if batch_size < 1 or num_beams < 1:
            raise ValueError("batch_size and num_beams must be >= 1")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        loaded = BACKENDS[backend](
            path,
            device=device,
            batch_size=batch_size,
            num_beams=num_beams,
            max_new_tokens_ratio=max_new_tokens_ratio,
            intra_op_threads=intra_op_threads,
        )
        return cls(loaded, name=f"{path.name} ({backend})")

    @classmethod
    def from_triton(
        cls, url: str, protocol: str = "http", model_name: str = "spellfix"
    ) -> Corrector:
        """Correct through a running Triton server, e.g. ``http://127.0.0.1:8000``."""
        return cls(TritonBackend(url, protocol, model_name), name=f"{model_name}@{url} (triton)")

    def correct(self, texts: list[str]) -> list[str]:
        """Corrections in input order; empty strings are returned as they are."""
        if isinstance(texts, str):
            raise TypeError("correct() takes a list of strings; wrap a single query in a list")
        return self.backend.correct(list(texts))


def main(argv: list[str] | None = None) -> int:
    """``spellfix-correct``: correct queries given as arguments, or one per stdin line."""
    parser = argparse.ArgumentParser(prog="spellfix-correct", description=main.__doc__)
    parser.add_argument("--model", help="model dir (torch) or export dir (onnx)")
    parser.add_argument(
        "--triton", metavar="URL", help="a spellfix-serve server instead of --model"
    )
    parser.add_argument("--protocol", default="http", choices=["http", "grpc"], help="for --triton")
    parser.add_argument("--backend", default="torch", choices=sorted(BACKENDS))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("queries", nargs="*", help="queries; read stdin lines when absent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    if (args.model is None) == (args.triton is None):
        parser.error("give exactly one of --model and --triton")
    queries = args.queries or [line.rstrip("\n") for line in sys.stdin]
    try:
        if args.triton:
            corrector = Corrector.from_triton(args.triton, protocol=args.protocol)
        else:
            corrector = Corrector.from_pretrained(
                args.model,
                backend=args.backend,
                device=args.device,
                batch_size=args.batch_size,
                num_beams=args.num_beams,
            )
    except (FileNotFoundError, ValueError, RuntimeError, ImportError, KeyError) as error:
        print(f"spellfix-correct: {error}", file=sys.stderr)
        return 2
    for query, correction in zip(queries, corrector.correct(queries), strict=True):
        if args.json:
            print(json.dumps({"query": query, "correction": correction}, ensure_ascii=False))
        else:
            print(correction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
