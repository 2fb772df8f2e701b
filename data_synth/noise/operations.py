"""The names of the noise operations: what profiles set rates for and results report.

One list shared by the profile checks, the engine and every reader of a result, so that an
operation is named the same everywhere; an operation's index in ``OPS`` is its code in the
engine's per-row record of what was applied.
"""

from __future__ import annotations

# Typos: each noisy query gets a drawn number of these, chosen by their relative rates.
TYPO_OPS: tuple[str, ...] = (
    "keyboard_substitute",  # a neighbouring key instead of the intended one
    "keyboard_insert",  # a neighbouring key pressed as well
    "substitute",  # any other letter instead of the intended one (`nite` for `nice`)
    "insert",  # any other letter typed as well, next to one (`smaking`, `wmore`)
    "delete",  # a letter left out
    "transpose",  # two neighbouring letters swapped
    "double",  # a letter typed twice (`bettles`)
    "undouble",  # a double letter typed once (`beatls` <- `beattls`, `acomodate`)
    "phonetic",  # a sound-alike spelling from the confusion table (`fone`)
    "merge_words",  # the space between two words left out (`thebeatles`)
    "split_word",  # a space typed inside a word (`beat les`)
)
# Query habits: each applies independently with its own probability.
QUERY_OPS: tuple[str, ...] = (
    "strip_diacritics",  # `Beyoncé` -> `Beyonce`
    "drop_punctuation",  # `don't stop` -> `dont stop`, `AC/DC` -> `AC DC`
    "case_change",  # `Hey Jude` -> `hey jude` (or, rarely, all capitals)
)
OPS: tuple[str, ...] = TYPO_OPS + QUERY_OPS  # an op's index here is its code in the engine
