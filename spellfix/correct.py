"""Correct queries with a trained model, whatever runs it: ``Corrector`` and ``spellfix-correct``.

One interface over back ends, so evaluation, benchmarks and the CLI do not care what
executes the model:

- ``torch``: the HF model directory (or Lightning checkpoint) on PyTorch;
- ``onnx``: an export directory (``spellfix-export``) run by ONNX Runtime, CPU or CUDA;
- ``tensorrt``: the same export directory with engines built by ``spellfix.export.tensorrt``;
- a running Triton server (``Corrector.from_triton``).

Each local back end is a *runner* with two methods, ``score(sources, targets)`` (log
P(target | source) by teacher forcing) and ``correct(texts)`` (generation); what turns a
query into a correction with a confidence is ``spellfix.decoding``, the same code for
every runner, reading the model's ``decoding.json`` and ``lexicon.tsv``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from spellfix.decoding import (
    Correction,
    DecodingSettings,
    Lexicon,
    load_decoder,
    load_settings,
    max_new_tokens_for,
)
from spellfix.export.ort_runner import MANIFEST_NAME

logger = logging.getLogger(__name__)


class TorchRunner:
    """The HF model on PyTorch: teacher-forced scores, and ``generate`` as the exports run it."""

    def __init__(
        self,
        model,
        tokenizer,
        device: str = "cpu",
        batch_size: int = 64,
        settings: DecodingSettings | None = None,
    ) -> None:
        from spellfix.generation import generation_settings

        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.decoding = settings or DecodingSettings(mode="generate", constraint="none")
        self.settings = generation_settings(
            self.model, self.decoding.max_new_tokens_ratio, self.decoding.min_new_tokens_budget
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        device: str = "cpu",
        batch_size: int = 64,
        settings: DecodingSettings | None = None,
    ) -> TorchRunner:
        """A model directory or Lightning checkpoint (``spellfix.loading.load_seq2seq``)."""
        from spellfix.loading import load_seq2seq

        loaded = load_seq2seq(path)
        return cls(loaded.model, loaded.tokenizer, device, batch_size, settings)

    def score(self, sources: list[str], targets: list[str]) -> np.ndarray:
        """log P(target | source), summed over the target's tokens."""
        return score_pairs(self.model, self.tokenizer, sources, targets, 8 * self.batch_size)

    def correct(self, texts: list[str]) -> list[str]:
        """Generated corrections; blank and over-long inputs come back as they are.

        Queries with the same generation budget share a batch, so a query's output never
        depends on what else is in its batch.
        """
        from spellfix.generation import torch_generate
        from spellfix.tokenizer import decode_clean

        results = list(texts)
        if not texts:
            return results
        limit = self.settings["max_input_tokens"]
        lengths = {
            i: len(ids)
            for i, ids in enumerate(self.tokenizer(list(texts))["input_ids"])
            if texts[i].strip()
        }
        too_long = [i for i, n in lengths.items() if n > limit]
        if too_long:
            logger.warning(
                "%d input(s) longer than %d tokens left as they are (first: %.60r)",
                len(too_long),
                limit,
                texts[too_long[0]],
            )
        for budget, chunk in _budget_batches(lengths, limit, self.settings, self.batch_size):
            encoded = self.tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True
            ).to(self.device)
            generated = torch_generate(
                self.model,
                encoded["input_ids"],
                encoded["attention_mask"],
                self.settings,
                num_beams=self.decoding.num_beams,
                max_new_tokens=budget,
            )
            for index, text in zip(chunk, decode_clean(self.tokenizer, generated), strict=True):
                results[index] = text
        return results


def _budget_batches(
    lengths: dict[int, int], limit: int, settings: dict, batch_size: int
) -> Iterator[tuple[int, list[int]]]:
    """(generation budget, indices) batches: similar lengths together, one budget each."""
    groups: dict[int, list[int]] = {}
    for index, length in sorted(lengths.items(), key=lambda item: item[1]):
        if length > limit:
            continue
        budget = max_new_tokens_for(
            length,
            settings["max_new_tokens_ratio"],
            settings["min_new_tokens_budget"],
            settings["max_decoder_positions"],
        )
        groups.setdefault(budget, []).append(index)
    for budget, indices in groups.items():
        for start in range(0, len(indices), batch_size):
            yield budget, indices[start : start + batch_size]


def score_pairs(model, tokenizer, sources: list[str], targets: list[str], batch_size: int):
    """log P(target | source) for each pair under an HF seq2seq model (teacher forcing)."""
    import torch
    from transformers.models.bart.modeling_bart import shift_tokens_right

    if not sources:
        return np.zeros(0, np.float64)
    source_ids = tokenizer(list(sources))["input_ids"]
    target_ids = tokenizer(list(targets))["input_ids"]
    order = sorted(range(len(sources)), key=lambda i: (len(source_ids[i]), len(target_ids[i])))
    config = model.config
    device = next(model.parameters()).device
    scores = np.zeros(len(sources), np.float64)
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            chunk = order[begin : begin + batch_size]
            inputs = tokenizer.pad(
                {"input_ids": [source_ids[i] for i in chunk]}, return_tensors="pt"
            )
            labels = tokenizer.pad(
                {"input_ids": [target_ids[i] for i in chunk]}, return_tensors="pt"
            )
            label_mask = labels["attention_mask"].to(device)
            label_ids = labels["input_ids"].to(device)
            decoder_input = shift_tokens_right(
                label_ids.masked_fill(label_mask == 0, config.pad_token_id),
                config.pad_token_id,
                config.decoder_start_token_id,
            )
            logits = model(
                input_ids=inputs["input_ids"].to(device),
                attention_mask=inputs["attention_mask"].to(device),
                decoder_input_ids=decoder_input,
            ).logits.float()
            picked = torch.log_softmax(logits, dim=-1).gather(2, label_ids[..., None])[..., 0]
            scores[chunk] = (picked * label_mask).sum(dim=1).double().cpu().numpy()
    return scores


class TritonClient:
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

    def correct(self, texts: list[str]) -> list[Correction]:
        results = [Correction(t, t, 1.0, None) for t in texts]
        todo = [i for i, text in enumerate(texts) if text.strip()]
        names = ("CORRECTED", "CONFIDENCE", "SUGGESTION")
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            encoded = np.array([texts[i].encode("utf-8") for i in chunk], dtype=np.object_)
            request = self.client_module.InferInput("TEXT", [len(chunk), 1], "BYTES")
            request.set_data_from_numpy(encoded.reshape(-1, 1))
            outputs = [self.client_module.InferRequestedOutput(name) for name in names]
            reply = self.client.infer(self.model_name, [request], outputs=outputs)
            corrected, confidence, suggestion = (reply.as_numpy(n).reshape(-1) for n in names)
            for k, index in enumerate(chunk):
                offered = suggestion[k].decode("utf-8")
                results[index] = Correction(
                    texts[index],
                    corrected[k].decode("utf-8"),
                    float(confidence[k]),
                    offered or None,
                )
        return results


def _require_export_dir(path: Path, backend: str) -> None:
    if not (path / MANIFEST_NAME).is_file():
        hint = " (it is a model directory)" if (path / "config.json").is_file() else ""
        raise FileNotFoundError(
            f"{path} has no {MANIFEST_NAME}{hint}: backend '{backend}' runs an export; "
            f"create one with `spellfix-export model={path} output_dir=<dir>`"
        )


class DeviceError(ValueError):
    """A device this machine, or this build of torch or onnxruntime, cannot run on."""


def _onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise DeviceError(f"device={device!r}: not a device; use cpu, cuda or cuda:<index>")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise DeviceError(
            f"device={device!r} needs onnxruntime's CUDA provider; install onnxruntime-gpu"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise DeviceError(
            f"device={device!r}: not a device torch knows; use cpu, cuda or cuda:<index>"
        ) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device={device!r}: this torch build sees no CUDA GPU; use cpu")


def _load_torch(path: Path, settings: DecodingSettings | None, **options):
    if (path / MANIFEST_NAME).is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is an export directory; use backend='onnx' (or 'tensorrt') for it, "
            f"or pass the model directory for backend='torch'"
        )
    _check_device(options["device"])
    return TorchRunner.from_path(
        path, device=options["device"], batch_size=options["batch_size"], settings=settings
    )


def _load_onnx(path: Path, settings: DecodingSettings | None, **options):
    from spellfix.export.ort_runner import OrtSeq2Seq

    _require_export_dir(path, "onnx")
    return OrtSeq2Seq(
        path,
        providers=_onnx_providers(options["device"]),
        intra_op_threads=options["intra_op_threads"],
        num_beams=settings.num_beams if settings else 1,
        max_new_tokens_ratio=settings.max_new_tokens_ratio if settings else None,
        batch_size=options["batch_size"],
    )


def _load_tensorrt(path: Path, settings: DecodingSettings | None, **options):
    from spellfix.export.tensorrt import TrtSeq2Seq

    _require_export_dir(path, "tensorrt")
    return TrtSeq2Seq(
        path,
        num_beams=settings.num_beams if settings else 1,
        max_new_tokens_ratio=settings.max_new_tokens_ratio if settings else None,
        batch_size=options["batch_size"],
    )


# Back-end name -> loader taking (path, settings, **options). "onnxruntime" = "onnx".
BACKENDS: dict[str, Callable] = {
    "torch": _load_torch,
    "onnx": _load_onnx,
    "onnxruntime": _load_onnx,
    "tensorrt": _load_tensorrt,
}


class Corrector:
    """Batch spell correction through any back end; see the module docstring.

    ``corrections`` returns a ``spellfix.decoding.Correction`` per query (correction,
    confidence, "did you mean" suggestion); ``correct`` only the strings to search for.
    """

    def __init__(self, decoder, name: str) -> None:
        self.decoder = decoder
        self.name = name

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        backend: str = "torch",
        device: str = "cpu",
        batch_size: int = 64,
        intra_op_threads: int | None = None,
        catalog: str | Path | None = None,
        **decoding: object,
    ) -> Corrector:
        """Load a model dir (``torch``) or an export dir (``onnx``, ``tensorrt``).

        ``decoding`` overrides the directory's saved decoding settings by name
        (``apply_threshold=0.9``, ``num_beams=4``); ``catalog`` is a file of titles or
        names (text, or csv/tsv with the first column) preferred over other words.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        saved = load_settings(path) if path.is_dir() else None
        settings = saved
        if decoding:
            base = saved or DecodingSettings(mode="generate", constraint="none")
            settings = DecodingSettings.from_dict({**base.to_dict(), **decoding})
        runner = BACKENDS[backend](
            path,
            settings,
            device=device,
            batch_size=batch_size,
            intra_op_threads=intra_op_threads,
        )
        decoder = load_decoder(
            path,
            runner,
            settings,
            catalog=read_catalog(catalog) if catalog else None,
            warn=logger.warning,
        )
        return cls(decoder, name=f"{path.name} ({backend})")

    @classmethod
    def from_triton(
        cls, url: str, protocol: str = "http", model_name: str = "spellfix"
    ) -> Corrector:
        """Correct through a running Triton server, e.g. ``http://127.0.0.1:8000``."""
        return cls(TritonClient(url, protocol, model_name), name=f"{model_name}@{url} (triton)")

    def corrections(self, texts: list[str]) -> list[Correction]:
        """One ``Correction`` per query, in input order; blank queries come back as they are."""
        if isinstance(texts, str):
            raise TypeError("corrections() takes a list of strings; wrap a query in a list")
        return self.decoder.correct(list(texts))

    def correct(self, texts: list[str]) -> list[str]:
        """What to search for, per query: the correction, or the query when unsure."""
        if isinstance(texts, str):
            raise TypeError("correct() takes a list of strings; wrap a single query in a list")
        return [c.correction for c in self.corrections(texts)]


def read_catalog(path: str | Path) -> Lexicon:
    """A catalog file (titles, artists, product names) as word and word-pair counts.

    Read with the corpus reader, so a CSV/TSV catalog keeps every column, odd rows are
    counted, and a missing, empty or binary file fails in one line naming it.
    """
    from data_synth.corpus import CorpusError, read_corpus

    path = Path(path)
    if not path.exists():
        raise ValueError(f"catalog {path}: no such file")
    config = {
        "source": "auto",
        "path": str(path),
        "columns": None,
        "join_columns": False,
        "field": "text",
        "name": None,
        "hub_config": None,
        "split": "train",
        "encoding": "utf-8",
        "min_chars": 1,
        "max_chars": None,
        "max_queries": None,
        "lowercase": False,
        "builtin_words": 0,
        "builtin_bigrams": 0,
        "builtin_phrases": 0,
    }
    if path.suffix.lower() in (".csv", ".tsv", ".tab") and path.is_file():
        config["columns"] = _all_columns(path)
    try:
        corpus = read_corpus(config)
    except CorpusError as error:
        raise ValueError(f"catalog {error}") from None
    return Lexicon.from_texts(corpus.texts)


def _all_columns(path: Path) -> list[str] | None:
    """Every column of a CSV/TSV header: a catalog's titles and artists are all names."""
    import csv

    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), None)
    except (OSError, UnicodeDecodeError):
        return None  # the corpus reader reports the file in one line
    return [name for name in header if name] if header else None


def _stdin_batches(size: int) -> Iterator[list[tuple[int, str | None]]]:
    """Batches of (line number, text) as stdin delivers them; None for a line not in UTF-8.

    Whatever has arrived is corrected at once (up to ``size`` lines a batch), so a pipe
    that sends one query at a time gets one answer at a time, and a file is still
    corrected in full batches. Lines are read as bytes, so one bad line loses no other,
    and a CRLF line end is not part of the query.
    """
    try:
        descriptor = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # not a real stream (notebooks, tests)
        descriptor = None
    number = 0

    def decoded(lines: list[bytes]) -> list[tuple[int, str | None]]:
        nonlocal number
        batch = []
        for raw in lines:
            number += 1
            try:
                batch.append((number, raw.decode("utf-8").rstrip("\r")))
            except UnicodeDecodeError:
                batch.append((number, None))
        return batch

    if descriptor is None:
        lines = sys.stdin.read().encode("utf-8", "surrogateescape").splitlines()
        for start in range(0, len(lines), size):
            yield decoded(lines[start : start + size])
        return
    pending = b""
    while chunk := os.read(descriptor, 1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        for start in range(0, len(lines), size):
            yield decoded(lines[start : start + size])
    if pending:
        yield decoded([pending])


def _emit(correction: Correction, as_json: bool) -> None:
    if as_json:
        record = {
            "query": correction.query,
            "correction": correction.correction,
            "confidence": round(correction.confidence, 4),
            "suggestion": correction.suggestion,
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
    else:
        print(correction.correction, flush=True)


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
    parser.add_argument("--num-beams", type=int, default=None, help="generate mode only")
    parser.add_argument(
        "--catalog", metavar="FILE", help="titles/names to prefer (text or csv/tsv)"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="confidence needed to apply a change"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per line: query, correction, confidence, suggestion",
    )
    parser.add_argument("queries", nargs="*", help="queries; read stdin lines when absent")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="spellfix-correct: %(message)s")
    if (args.model is None) == (args.triton is None):
        parser.error("give exactly one of --model and --triton")
    if args.triton and (args.catalog or args.threshold is not None):
        parser.error("--catalog and --threshold apply to --model; a server decides with its own")
    overrides = {}
    if args.num_beams is not None:
        overrides["num_beams"] = args.num_beams
    if args.threshold is not None:
        overrides["apply_threshold"] = args.threshold
        overrides["suggest_threshold"] = min(args.threshold, 0.3)
    try:
        if args.triton:
            corrector = Corrector.from_triton(args.triton, protocol=args.protocol)
        else:
            corrector = Corrector.from_pretrained(
                args.model,
                backend=args.backend,
                device=args.device,
                batch_size=args.batch_size,
                catalog=args.catalog,
                **overrides,
            )
    except (FileNotFoundError, ValueError, RuntimeError, ImportError, KeyError, OSError) as error:
        print(f"spellfix-correct: error: {error}", file=sys.stderr)
        return 2
    if args.queries:
        for correction in corrector.corrections(args.queries):
            _emit(correction, args.json)
        return 0
    failed = 0
    try:
        for batch in _stdin_batches(args.batch_size):
            good = [text for _, text in batch if text is not None]
            answers = iter(corrector.corrections(good))
            for number, text in batch:
                if text is None:
                    # An empty answer keeps the output aligned with the input lines.
                    failed += 1
                    print(f"spellfix-correct: stdin line {number}: not UTF-8", file=sys.stderr)
                    print(json.dumps({"line": number, "error": "not UTF-8"}) if args.json else "")
                    continue
                _emit(next(answers), args.json)
    except KeyboardInterrupt:
        print("spellfix-correct: interrupted", file=sys.stderr)
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
