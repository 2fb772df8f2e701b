"""The corpus-trained tokenizer: BART's special ids, nothing out of vocabulary, a word
tokenized alike wherever it stands, and the same tokenizer after a save and a load."""

from __future__ import annotations

from pathlib import Path

import pytest

from spellfix.tokenizer import decode_clean, load_tokenizer, train_tokenizer

CORPUS = ["the beatles let it be", "queen bohemian rhapsody", "beatles yesterday"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300, min_frequency=1)


def test_special_tokens_have_bart_ids_and_wrap_every_query(tokenizer) -> None:
    # BART checkpoints and generation configs assume these ids (decoder start = eos = 2).
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in ("<s>", "<pad>", "</s>")}
    assert ids == {"<s>": 0, "<pad>": 1, "</s>": 2}
    assert tokenizer.convert_tokens_to_ids("<unk>") == 3
    encoded = tokenizer("the beatles")["input_ids"]
    assert encoded[0] == 0 and encoded[-1] == 2


@pytest.mark.parametrize(
    "text", ["the beatles", "teh beatels", "beyoncé halo", "مرحبا", "🎵 song 42", "x" * 50]
)
def test_any_text_round_trips_with_no_unknown_token(tokenizer, text: str) -> None:
    """Byte-level: a typo, an accent, another script or an emoji the corpus never held is
    still encoded exactly, so the model sees what the user typed."""
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert decode_clean(tokenizer, [ids]) == [text]


def test_a_word_is_the_same_pieces_at_the_start_and_inside_a_query(tokenizer) -> None:
    def pieces(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert pieces("beatles") == pieces("the beatles")[-len(pieces("beatles")) :]
    assert len(pieces("beatles")) < len("beatles"), "a corpus word is merged into pieces"


def test_a_saved_tokenizer_loads_back_and_encodes_alike(tokenizer, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    for text in ["teh beatles", "beyoncé 🎵"]:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.pad_token_id == 1 and loaded.eos_token_id == 2
