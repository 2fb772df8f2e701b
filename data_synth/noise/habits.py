"""The query habits: whole-query rewrites people make on purpose, not by slip of a finger.

Search users skip diacritics (`Beyonce`), apostrophes and other punctuation (`dont stop`,
`AC DC`) and capitals (`hey jude`). Each habit applies to a whole query with its own
probability, before the typos. Each is a table lookup per character over all chosen rows at
once; only queries with characters whose change is not one code point for one (``'ß'.upper()
== 'SS'``, a final sigma) go through Python's own string functions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_synth.noise.batch import Batch, row_sums
from data_synth.noise.chars import (
    COMBINING,
    DROPPED,
    LOWERS,
    OWN_LOWER,
    OWN_STRIP,
    OWN_UPPER,
    PUNCT,
    SPACE,
    SPACE_CODE,
    UPPERS,
    WIDE,
    char_tables,
    strip_diacritics_text,
)
from data_synth.noise.operations import OPS

LOWERCASE_SHARE = 0.95  # case_change: share lower-casing (the rest writes all capitals)


def strip_diacritics(batch: Batch, rows: np.ndarray) -> None:
    """`Beyoncé` -> `Beyonce`: a table lookup per character, unicodedata for the rest."""
    rows = rows[(batch.row_flags[rows] & WIDE) != 0]  # ASCII has no diacritics
    chars = batch.chars(rows)
    own = row_sums(chars.has(OWN_STRIP), chars.lens) > 0
    chars = chars.only(~own)
    bare = ~chars.has(COMBINING)
    lens = row_sums(bare, chars.lens)
    code = OPS.index("strip_diacritics")
    batch.rewrite(rows[~own], chars, char_tables().strip[chars.codes[bare]], lens, code)
    _python_habit(batch, rows[own], strip_diacritics_text, code)


def drop_punctuation(batch: Batch, rows: np.ndarray) -> None:
    """Marks flagged DROPPED vanish, others become spaces; then ``" ".join(split())``."""
    rows = rows[(batch.row_flags[rows] & PUNCT) != 0]
    chars = batch.chars(rows)
    punct = row_sums(chars.has(PUNCT), chars.lens) > 0  # row_flags may be stale
    rows, chars = rows[punct], chars.only(punct)
    dropped = chars.has(DROPPED)
    blank = chars.has(PUNCT | SPACE) & ~dropped
    codes, row, blank = chars.codes[~dropped], chars.row[~dropped], blank[~dropped]
    lens = row_sums(~dropped, chars.lens)
    # Collapse whitespace: a blank stays (as one space) only right after a word character
    # of its row, with another word character of its row somewhere after it.
    word = ~blank
    after_word = np.zeros_like(word)
    after_word[1:] = word[:-1] & (row[1:] == row[:-1])
    words_up_to_row_end = np.cumsum(row_sums(word, lens))[row]
    word_later = words_up_to_row_end > np.cumsum(word)
    keep = word | (after_word & word_later)
    codes = np.where(blank, SPACE_CODE, codes)[keep]
    lens = row_sums(keep, lens)
    batch.rewrite(rows, chars, codes, lens, OPS.index("drop_punctuation"))


def case_change(batch: Batch, rows: np.ndarray, lowercase: np.ndarray) -> None:
    """Lower-case (where ``lowercase``) or upper-case whole queries."""
    # Lower-casing is the habit; all capitals is rare. A query already in the drawn
    # case is left alone rather than pushed into the rare one.
    changes = (batch.row_flags[rows] & np.where(lowercase, LOWERS, UPPERS)) != 0
    rows, lowercase = rows[changes], lowercase[changes]
    chars = batch.chars(rows)
    own_bit = np.where(lowercase[chars.row], OWN_LOWER, OWN_UPPER)
    own = row_sums(chars.has(own_bit), chars.lens) > 0
    code = OPS.index("case_change")
    table = chars.only(~own)
    to_lower = lowercase[~own][table.row]
    tables = char_tables()
    cased = np.where(to_lower, tables.lower[table.codes], tables.upper[table.codes])
    batch.rewrite(rows[~own], table, cased, table.lens, code)
    for lower in (True, False):
        mine = own & (lowercase == lower)
        _python_habit(batch, rows[mine], str.lower if lower else str.upper, code)


def _python_habit(batch: Batch, rows: np.ndarray, change: Callable[[str], str], code: int) -> None:
    """A habit done by Python's own string functions, for rows the tables cannot do."""
    if not len(rows):
        return
    changed = [change(batch.text(row)) for row in rows.tolist()]
    codes = np.frombuffer("".join(changed).encode("utf-32-le", "surrogatepass"), np.uint32)
    lens = np.array(list(map(len, changed)), dtype=np.int64)
    batch.rewrite(rows, batch.chars(rows), codes, lens, code)
