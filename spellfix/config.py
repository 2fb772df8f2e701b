"""Type checks for command-line overrides, which plain YAML configs do not get from Hydra.

Hydra already rejects a key that does not exist (configs are in struct mode), but with
YAML defaults it accepts ``data.max_tokens=lots`` and the run dies much later, deep in
a sampler. Every default in ``conf/`` is typed by its value, so an override is checked
against the value it replaces: a number stays a number, a bool stays a bool.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from data_synth.corpus import CorpusError


def _wandb_offline() -> bool:
    """W&B stays offline unless the environment explicitly asks for ``WANDB_MODE=online``."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


if not OmegaConf.has_resolver("spellfix.wandb_offline"):
    OmegaConf.register_new_resolver("spellfix.wandb_offline", _wandb_offline)


class UserConfigError(ValueError):
    """A setting the user can fix; reported as one line, without a traceback."""


class ConfigTypeError(UserConfigError):
    """An override whose value has the wrong type for its key."""


class Interrupted(UserConfigError):
    """Ctrl-C: the message says what was kept and how to go on (exit status 130)."""


def _compatible(default: Any, value: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True


def check_override_types(cfg: DictConfig, config_name: str, overrides: list[str]) -> None:
    """Raise ``ConfigTypeError`` naming the first override whose type contradicts its default."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    # Group choices (model=bart_small) shape the defaults; value overrides are what we check.
    choices = [o.input_line for o in parsed if not o.is_delete() and _is_group_choice(o)]
    reference = compose(config_name, overrides=choices)
    for override in parsed:
        key = override.key_or_group
        if override.is_delete() or override.is_add() or _is_group_choice(override):
            continue
        if key.startswith("hydra."):
            continue
        default = OmegaConf.select(reference, key, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if isinstance(default, DictConfig) or not _compatible(default, value):
            expected = type(default).__name__
            raise ConfigTypeError(
                f"{key}={override.value()!r}: expected {expected} like the default {default!r}"
            )


def _is_group_choice(override: Any) -> bool:
    return HydraConfig.initialized() and override.key_or_group in HydraConfig.get().runtime.choices


def checked_main(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable]:
    """Wrap a ``@hydra.main`` body: type-check the overrides, turn known errors into one line."""

    def decorate(body: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
        @wraps(body)
        def run(cfg: DictConfig) -> Any:
            try:
                check_override_types(cfg, config_name, list(HydraConfig.get().overrides.task))
                return body(cfg)
            except Interrupted as error:
                print(f"{error}", file=sys.stderr)
                sys.exit(130)
            except KeyboardInterrupt:
                print("interrupted; nothing was kept", file=sys.stderr)
                sys.exit(130)
            except (UserConfigError, FileNotFoundError, CorpusError) as error:
                print(f"error: {error}", file=sys.stderr)
                sys.exit(2)

        return run

    return decorate


def rename_model_argument(new_key: str) -> None:
    """Let ``model=<path>`` mean ``<new_key>=<path>`` on this command line.

    ``model`` is the training config group in ``conf/``, so Hydra would read
    ``model=<dir>`` as a group choice and fail; tools that take a model path accept the
    natural spelling and pass it on under their own key.
    """
    sys.argv = [
        f"{new_key}=" + arg.removeprefix("model=") if arg.startswith("model=") else arg
        for arg in sys.argv
    ]


OUTPUT_DIR_KEYS = ("paths.output_dir", "paths.run_dir", "hydra.run.dir", "hydra.sweep.dir")


def check_output_dirs(arguments: list[str]) -> None:
    """Create the output directories named on the command line, or exit naming the one
    that cannot be (Hydra would otherwise fail creating it with a traceback)."""
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or key.lstrip("+") not in OUTPUT_DIR_KEYS or not value or "${" in value:
            continue
        try:
            Path(value).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            print(f"error: {key}={value}: cannot create it ({error.strerror})", file=sys.stderr)
            sys.exit(2)
