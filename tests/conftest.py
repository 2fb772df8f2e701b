"""Fixtures shared across the suite: small real models built from a config, never a hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores are shared by every process of a test run; one thread each keeps torch
# from collapsing under contention (DDP tests start several processes).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

SAMPLE_QUERIES = [
    "queen bohemian rhapsody",
    "the beatles let it be",
    "news podcasts",
    "beyoncé halo",
    "don't stop believin",
    "taylor swift shake it off",
    "led zeppelin stairway to heaven",
    "daft punk get lucky",
    "adele rolling in the deep",
    "nirvana smells like teen spirit",
    "michael jackson thriller",
    "coldplay yellow",
]


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only reference data beside the project; tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present on this machine")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny BART with a corpus-trained tokenizer, saved HF-style.

    It is trained for a few seconds to copy its input, so greedy decoding emits real,
    varied tokens (an untrained model stops at once, which would let a broken decoder
    loop pass any comparison). Tests about correction quality train their own model.
    """
    import torch

    from spellfix.model import build_bart
    from spellfix.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tiny_model")
    tokenizer = train_tokenizer(SAMPLE_QUERIES * 4, vocab_size=400, min_frequency=1)
    torch.manual_seed(0)
    shape = {"d_model": 32, "encoder_layers": 2, "decoder_layers": 2, "encoder_ffn_dim": 64}
    shape |= {"decoder_ffn_dim": 64, "max_position_embeddings": 64}
    shape |= {"encoder_attention_heads": 4, "decoder_attention_heads": 4}
    model = build_bart(shape, None, tokenizer)
    _teach_to_copy(model, tokenizer, SAMPLE_QUERIES, steps=150)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _teach_to_copy(model, tokenizer, texts: list[str], steps: int) -> None:
    import torch

    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
