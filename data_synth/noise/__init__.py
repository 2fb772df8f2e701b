"""Seeded, named typo operations that turn a clean search query into a realistic noisy one.

A corrector learns exactly the errors it is shown, so every operation models one thing
people really do when typing a query: hit a neighbouring key (or a letter from anywhere:
``nite``, ``smaking``), drop or double a letter, swap two letters, spell by ear (``ph`` ->
``f``), run words together or split them, skip diacritics, apostrophes and capitals. Each
operation has its own rate, the number of typos per query follows a configurable
distribution, typos avoid a word's first letter (people rarely get it wrong), and a share
of queries stays clean so that the model also learns to leave correct input alone.

Every result carries the names of the operations applied, so datasets can be audited
(``data_synth.stats``) and the model's errors broken down by cause.

Speed matters: the training data module re-noises the whole corpus every epoch, and a
Python loop that merely visits each query already costs more than the whole budget. So
the engine is columnar and works on a whole batch at once:

* the queries become one flat array of code points (all rows back to back, no padding:
  short queries of mixed length would be mostly padding in a matrix);
* every random decision is drawn for all rows at once, in a fixed order, from one seeded
  ``numpy.random.Generator`` (the same seed and inputs give the same outputs);
* what a character is (a letter, a space, a key with neighbours, a letter of the
  confusion table, its lower case) is read from lookup tables indexed by code point;
* every typo is the same kind of edit, "replace ``removed`` characters at ``start`` by a
  short replacement", so one round of typos for all rows is one splice of the array;
  each operation only decides, by vectorized masks, where it may land and what it types.

Python touches single queries only where Unicode is not per-character (for example
``'ß'.upper() == 'SS'``).

The modules, in reading order (each imports only those above it):

* ``operations``: the names of the operations, the vocabulary of profiles and results;
* ``profile``: a noise profile (``conf/noise/*.yaml``) and its confusion table
  (``phonetic.tsv``), read and checked, with errors that name the key;
* ``chars``: per-code-point lookup tables (what a character is, its cases, its bare
  letter, its neighbouring keys);
* ``batch``: the columnar batch (queries as one array of code points, spliced in place)
  and the vectorized helpers every operation is written in;
* ``habits``: the query habits, which rewrite whole queries;
* ``phonetic``: the confusion table compiled to a trie, matched against all rows at once;
* ``typos``: the typo operations, where each may land and what it types;
* ``model``: ``NoiseModel``, which draws from a profile's rates with one seeded
  generator and applies the operations.

The names a user needs (the model, its result, its error, the operation names) are
importable from ``data_synth.noise`` itself; the modules are the implementation.
"""

from data_synth.noise.model import Corruption, NoiseModel
from data_synth.noise.operations import OPS, QUERY_OPS, TYPO_OPS
from data_synth.noise.profile import NoiseConfigError

__all__ = ["OPS", "QUERY_OPS", "TYPO_OPS", "Corruption", "NoiseConfigError", "NoiseModel"]
