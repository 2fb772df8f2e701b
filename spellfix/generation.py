"""Greedy and beam generation on PyTorch, restricted to what every back end implements.

The exported back ends (ONNX Runtime, TensorRT, Triton) run their own decoding loops,
which know only a few settings: the special token ids, the forced first and last tokens
and the length budget. ``generation_settings`` reads exactly those from a model (they go
into the export manifest), and ``torch_generate`` runs transformers ``generate`` with
exactly those, so the PyTorch back end decodes as the exports do and export validation
has a reference to match token for token. ``spellfix.decoding`` stays numpy-only (it is
copied into the Triton server); this module is its PyTorch counterpart.
"""

from __future__ import annotations

import torch
from torch import nn

from spellfix.decoding import max_new_tokens_for


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


def _maybe_int(value: int | list[int] | None, fallback: int | None) -> int | None:
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
