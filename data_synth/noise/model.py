"""NoiseModel: corrupts queries by one noise profile's rates, reproducibly from a seed.

This is the entry point the dataset builder, the training data module and the experiments
use. It draws every random decision for a whole batch from one seeded generator, in a fixed
order (which queries stay clean, which habits apply, how many typos, then the typos round by
round), so the same seed and the same inputs, in the same order, give the same outputs; the
operations themselves live in ``habits`` and ``typos``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from data_synth.noise.batch import Batch, draw
from data_synth.noise.habits import LOWERCASE_SHARE, case_change, drop_punctuation, strip_diacritics
from data_synth.noise.operations import OPS, TYPO_OPS
from data_synth.noise.profile import NoiseConfigError, check_profile, load_profile
from data_synth.noise.typos import Typos

_OP_TRIES = 4  # operations tried per typo before giving up on that typo


class Corruption(NamedTuple):
    """One noisy version of a clean query and the operations, in order, that made it.

    A named tuple rather than a dataclass: a batch builds one per query, and a tuple is
    built in C, which keeps result objects from costing more than the typos themselves.
    """

    noisy: str
    clean: str
    ops: tuple[str, ...]  # immutable, so results with the same ops share one tuple


class _Plan(NamedTuple):
    """What a batch draws: a profile's rates, or (for ``apply_op``) one forced operation."""

    clean_share: float
    habit_rates: dict[str, float]  # query habit -> probability
    count_cumulative: np.ndarray  # running sums of the weights of 0, 1, 2, ... typos
    typo_cumulative: np.ndarray  # running sums of the rates of TYPO_OPS, in that order
    op_tries: int


class NoiseModel:
    """Corrupts queries with the operations and rates of one noise profile.

    Build it with ``from_profile("default")`` or ``from_config(cfg.noise)``; the same
    seed and the same inputs, in the same order, always give the same outputs.
    """

    def __init__(self, config: Mapping[str, Any], seed: int = 0) -> None:
        profile = check_profile(config)
        self.config = profile.config
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._max_errors_per_char = profile.max_errors_per_char
        self._typos = Typos(
            profile.config["layout"], profile.confusions, profile.first_letter_factor
        )
        self._plan = _Plan(
            clean_share=profile.clean_share,
            habit_rates={op: rate for op, rate in profile.query_rates.items() if rate > 0},
            count_cumulative=np.cumsum([0.0, *profile.error_count_weights]),
            typo_cumulative=np.cumsum([profile.typo_rates.get(op, 0.0) for op in TYPO_OPS]),
            op_tries=_OP_TRIES,
        )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], seed: int = 0) -> NoiseModel:
        """A model from a dict or DictConfig with the schema of ``conf/noise/*.yaml``."""
        return cls(cfg, seed=seed)

    @classmethod
    def from_profile(cls, name: str, seed: int = 0) -> NoiseModel:
        """A model from the named profile in ``conf/noise/`` (default, keyboard, ...)."""
        return cls(load_profile(name), seed=seed)

    def corrupt(self, text: str) -> Corruption:
        """One noisy variant of ``text`` (possibly ``text`` itself, then with no ops)."""
        return self._corrupt([text], self._plan)[0]

    def corrupt_batch(self, texts: Iterable[str]) -> list[Corruption]:
        """``corrupt`` over many queries, in order; far faster per query than ``corrupt``."""
        return self._corrupt(list(texts), self._plan)

    def apply_op(self, name: str, text: str) -> str | None:
        """Apply one named operation once; None where it cannot apply (nothing to change).

        For tests and the noise gallery: shows what each operation does in isolation.
        """
        if name not in OPS:
            raise NoiseConfigError(f"unknown operation {name!r}; use {', '.join(OPS)}")
        is_typo = name in TYPO_OPS
        forced = _Plan(
            clean_share=0.0,
            habit_rates={} if is_typo else {name: 1.0},
            count_cumulative=np.array([0.0, 1.0]) if is_typo else np.array([1.0]),
            typo_cumulative=np.cumsum([float(op == name) for op in TYPO_OPS]),
            op_tries=1,
        )
        result = self._corrupt([text], forced)[0]
        return result.noisy if result.ops else None

    def _corrupt(self, texts: list[str], plan: _Plan) -> list[Corruption]:
        """One batch: every per-query decision drawn up front, then the habits, then the
        typos round by round, then the results (``corrupt`` and ``apply_op`` are batches
        of one)."""
        n = len(texts)
        rng = self._rng
        batch = Batch(texts, len(plan.habit_rates) + len(plan.count_cumulative) - 1)
        # Every per-query decision is drawn up front, in a fixed order, for all rows at once.
        noisy = batch.lens > 0
        if plan.clean_share > 0:
            noisy &= rng.random(n) >= plan.clean_share
        habits = {op: noisy & (rng.random(n) < rate) for op, rate in plan.habit_rates.items()}
        if "case_change" in habits:
            lowercase = rng.random(n) < LOWERCASE_SHARE
        drawn = draw(plan.count_cumulative, rng.random(n))
        cap = np.maximum(1, np.floor(batch.lens * self._max_errors_per_char).astype(np.int64))
        typos = np.minimum(drawn, cap) * noisy

        if "strip_diacritics" in habits:
            strip_diacritics(batch, np.flatnonzero(habits["strip_diacritics"]))
        if "drop_punctuation" in habits:
            drop_punctuation(batch, np.flatnonzero(habits["drop_punctuation"]))
        if "case_change" in habits:
            rows = np.flatnonzero(habits["case_change"])
            case_change(batch, rows, lowercase[rows])
        for round_index in range(int(typos.max(initial=0))):
            self._typos.one_round(
                batch, np.flatnonzero(typos > round_index), plan.typo_cumulative, plan.op_tries, rng
            )

        noisy_texts = batch.strings()
        batch.ops[batch.unchanged()] = -1  # typos that undid each other leave a clean query
        # tuple.__new__ through map builds the results in C (see Corruption).
        results = zip(noisy_texts, texts, batch.op_tuples(), strict=True)
        return list(map(tuple.__new__, repeat(Corruption), results))
