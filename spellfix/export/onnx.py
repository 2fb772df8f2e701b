"""Export a trained BART corrector to ONNX: an encoder and a KV-cache decoder graph.

Why two graphs and no ``If``: TensorRT builds one engine per static control flow, so the
decoder takes its self-attention past as an input that is simply empty (length 0) on the
first step. The cross-attention keys/values depend only on the encoder output, so the
encoder graph computes them once per query and the decoder receives them as inputs.

The graphs are traced from thin wrappers over the HF modules (the same ``nn.Linear`` and
``nn.LayerNorm`` objects, the same attention arithmetic as transformers' eager path), with
the cache as plain tensors: this keeps transformers' cache objects and mask helpers out of
the trace. ``export_onnx`` then reduces precision if asked (``spellfix.export.precision``)
and keeps nothing that ``spellfix.export.validation`` has not checked against the HF
model itself. The model comes from ``spellfix.loading``, so export never imports
training code.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from data_synth.files import write_json_atomic
from spellfix.decoding import (
    CATALOG_FILE,
    DECODING_FILE,
    LEXICON_FILE,
    DecodingSettings,
    load_settings,
)
from spellfix.export.ort_runner import MANIFEST_NAME
from spellfix.export.precision import convert_to_fp16, quantize_int8
from spellfix.export.validation import builtin_validation_queries, validate_export
from spellfix.generation import generation_settings
from spellfix.loading import load_seq2seq

MANIFEST_FORMAT = "spellfix-onnx"
MANIFEST_VERSION = 1
# Additive attention mask for padded keys. HF uses finfo(dtype).min; float16's minimum
# survives an fp16 conversion of the graph, and exp() of it is exactly 0 either way.
MASK_VALUE = torch.finfo(torch.float16).min


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


# ------------------------------------------------------------------------- files
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
