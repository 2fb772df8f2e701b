"""The lexicon a model is trained with: its web words are kept when typed, never proposed."""

from __future__ import annotations

import math

import pytest

from spellfix.decoding import Lexicon, split_words
from spellfix.lexicon import build_lexicon, web_words


def test_web_words_hold_the_names_and_slang_a_dictionary_lacks():
    words = web_words()
    english = build_lexicon([], builtin_corpus=True, english=True, corpus_share=0.5, web=False)
    for word in ("kanye", "beyonce", "adsense", "ppl", "mom"):
        assert word in words and word not in english.unigrams, word
    # Only what a query's words can be (letters, lower case, no apostrophes or digits),
    # each exactly the key a query's word gets.
    assert all([w.key for w in split_words(word)] == [word] for word in words)
    assert not {"don't", "mp3", "東京", "Paris"} & set(words)


def test_build_lexicon_adds_web_words_apart_from_the_counts(tmp_path):
    catalog = tmp_path / "catalog.txt"
    catalog.write_text("Zorblax Quintet\n", encoding="utf-8")
    built = build_lexicon(
        ["new york city"], builtin_corpus=False, english=True, corpus_share=0.5, files=[catalog]
    )
    assert "kanye" in built.web and "kanye" not in built.unigrams
    # Counted words (English, the corpus, the catalog) are not web words as well.
    assert not {"the", "york", "zorblax"} & set(built.web)
    assert {"zorblax", "york"} <= set(built.unigrams)
    saved = Lexicon.load(built.save(tmp_path / "lexicon.tsv"))
    assert saved.web.keys() == built.web.keys()
    assert saved.web["kanye"] == pytest.approx(built.web["kanye"], rel=1e-5)
    bare = build_lexicon(
        ["new york"], builtin_corpus=False, english=False, corpus_share=0.5, web=False
    )
    assert bare.web == {}


def test_words_the_dictionary_undercounts_get_their_web_frequency():
    plain = build_lexicon(
        [], builtin_corpus=True, english=True, corpus_share=0.5, web_count_discount=None
    )
    lifted = build_lexicon([], builtin_corpus=True, english=True, corpus_share=0.5)
    web = web_words()

    def logprob(lexicon: Lexicon, word: str) -> float:
        return lexicon.unigram_logprob(word, unknown=-30.0)

    for word in ("iphone", "youtube", "dont"):
        assert logprob(lifted, word) > logprob(plain, word) + 2, word
        assert logprob(lifted, word) == pytest.approx(math.log(web[word]) - 1.0, abs=0.05)
    for word in ("the", "beatles", "rhapsody"):  # the sources agree: nothing to lift
        assert logprob(lifted, word) == pytest.approx(logprob(plain, word), abs=0.05), word
    with pytest.raises(ValueError, match="web_count_discount"):
        build_lexicon(
            [], builtin_corpus=True, english=True, corpus_share=0.5, web_count_discount=-1
        )
