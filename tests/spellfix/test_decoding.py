"""Decoding guarantees that hold whatever the model: do no harm, only real words, any input.

A stand-in channel (log P(typed | word) falls with the edit distance) makes the
decisions easy to reason about; the model-backed agreement tests live beside the back
ends (test_correct, export, serve).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spellfix.decoding import (
    DecodingSettings,
    Lexicon,
    NoisyChannelDecoder,
    load_decoder,
    osa_distance,
    split_words,
    transfer_case,
)

WORDS = {
    "the": 1000,
    "new": 400,
    "york": 300,
    "city": 350,
    "queen": 120,
    "bohemian": 20,
    "rhapsody": 15,
    "best": 300,
    "time": 500,
    "what": 600,
    "is": 900,
    "it": 900,
    "good": 400,
    "morning": 200,
    "because": 300,
    "weather": 100,
    "whether": 90,
    "rain": 80,
    "in": 950,
    "spain": 40,
    "dance": 60,
    "floor": 70,
    "some": 300,
    "people": 250,
}
PAIRS = {("new", "york"): 250, ("york", "city"): 200, ("good", "morning"): 150}
PAIRS |= {("queen", "bohemian"): 5, ("bohemian", "rhapsody"): 12, ("the", "best"): 100}
PAIRS |= {("dance", "floor"): 30, ("in", "spain"): 20, ("rain", "in"): 10}


@pytest.fixture
def lexicon() -> Lexicon:
    return Lexicon({w: float(c) for w, c in WORDS.items()}, {p: float(c) for p, c in PAIRS.items()})


@pytest.fixture
def decoder(lexicon: Lexicon, edit_channel) -> NoisyChannelDecoder:
    return NoisyChannelDecoder(lexicon, DecodingSettings(unknown_word_logprob=-8.0), edit_channel)


def corrected(decoder: NoisyChannelDecoder, text: str) -> str:
    return decoder.correct([text])[0].correction


def test_typos_are_corrected_and_case_is_kept(decoder):
    assert corrected(decoder, "new yrok city") == "new york city"
    assert corrected(decoder, "Teh best") == "The best"
    assert corrected(decoder, "NEW YROK CITY") == "NEW YORK CITY"
    assert corrected(decoder, "good mornign") == "good morning"


def test_correct_queries_come_back_unchanged(decoder):
    for query in ["new york city", "the best", "what time is it", "good morning"]:
        result = decoder.correct([query])[0]
        assert result.correction == query
        assert result.suggestion is None


def test_an_unknown_word_is_copied_not_replaced_by_a_known_one(decoder):
    # "zorblax" is far from every lexicon word; "Rainn" is a capitalized name one edit
    # from "rain" and is kept as a name.
    assert corrected(decoder, "zorblax new york") == "zorblax new york"
    assert corrected(decoder, "queen Rainn") == "queen Rainn"


def test_a_sixty_word_correct_input_comes_back_intact(decoder):
    words = list(WORDS)
    text = " ".join(words[i % len(words)] for i in range(60))
    assert corrected(decoder, text) == text


def test_symbols_other_scripts_and_spacing_survive(decoder):
    odd = ["東京 new york", "مرحبا", "rain 🌧️ in  spain", "#1 hits 2024", "queen & the best!"]
    for query in odd:
        assert corrected(decoder, query) == query
    assert corrected(decoder, "  new yrok,  city ") == "  new york,  city "


def test_a_word_typed_with_accents_is_copied(decoder):
    # One edit from "york" and "time", but accents are typed on purpose.
    assert corrected(decoder, "new yörk") == "new yörk"
    assert corrected(decoder, "what tïme is it") == "what tïme is it"
    assert corrected(decoder, "new yrok") == "new york"


def test_acronyms_and_elided_words_are_left_alone():
    kinds = {w.text: w.key for w in split_words("DJ Khaled featuring Lil' Kim and nothin' else")}
    assert kinds["DJ"] is None and kinds["Lil"] is None and kinds["nothin"] is None
    assert kinds["featuring"] == "featuring" and kinds["Khaled"] == "khaled"
    # In an all-capitals query the capitals are not acronyms.
    assert [w.key for w in split_words("NEW YROK")] == ["new", "yrok"]


def test_a_catalog_acronym_typed_in_lower_case_is_a_word_to_keep(lexicon, edit_channel):
    catalog = Lexicon.from_texts(["Taki Taki DJ Snake"])
    assert {"dj", "snake", "taki"} <= set(catalog.unigrams)
    # Without the catalog "dj" is an unknown word one edit from "j"; with it, it stays.
    mixed = Lexicon.mixed([(lexicon, 0.5), (catalog, 0.5)])
    decoder = NoisyChannelDecoder(mixed, DecodingSettings(unknown_word_logprob=-8.0), edit_channel)
    assert corrected(decoder, "taki tak dj snake") == "taki taki dj snake"


def test_a_capitalized_unknown_word_is_a_name_unless_the_catalog_knows_it(lexicon, edit_channel):
    catalog = Lexicon.from_texts(["Despacito Luis Fonsi"])
    settings = DecodingSettings(unknown_word_logprob=-8.0)
    plain = NoisyChannelDecoder(lexicon, settings, edit_channel)
    assert corrected(plain, "Despasito Luis Fonsi") == "Despasito Luis Fonsi"
    music = NoisyChannelDecoder(
        lexicon, settings.updated(constraint="catalog"), edit_channel, catalog
    )
    assert corrected(music, "Despasito Luis Fonsi") == "Despacito Luis Fonsi"
    assert corrected(music, "Kanye West") == "Kanye West"  # a name nobody listed: kept


def test_merged_and_split_words(decoder):
    assert corrected(decoder, "be cause") == "because"
    assert corrected(decoder, "dancefloor") == "dance floor"


def test_abstention_returns_the_query_and_offers_a_suggestion(lexicon, edit_channel):
    strict = DecodingSettings(unknown_word_logprob=-8.0, apply_threshold=1.0, suggest_threshold=0.3)
    decoder = NoisyChannelDecoder(lexicon, strict, edit_channel)
    result = decoder.correct(["new yrok city"])[0]
    assert result.correction == "new yrok city"
    assert result.suggestion == "new york city"
    assert 0.0 <= result.confidence < 1.0


def test_every_correction_carries_a_probability(decoder):
    for result in decoder.correct(["new yrok city", "new york city", "", "zzz"]):
        assert 0.0 <= result.confidence <= 1.0


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=40))
def test_output_words_come_from_the_lexicon_or_the_input(edit_channel, text):
    lexicon = Lexicon({w: float(c) for w, c in WORDS.items()}, dict(PAIRS))
    decoder = NoisyChannelDecoder(
        lexicon, DecodingSettings(unknown_word_logprob=-8.0, apply_threshold=0.5), edit_channel
    )
    result = decoder.correct([text])[0]
    allowed = set(WORDS) | set(text.split())
    assert set(result.correction.split()) <= allowed
    if result.suggestion is not None:
        assert set(result.suggestion.split()) <= allowed


def test_osa_distance_counts_a_swap_once():
    assert osa_distance("teh", "the", 2) == 1
    assert osa_distance("receive", "recieve", 2) == 1
    assert osa_distance("abc", "xyz", 1) == 2  # stops once past the limit


def test_transfer_case():
    assert transfer_case("Teh", "the") == "The"
    assert transfer_case("NEWYORK", "new york") == "NEW YORK"
    assert transfer_case("Newyork", "new york") == "New York"


def test_nearest_finds_words_within_the_distance(lexicon):
    found = dict(lexicon.nearest("wether", 2, 10))
    assert found["weather"] == 1 and found["whether"] == 1
    assert "time" not in found


def test_a_typo_spelled_by_ear_is_found_beyond_the_edit_distance(lexicon, edit_channel):
    # "peepul" and "bohimeean" are three edits from the words meant, out of the
    # two-edit search, but share their Metaphone keys.
    assert {w for w, _ in lexicon.nearest("peepul", 2, 10)} == set()
    assert lexicon.sounds_like("peepul") == ["people"]
    by_ear = NoisyChannelDecoder(lexicon, DecodingSettings(unknown_word_logprob=-8.0), edit_channel)
    by_edits = NoisyChannelDecoder(
        lexicon, DecodingSettings(unknown_word_logprob=-8.0, phonetic_candidates=0), edit_channel
    )
    assert corrected(by_ear, "peepul in spain") == "people in spain"
    assert corrected(by_ear, "Bohimeean rhapsody") == "Bohemian rhapsody"
    assert corrected(by_edits, "peepul in spain") == "peepul in spain"
    # Only words the lexicon lacks get them: a known word is not re-spelled by sound.
    assert corrected(by_ear, "whether") == "whether"
    # A key drops vowels and doubled letters; a sound-alike that far off is no candidate.
    shouting = Lexicon({"aah": 50.0, "people": 100.0}, {})
    assert shouting.sounds_like("aaaaaaaaaaaa") == ["aah"]
    decoder = NoisyChannelDecoder(shouting, by_ear.settings, edit_channel)
    lattice = decoder.lattices(["aaaaaaaaaaaa peepul"])[0]
    assert [e.words for e in lattice.edges_from[0]] == [("aaaaaaaaaaaa",)]
    assert ("people",) in [e.words for e in lattice.edges_from[1]]
    with pytest.raises(ValueError, match="phonetic_candidates must be >= 0"):
        DecodingSettings(phonetic_candidates=-1)


def test_lexicon_round_trips_and_names_a_bad_line(lexicon, tmp_path):
    path = lexicon.save(tmp_path / "lexicon.tsv")
    loaded = Lexicon.load(path)
    assert loaded.unigrams == lexicon.unigrams and loaded.bigrams == lexicon.bigrams
    path.write_text(path.read_text() + "three words here\t5\n")
    with pytest.raises(ValueError, match=r"lexicon.tsv:\d+"):
        Lexicon.load(path)


def test_a_web_word_is_kept_when_typed_and_never_proposed(lexicon, edit_channel):
    # Lower case, so not kept as a name: "rainn" is one edit from "rain" and corrected,
    # unless the web says people write it.
    web = Lexicon(lexicon.unigrams, lexicon.bigrams, {"rainn": 1e-3, "yorkk": 1e-2})
    settings = DecodingSettings(unknown_word_logprob=-8.0, web_word_offset=0.0)
    plain = NoisyChannelDecoder(lexicon, settings, edit_channel)
    knows_web = NoisyChannelDecoder(web, settings, edit_channel)
    assert corrected(plain, "queen rainn") == "queen rain"
    assert corrected(knows_web, "queen rainn") == "queen rainn"
    # A web word one edit from what was typed is not among the candidates.
    lattice = knows_web.lattices(["new yorkkk"])[0]
    assert {e.words for e in lattice.edges_from[1]} >= {("york",), ("yorkkk",)}
    assert ("yorkk",) not in {e.words for e in lattice.edges_from[1]}
    # A heavy discount makes a web word cost more than an unknown word.
    discounted = NoisyChannelDecoder(web, settings.updated(web_word_offset=-50.0), edit_channel)
    assert corrected(discounted, "queen rainn") == "queen rain"


def test_a_rare_web_word_is_priced_as_the_misspelling_it_mostly_is(lexicon, edit_channel):
    # The web writes "rainn" too. Common on the web, it is meant as written and kept;
    # seen once in a billion words, it is mostly a typo of "rain" and corrected. The
    # generous offset keeps either at face value: the difference is the typo share.
    def decoder(frequency: float, steepness: float) -> NoisyChannelDecoder:
        web = Lexicon(lexicon.unigrams, lexicon.bigrams, {"rainn": frequency})
        settings = DecodingSettings(
            unknown_word_logprob=-8.0, web_word_offset=15.0, web_word_steepness=steepness
        )
        return NoisyChannelDecoder(web, settings, edit_channel)

    assert corrected(decoder(1e-3, steepness=1.0), "queen rainn") == "queen rainn"
    assert corrected(decoder(1e-9, steepness=1.0), "queen rainn") == "queen rain"
    # Without the typo share, its frequency alone would have kept it.
    assert corrected(decoder(1e-9, steepness=0.0), "queen rainn") == "queen rainn"


def test_web_words_side_by_side_are_a_name_and_are_kept(lexicon, edit_channel):
    # Rare on the web, each alone is priced as the typo it mostly is and corrected; two of
    # them side by side are a name (`yo gotti`, `dua lipa`) and come back as typed.
    web = Lexicon(lexicon.unigrams, lexicon.bigrams, {"rainn": 1e-9, "dancee": 1e-9})
    runs = NoisyChannelDecoder(web, DecodingSettings(unknown_word_logprob=-8.0), edit_channel)
    assert corrected(runs, "rainn in spain") == "rain in spain"
    assert corrected(runs, "the dancee floor") == "the dance floor"
    assert corrected(runs, "rainn dancee") == "rainn dancee"
    assert corrected(runs, "the rainn, dancee floor") == "the rainn, dancee floor"
    no_runs = NoisyChannelDecoder(
        web, DecodingSettings(unknown_word_logprob=-8.0, keep_name_runs=False), edit_channel
    )
    assert corrected(no_runs, "rainn dancee") == "rain dance"
    # Beside a string the web has never seen, a web word is still corrected: two typos.
    assert corrected(runs, "rainn dancce") == "rain dance"


def test_web_words_survive_the_lexicon_file_and_an_older_file_has_none(lexicon, tmp_path):
    path = Lexicon(lexicon.unigrams, lexicon.bigrams, {"adsense": 2e-7, "the": 0.05}).save(
        tmp_path / "lexicon.tsv"
    )
    loaded = Lexicon.load(path)
    # "the" is counted already, so only "adsense" is a web word.
    assert set(loaded.web) == {"adsense"}
    assert loaded.web["adsense"] == pytest.approx(np.log(2e-7))
    assert loaded.unigrams == lexicon.unigrams
    older = lexicon.save(tmp_path / "older.tsv")
    assert Lexicon.load(older).web == {}


def test_mixing_gives_each_part_its_share():
    first = Lexicon({"a": 1.0, "b": 3.0}, {})
    second = Lexicon({"c": 100.0}, {})
    mixed = Lexicon.mixed([(first, 0.5), (second, 0.5)])
    assert mixed.unigrams["c"] == pytest.approx(mixed.unigrams["a"] + mixed.unigrams["b"])


def test_settings_refuse_unknown_keys_and_bad_choices():
    with pytest.raises(ValueError, match=r"decoding\.lm_wieght"):
        DecodingSettings.from_dict({"lm_wieght": 1.0})
    with pytest.raises(ValueError, match="constraint"):
        DecodingSettings(constraint="dictionary")
    with pytest.raises(ValueError, match="generate"):
        DecodingSettings(mode="channel", constraint="none")


def test_a_directory_without_decoding_files_generates_and_says_so(tmp_path):
    class Runner:
        def correct(self, texts):
            return [t.replace("yrok", "york") for t in texts]

        def score(self, sources, targets):
            pairs = zip(sources, targets, strict=True)
            return np.array([0.0 if s != t else -5.0 for s, t in pairs])

    said = []
    decoder = load_decoder(tmp_path, Runner(), warn=said.append)
    assert len(said) == 1 and "no decoding.json" in said[0] and "\n" not in said[0]
    result = decoder.correct(["new yrok"])[0]
    assert result.correction == "new york" and result.confidence > 0.99


def test_a_channel_directory_without_its_lexicon_is_refused(tmp_path):
    (tmp_path / "decoding.json").write_text(json.dumps({"mode": "channel"}))
    with pytest.raises(FileNotFoundError, match=r"lexicon\.tsv"):
        load_decoder(tmp_path, runner=None)
