"""Load a trained BART corrector: the one home for reading a model from disk.

Export, the PyTorch back end of ``spellfix.correct`` and everything built on them (the
evaluation, the baselines' model systems) need the same model from the same files, with
the same checks and the same one-line errors, so they all come here.

Two sources are accepted: the HF model directory training writes (weights in
safetensors only, beside ``config.json``, the tokenizer and ``spellfix.json``), and a
Lightning ``.ckpt``, read with ``weights_only=True`` as a plain state dict plus the
``model_config``/``tokenizer_dir`` hyper-parameters. Neither path imports training code,
so export and serving stay independent of Lightning and of ``spellfix.model``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class LoadedModel:
    """A model ready for export or for the torch backend, with where it came from."""

    model: nn.Module
    tokenizer: object  # transformers PreTrainedTokenizerBase
    source: str
    source_kind: str  # "hf_dir" or "lightning_ckpt"
    metadata: dict | None  # spellfix.json written by training, when present


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
    """Rebuild the HF model from a checkpoint's config and ``model.``-prefixed weights."""
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
    """Refuse another architecture: the export wrappers and the decoding loops are BART's."""
    if type(model).__name__ != "BartForConditionalGeneration":
        raise TypeError(f"{path}: {type(model).__name__} is not supported; export handles BART")
    return model
