"""Correctors behind one interface, so a trained model is always judged beside the tools
a user would otherwise pick.

``identity`` leaves every query alone: the floor any corrector must clear, and the
measure of how much of a test set is already correct. ``symspell`` is the dictionary
speller a search team reaches for first (symspellpy, its bundled English frequency
dictionaries, compound-aware lookup). A model directory becomes a
:class:`spellfix.correct.Corrector` on the requested back end. ``load_system`` maps the
names a user types on the command line to these.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from symspellpy import SymSpell

    from spellfix.decoding import Lexicon

# symspellpy's own defaults; the dictionary is precomputed for this distance, so a
# lookup may not ask for more.
SYMSPELL_MAX_EDIT_DISTANCE = 2
SYMSPELL_PREFIX_LENGTH = 7


@runtime_checkable
class Speller(Protocol):
    """A spelling corrector: a display name and a batch ``correct``."""

    name: str

    def correct(self, texts: list[str]) -> list[str]:
        """Return one corrected string per input, in order."""
        ...


class IdentitySpeller:
    """Returns its input: the score of "no corrector at all"."""

    name = "identity"

    def correct(self, texts: list[str]) -> list[str]:
        """Return the inputs unchanged."""
        return list(texts)


@cache
def _english_symspell() -> SymSpell:
    """The SymSpell index over symspellpy's bundled dictionaries, built once per process
    because it takes seconds and a few hundred MB."""
    from symspellpy import SymSpell

    bundled = files("symspellpy")
    symspell = SymSpell(
        max_dictionary_edit_distance=SYMSPELL_MAX_EDIT_DISTANCE,
        prefix_length=SYMSPELL_PREFIX_LENGTH,
    )
    # Columns: term, count (unigrams); first word, second word, count (bigrams).
    symspell.load_dictionary(str(bundled / "frequency_dictionary_en_82_765.txt"), 0, 1)
    symspell.load_bigram_dictionary(
        str(bundled / "frequency_bigramdictionary_en_243_342.txt"), 0, 2
    )
    return symspell


class SymSpellSpeller:
    """symspellpy's compound lookup: fixes each word within edit distance 2 and repairs
    wrongly split or joined words (``newyork`` -> ``new york``) using bigram counts.

    Queries are looked up in lower case, with words that contain digits left alone
    (``blink 182``, ``2pac``; symspell would otherwise turn ``50 cent`` into ``of cent``),
    and the input's case pattern is then carried onto the correction (``SPELING`` ->
    ``SPELLING``). symspell's own acronym rule is not used: it skips every all-caps word,
    and caps-lock typos are common in search boxes. symspell drops punctuation it cannot
    place; that is the tool's behaviour and part of what this baseline measures.

    ``compound=False`` is ``symspell-word``: each word on its own with ``lookup`` (the
    closest, then most frequent, dictionary word), symspell's best on isolated words.
    ``catalog`` adds a catalog's words and word pairs to the dictionary with the same share
    of the counts spellfix gives them (``catalog_weight``), so a comparison with a
    catalog-aware model is fair.
    """

    name = "symspell"

    def __init__(
        self,
        max_edit_distance: int = SYMSPELL_MAX_EDIT_DISTANCE,
        compound: bool = True,
        catalog: Lexicon | None = None,
        catalog_weight: float = 0.5,
    ) -> None:
        if not 0 <= max_edit_distance <= SYMSPELL_MAX_EDIT_DISTANCE:
            raise ValueError(
                f"symspell max_edit_distance must be 0..{SYMSPELL_MAX_EDIT_DISTANCE} "
                f"(the bundled index is built for {SYMSPELL_MAX_EDIT_DISTANCE}), "
                f"got {max_edit_distance}"
            )
        self.max_edit_distance = max_edit_distance
        self.compound = compound
        self.name = "symspell" if compound else "symspell-word"
        if catalog is None:
            self._symspell = _english_symspell()
        else:
            self._symspell = _symspell_with(catalog, catalog_weight)
            self.name += "+catalog"

    def correct(self, texts: list[str]) -> list[str]:
        """Correct each query independently; blank queries come back unchanged."""
        return [self._correct_one(text) for text in texts]

    def _correct_one(self, text: str) -> str:
        if not text.strip():
            return text
        from symspellpy import Verbosity
        from symspellpy.helpers import case_transfer_similar

        if self.compound:
            suggestions = self._symspell.lookup_compound(
                text.lower(),
                self.max_edit_distance,
                ignore_non_words=True,
                ignore_term_with_digits=True,
            )
            return case_transfer_similar(text, suggestions[0].term) if suggestions else text
        words = []
        for word in text.split():
            found = self._symspell.lookup(
                word.lower(), Verbosity.TOP, self.max_edit_distance, ignore_token=r"\w*\d\w*"
            )
            words.append(case_transfer_similar(word, found[0].term) if found else word)
        return " ".join(words)


def _symspell_with(catalog: Lexicon, share: float) -> SymSpell:
    """symspellpy's dictionaries plus a catalog holding ``share`` of the word counts."""
    symspell = copy.deepcopy(_english_symspell())
    english_total = sum(symspell.words.values())
    scale = share / (1 - share) * english_total / catalog.total
    for word, count in catalog.unigrams.items():
        symspell.create_dictionary_entry(word, max(1, round(count * scale)))
    pair_total = sum(catalog.bigrams.values()) or 1.0
    pair_scale = share / (1 - share) * sum(symspell.bigrams.values()) / pair_total
    for (first, second), count in catalog.bigrams.items():
        key = f"{first} {second}"
        symspell.bigrams[key] = symspell.bigrams.get(key, 0) + max(1, round(count * pair_scale))
    return symspell


def load_system(
    name_or_path: str | Path,
    backend: str = "torch",
    device: str = "cpu",
    batch_size: int = 64,
    num_beams: int = 1,
) -> Speller:
    """The corrector a user names: ``identity``, ``symspell``, ``symspell-word`` or a model
    directory.

    ``backend``, ``device``, ``batch_size`` and ``num_beams`` only apply to a model
    directory; the baselines have no such knobs.
    """
    if str(name_or_path) == "identity":
        return IdentitySpeller()
    if str(name_or_path) == "symspell":
        return SymSpellSpeller()
    if str(name_or_path) == "symspell-word":
        return SymSpellSpeller(compound=False)
    model_dir = Path(name_or_path)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"system {str(name_or_path)!r} is neither 'identity', 'symspell' nor a model "
            f"directory; pass one of those"
        )
    # Imported here so the baselines (and the metrics) work without loading torch.
    from spellfix.correct import Corrector

    beams = {"num_beams": num_beams} if num_beams != 1 else {}
    return Corrector.from_pretrained(
        model_dir, backend=backend, device=device, batch_size=batch_size, **beams
    )
