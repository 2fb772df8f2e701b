"""SageMaker training-job entrypoint: the job's environment -> Hydra overrides -> ``train(cfg)``.

A SageMaker training container hands a job over through files under ``/opt/ml`` and
``SM_*`` environment variables (hyperparameters, input channels, hosts, GPUs) and
expects results in fixed places: the model in ``SM_MODEL_DIR``, everything else worth
keeping in ``SM_OUTPUT_DATA_DIR``, checkpoints in ``/opt/ml/checkpoints`` (synced to
S3, so a spot-interrupted job restarted on a new instance finds them again) and, when
the job fails, a one-line reason in ``/opt/ml/output/failure``.

``run_job`` translates that contract into the overrides a user would type for
``spellfix-train`` and then runs the very same ``train(cfg)``, so a SageMaker run and a
local run of the same overrides train the same model.

Lightning starts the extra local ranks of a DDP run by re-running this process's
command line with the same environment (plus ``LOCAL_RANK``), so everything here is
derived from the environment alone and only global rank zero publishes results.
``SPELLFIX_SM_ROOT`` replaces ``/opt/ml`` (tests use a temporary directory) and
``SPELLFIX_SM_MASTER_ADDR`` replaces the first host's name as the DDP master address.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_synth.app import UserConfigError, compose_checked
from data_synth.corpus import CorpusError

ROOT_ENV = "SPELLFIX_SM_ROOT"
MASTER_ADDR_ENV = "SPELLFIX_SM_MASTER_ADDR"
DEFAULT_ROOT = Path("/opt/ml")
DEFAULT_MASTER_PORT = "29500"
# The hyperparameter the entrypoint acts on itself instead of passing it to Hydra: formats
# to export the trained model to, e.g. "onnx" or "onnx,triton".
EXPORT_KEY = "export"
METRIC_LINES_LOGGER = "metric_lines"  # logger section added to every job's config
# Files a `train` channel may hold as the clean-query corpus (data_synth reads them by suffix).
CORPUS_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl")
# Run-directory entries that are not copied to SM_OUTPUT_DATA_DIR: the model goes to
# SM_MODEL_DIR, checkpoints are synced by SageMaker itself, the tokenizer is in the model.
NOT_OUTPUT = {"model", "checkpoints", "tokenizer"}


class SageMakerJobError(UserConfigError):
    """The job's environment or hyperparameters cannot be turned into a training run."""


@dataclass(frozen=True)
class TrainingJob:
    """What SageMaker told this process about the job, read once from the environment."""

    root: Path
    hyperparameters: dict[str, Any]
    channels: dict[str, Path]
    model_dir: Path
    output_data_dir: Path
    hosts: list[str]
    current_host: str
    num_gpus: int
    name: str

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, root: Path | None = None
    ) -> TrainingJob:
        env = os.environ if environ is None else environ
        root = Path(root or env.get(ROOT_ENV) or DEFAULT_ROOT)
        hosts = _json_env(env, "SM_HOSTS", ["algo-1"])
        current = env.get("SM_CURRENT_HOST", hosts[0])
        if current not in hosts:
            raise SageMakerJobError(f"SM_CURRENT_HOST={current!r} is not one of SM_HOSTS={hosts}")
        return cls(
            root=root,
            hyperparameters=read_hyperparameters(env, root),
            channels=read_channels(env, root),
            model_dir=Path(env.get("SM_MODEL_DIR", root / "model")),
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR", root / "output" / "data")),
            hosts=list(hosts),
            current_host=current,
            num_gpus=int(env.get("SM_NUM_GPUS", "0")),
            name=env.get("TRAINING_JOB_NAME", "sagemaker"),
        )

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def failure_file(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def work_dir(self) -> Path:
        """Local scratch for the run directory and the dataset cache (not uploaded).

        Not named ``spellfix``: a job started from the ``/opt/ml`` root would then see
        the scratch directory as a namespace package shadowing an editable install.
        """
        return self.root / "work"

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "runs" / self.name


def _json_env(env: Mapping[str, str], key: str, default: Any) -> Any:
    if key not in env:
        return default
    try:
        return json.loads(env[key])
    except json.JSONDecodeError as error:
        raise SageMakerJobError(f"{key}={env[key]!r} is not JSON ({error.msg})") from None


def decode_value(value: Any) -> Any:
    """SageMaker JSON-encodes hyperparameter values as strings; undo that where it applies."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value  # a bare word such as bart_small is a string already


def read_hyperparameters(env: Mapping[str, str], root: Path) -> dict[str, Any]:
    """``SM_HPS`` when set, else ``<root>/input/config/hyperparameters.json``, decoded."""
    if "SM_HPS" in env:
        raw = _json_env(env, "SM_HPS", {})
    else:
        path = root / "input" / "config" / "hyperparameters.json"
        if not path.is_file():
            return {}
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise SageMakerJobError(f"{path}:{error.lineno}: not JSON ({error.msg})") from None
    if not isinstance(raw, dict):
        raise SageMakerJobError(f"hyperparameters must be a JSON object, got {type(raw).__name__}")
    return {key: decode_value(value) for key, value in raw.items()}


def read_channels(env: Mapping[str, str], root: Path) -> dict[str, Path]:
    """Input channels by name: the ``SM_CHANNEL_<NAME>`` variables, else the directories."""
    channels = {
        key.removeprefix("SM_CHANNEL_").lower(): Path(value)
        for key, value in env.items()
        if key.startswith("SM_CHANNEL_")
    }
    data_root = root / "input" / "data"
    if not channels and data_root.is_dir():
        channels = {path.name: path for path in sorted(data_root.iterdir()) if path.is_dir()}
    return channels


def parse_command_line(argv: Sequence[str]) -> dict[str, Any]:
    """Overrides from the command line, as ``--key value``, ``--key=value`` or ``key=value``.

    SageMaker passes hyperparameters to the entry point as ``--key value`` pairs, a form
    Hydra rejects, while a person running the script by hand types Hydra's ``key=value``.
    """
    parsed: dict[str, Any] = {}
    position = 0
    while position < len(argv):
        token = argv[position]
        position += 1
        if token.startswith("--"):
            key, has_value, value = token[2:].partition("=")
            if not has_value:
                if position >= len(argv) or argv[position].startswith("--"):
                    raise SageMakerJobError(f"command line: {token} has no value; use {token} V")
                value = argv[position]
                position += 1
            parsed[key] = decode_value(value)
        elif "=" in token:
            key, _, value = token.partition("=")
            parsed[key] = _Verbatim(value)
        else:
            raise SageMakerJobError(f"command line: {token!r} is neither --key value nor key=value")
    return parsed


class _Verbatim(str):
    """A value typed in Hydra syntax already (``key=value``): passed on unchanged."""


def hydra_value(value: Any) -> str:
    """A decoded hyperparameter in Hydra's override syntax (lists as ``[a,b]``, JSON null)."""
    if isinstance(value, _Verbatim):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def channel_overrides(job: TrainingJob, user_keys: set[str]) -> dict[str, str]:
    """The ``train`` channel as the data source: a data_synth dataset or a corpus file."""
    train = job.channels.get("train")
    if train is None or user_keys & {"data.dataset_dir", "data.corpus.path"}:
        return {}
    if (train / "manifest.json").is_file():
        return {"data.dataset_dir": str(train)}
    corpora = sorted(p for p in train.iterdir() if p.suffix.lower() in CORPUS_SUFFIXES)
    if len(corpora) == 1:
        return {"data.corpus.path": str(corpora[0])}
    found = ", ".join(p.name for p in corpora) or "no corpus file"
    raise SageMakerJobError(
        f"train channel {train}: expected one data_synth dataset or one corpus file "
        f"({'/'.join(CORPUS_SUFFIXES)}), found {found}; name one with the hyperparameter "
        "data.corpus.path"
    )


def job_overrides(job: TrainingJob, argv: Sequence[str] = ()) -> list[str]:
    """Everything the job's environment implies, then the user's hyperparameters on top."""
    user = {**job.hyperparameters, **parse_command_line(argv)}
    user.pop(EXPORT_KEY, None)
    nodes = len(job.hosts)
    derived: dict[str, str] = {
        "paths.output_dir": str(job.work_dir),
        "paths.run_name": job.name,
        "paths.checkpoint_dir": str(job.checkpoint_dir),
        "trainer.num_nodes": str(nodes),
        # spellfix-metric lines on stdout: what the estimator's metric_definitions match
        f"+logger.{METRIC_LINES_LOGGER}": "{_target_:spellfix.callbacks.samples.MetricLineLogger}",
    }
    if job.num_gpus > 0:
        derived.update({"trainer": "gpu", "trainer.devices": str(job.num_gpus)})
    else:
        derived.update({"trainer": "cpu", "trainer.devices": "1"})
    if nodes > 1 or job.num_gpus > 1:
        derived["trainer.strategy"] = "ddp"
    if (job.checkpoint_dir / "last.ckpt").is_file():
        derived["ckpt_path"] = str(job.checkpoint_dir / "last.ckpt")  # a restarted job resumes
    derived.update(channel_overrides(job, set(user)))
    merged = {**derived, **{key: hydra_value(value) for key, value in user.items()}}
    return [f"{key}={value}" for key, value in merged.items()]


def export_formats(job: TrainingJob, argv: Sequence[str] = ()) -> list[str]:
    """The ``export`` hyperparameter as a list: ``onnx``, ``"onnx,triton"`` or a JSON list."""
    value = {**job.hyperparameters, **parse_command_line(argv)}.get(EXPORT_KEY)
    if value in (None, "", False):
        return []
    if isinstance(value, str):
        value = value.strip("[]").split(",")
    return [str(name).strip() for name in value if str(name).strip()]


def set_distributed_environment(job: TrainingJob, environ: MutableMapping[str, str]) -> None:
    """Point every host at the first one, the convention torchrun and SageMaker share.

    Values already present win (torchrun sets them itself under ``torch_distributed``);
    ``SPELLFIX_SM_MASTER_ADDR`` wins over both, so tests can use 127.0.0.1 for ``algo-1``.
    """
    if len(job.hosts) < 2:
        return
    environ["MASTER_ADDR"] = environ.get(MASTER_ADDR_ENV) or environ.get(
        "MASTER_ADDR", job.hosts[0]
    )
    environ.setdefault("MASTER_PORT", DEFAULT_MASTER_PORT)
    environ.setdefault("NODE_RANK", str(job.node_rank))


def is_global_zero(job: TrainingJob, environ: Mapping[str, str]) -> bool:
    return job.node_rank == 0 and int(environ.get("LOCAL_RANK", "0")) == 0


def compose_train_config(overrides: list[str]):
    """The ``train`` config with ``overrides``, checked as ``spellfix-train`` checks it."""
    try:
        return compose_checked("train", overrides)
    except UserConfigError as error:
        raise SageMakerJobError(f"bad hyperparameter: {error}") from None


def publish(job: TrainingJob, run_dir: Path, formats: list[str]) -> None:
    """Copy the model (and exports) to SM_MODEL_DIR, the evidence to SM_OUTPUT_DATA_DIR."""
    from spellfix.report import write_report

    job.model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(run_dir / "model", job.model_dir, dirs_exist_ok=True)
    if formats:
        export_model(job.model_dir, job.model_dir / "export", formats)
    write_report(run_dir)
    job.output_data_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(run_dir.iterdir()):
        if item.name in NOT_OUTPUT:
            continue
        target = job.output_data_dir / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True, symlinks=True)
        else:
            shutil.copy2(item, target)


def export_model(model_dir: Path, output_dir: Path, formats: list[str]) -> None:
    """Run ``spellfix-export`` on the trained model with its default settings."""
    from hydra import compose, initialize_config_dir

    from data_synth.paths import CONF_DIR
    from spellfix.export.cli import export

    overrides = [
        f"model_path={model_dir}",
        f"output_dir={output_dir}",
        f"formats=[{','.join(formats)}]",
        "overwrite=true",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("export", overrides=overrides)
    export(cfg)


def write_failure(job_root: Path, error: BaseException) -> Path:
    """``<root>/output/failure``: SageMaker shows its first line as the job's FailureReason."""
    reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
    path = job_root / "output" / "failure"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reason + "\n")
    return path


def run_job(
    argv: Sequence[str] = (),
    environ: MutableMapping[str, str] | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Train as the SageMaker job describes; rank zero publishes; returns train's result."""
    from spellfix.train import train

    env = os.environ if environ is None else environ
    job = TrainingJob.from_environment(env, root)
    overrides = job_overrides(job, argv)
    formats = export_formats(job, argv)
    set_distributed_environment(job, env)
    cfg = compose_train_config(overrides)
    if is_global_zero(job, env):
        print("spellfix-sagemaker overrides: " + " ".join(overrides), flush=True)
    result = train(cfg)
    if is_global_zero(job, env):
        publish(job, Path(result["run_dir"]), formats)
        print(f"spellfix-sagemaker: model -> {job.model_dir}, outputs -> {job.output_data_dir}")
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """``spellfix-sagemaker``: run the job; on any failure write the failure file, exit 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    root = Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)
    try:
        run_job(argv)
    except Exception as error:
        if not isinstance(error, UserConfigError | FileNotFoundError | CorpusError):
            traceback.print_exc()  # a bug or an environment problem: keep the evidence
        path = write_failure(root, error)
        print(f"spellfix-sagemaker: error: {path.read_text().strip()}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
