"""A noise profile, read and checked: the rates of ``conf/noise/*.yaml`` and its confusion table.

Profiles and confusion tables are the two files a user edits to change the noise, so every
value is checked here, once, before any query is corrupted, and a bad one raises
``NoiseConfigError`` naming the key (or the file and line) and the fix. The engine then reads
a ``NoiseProfile`` whose values are known to be usable.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_synth.keyboards import LAYOUTS
from data_synth.noise.operations import QUERY_OPS, TYPO_OPS
from data_synth.paths import CONF_DIR

DEFAULT_CONFUSIONS = Path(__file__).parents[1] / "phonetic.tsv"
CONFIG_KEYS: tuple[str, ...] = (
    "layout",
    "clean_share",
    "error_count_weights",
    "max_errors_per_char",
    "first_letter_factor",
    "typo_weights",
    "query_ops",
    "confusions",
)


class NoiseConfigError(ValueError):
    """A noise profile or confusion table is unusable; the message names the key and fix."""


@dataclass(frozen=True)
class Confusion:
    """One row of the confusion table: lower-case ``letters`` and where they must stand."""

    letters: str
    replacement: str
    weight: float
    at_word_start: bool
    at_word_end: bool


@dataclass(frozen=True)
class NoiseProfile:
    """A checked profile: the values the engine draws with."""

    config: dict[str, Any]  # the profile as given, as a plain dict
    clean_share: float
    error_count_weights: tuple[float, ...]  # relative weights of 1, 2, 3... typos
    max_errors_per_char: float
    first_letter_factor: float
    typo_rates: dict[str, float]  # the typo operations given a rate, in the profile's order
    query_rates: dict[str, float]  # each query habit given a probability
    confusions: tuple[Confusion, ...]


def load_profile(name: str) -> Mapping[str, Any]:
    """The named profile of ``conf/noise/`` (default, keyboard, ...), as written there."""
    path = CONF_DIR / "noise" / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in (CONF_DIR / "noise").glob("*.yaml"))
        raise NoiseConfigError(
            f"noise profile {name!r}: {path} not found; choose one of {', '.join(available)}"
        )
    from omegaconf import OmegaConf

    return OmegaConf.load(path)


def check_profile(config: Mapping[str, Any]) -> NoiseProfile:
    """Check a dict or DictConfig with the schema of ``conf/noise/*.yaml``, key by key."""
    config = _plain(config)
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    missing = [key for key in CONFIG_KEYS if key not in config]
    if unknown:
        raise NoiseConfigError(
            f"noise.{unknown[0]}: unknown key; valid keys: {', '.join(CONFIG_KEYS)}"
        )
    if missing:
        raise NoiseConfigError(f"noise.{missing[0]}: missing key; see conf/noise/default.yaml")
    if config["layout"] not in LAYOUTS:
        raise NoiseConfigError(
            f"noise.layout: unknown layout {config['layout']!r}; use {', '.join(LAYOUTS)}"
        )
    counts = config["error_count_weights"]
    if (
        not isinstance(counts, list | tuple)
        or not counts
        or any(not isinstance(w, int | float) or w < 0 for w in counts)
        or sum(counts) <= 0
    ):
        raise NoiseConfigError(
            "noise.error_count_weights: expected a list of weights >= 0 for 1, 2, 3... "
            f"typos with a positive sum, got {counts!r}"
        )
    typo_rates = _check_rates("typo_weights", config["typo_weights"], TYPO_OPS)
    query_rates = _check_rates("query_ops", config["query_ops"], QUERY_OPS)
    if sum(typo_rates.values()) <= 0:
        raise NoiseConfigError("noise.typo_weights: at least one rate must be positive")
    if any(rate > 1 for rate in query_rates.values()):
        raise NoiseConfigError("noise.query_ops: each value is a probability in [0, 1]")
    max_per_char = config["max_errors_per_char"]
    if not isinstance(max_per_char, int | float) or max_per_char <= 0:
        raise NoiseConfigError("noise.max_errors_per_char: expected a number > 0")
    first_letter_factor = _check_fraction(config, "first_letter_factor")
    confusions = tuple(load_confusions(config["confusions"] or DEFAULT_CONFUSIONS))
    return NoiseProfile(
        config=config,
        clean_share=_check_fraction(config, "clean_share"),
        error_count_weights=tuple(map(float, counts)),
        max_errors_per_char=float(max_per_char),
        first_letter_factor=first_letter_factor,
        typo_rates=typo_rates,
        query_rates=query_rates,
        confusions=confusions,
    )


def load_confusions(path: str | Path) -> list[Confusion]:
    """Read a confusion table (see ``phonetic.tsv`` for the format) a user may replace."""
    path = Path(path)
    if not path.is_file():
        raise NoiseConfigError(f"noise.confusions: {path} does not exist; point it at a TSV table")
    confusions = []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_number, row in enumerate(rows, start=1):
            if not row or row[0].startswith("#") or row[0] == "pattern":
                continue
            try:
                letters, replacement, weight = row[0], row[1], float(row[2])
            except (IndexError, ValueError):
                raise NoiseConfigError(
                    f"{path}:{line_number}: expected pattern<TAB>replacement<TAB>weight, "
                    f"got {row!r}"
                ) from None
            at_start, at_end = letters.startswith("^"), letters.endswith("$")
            letters = letters.strip("^$").lower()
            if not letters or weight < 0:
                raise NoiseConfigError(
                    f"{path}:{line_number}: pattern must have letters and weight must be >= 0"
                )
            replacement = "" if replacement == '""' else replacement
            confusions.append(Confusion(letters, replacement, weight, at_start, at_end))
    if not confusions:
        raise NoiseConfigError(f"{path}: the confusion table has no rows")
    return confusions


def _plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict from a dict or an OmegaConf DictConfig (as Hydra passes ``cfg.noise``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return {
        key: _plain(value) if isinstance(value, Mapping) else value for key, value in cfg.items()
    }


def _check_rates(name: str, rates: Any, valid: tuple[str, ...]) -> dict[str, float]:
    if not isinstance(rates, Mapping):
        raise NoiseConfigError(f"noise.{name}: expected a mapping of operation -> rate")
    for op, rate in rates.items():
        if op not in valid:
            raise NoiseConfigError(f"noise.{name}.{op}: unknown operation; use {', '.join(valid)}")
        if not isinstance(rate, int | float) or rate < 0:
            raise NoiseConfigError(f"noise.{name}.{op}: rate must be a number >= 0, got {rate!r}")
    return {op: float(rate) for op, rate in rates.items()}


def _check_fraction(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise NoiseConfigError(f"noise.{key}: expected a number in [0, 1], got {value!r}")
    return float(value)
