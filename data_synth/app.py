"""The one runner behind every Hydra command line (``spellfix-synth``, ``-train``, ``-eval``,
``-export``, ``-serve``): the same checks, the same one-line errors, the same exit codes.

- exit 2, one line ``<command>: error: ...``: anything the user can fix. That covers what
  Hydra refuses while composing (an unknown key or config group, a bad override), which
  Hydra itself would print over several lines with exit 1, a value of the wrong type
  (Hydra accepts ``data.max_tokens=lots`` from a YAML default and the run would die
  later, deep in a sampler), an output directory that cannot be created, and the errors
  each command declares as the user's (a corpus, a pairs file, a Triton setting).
- exit 130: Ctrl-C, with what was kept. Any other exception is a bug: a full traceback.

It lives in ``data_synth``, the lowest layer, because ``spellfix-synth`` uses it too
and ``data_synth`` may not import ``spellfix``.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from data_synth.corpus import CorpusError
from data_synth.paths import CONF_DIR

# Keys whose directories Hydra or the run creates; created (or refused) before any work.
OUTPUT_DIR_KEYS = ("paths.output_dir", "paths.run_dir", "hydra.run.dir", "hydra.sweep.dir")
# Lines of Hydra's messages that say nothing to a user of these commands.
_HYDRA_DETAIL = ("full_key:", "object_type=", "See https://hydra.cc", "reference_type=")


class UserConfigError(ValueError):
    """A setting or input the user can fix; reported as one line, without a traceback."""


class ConfigTypeError(UserConfigError):
    """An override whose value has the wrong type for its key."""


class Interrupted(UserConfigError):
    """Ctrl-C: the message says what was kept and how to go on (exit status 130)."""


def hydra_app(
    config_name: str,
    command: str,
    user_errors: tuple[type[BaseException], ...] = (),
    model_argument: str | None = None,
    on_failure: Callable[[], None] | None = None,
) -> Callable[[Callable[[DictConfig], int | None]], Callable[[], None]]:
    """Turn ``body(cfg) -> exit status or None`` into the console script ``main()``.

    ``user_errors`` are the exception types the command reports as one line (exit 2)
    besides ``UserConfigError``, ``CorpusError`` and ``FileNotFoundError``;
    ``model_argument`` lets ``model=<path>`` mean ``<model_argument>=<path>`` (see
    ``rename_model_argument``); ``on_failure`` runs when the body fails in any way
    (training removes a run directory without a checkpoint).
    """
    reported = (UserConfigError, CorpusError, FileNotFoundError, *user_errors)

    def decorate(body: Callable[[DictConfig], int | None]) -> Callable[[], None]:
        checked_before_hydra = False

        @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
        def run(cfg: DictConfig) -> None:
            try:
                if not checked_before_hydra:  # a sweep or --cfg: check each job here
                    overrides = list(HydraConfig.get().overrides.task)
                    check_override_types(cfg, config_name, overrides, _choices())
                status = body(cfg)
            except BaseException as error:
                if on_failure is not None:
                    on_failure()
                _exit_for(error, command, reported)
                raise
            if status:
                sys.exit(status)

        def main() -> None:
            nonlocal checked_before_hydra
            if model_argument is not None:
                rename_model_argument(model_argument)
            arguments = sys.argv[1:]
            try:
                check_output_dirs(arguments)
                # Flags (--help, --cfg, -m, -cn, ...) change what Hydra composes, or
                # compose nothing: those runs are left to Hydra and checked per job.
                if not any(argument.startswith("-") for argument in arguments):
                    compose_checked(config_name, arguments)
                    checked_before_hydra = True
            except UserConfigError as error:
                _exit_for(error, command, reported)
            run()

        main.__doc__ = body.__doc__
        return main

    return decorate


def compose_checked(config_name: str, overrides: list[str]) -> DictConfig:
    """The config Hydra will compose from ``overrides``, or ``UserConfigError`` in one line.

    Refuses what Hydra refuses (unknown keys and groups, bad syntax) and what it lets
    through but the code cannot use: a value whose type contradicts its default.
    """
    parser = OverridesParser.create()
    for override in overrides:  # Hydra's grammar errors do not say which override failed
        try:
            parser.parse_overrides([override])
        except HydraException as error:
            raise UserConfigError(f"{override}: {_one_line(error)}") from None
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as error:
            unknown = getattr(error.__cause__, "full_key", None)
            if isinstance(error.__cause__, ConfigAttributeError | ConfigKeyError) and unknown:
                raise UserConfigError(_no_such_key(config_name, unknown)) from None
            raise UserConfigError(_one_line(error)) from None
        choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
        check_override_types(cfg, config_name, overrides, choices)  # type: ignore[arg-type]
    with_hydra = OmegaConf.to_container(cfg)
    del with_hydra["hydra"]  # type: ignore[union-attr]
    return OmegaConf.create(with_hydra)


def check_override_types(
    cfg: DictConfig, config_name: str, overrides: list[str], choices: Mapping[str, Any]
) -> None:
    """Raise ``ConfigTypeError`` naming the first override whose type contradicts its default.

    Every default in ``conf/`` is typed by its value, so an override is checked against
    the value it replaces: a number stays a number, a bool stays a bool. ``choices`` are
    the config groups (``model=bart_small`` picks a file, it is not a value).
    """
    parsed = OverridesParser.create().parse_overrides(overrides)
    picks = [o.input_line for o in parsed if not o.is_delete() and o.key_or_group in choices]
    reference = compose(config_name, overrides=picks)
    for override in parsed:
        key = override.key_or_group
        if override.is_delete() or override.is_add() or key in choices:
            continue
        if key.startswith("hydra."):
            continue
        default = OmegaConf.select(reference, key, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
        if isinstance(default, DictConfig) or not _compatible(default, value):
            expected = type(default).__name__
            raise ConfigTypeError(
                f"{key}={override.value()!r}: expected {expected} like the default {default!r}"
            )


def instantiate_checked(
    node: Any, key: str, refusals: tuple[type[BaseException], ...] = (), **kwargs: Any
) -> Any:
    """``hydra.utils.instantiate``, with a constructor's refusal of its arguments reported
    as ``UserConfigError`` naming the config key.

    ``trainer.precision=17`` reaches Lightning's ``Trainer``, which raises ``ValueError``;
    Hydra wraps it in an ``InstantiationException`` whose traceback says nothing a user
    can act on. ``ValueError``, ``TypeError`` (an argument the class does not take) and
    ``refusals`` (a library's own, such as Lightning's ``MisconfigurationException``)
    count as the user's; anything else is a bug and keeps its traceback.
    """
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        if not isinstance(error.__cause__, (ValueError, TypeError, *refusals)):
            raise
        message = " ".join(str(error.__cause__).split())
        raise UserConfigError(f"{key}: {message}") from error


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


def check_output_dirs(arguments: list[str]) -> None:
    """Create the output directories named on the command line, or raise naming the one
    that cannot be (Hydra would otherwise fail creating it with a traceback)."""
    for argument in arguments:
        key, sep, value = argument.partition("=")
        if not sep or key.lstrip("+") not in OUTPUT_DIR_KEYS or not value or "${" in value:
            continue
        try:
            Path(value).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserConfigError(f"{key}={value}: cannot create it ({error.strerror})") from None


def _no_such_key(config_name: str, key: str) -> str:
    """Hydra's advice for an unknown key is to add it with ``+``, which for a typo
    (``trainer.max_step``) silently does nothing: name the closest existing key instead."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(compose(config_name), parent) if parent else compose(config_name)
    siblings = [str(name) for name in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if close:
        return f"{key}: no such key; did you mean {parent + '.' if parent else ''}{close[0]}?"
    owner = parent or f"the {config_name} config"
    where = f"{owner} has {', '.join(siblings)}" if siblings else "see --cfg job for the keys"
    return f"{key}: no such key ({where}); a key of your own needs a + in front"


def _choices() -> Mapping[str, Any]:
    return HydraConfig.get().runtime.choices


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


def _exit_for(error: BaseException, command: str, reported: tuple[type[BaseException], ...]):
    """Exit with the status and the one line the module docstring promises; return (so
    the caller re-raises) for an error that is a bug."""
    if isinstance(error, Interrupted):
        print(f"{command}: {error}", file=sys.stderr)
        sys.exit(130)
    if isinstance(error, KeyboardInterrupt):
        print(f"{command}: interrupted; nothing was kept", file=sys.stderr)
        sys.exit(130)
    if isinstance(error, reported):
        print(f"{command}: error: {error}", file=sys.stderr)
        sys.exit(2)


def _one_line(error: BaseException) -> str:
    """Hydra's multi-line message (and OmegaConf's cause) as one line.

    ``Could not find 'model/bogus'`` is followed by one option per line: those become a
    comma-separated list; the search path and the pointers to Hydra's docs are dropped.
    """
    text = str(error) + ("\n" + str(error.__cause__) if error.__cause__ else "")
    parts: list[str] = []
    listing = False
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("Config search path"):
            break
        if not line or line.startswith(_HYDRA_DETAIL):
            continue
        if listing:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
        else:
            parts.append(line.rstrip("."))
        # After "Available options in 'model':" each line is a bare config name.
        listing = line.endswith(":") or (listing and " " not in line)
    return "; ".join(parts)
