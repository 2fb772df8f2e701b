"""Prove an export: its graphs compute what the PyTorch model computes, or it fails.

An export that disagrees with the model it came from must never reach a user, and the
disagreement must say where it is. ``validate_export`` checks three things, each against
the PyTorch model itself: the tensors of every graph output (encoder states, logits with
and without a cache, the cache) within a stated tolerance; greedy token ids, query by
query, against ``spellfix.generation.torch_generate``; and the decoded corrections
(lexicon, confidence, thresholds) that a user finally sees. ``spellfix.export.onnx`` runs
it before an export is kept, and ``spellfix.export.tensorrt`` shares its queries and its
error.
"""

from __future__ import annotations

import math
import random
import string
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from spellfix.correct import TorchRunner
from spellfix.decoding import GenerativeDecoder, load_decoder
from spellfix.export.ort_runner import OrtSeq2Seq
from spellfix.generation import torch_generate
from spellfix.loading import LoadedModel


class ExportValidationError(RuntimeError):
    """The exported graphs do not compute what the PyTorch model computes."""


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
