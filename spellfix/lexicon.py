"""The lexicon a trained model decodes with: which words exist, how often, what follows what.

Built once at the end of training and saved beside the model as ``lexicon.tsv``
(``spellfix.decoding.Lexicon`` reads it everywhere else). Its parts, each given a share
of the probability mass so that counts from different sources are comparable:

- the built-in English dictionary (symspellpy's 82,765 words and 243,342 word pairs with
  their frequencies), when the model was trained on the built-in corpus or
  ``decoding.english`` asks for it;
- the clean side of the training split of any other corpus (a search team's queries:
  their words and word pairs, counted);
- the word lists and catalogs named in ``decoding.lexicon``;
- English words of the web that none of those count (``decoding.web_words``: wordfreq's
  large English list, 321k words from Wikipedia, subtitles, news, books, web pages,
  Twitter and Reddit), as the lexicon's ``web`` words: kept when typed, never proposed.
  The same list lifts the counts of words the dictionary undercounts: its frequencies
  come from books, where ``iphone``, ``youtube``, ``dont`` and ``thats`` are rare, so
  a query's ``donjt`` became ``done`` (``decoding.web_count_discount``).

A catalog named in ``decoding.catalog`` is saved apart, as ``catalog.tsv``: with
``decoding.constraint=catalog`` its entries are preferred over other words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from data_synth.corpus import builtin_frequencies, contractions
from spellfix.correct import read_catalog
from spellfix.decoding import Lexicon, is_word_key


def english_lexicon() -> Lexicon:
    """The built-in dictionary's word and word-pair frequencies.

    Contractions are added without their apostrophe as well (``dont``, ``thats``), as
    queries and messages drop it, unless that spelling is a word of its own (``well``).
    """
    words, pairs = builtin_frequencies()
    unigrams = {w: float(c) for w, c in words.items()}
    for word, count in contractions().items():
        unigrams.setdefault(word.replace("'", ""), float(count))
    return Lexicon(unigrams, {p: float(c) for p, c in pairs.items()})


@cache
def web_words() -> dict[str, float]:
    """wordfreq's large English list: word -> frequency, for the words a query can correct.

    The names, brands, slang and abbreviations of real queries (``kanye``, ``adsense``,
    ``ppl``, ``mr``) are there and not in any dictionary; so are common misspellings,
    which is why these words are only ever kept, never proposed (see ``Lexicon``).
    """
    from wordfreq import get_frequency_dict  # imported here: 0.5 s to read, training only

    return {
        word: frequency
        for word, frequency in get_frequency_dict("en", wordlist="large").items()
        if is_word_key(word)
    }


def build_lexicon(
    corpus_texts: Sequence[str],
    *,
    builtin_corpus: bool,
    english: bool,
    corpus_share: float,
    files: Sequence[str | Path] = (),
    web: bool = True,
    web_count_discount: float | None = 1.0,
) -> Lexicon:
    """The model's lexicon from its training corpus, English and the user's word lists.

    On the built-in corpus the dictionary's own frequencies stand for the corpus (its
    queries are a sample of that dictionary, each counted once). Otherwise the corpus's
    counts and every extra file share ``corpus_share`` of the mass equally, and English
    (when included) gets the rest. With ``web``, a counted word gets at least its web
    frequency divided by e ** ``web_count_discount`` (None: never): the sources agree on
    most words (median log ratio -0.2), and one a whole nat above the counts is a word
    the dictionary's sources are too old or too formal to know.
    """
    if not 0 <= corpus_share <= 1:
        raise ValueError(f"decoding.corpus_share={corpus_share!r}: expected a number in [0, 1]")
    if web_count_discount is not None and not web_count_discount >= 0:
        raise ValueError(
            f"decoding.web_count_discount={web_count_discount!r}: expected a number >= 0 or null"
        )
    own = [] if builtin_corpus else [Lexicon.from_texts(corpus_texts)]
    own += [read_catalog(path) for path in files]
    english = english or builtin_corpus
    if not own:
        lexicon = english_lexicon()
    else:
        own_mass = corpus_share if english else 1.0
        parts = [(lexicon, own_mass / len(own)) for lexicon in own]
        if english:
            parts.append((english_lexicon(), 1.0 - corpus_share))
        lexicon = Lexicon.mixed(parts)
    if web:
        unigrams = lexicon.unigrams
        if web_count_discount is not None:
            unigrams = lifted_counts(unigrams, lexicon.total, web_count_discount)
        lexicon = Lexicon(unigrams, lexicon.bigrams, web_words())
    return lexicon


def lifted_counts(counts: dict[str, float], total: float, discount: float) -> dict[str, float]:
    """``counts`` with each word raised to its discounted web frequency where that is more."""
    scale = total * math.exp(-discount)
    web = web_words()
    return {word: max(count, web.get(word, 0.0) * scale) for word, count in counts.items()}
