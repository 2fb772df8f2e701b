"""TensorRT engines from the exported ONNX graphs, and a runner behind ``Corrector``.

The reference deployment ran BART as a TensorRT encoder engine and decoder engine behind
a Python loop; this is that, built from the graphs ``spellfix.export.onnx`` validated:

- one optimization profile per engine, its min/opt/max batch, source length and cache
  length from ``conf/export.yaml`` (``tensorrt.profile``);
- fp16 with LayerNorm and Softmax layers pinned to fp32 (``layer.precision`` and
  ``set_output_type``, obeyed by the builder): fp16 BART engines produce NaN otherwise;
- a timing cache reused across builds, so a rebuild skips kernel auto-tuning;
- ``tensorrt/engines.json`` with versions, device, profiles and checksums, since an engine
  only runs on the TensorRT version and GPU family that built it.

The runner reuses ``OrtSeq2Seq``'s decoding loops (greedy with per-row early stop, beam
search) and swaps only the encoder and decoder calls, with the cache kept on the GPU as
torch tensors. Everything needs ``pip install 'spellfix[tensorrt]'`` and a CUDA GPU.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from data_synth.files import write_bytes_atomic
from spellfix.export.ort_runner import MANIFEST_NAME, OrtSeq2Seq, load_manifest

ENGINE_DIR = "tensorrt"
METADATA_NAME = "engines.json"
INSTALL_HINT = "TensorRT is not installed: pip install 'spellfix[tensorrt]' (needs an NVIDIA GPU)"


def import_tensorrt():
    """Import ``tensorrt`` or fail with the one line that says how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return tensorrt


def _profile_shapes(manifest: dict, profile) -> dict[str, tuple[tuple, tuple, tuple]]:
    """min/opt/max shape of every engine input, from the config's [min, opt, max] lists."""
    heads, head_dim = manifest["kv_cache"]["num_heads"], manifest["kv_cache"]["head_dim"]
    batch, source, past = profile.batch, profile.source_length, profile.past_length
    limit = manifest["generation"]["max_input_tokens"]
    if max(source) > limit or max(past) >= manifest["generation"]["max_decoder_positions"]:
        raise ValueError(
            f"tensorrt.profile: source_length/past_length max must stay below the model's "
            f"{limit} positions (got {list(source)}, {list(past)})"
        )
    shapes = {
        "input_ids": [(b, s) for b, s in zip(batch, source, strict=True)],
        "attention_mask": [(b, s) for b, s in zip(batch, source, strict=True)],
        "decoder_input_ids": [(b, 1) for b in batch],
        "encoder_attention_mask": [(b, s) for b, s in zip(batch, source, strict=True)],
    }
    for name in manifest["kv_cache"]["past"]:
        shapes[name] = [(b, heads, p, head_dim) for b, p in zip(batch, past, strict=True)]
    for name in manifest["kv_cache"]["cross"]:
        shapes[name] = [(b, heads, s, head_dim) for b, s in zip(batch, source, strict=True)]
    return {name: tuple(triple) for name, triple in shapes.items()}


def _pin_fp32(trt, network) -> int:
    """Keep normalization and softmax in fp32 inside an fp16 engine; returns layers pinned."""
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX):
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned += 1
    return pinned


def build_engine(trt, onnx_path: Path, plan_path: Path, shapes: dict, cfg, timing_cache) -> dict:
    """Parse one ONNX graph and build its serialized engine; returns what was done."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gb * 2**30))
    pinned = 0
    if cfg.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pinned = _pin_fp32(trt, network)
    elif cfg.precision != "fp32":
        raise ValueError(f"tensorrt.precision must be fp32 or fp16, got {cfg.precision!r}")
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(profile)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path.name}")
    plan_path.write_bytes(bytes(serialized))
    return {
        "file": f"{ENGINE_DIR}/{plan_path.name}",
        "sha256": hashlib.sha256(plan_path.read_bytes()).hexdigest(),
        "build_seconds": round(time.perf_counter() - started, 1),
        "fp32_pinned_layers": pinned,
        "profile": {name: [list(s) for s in shapes[name]] for name in _input_names(network)},
    }


def _input_names(network) -> list[str]:
    return [network.get_input(i).name for i in range(network.num_inputs)]


def build_engines(export_dir: Path, cfg) -> dict:
    """Build encoder and decoder engines into ``export_dir/tensorrt`` and check them
    against ONNX Runtime; returns the summary ``spellfix-export`` prints."""
    trt = import_tensorrt()
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("building TensorRT engines needs a CUDA GPU; none is visible")
    export_dir = Path(export_dir)
    manifest = load_manifest(export_dir)
    shapes = _profile_shapes(manifest, cfg.profile)
    engine_dir = export_dir / ENGINE_DIR
    engine_dir.mkdir(exist_ok=True)

    cache_path = Path(cfg.timing_cache) if cfg.timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    holder = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    timing_cache = holder.create_timing_cache(cache_bytes)
    engines = {}
    for graph in ("encoder", "decoder"):
        onnx_path = export_dir / manifest["graphs"][graph]["file"]
        plan = engine_dir / f"{graph}.plan"
        engines[graph] = build_engine(trt, onnx_path, plan, shapes, cfg, timing_cache)
    if cache_path:
        write_bytes_atomic(cache_path, bytes(timing_cache.serialize()))

    metadata = {
        "tensorrt_version": trt.__version__,
        "device": torch.cuda.get_device_name(0),
        "compute_capability": list(torch.cuda.get_device_capability(0)),
        "precision": cfg.precision,
        "timing_cache": str(cache_path) if cache_path else None,
        "engines": engines,
    }
    (engine_dir / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
    metadata["validation"] = compare_with_onnxruntime(export_dir, cfg.tolerance)
    (engine_dir / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n")
    manifest["tensorrt"] = {"metadata": f"{ENGINE_DIR}/{METADATA_NAME}", "precision": cfg.precision}
    (export_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    check = metadata["validation"]
    return {
        "files": [f"{ENGINE_DIR}/encoder.plan", f"{ENGINE_DIR}/decoder.plan", METADATA_NAME],
        "verified": [
            f"first-step logits vs ONNX Runtime: max abs diff {check['max_abs_diff']:.2e} "
            f"(tolerance {cfg.tolerance:g}); greedy agreement {check['greedy_agreement']:.0%}"
        ],
    }


def compare_with_onnxruntime(export_dir: Path, tolerance: float, queries: list[str] | None = None):
    """Run engines and ORT on the same queries; raise if the first-step logits differ."""
    from spellfix.export.validation import ExportValidationError, builtin_validation_queries

    queries = queries or builtin_validation_queries(64)
    reference = OrtSeq2Seq(export_dir)
    engines = TrtSeq2Seq(export_dir)
    encodings = reference.tokenizer.encode_batch(queries)
    input_ids, attention_mask = reference.pad([e.ids for e in encodings])
    start = reference.generation["decoder_start_token_id"]
    tokens = np.full((len(queries), 1), start, np.int64)
    expected, _ = reference._step(
        tokens,
        attention_mask,
        reference._empty_past(len(queries)),
        reference._encode(input_ids, attention_mask),
    )
    actual, _ = engines._step(
        tokens,
        attention_mask,
        engines._empty_past(len(queries)),
        engines._encode(input_ids, attention_mask),
    )
    difference = float(np.nan_to_num(np.abs(actual - expected), nan=np.inf).max())
    if not difference <= tolerance:
        raise ExportValidationError(
            f"TensorRT first-step logits differ from ONNX Runtime by {difference:.3g} "
            f"(tolerance {tolerance:g})"
        )
    same = sum(
        a == b for a, b in zip(engines.correct(queries), reference.correct(queries), strict=True)
    )
    return {"max_abs_diff": difference, "greedy_agreement": same / len(queries)}


class TrtSeq2Seq(OrtSeq2Seq):
    """``OrtSeq2Seq``'s decoding loops over TensorRT engines; the cache stays on the GPU."""

    def __init__(
        self,
        export_dir: str | Path,
        num_beams: int = 1,
        max_new_tokens_ratio: float | None = None,
        batch_size: int = 64,
    ) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT back end needs a CUDA GPU; none is visible")
        self._load_manifest_and_tokenizer(export_dir, num_beams, max_new_tokens_ratio, batch_size)
        metadata_path = self.export_dir / ENGINE_DIR / METADATA_NAME
        if not metadata_path.is_file():
            raise FileNotFoundError(
                f"{metadata_path} not found: build engines with "
                f"`spellfix-export model=<model> output_dir=<dir> formats=[onnx,tensorrt]`"
            )
        self.metadata = json.loads(metadata_path.read_text())
        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines, self.contexts = {}, {}
        for graph, info in self.metadata["engines"].items():
            engine = runtime.deserialize_cuda_engine((self.export_dir / info["file"]).read_bytes())
            self.engines[graph] = engine
            self.contexts[graph] = engine.create_execution_context()
        self._dtypes = {
            trt.float32: torch.float32,
            trt.float16: torch.float16,
            trt.int64: torch.int64,
            trt.int32: torch.int32,
            trt.bool: torch.bool,
        }
        self._trt = trt
        self.on_cuda = True
        self.compacts_finished_rows = True  # torch indexes the device cache directly
        past_dtype = self._dtypes[self.engines["decoder"].get_tensor_dtype(self.kv["past"][0])]
        self.cache_dtype = np.float16 if past_dtype == torch.float16 else np.float32
        # TensorRT wants a valid address even for an empty (cache length 0) tensor.
        self._placeholder = torch.zeros(1, device="cuda")

    def _run(self, graph: str, inputs: dict, outputs: list[str]) -> list:
        torch, trt = self.torch, self._trt
        engine, context = self.engines[graph], self.contexts[graph]
        keep_alive = []
        for name, value in inputs.items():
            tensor = self._device(value)
            if tensor.dtype != self._dtypes[engine.get_tensor_dtype(name)]:
                tensor = tensor.to(self._dtypes[engine.get_tensor_dtype(name)])
            tensor = tensor.contiguous()
            keep_alive.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            address = tensor.data_ptr() if tensor.numel() else self._placeholder.data_ptr()
            context.set_tensor_address(name, address)
        results = []
        for name in outputs:
            shape = tuple(context.get_tensor_shape(name))
            result = torch.empty(
                shape, dtype=self._dtypes[engine.get_tensor_dtype(name)], device="cuda"
            )
            context.set_tensor_address(name, result.data_ptr())
            results.append(result)
        # Outputs the loop does not read still need an address.
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT and name not in outputs:
                shape = tuple(context.get_tensor_shape(name))
                spare = torch.empty(
                    shape, dtype=self._dtypes[engine.get_tensor_dtype(name)], device="cuda"
                )
                keep_alive.append(spare)
                context.set_tensor_address(name, spare.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT {graph} engine failed to run")
        stream.synchronize()
        return results

    def _device(self, value):
        if isinstance(value, np.ndarray):
            return self.torch.from_numpy(np.ascontiguousarray(value)).to("cuda")
        return value

    def _encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        return self._run("encoder", inputs, self.kv["cross_outputs"])

    def _empty_past(self, rows: int) -> list:
        dtype = self.torch.float16 if self.cache_dtype == np.float16 else self.torch.float32
        shape = (rows, self.kv["num_heads"], 0, self.kv["head_dim"])
        return [self.torch.zeros(shape, dtype=dtype, device="cuda") for _ in self.kv["past"]]

    def _step(self, tokens, encoder_mask, past, cross):
        inputs = {"decoder_input_ids": tokens, "encoder_attention_mask": encoder_mask}
        inputs.update(zip(self.kv["past"], past, strict=True))
        inputs.update(zip(self.kv["cross"], cross, strict=True))
        logits, *present = self._run("decoder", inputs, ["logits", *self.kv["present"]])
        return logits[:, -1, :].float().cpu().numpy(), present

    def _take(self, values: list, rows: np.ndarray) -> list:
        index = self.torch.as_tensor(np.flatnonzero(rows) if rows.dtype == bool else rows)
        index = index.to("cuda")
        return [self._device(value).index_select(0, index) for value in values]
