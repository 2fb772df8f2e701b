"""What each character is, as lookup tables indexed by code point.

The operations ask the same few questions of every character of a batch: is it a letter, a
space, punctuation; what are its lower and upper case; what is it without diacritics;
which keys lie next to it. Asking ``str`` methods one character at a time would cost a
Python call per character, so the answers for all of Unicode are computed once per process
(with CPython's own character database, so that they agree with ``str`` methods) and read
with one numpy index per batch.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache

import numpy as np

from data_synth.keyboards import get_keyboard

SPACE_CODE = ord(" ")
UNICODE_SIZE = 0x110000
_DROPPED_MARKS = "'’‘`."  # vanish when typed (`dont`); other marks become spaces
# strip_diacritics reads a table for these code points (Latin, Greek, Cyrillic and the other
# alphabets up to Devanagari, and Latin/Greek Extended); outside them it asks unicodedata.
# None of these characters composes with its neighbour without a combining mark (as Indic
# vowel signs and Hangul jamo do), so stripping them one by one equals stripping the text.
_STRIP_TABLE_RANGES = ((0x80, 0x900), (0x1E00, 0x2000))

# Bits of the per-code-point flags: what each character is, exactly as str methods say.
ALPHA = 1 << 0  # str.isalpha: typos target letters, words are runs of them
SPACE = 1 << 1  # str.isspace
PUNCT = 1 << 2  # matches [^\w\s]|_ : drop_punctuation removes it or makes it a space
DROPPED = 1 << 3  # one of _DROPPED_MARKS
UPPER = 1 << 4  # str.isupper: a typed replacement keeps the capital
COMBINING = 1 << 5  # unicodedata.combining() > 0: strip_diacritics deletes it
OWN_LOWER = 1 << 6  # str.lower() of it is not one code point (or depends on context)
OWN_UPPER = 1 << 7  # str.upper() of it is not one code point
OWN_STRIP = 1 << 8  # outside the strip table: strip_diacritics asks unicodedata
WIDE = 1 << 9  # beyond ASCII (the only characters with diacritics to strip)
LOWERS = 1 << 10  # str.lower() changes it
UPPERS = 1 << 11  # str.upper() changes it


@dataclass(frozen=True)
class CharTables:
    """Per-code-point answers to the questions the operations ask of a character."""

    flags: np.ndarray  # uint16 bits ALPHA ... UPPERS
    lower: np.ndarray  # uint32: the one-code-point lower case (the character itself if none)
    upper: np.ndarray  # uint32: the one-code-point upper case (the character itself if none)
    strip: np.ndarray  # uint32: the character without diacritics (inside the strip table)
    lowered: np.ndarray  # the code points whose lower case is another code point


@cache
def char_tables() -> CharTables:
    """Built once per process (about 0.1 s): numpy's string functions classify all of Unicode
    with CPython's own character database, so the tables agree with ``str`` methods."""
    codes = np.arange(UNICODE_SIZE, dtype=np.uint32)
    chars = codes.view("<U1")
    space = np.strings.isspace(chars)
    flags = np.where(np.strings.isalpha(chars), ALPHA, 0).astype(np.uint16)
    flags |= np.where(space, SPACE, 0).astype(np.uint16)
    # re's \w is str.isalnum() or "_"; code point 0 (a NUL character) is punctuation too.
    punct = ~(np.strings.isalnum(chars) | space)
    punct[ord("_")] = True
    flags |= np.where(punct, PUNCT, 0).astype(np.uint16)
    flags |= np.where(np.strings.isupper(chars), UPPER, 0).astype(np.uint16)
    flags[[ord(mark) for mark in _DROPPED_MARKS]] |= DROPPED
    flags[0x80:] |= WIDE

    # Case: only cased characters change under lower()/upper(); ask Python about those few.
    lower, upper = codes.copy(), codes.copy()
    cased = np.strings.isupper(chars) | np.strings.islower(chars) | np.strings.istitle(chars)
    for code in np.flatnonzero(cased).tolist():
        char = chr(code)
        for mapped, table, changes, own in (
            (char.lower(), lower, LOWERS, OWN_LOWER),
            (char.upper(), upper, UPPERS, OWN_UPPER),
        ):
            if mapped != char:
                flags[code] |= changes
            if len(mapped) == 1:
                table[code] = ord(mapped)
            else:  # 'ß'.upper() == 'SS', 'İ'.lower() == 'i̇'
                flags[code] |= own
    flags[ord("Σ")] |= OWN_LOWER  # lower-cases to 'ς' at a word's end: str.lower looks around

    strip = codes.copy()
    own_strip = np.ones(UNICODE_SIZE, dtype=bool)
    own_strip[:0x80] = False  # ASCII has nothing to strip
    for first, last in _STRIP_TABLE_RANGES:
        for code in range(first, last):
            char = chr(code)
            if unicodedata.combining(char):
                flags[code] |= COMBINING
                own_strip[code] = False
                continue
            bare = strip_diacritics_text(char)
            if len(bare) == 1:  # else (rare) a letter decomposing into two: ask unicodedata
                strip[code] = ord(bare)
                own_strip[code] = False
    flags |= np.where(own_strip, OWN_STRIP, 0).astype(np.uint16)
    return CharTables(flags, lower, upper, strip, np.flatnonzero(lower != codes))


def strip_diacritics_text(text: str) -> str:
    """Drop combining marks after canonical decomposition: `Beyoncé` -> `Beyonce`."""
    decomposed = unicodedata.normalize("NFD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return unicodedata.normalize("NFC", bare)


@dataclass(frozen=True)
class KeyTable:
    """A layout's neighbour keys for every code point that is typed with a key."""

    row: np.ndarray  # uint16 per code point: its row in ``keys`` (0: no neighbours)
    count: np.ndarray  # per row: how many neighbours
    keys: np.ndarray  # (rows, most neighbours) uint32: the neighbours, in the typed case


@cache
def key_table(layout: str) -> KeyTable:
    """The neighbour keys of ``layout`` by code point; built once per layout and process."""
    neighbors = get_keyboard(layout).neighbors
    tables = char_tables()
    key_codes = [ord(key) for key, close in neighbors.items() if close]
    # A key is typed as itself, its capital, or an oddity that lower-cases to it (Kelvin sign).
    typed = np.flatnonzero(np.isin(tables.lower, key_codes)).tolist()
    widest = max(len(close) for close in neighbors.values())
    row = np.zeros(UNICODE_SIZE, dtype=np.uint16)
    count = np.zeros(len(typed) + 1, dtype=np.int64)
    keys = np.zeros((len(typed) + 1, widest), dtype=np.uint32)
    for index, code in enumerate(typed, start=1):
        char = chr(code)
        close = neighbors[chr(tables.lower[code])]
        if char.isupper():  # a capital's neighbours are typed as capitals too
            close = "".join(key.upper() if len(key.upper()) == 1 else key for key in close)
        row[code] = index
        count[index] = len(close)
        keys[index, : len(close)] = [ord(key) for key in close]
    return KeyTable(row, count, keys)
