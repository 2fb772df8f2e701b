"""Export a trained BART corrector to ONNX (encoder + KV-cache decoder) and prove it.

Why two graphs and no ``If``: TensorRT builds one engine per static control flow, so the
decoder takes its self-attention past as an input that is simply empty (length 0) on the
first step. The cross-attention keys/values depend only on the encoder output, so the
encoder graph computes them once per query and the decoder receives them as inputs.

The graphs are traced from thin wrappers over the HF modules (the same ``nn.Linear`` and
``nn.LayerNorm`` objects, the same attention arithmetic as transformers' eager path), with
the cache as plain tensors: this keeps transformers' cache objects and mask helpers out of
the trace, and ``validate_export`` checks the result against the HF model itself.

Export never imports training code: a Lightning checkpoint is read here, as a plain
state dict plus the ``model_config``/``tokenizer_dir`` hyper-parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import shutil
import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from data_synth.files import write_json_atomic
from spellfix.decoding import (
    CATALOG_FILE,
    DECODING_FILE,
    LEXICON_FILE,
    DecodingSettings,
    GenerativeDecoder,
    load_decoder,
    load_settings,
    max_new_tokens_for,
)
from spellfix.export.ort_runner import MANIFEST_NAME, OrtSeq2Seq

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = "spellfix-onnx"
MANIFEST_VERSION = 1
# Additive attention mask for padded keys. HF uses finfo(dtype).min; float16's minimum
# survives an fp16 conversion of the graph, and exp() of it is exactly 0 either way.
MASK_VALUE = torch.finfo(torch.float16).min
# Ops that overflow or lose too much in fp16 inside BART (NaN engines otherwise).
FP32_OPS = ["LayerNormalization", "Softmax", "ReduceMean", "Pow", "Sqrt", "Erf"]
# Weights sharing one fp32 scale in an int8 export (ONNX Runtime's smallest block).
INT8_BLOCK_SIZE = 32


class ExportValidationError(RuntimeError):
    """The exported graphs do not compute what the PyTorch model computes."""


@dataclass
class LoadedModel:
    """A model ready for export or for the torch backend, with where it came from."""

    model: nn.Module
    tokenizer: object  # transformers PreTrainedTokenizerBase
    source: str
    source_kind: str  # "hf_dir" or "lightning_ckpt"
    metadata: dict | None  # spellfix.json written by training, when present


# ---------------------------------------------------------------------------- loading
def load_seq2seq(path: str | Path) -> LoadedModel:
    """Load a BART corrector from an HF model directory or a Lightning ``.ckpt``."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = Path(path)
    if path.is_file() and path.suffix == ".ckpt":
        return _load_lightning_checkpoint(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: neither a model directory (no config.json) nor a Lightning .ckpt file; "
            f"pass model=<dir written by spellfix-train> or model=<checkpoint.ckpt>"
        )
    _check_model_dir(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    metadata_file = path / "spellfix.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else None
    return LoadedModel(_check_bart(model, path), tokenizer, str(path), "hf_dir", metadata)


def _check_model_dir(path: Path) -> None:
    """The files a model directory needs, each missing one named in one line."""
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as error:
        raise ValueError(f"{path / 'config.json'}: not a readable model config ({error})") from None
    if model_type != "bart":
        raise ValueError(f"{path}: a {model_type or 'unknown'} model; spellfix runs BART models")
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{path / 'model.safetensors'}: missing; spellfix loads weights from safetensors "
            "only (copy the model directory whole from its training run)"
        )
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{path / 'tokenizer.json'}: missing; copy the tokenizer files from the training "
            "run's model directory"
        )


def _load_lightning_checkpoint(path: Path) -> LoadedModel:
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    hparams = checkpoint.get("hyper_parameters", {})
    for key in ("model_config", "tokenizer_dir"):
        if key not in hparams:
            raise KeyError(
                f"{path}: hyper_parameters has no '{key}'; export needs a checkpoint written "
                f"by spellfix.model.SpellCorrector (or export the HF model directory instead)"
            )
    model = BartForConditionalGeneration(BartConfig.from_dict(hparams["model_config"]))
    prefix = "model."
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied copies (lm_head, the per-stack embeddings) may be absent from a state dict.
    tied = {
        "lm_head.weight",
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
    }
    if set(missing) - tied or unexpected:
        raise KeyError(
            f"{path}: state_dict does not match model_config (missing "
            f"{sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(hparams["tokenizer_dir"])
    return LoadedModel(
        _check_bart(model.eval(), path), tokenizer, str(path), "lightning_ckpt", None
    )


def _check_bart(model: nn.Module, path: Path) -> nn.Module:
    if type(model).__name__ != "BartForConditionalGeneration":
        raise TypeError(f"{path}: {type(model).__name__} is not supported; export handles BART")
    return model


# ------------------------------------------------------------------- generation settings
def generation_settings(
    model: nn.Module, max_new_tokens_ratio: float, min_new_tokens_budget: int
) -> dict:
    """The decoding settings every back end shares, written into the manifest.

    Only what the ORT/TensorRT loops implement is carried over (special ids, forced first
    and last tokens, the length budget); ``torch_generate`` passes exactly these to
    transformers, so the torch back end and the exported ones decode the same way.
    """
    config, gen = model.config, model.generation_config
    start = gen.decoder_start_token_id
    if start is None:
        start = config.decoder_start_token_id
    return {
        "decoder_start_token_id": int(start),
        "bos_token_id": _maybe_int(gen.bos_token_id, config.bos_token_id),
        "eos_token_id": _maybe_int(gen.eos_token_id, config.eos_token_id),
        "pad_token_id": _maybe_int(gen.pad_token_id, config.pad_token_id),
        "forced_bos_token_id": _maybe_int(gen.forced_bos_token_id, None),
        "forced_eos_token_id": _maybe_int(gen.forced_eos_token_id, None),
        "max_new_tokens_ratio": float(max_new_tokens_ratio),
        "min_new_tokens_budget": int(min_new_tokens_budget),
        "max_input_tokens": int(config.max_position_embeddings),
        "max_decoder_positions": int(config.max_position_embeddings),
    }


def _maybe_int(value, fallback):
    value = fallback if value is None else value
    if isinstance(value, list):  # HF allows several EOS ids; the loops use the first
        value = value[0]
    return None if value is None else int(value)


@torch.inference_mode()
def torch_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    settings: dict,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
) -> torch.Tensor:
    """transformers ``generate`` restricted to ``settings``: the reference the exports match."""
    from transformers import GenerationConfig

    if max_new_tokens is None:
        max_new_tokens = max_new_tokens_for(
            int(attention_mask.sum(dim=1).max()),
            settings["max_new_tokens_ratio"],
            settings["min_new_tokens_budget"],
            settings["max_decoder_positions"],
        )
    config = GenerationConfig(
        decoder_start_token_id=settings["decoder_start_token_id"],
        bos_token_id=settings["bos_token_id"],
        eos_token_id=settings["eos_token_id"],
        pad_token_id=settings["pad_token_id"],
        forced_bos_token_id=settings["forced_bos_token_id"],
        forced_eos_token_id=settings["forced_eos_token_id"],
        # Counted in decoder tokens with the start token, so this is max_new_tokens exactly.
        max_length=1 + max_new_tokens,
        num_beams=num_beams,
        do_sample=False,
        **({"early_stopping": True, "length_penalty": 1.0} if num_beams > 1 else {}),
    )
    return model.generate(
        input_ids=input_ids, attention_mask=attention_mask, generation_config=config
    )


# ------------------------------------------------------------------ export wrappers
def _split_heads(states: torch.Tensor, projection: nn.Linear, num_heads: int) -> torch.Tensor:
    batch, length, _ = states.shape
    return projection(states).view(batch, length, num_heads, -1).transpose(1, 2)


def _attend(query, key, value, additive_mask, attention: nn.Module) -> torch.Tensor:
    """Scaled dot-product attention in transformers' eager order (scale, add mask, softmax)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * attention.scaling + additive_mask
    weights = torch.softmax(scores, dim=-1)
    output = torch.matmul(weights, value).transpose(1, 2)
    batch, length = output.shape[:2]
    return attention.out_proj(output.reshape(batch, length, -1))


def _padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, keys) 1/0 mask -> additive (batch, 1, 1, keys) mask."""
    keep = attention_mask[:, None, None, :].to(torch.bool)
    return torch.where(keep, 0.0, MASK_VALUE).to(dtype)


def _feed_forward(layer: nn.Module, states: torch.Tensor) -> torch.Tensor:
    hidden = layer.fc2(layer.activation_fn(layer.fc1(states)))
    return layer.final_layer_norm(states + hidden)


def _positions(embedding: nn.Embedding, start, length: int) -> torch.Tensor:
    # BART's learned positions are offset by 2 (a fairseq leftover), see HF's module.
    return embedding.weight[torch.arange(length, device=embedding.weight.device) + start + 2]


class EncoderForExport(nn.Module):
    """input ids + mask -> encoder states and every decoder layer's cross keys/values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.encoder = model.get_encoder()
        self.decoder_layers = model.get_decoder().layers
        self.num_heads = model.config.decoder_attention_heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        encoder = self.encoder
        states = encoder.embed_tokens(input_ids)
        states = states + _positions(encoder.embed_positions, 0, input_ids.shape[1])
        states = encoder.layernorm_embedding(states)
        mask = _padding_mask(attention_mask, states.dtype)
        for layer in encoder.layers:
            attention = layer.self_attn
            query = _split_heads(states, attention.q_proj, attention.num_heads)
            key = _split_heads(states, attention.k_proj, attention.num_heads)
            value = _split_heads(states, attention.v_proj, attention.num_heads)
            attended = _attend(query, key, value, mask, attention)
            states = layer.self_attn_layer_norm(states + attended)
            states = _feed_forward(layer, states)
        cross = []
        for layer in self.decoder_layers:
            cross.append(_split_heads(states, layer.encoder_attn.k_proj, self.num_heads))
            cross.append(_split_heads(states, layer.encoder_attn.v_proj, self.num_heads))
        return (states, *cross)


class DecoderForExport(nn.Module):
    """New decoder tokens + past (may be empty) + cross keys/values -> logits + grown past."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.decoder = model.get_decoder()
        self.lm_head = model.lm_head
        self.register_buffer("final_logits_bias", model.final_logits_bias.clone())

    def forward(self, decoder_input_ids, encoder_attention_mask, past: list, cross: list):
        decoder = self.decoder
        past_length = past[0].shape[2]
        new_length = decoder_input_ids.shape[1]
        states = decoder.embed_tokens(decoder_input_ids)
        states = states + _positions(decoder.embed_positions, past_length, new_length)
        states = decoder.layernorm_embedding(states)
        # Query i sits at absolute position past_length + i and sees keys up to there.
        query_positions = torch.arange(new_length, device=states.device) + past_length
        key_positions = torch.arange(past_length + new_length, device=states.device)
        visible = key_positions[None, :] <= query_positions[:, None]
        causal = torch.where(visible, 0.0, MASK_VALUE).to(states.dtype)[None, None]
        cross_mask = _padding_mask(encoder_attention_mask, states.dtype)
        presents = []
        for index, layer in enumerate(decoder.layers):
            attention = layer.self_attn
            query = _split_heads(states, attention.q_proj, attention.num_heads)
            key = _split_heads(states, attention.k_proj, attention.num_heads)
            value = _split_heads(states, attention.v_proj, attention.num_heads)
            key = torch.cat([past[2 * index], key], dim=2)
            value = torch.cat([past[2 * index + 1], value], dim=2)
            presents += [key, value]
            states = layer.self_attn_layer_norm(
                states + _attend(query, key, value, causal, attention)
            )
            attention = layer.encoder_attn
            query = _split_heads(states, attention.q_proj, attention.num_heads)
            attended = _attend(query, cross[2 * index], cross[2 * index + 1], cross_mask, attention)
            states = layer.encoder_attn_layer_norm(states + attended)
            states = _feed_forward(layer, states)
        logits = self.lm_head(states) + self.final_logits_bias
        return (logits, *presents)


def _kv_names(prefix: str, num_layers: int) -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(num_layers) for kind in ("key", "value")]


# ------------------------------------------------------------------------- export
def export_onnx(
    model_path: str | Path,
    output_dir: str | Path,
    *,
    opset: int = 18,
    precision: str = "fp32",
    tolerance: float = 1e-4,
    fp16_tolerance: float = 5e-2,
    fp16_min_greedy_agreement: float = 0.95,
    int8_tolerance: float = 0.5,
    int8_min_greedy_agreement: float = 0.9,
    validation_queries: list[str] | None = None,
    validation_source: str = "built-in",
) -> dict:
    """Write ``encoder.onnx``, ``decoder.onnx``, the tokenizer, the model's decoding files
    (``decoding.json``, ``lexicon.tsv``, ``catalog.tsv``) and ``manifest.json`` into
    ``output_dir`` (a fresh directory the caller discards on failure) and validate them.

    The generation budget and every other decoding setting come from the trained model's
    ``decoding.json``, so the export decodes as the model was calibrated to.
    Raises ``ExportValidationError`` when any check fails. Returns the manifest.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_seq2seq(model_path)
    model, tokenizer = loaded.model, loaded.tokenizer
    config = model.config
    model_dir = Path(model_path) if Path(model_path).is_dir() else None
    decoding = (load_settings(model_dir) if model_dir else None) or DecodingSettings(
        mode="generate", constraint="none"
    )
    settings = generation_settings(
        model, decoding.max_new_tokens_ratio, decoding.min_new_tokens_budget
    )
    layers = config.decoder_layers
    names = {
        "past": _kv_names("past", layers),
        "cross": _kv_names("cross", layers),
        "present": _kv_names("present", layers),
    }
    progress = tqdm(total=5, desc="export onnx", unit="step", leave=False)
    progress.set_postfix_str("encoder")
    _export_encoder(model, output_dir / "encoder.onnx", opset, names["cross"])
    progress.update()
    progress.set_postfix_str("decoder")
    _export_decoder(model, output_dir / "decoder.onnx", opset, names)
    progress.update()
    if precision != "fp32":
        progress.set_postfix_str(precision)
        reduce_precision = convert_to_fp16 if precision == "fp16" else quantize_int8
        for graph in ("encoder.onnx", "decoder.onnx"):
            reduce_precision(output_dir / graph)
    progress.update()
    tokenizer.save_pretrained(str(output_dir))
    for name in (DECODING_FILE, LEXICON_FILE, CATALOG_FILE):
        if model_dir is not None and (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, output_dir / name)
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "source": {"path": loaded.source, "kind": loaded.source_kind},
        "training_metadata": loaded.metadata,
        "precision": precision,
        "opset": opset,
        "model": {
            "d_model": config.d_model,
            "encoder_layers": config.encoder_layers,
            "decoder_layers": layers,
            "vocab_size": config.vocab_size,
            "max_position_embeddings": config.max_position_embeddings,
        },
        "kv_cache": {
            "num_heads": config.decoder_attention_heads,
            "head_dim": config.d_model // config.decoder_attention_heads,
            "cross_outputs": names["cross"],
            **names,
        },
        "tokenizer": "tokenizer.json",
        "generation": settings,
        "graphs": {
            "encoder": {"file": "encoder.onnx"},
            "decoder": {"file": "decoder.onnx"},
        },
    }
    write_json_atomic(output_dir / MANIFEST_NAME, manifest)
    progress.set_postfix_str("validate")
    queries = validation_queries or builtin_validation_queries()
    # (tolerance, share of greedy outputs that must equal PyTorch's) per precision
    limits = {
        "fp32": (tolerance, 1.0),
        "fp16": (fp16_tolerance, fp16_min_greedy_agreement),
        "int8": (int8_tolerance, int8_min_greedy_agreement),
    }
    report = validate_export(
        output_dir,
        loaded,
        tolerance=limits[precision][0],
        queries=queries,
        min_greedy_agreement=limits[precision][1],
    )
    report["greedy"]["source"] = validation_source
    progress.update(2)
    progress.close()
    manifest["validation"] = report
    for graph in manifest["graphs"].values():
        graph.update(_graph_description(output_dir / graph["file"]))
    manifest["files"] = {
        path.name: _sha256(path)
        for path in sorted(output_dir.iterdir())
        if path.is_file() and path.name != MANIFEST_NAME
    }
    write_json_atomic(output_dir / MANIFEST_NAME, manifest)
    return manifest


def _example_inputs(model: nn.Module, batch: int = 3, length: int = 7):
    input_ids = torch.randint(4, model.config.vocab_size, (batch, length))
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, length - 2 :] = 0
    return input_ids, attention_mask


def _export_encoder(model: nn.Module, path: Path, opset: int, cross_names: list[str]) -> None:
    batch, source = torch.export.Dim("batch"), torch.export.Dim("source_length")
    _torch_onnx_export(
        EncoderForExport(model).eval(),
        _example_inputs(model),
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=["input_ids", "attention_mask"],
        output_names=["encoder_hidden_states", *cross_names],
        dynamic_shapes={
            "input_ids": {0: batch, 1: source},
            "attention_mask": {0: batch, 1: source},
        },
        external_data=_needs_external_data(model),
    )


def _export_decoder(model: nn.Module, path: Path, opset: int, names: dict[str, list[str]]) -> None:
    wrapper = EncoderForExport(model).eval()
    input_ids, attention_mask = _example_inputs(model)
    with torch.no_grad():
        cross = list(wrapper(input_ids, attention_mask)[1:])
    heads = model.config.decoder_attention_heads
    head_dim = model.config.d_model // heads
    batch = input_ids.shape[0]
    past = [torch.randn(batch, heads, 4, head_dim) for _ in names["past"]]
    decoder_input_ids = torch.randint(4, model.config.vocab_size, (batch, 2))
    dims = {
        "batch": torch.export.Dim("batch"),
        "source": torch.export.Dim("source_length"),
        "past": torch.export.Dim("past_length", min=0),
        "new": torch.export.Dim("new_length"),
    }
    _torch_onnx_export(
        DecoderForExport(model).eval(),
        (decoder_input_ids, attention_mask, past, cross),
        str(path),
        dynamo=True,
        opset_version=opset,
        input_names=[
            "decoder_input_ids",
            "encoder_attention_mask",
            *names["past"],
            *names["cross"],
        ],
        output_names=["logits", *names["present"]],
        dynamic_shapes={
            "decoder_input_ids": {0: dims["batch"], 1: dims["new"]},
            "encoder_attention_mask": {0: dims["batch"], 1: dims["source"]},
            "past": [{0: dims["batch"], 2: dims["past"]} for _ in past],
            "cross": [{0: dims["batch"], 2: dims["source"]} for _ in cross],
        },
        external_data=_needs_external_data(model),
    )


def _torch_onnx_export(*args: Any, **kwargs: Any) -> None:
    """``torch.onnx.export`` without the exporter's chatter, so the export summary is readable.

    Silenced: its progress lines; a warning per axis that several inputs share (every graph
    here shares ``batch``, and the decoder ``source_length`` and ``past_length``, on
    purpose); a log line per torchvision operator it cannot register (spellfix does not
    use torchvision); and a deprecation inside torch's own pytree code.
    """
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"# The axis name: .* will not be used", category=UserWarning
            )
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            torch.onnx.export(*args, verbose=False, **kwargs)
    finally:
        registration.setLevel(level)


def _needs_external_data(model: nn.Module) -> bool:
    # A protobuf holds at most 2 GB; below that one self-contained file is easier to ship.
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return size > 1_800_000_000


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


def _graph_description(path: Path) -> dict:
    """Input/output names, element types and (symbolic) shapes, for the manifest."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph

    def describe(values) -> list[dict]:
        rows = []
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            rows.append({"name": value.name, "dtype": dtype, "shape": shape})
        return rows

    return {"inputs": describe(graph.input), "outputs": describe(graph.output)}


# ---------------------------------------------------------------------- validation
def builtin_validation_queries(count: int = 200, seed: int = 0) -> list[str]:
    """Deterministic queries when no test split is given: real-looking ones, then noise.

    The noise strings (letters, digits, accents, odd spacing) exercise tokenizer paths a
    clean list would not; greedy equality is a property of the graphs, not of the text.
    """
    base = [
        "queen bohemian rapsody", "the beatles let it be", "news podcasts", "beyonce halo",
        "dont stop believin", "taylr swift shake it off", "led zepelin stairway to heaven",
        "daft punk get lucky", "adele roling in the deep", "nirvana smells like teen spirit",
        "micheal jackson thriller", "coldplay yelow", "bob marly one love",
        "the rolling stones paint it blak", "eminem lose yourself", "abba dancing quen",
        "pink floyd wish you were here", "radiohead creep", "billie eilish bad guy",
        "ed sheeran shape of you", "true crime podcast", "lofi hip hop radio",
        "beyoncé crazy in love", "sigur rós hoppípolla", "café del mar", "motörhead ace of spades",
        "björk army of me", "r.e.m. losing my religion", "ac/dc back in black", "2pac changes",
        "the weekend blinding lights", "drake gods plan", "kendrick lamar humble",
        "mozart requiem", "beethoven symphony 9", "jazz for studying", "rain sounds for sleep",
        "arctic monkeys do i wanna know", "fleetwood mac dreams", "guns n roses sweet child",
    ]  # fmt: skip
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + "      0123456789éüñ'"
    queries = list(base)
    while len(queries) < count:
        length = rng.randint(1, 40)
        queries.append("".join(rng.choice(alphabet) for _ in range(length)).strip() or "a")
    return queries[:count]


def validate_export(
    export_dir: str | Path,
    loaded: LoadedModel,
    tolerance: float,
    queries: list[str],
    min_greedy_agreement: float = 1.0,
    batch_size: int = 32,
) -> dict:
    """Compare the exported graphs with the PyTorch model; raise on any failed check.

    Tensor check: encoder states, full-sequence logits (empty past), step logits (with a
    past) and the returned cache, on batches of 1, 4 and 16 queries of mixed length (so
    padded rows are included) and a 2-row batch of random ids at the model's longest
    input; reports the max abs difference per output. Greedy check: token-identical
    output to transformers ``generate`` on every query (fp32).
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    runner = OrtSeq2Seq(export_dir, intra_op_threads=1)
    settings = runner.generation
    if len(queries) < 1:
        raise ExportValidationError("validation needs at least one query")
    differences: dict[str, float] = {}
    for input_ids, attention_mask in _tensor_check_batches(tokenizer, queries, settings, model):
        for name, value in _tensor_differences(
            runner, model, input_ids, attention_mask, settings
        ).items():
            differences[name] = max(differences.get(name, 0.0), value)
    failed = {name: diff for name, diff in differences.items() if not diff <= tolerance}
    if failed:
        worst = max(failed, key=failed.get)
        raise ExportValidationError(
            f"ONNX output '{worst}' differs from PyTorch by {failed[worst]:.3g} "
            f"(tolerance {tolerance:g}); all differences: {_fmt(differences)}"
        )

    identical, mismatches = 0, []
    for start in tqdm(range(0, len(queries), batch_size), desc="validate greedy", leave=False):
        batch = [q for q in queries[start : start + batch_size] if q.strip()]
        if not batch:
            continue
        encoded = tokenizer(
            batch, return_tensors="pt", padding=True, truncation=True,
            max_length=settings["max_input_tokens"],
        )  # fmt: skip
        expected = torch_generate(model, encoded["input_ids"], encoded["attention_mask"], settings)
        actual = runner.generate(encoded["input_ids"].numpy(), encoded["attention_mask"].numpy())
        for row, query in enumerate(batch):
            want = _trim(expected[row].tolist(), settings["pad_token_id"])
            got = _trim(actual[row].tolist(), settings["pad_token_id"])
            if want == got:
                identical += 1
            else:
                mismatches.append(query)
    total = identical + len(mismatches)
    agreement = identical / total
    if agreement < min_greedy_agreement:
        raise ExportValidationError(
            f"greedy output differs from PyTorch on {len(mismatches)}/{total} queries "
            f"(first: {mismatches[0]!r}); required agreement {min_greedy_agreement:.0%}"
        )
    return {
        "tolerance": tolerance,
        "max_abs_diff": differences,
        "greedy": {"queries": total, "identical": identical, "mismatches": mismatches[:10]},
        "corrections": _compare_corrections(
            export_dir, runner, loaded, queries, min_greedy_agreement
        ),
    }


def _compare_corrections(
    export_dir: str | Path,
    runner: OrtSeq2Seq,
    loaded: LoadedModel,
    queries: list[str],
    min_agreement: float,
) -> dict:
    """Full decoding (lexicon, confidence, thresholds) on ONNX Runtime against PyTorch.

    What a user gets is the decoded correction, so that is what must agree: every query
    in fp32, ``min_agreement`` of them in reduced precision.
    """
    from spellfix.correct import TorchRunner

    exported = load_decoder(export_dir, runner)
    reference = (
        exported.with_scorer(
            TorchRunner(loaded.model, loaded.tokenizer, settings=exported.settings)
        )
        if isinstance(exported, GenerativeDecoder)
        else exported.with_scorer(
            TorchRunner(loaded.model, loaded.tokenizer, settings=exported.settings).score
        )
    )
    got, want = exported.correct(queries), reference.correct(queries)
    mismatches = [g.query for g, w in zip(got, want, strict=True) if g.correction != w.correction]
    agreement = 1 - len(mismatches) / len(queries)
    if agreement < min_agreement:
        raise ExportValidationError(
            f"decoded corrections differ from PyTorch on {len(mismatches)}/{len(queries)} "
            f"queries (first: {mismatches[0]!r}); required agreement {min_agreement:.0%}"
        )
    return {
        "mode": exported.settings.mode,
        "queries": len(queries),
        "identical": len(queries) - len(mismatches),
        "mismatches": mismatches[:10],
        "max_confidence_diff": max(
            abs(g.confidence - w.confidence) for g, w in zip(got, want, strict=True)
        ),
    }


def _fmt(differences: dict[str, float]) -> str:
    return ", ".join(f"{name}={value:.2g}" for name, value in differences.items())


def _trim(ids: list[int], pad: int) -> list[int]:
    while ids and ids[-1] == pad:
        ids.pop()
    return ids


def _tensor_check_batches(tokenizer, queries: list[str], settings: dict, model: nn.Module):
    texts = [q for q in queries if q.strip()]
    by_length = sorted(texts, key=len)
    # Mixed lengths in one batch guarantee padded rows: take from both ends of the sort.
    mixed = [by_length[i // 2] if i % 2 == 0 else by_length[-1 - i // 2] for i in range(len(texts))]
    for size in (1, 4, 16):
        encoded = tokenizer(
            mixed[:size], return_tensors="pt", padding=True, truncation=True,
            max_length=settings["max_input_tokens"],
        )  # fmt: skip
        yield encoded["input_ids"], encoded["attention_mask"]
    generator = torch.Generator().manual_seed(0)
    longest = settings["max_input_tokens"]
    input_ids = torch.randint(4, model.config.vocab_size, (2, longest), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, longest // 2 :] = 0
    input_ids[1, longest // 2 :] = settings["pad_token_id"]
    yield input_ids, attention_mask


@torch.inference_mode()
def _tensor_differences(runner: OrtSeq2Seq, model, input_ids, attention_mask, settings) -> dict:
    """Max abs difference per output between ORT and transformers for one batch."""
    ids_np, mask_np = input_ids.numpy(), attention_mask.numpy()
    encoder_outputs = runner.encoder.run(None, {"input_ids": ids_np, "attention_mask": mask_np})
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    hidden = hidden.last_hidden_state
    diffs = {"encoder_hidden_states": _max_diff(encoder_outputs[0], hidden)}

    # Teacher-force a real continuation (the model's own greedy output) through the decoder.
    decoder_ids = torch_generate(model, input_ids, attention_mask, settings, max_new_tokens=12)
    reference = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_ids,
        use_cache=True,
    )
    cross = encoder_outputs[1:]
    kv = runner.kv
    full = runner.decoder.run(
        ["logits", *kv["present"]],
        {
            "decoder_input_ids": decoder_ids.numpy(),
            "encoder_attention_mask": mask_np,
            **dict(zip(kv["past"], runner._empty_past(len(ids_np)), strict=True)),
            **dict(zip(kv["cross"], cross, strict=True)),
        },
    )
    diffs["logits"] = _max_diff(full[0], reference.logits)
    cache = reference.cache.self_attention_cache
    reference_present = [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]
    diffs["present"] = max(
        _max_diff(ort_value, ref)
        for ort_value, ref in zip(full[1:], reference_present, strict=True)
    )

    # Split the sequence: the first half with an empty past, the rest with the cache.
    split = max(1, decoder_ids.shape[1] // 2)
    first = runner.decoder.run(
        kv["present"],
        {
            "decoder_input_ids": decoder_ids[:, :split].numpy(),
            "encoder_attention_mask": mask_np,
            **dict(zip(kv["past"], runner._empty_past(len(ids_np)), strict=True)),
            **dict(zip(kv["cross"], cross, strict=True)),
        },
    )
    if split < decoder_ids.shape[1]:
        second = runner.decoder.run(
            ["logits"],
            {
                "decoder_input_ids": decoder_ids[:, split:].numpy(),
                "encoder_attention_mask": mask_np,
                **dict(zip(kv["past"], first, strict=True)),
                **dict(zip(kv["cross"], cross, strict=True)),
            },
        )
        diffs["logits_with_past"] = _max_diff(second[0], reference.logits[:, split:])
    return diffs


def _max_diff(actual: np.ndarray, expected: torch.Tensor) -> float:
    difference = np.abs(actual.astype(np.float64) - expected.double().numpy())
    return float(np.nan_to_num(difference, nan=math.inf).max())


# ------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
