"""Calibration: thresholds that hold the harm budget on correct queries, whatever is hidden.

The stand-in channel of conftest (decisions follow edit distance) keeps them easy to
reason about, as in test_decoding.
"""

from __future__ import annotations

import pytest

from spellfix.calibrate import calibrate
from spellfix.decoding import DecodingSettings, Lexicon, NoisyChannelDecoder

WORDS = {
    "the": 1000.0,
    "rain": 80.0,
    "in": 950.0,
    "spain": 40.0,
    "main": 300.0,
    "train": 120.0,
    "new": 400.0,
    "york": 300.0,
    "city": 350.0,
    "good": 400.0,
    "morning": 200.0,
}
PAIRS = {("rain", "in"): 10.0, ("in", "spain"): 20.0, ("new", "york"): 250.0}
PAIRS |= {("york", "city"): 200.0, ("good", "morning"): 150.0, ("the", "rain"): 30.0}


@pytest.fixture
def decoder_for(edit_channel):
    def build(words: dict[str, float], web: dict[str, float] | None = None):
        return NoisyChannelDecoder(Lexicon(words, PAIRS, web), DecodingSettings(), edit_channel)

    return build


def test_a_hidden_word_is_priced_as_a_web_word_of_its_own_frequency(decoder_for):
    # Calibration hides words to stand for the names a lexicon lacks; such words are
    # mostly on the web, so a hidden word costs what a web word of its frequency costs.
    hiding = decoder_for(WORDS)
    hiding.hidden = frozenset({"spain"})
    without = {word: count for word, count in WORDS.items() if word != "spain"}
    frequency = WORDS["spain"] / sum(WORDS.values())
    on_the_web = decoder_for(without, web={"spain": frequency})
    for query in ("rain in spain", "the rain in spain", "spain"):
        hidden_result = hiding.correct([query])[0]
        web_result = on_the_web.correct([query])[0]
        assert hidden_result.correction == web_result.correction
        assert hidden_result.confidence == pytest.approx(web_result.confidence, abs=1e-2)


def test_calibration_holds_the_harm_budget_on_correct_queries_it_never_saw_hidden(decoder_for):
    clean = ["new york city", "good morning", "the rain in spain", "the train"] * 30
    noisy = ["new yrok city", "good mornign", "the rain in spian", "the trian"] * 30
    decoder = decoder_for(WORDS)
    report = calibrate(decoder, noisy, clean, target_overcorrection=0.01, seed=0)
    assert report.overcorrection <= 0.01
    assert decoder.hidden == frozenset()  # the decoder is handed back as it came
    decoder.settings = report.settings
    assert decoder.correct(["new yrok city"])[0].correction == "new york city"
    assert [c.correction for c in decoder.correct(clean[:4])] == clean[:4]
