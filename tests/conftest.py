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
    _teach(model, tokenizer, [(text, text) for text in texts], steps)


def _teach(model, tokenizer, pairs: list[tuple[str, str]], steps: int, batch_size: int = 0) -> None:
    """A few hundred AdamW steps on (source, target) pairs, batch after batch."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    size = batch_size or len(pairs)
    for step in range(steps):
        start = (step * size) % len(pairs)
        chunk = (pairs[start:] + pairs)[:size]
        batch = tokenizer([s for s, _ in chunk], return_tensors="pt", padding=True)
        target = tokenizer([t for _, t in chunk], return_tensors="pt", padding=True)
        labels = target["input_ids"].masked_fill(target["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


# Words of the small lexicon the channel-model fixture decodes with.
CHANNEL_LEXICON_WORDS = 3000


@pytest.fixture(scope="session")
def tiny_channel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny noisy-channel corrector, saved as training saves one: weights, a character
    tokenizer, ``lexicon.tsv`` (the 3,000 most frequent built-in words with their word
    pairs) and ``decoding.json`` (channel mode, default weights and thresholds).

    The model learns P(typo | word) for a few seconds from the default noise profile, so
    its scores are real, if rough; tests of what decoding guarantees use it, tests of
    how good the corrections are use a trained run.
    """
    import random

    import torch

    from data_synth.corpus import builtin_frequencies
    from data_synth.noise.model import NoiseModel
    from spellfix.decoding import DecodingSettings, Lexicon, save_settings
    from spellfix.model import build_bart
    from spellfix.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tiny_channel")
    words, pairs = builtin_frequencies()
    top = dict(sorted(words.items(), key=lambda item: -item[1])[:CHANNEL_LEXICON_WORDS])
    lexicon = Lexicon(
        {w: float(c) for w, c in top.items()},
        {p: float(c) for p, c in pairs.items() if p[0] in top and p[1] in top},
    )
    lexicon.save(out / "lexicon.tsv")
    save_settings(DecodingSettings(mode="channel"), out)
    texts = list(top)[:1500]
    noise = NoiseModel.from_profile("default", seed=0)
    training = [(t, c.noisy) for t, c in zip(texts, noise.corrupt_batch(texts), strict=True)]
    training += [(t, t) for t in texts[:300]]
    random.Random(0).shuffle(training)
    tokenizer = train_tokenizer(texts, vocab_size=261, min_frequency=1)
    torch.manual_seed(0)
    shape = {"d_model": 48, "encoder_layers": 1, "decoder_layers": 1, "encoder_ffn_dim": 96}
    shape |= {"decoder_ffn_dim": 96, "max_position_embeddings": 128}
    shape |= {"encoder_attention_heads": 4, "decoder_attention_heads": 4}
    model = build_bart(shape, None, tokenizer)
    _teach(model, tokenizer, training, steps=250, batch_size=128)
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def channel_queries(tiny_channel_dir: Path) -> list[str]:
    """200 queries of the channel fixture's lexicon words, most with a synthetic typo."""
    import random

    from data_synth.noise.model import NoiseModel
    from spellfix.decoding import Lexicon

    words = sorted(Lexicon.load(tiny_channel_dir / "lexicon.tsv").unigrams)
    rng = random.Random(0)
    clean = [" ".join(rng.sample(words, rng.randint(1, 4))) for _ in range(200)]
    return [c.noisy for c in NoiseModel.from_profile("default", seed=0).corrupt_batch(clean)]
