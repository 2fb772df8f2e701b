"""Training callbacks, instantiated from the ``callbacks`` config group.

Each callback is one file under ``conf/callbacks/`` holding a ``_target_`` and its
arguments, composed by ``default.yaml``, the way the Trainer and the loggers are
built; adding a callback is adding a file and a line in that defaults list.
``build_callbacks`` is the one place that turns the group into Lightning callbacks,
so ``train(cfg)``, the SageMaker entrypoint and tests get the same set.
"""

from __future__ import annotations

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from data_synth.app import UserConfigError, instantiate_checked


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The enabled callbacks of ``cfg`` (the ``callbacks`` group), in config order.

    Besides its ``_target_`` and arguments, every entry carries ``enabled``, which is
    read here and not passed on: ``callbacks.<name>.enabled=false`` leaves a callback
    out. The directories the callbacks write to interpolate ``paths.run_dir`` and
    ``paths.checkpoint_dir``, which ``train`` pins to the run before calling this.
    An entry without a ``_target_``, or whose callback refuses its arguments, is
    reported as one line naming the entry.
    """
    callbacks: list[Callback] = []
    for name, entry in cfg.items():
        arguments = OmegaConf.to_container(entry, resolve=True)
        if not arguments.pop("enabled", True):
            continue
        if "_target_" not in arguments:
            raise UserConfigError(f"callbacks.{name}: no _target_ naming the callback to build")
        callbacks.append(
            instantiate_checked(arguments, f"callbacks.{name}", (MisconfigurationException,))
        )
    return callbacks
