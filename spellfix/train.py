"""``train(cfg)``: from a composed config to a saved model directory.

The function is plain so tests and other entry points (SageMaker, notebooks) call it
with a composed config; ``main`` is the Hydra shim (``data_synth.app``) behind ``spellfix-train``.
Steps, in order: seed; find or synthesize the dataset; load or train the tokenizer;
build the data module, the model, the callbacks, the loggers and the Trainer; fit
(resuming when asked); save the best checkpoint as an HF directory ``<run_dir>/model``;
test it; print a table of sample corrections and the metrics.

Under DDP Lightning re-runs this same command once per extra rank with the run
directory pinned, so everything written before ``fit`` is either idempotent (the
dataset cache, the tokenizer) or done by rank zero only.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

import spellfix
from data_synth.app import Interrupted, UserConfigError, hydra_app, instantiate_checked
from data_synth.build import load_dataset_dir
from data_synth.corpus import resolve_source
from data_synth.files import atomic_path, staged_directory, write_json_atomic
from spellfix.calibrate import CalibrationReport, calibrate
from spellfix.callbacks import build_callbacks
from spellfix.callbacks.batch_size import ThroughputTuner, load_search
from spellfix.callbacks.samples import log_model_artifact
from spellfix.correct import read_catalog
from spellfix.data import SpellDataModule, resolve_dataset_dir
from spellfix.decoding import CATALOG_FILE, LEXICON_FILE, DecodingSettings, save_settings
from spellfix.lexicon import build_lexicon
from spellfix.model import SpellCorrector
from spellfix.report import write_report
from spellfix.tokenizer import load_tokenizer, train_tokenizer

console = Console()
# The tokenizer is kept beside the checkpoints on purpose (see prepare_tokenizer).
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")


def _is_launched_rank() -> bool:
    """True in the processes Lightning starts for ranks other than zero."""
    return int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0


def resolve_run_dir(cfg: DictConfig) -> Path:
    """Pin ``paths.run_dir`` to the directory Hydra made, so every rank writes to one."""
    if HydraConfig.initialized():
        cfg.paths.run_dir = HydraConfig.get().runtime.output_dir
    run_dir = Path(cfg.paths.run_dir).resolve()
    cfg.paths.run_dir = str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def check_checkpoint_fits(path: str, cfg: DictConfig) -> None:
    """Refuse, in one line, a checkpoint of another architecture than the one configured."""
    if cfg.model.pretrained:
        return
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as error:
        raise UserConfigError(f"ckpt_path={path}: not a spellfix checkpoint ({error})") from None
    saved_shape = saved.get("model_config") or {}
    differs = [
        f"{key} {saved_shape[key]} there, {value} here"
        for key, value in OmegaConf.to_container(cfg.model.config, resolve=True).items()
        if key in saved_shape and saved_shape[key] != value
    ]
    if differs:
        raise UserConfigError(
            f"ckpt_path: {path} was trained with another architecture ({differs[0]}); "
            "resume with the model settings it was trained with, or start a new run"
        )


def resolve_checkpoint(ckpt_path: str | None, checkpoint_dir: Path, runs_dir: Path) -> str | None:
    """``last`` means this run's last.ckpt, else the newest one of any earlier run."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path != "last":
        if not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
        return str(ckpt_path)
    own = checkpoint_dir / "last.ckpt"
    if own.is_file():
        return str(own)
    candidates = sorted(runs_dir.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(
            f"ckpt_path=last: no last.ckpt in {checkpoint_dir} or under {runs_dir}/*/checkpoints"
        )
    return str(candidates[-1])


def prepare_tokenizer(
    cfg: DictConfig, dataset_dir: Path, run_dir: Path, checkpoint_dir: Path, resume: str | None
) -> Path:
    """The run's tokenizer directory: resumed, pretrained, or trained on the training split.

    A copy lives beside the checkpoints, so a job resumed on a fresh machine (a spot
    instance that only kept ``paths.checkpoint_dir``) finds the tokenizer it trained with.
    """
    tokenizer_dir = run_dir / "tokenizer"
    if resume:
        beside = Path(resume).parent / "tokenizer"
        if (beside / "tokenizer.json").is_file():
            return beside
        state = torch.load(resume, map_location="cpu", weights_only=True)
        return Path(state["hyper_parameters"]["tokenizer_dir"])
    if (tokenizer_dir / "tokenizer.json").is_file():
        return tokenizer_dir  # written by rank zero before the other ranks started
    tok_cfg = cfg.model.tokenizer
    if tok_cfg.pretrained:
        tokenizer = load_tokenizer(tok_cfg.pretrained)
    elif cfg.model.pretrained:
        tokenizer = load_tokenizer(cfg.model.pretrained)
    else:
        train_split = load_dataset_dir(dataset_dir)["train"]
        texts = list(train_split["clean"]) + list(train_split["noisy"])
        tokenizer = train_tokenizer(texts, tok_cfg.vocab_size, tok_cfg.min_frequency)
    tokenizer.save_pretrained(tokenizer_dir)
    tokenizer.save_pretrained(checkpoint_dir / "tokenizer")
    return tokenizer_dir


# conf/decoding keys that are not saved decoding settings: they build the lexicon and
# drive calibration.
_LEXICON_KEYS = (
    "english",
    "web_words",
    "web_count_discount",
    "corpus_share",
    "lexicon",
    "catalog",
)
_CALIBRATION_KEYS = (
    "calibrate",
    "target_overcorrection",
    "target_oversuggestion",
    "hidden_word_share",
    "calibration_queries",
)


def decoding_settings(cfg: DictConfig) -> DecodingSettings:
    """The decoding a run starts from: conf/decoding, in the mode of data.direction.

    A value the settings refuse (``max_candidates=0``) is a config error in one line.
    """
    try:
        return _decoding_settings(cfg)
    except ValueError as error:
        raise UserConfigError(str(error)) from None


def _decoding_settings(cfg: DictConfig) -> DecodingSettings:
    values = OmegaConf.to_container(cfg.decoding, resolve=True)
    for key in (*_LEXICON_KEYS, *_CALIBRATION_KEYS):
        values.pop(key, None)
    if cfg.data.get("direction", "channel") == "channel":
        if cfg.decoding.catalog and values["constraint"] == "lexicon":
            values["constraint"] = "catalog"  # a catalog is given to be preferred
        if values["constraint"] == "catalog" and not cfg.decoding.catalog:
            raise UserConfigError(
                "decoding.constraint=catalog needs decoding.catalog=<file of titles or names>"
            )
        return DecodingSettings.from_dict({**values, "mode": "channel"})
    if values["constraint"] != "none":
        raise UserConfigError(
            f"decoding.constraint={values['constraint']}: a forward model (data.direction="
            "forward) generates freely; use decoding.constraint=none or data.direction=channel"
        )
    return DecodingSettings.from_dict({**values, "mode": "generate"})


def prepare_lexicon(cfg: DictConfig, dataset_dir: Path, run_dir: Path) -> Path:
    """``<run_dir>/lexicon.tsv`` (and ``catalog.tsv``), built once per run, idempotently."""
    path = run_dir / LEXICON_FILE
    if path.is_file():
        return path
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    builtin = resolve_source(manifest.get("corpus") or {"source": "builtin"}) == "builtin"
    clean = [] if builtin else list(load_dataset_dir(dataset_dir)["train"]["clean"])
    lexicon = build_lexicon(
        clean,
        builtin_corpus=builtin,
        english=bool(cfg.decoding.english),
        corpus_share=float(cfg.decoding.corpus_share),
        files=list(cfg.decoding.lexicon or []),
        web=bool(cfg.decoding.web_words),
        web_count_discount=cfg.decoding.web_count_discount,
    )
    if cfg.decoding.catalog:
        with atomic_path(run_dir / CATALOG_FILE) as temporary:
            read_catalog(cfg.decoding.catalog).save(temporary)
    with atomic_path(path) as temporary:
        lexicon.save(temporary)
    return path


def calibrate_decoding(
    module: SpellCorrector, dataset_dir: Path, cfg: DictConfig
) -> CalibrationReport | None:
    """Choose the decoding weights and thresholds on the validation split (channel models)."""
    if module.decoding.mode != "channel" or not cfg.decoding.calibrate:
        return None
    validation = load_dataset_dir(dataset_dir)["validation"]
    module.model.eval()
    report = calibrate(
        module._decoder(),
        list(validation["noisy"]),
        list(validation["clean"]),
        target_overcorrection=float(cfg.decoding.target_overcorrection),
        target_oversuggestion=float(cfg.decoding.target_oversuggestion),
        hidden_word_share=float(cfg.decoding.hidden_word_share),
        max_queries=int(cfg.decoding.calibration_queries),
        seed=int(cfg.seed),
    )
    module.decoding = report.settings
    return report


def batch_size_tuner(cfg: DictConfig, run_dir: Path, resume: str | None) -> Callback | None:
    """The search when ``tuner.batch_size=auto``; a resumed run reuses its earlier choice."""
    mode = cfg.tuner.batch_size
    if mode is None:
        return None
    if mode != "auto":
        raise UserConfigError(f"tuner.batch_size={mode!r}: use auto, or null to keep data.*")
    if resume:
        earlier = load_search(Path(resume).parent.parent)
        if earlier:
            key = earlier["key"].removeprefix("data.")
            cfg.data[key] = earlier["chosen"]
            return None
    options = OmegaConf.to_container(cfg.tuner, resolve=True)
    options.pop("batch_size")
    return ThroughputTuner(run_dir, **options)


def _wandb_offline() -> bool:
    """W&B stays offline unless the environment explicitly asks for ``WANDB_MODE=online``
    (``conf/logger/wandb.yaml`` reads this as ``${spellfix.wandb_offline:}``)."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


if not OmegaConf.has_resolver("spellfix.wandb_offline"):
    OmegaConf.register_new_resolver("spellfix.wandb_offline", _wandb_offline)


def build_loggers(cfg: DictConfig) -> list[pl.loggers.Logger]:
    if not cfg.get("logger"):
        return []
    return [
        instantiate_checked(section, f"logger.{name}", (MisconfigurationException,))
        for name, section in cfg.logger.items()
    ]


# Keys with a fixed set of values: anything else is refused by name, not quietly read as
# some other choice (``data.batching=token`` used to train by example count).
CHOICES = {
    "data.batching": ("tokens", "size"),
    "data.noise_mode": ("static", "dynamic"),
    "data.direction": ("channel", "forward"),
    "model.optim.schedule": ("linear", "cosine", "constant"),
    "model.attn_implementation": ("sdpa", "eager"),
    "decoding.constraint": ("lexicon", "catalog", "none"),
    "tuner.batch_size": (None, "auto"),
}
# Numbers with a floor, (floor, whether the floor itself is allowed): below it a run fails
# late, deep in numpy or torch (seed=-1, lr=-1), or trains on empty inputs (length 0).
FLOORS = {
    "seed": (0, True),
    "model.optim.lr": (0, False),
    "model.optim.weight_decay": (0, True),
    "data.max_source_length": (1, True),
    "data.max_target_length": (1, True),
}


def check_choices(cfg: DictConfig) -> None:
    """Refuse a value outside a key's choices, and settings that contradict each other."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value not in allowed:
            names = ", ".join("null" if a is None else str(a) for a in allowed)
            raise UserConfigError(f"{key}={value!r}: choose one of {names}")
    for key, (floor, inclusive) in FLOORS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and (value < floor or (value == floor and not inclusive)):
            bound = ">=" if inclusive else ">"
            raise UserConfigError(f"{key}={value!r}: expected a number {bound} {floor}")
    optim = cfg.model.optim
    if float(optim.get("warmup_ratio", 0.0)) > 0 and int(optim.get("warmup_steps", 0)) > 0:
        raise UserConfigError(
            f"model.optim.warmup_ratio={optim.warmup_ratio} and model.optim.warmup_steps="
            f"{optim.warmup_steps} both set the warmup; set one of them to 0"
        )
    discount = cfg.decoding.get("web_count_discount")
    if discount is not None and not float(discount) >= 0:
        raise UserConfigError(
            f"decoding.web_count_discount={discount!r}: expected a number >= 0 or null"
        )


def warn_oversubscription(cfg: DictConfig) -> None:
    """One warning when CPU training starts more processes than there are cores."""
    if cfg.trainer.accelerator != "cpu" or not isinstance(cfg.trainer.devices, int):
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cfg.trainer.devices > (cores or 1):
        warnings.warn(
            f"trainer.devices={cfg.trainer.devices} CPU processes on {cores} cores: they "
            "will compete for the cores and each will run slower; use at most one per core",
            stacklevel=2,
        )


def check_strategy(cfg: DictConfig) -> None:
    """Refuse at once what would otherwise fail deep inside Lightning or DeepSpeed."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if strategy.startswith("deepspeed") and not torch.cuda.is_available():
        raise UserConfigError(
            f"trainer.strategy={strategy} needs CUDA GPUs and none is visible; "
            "use trainer=cpu or trainer=ddp on this machine"
        )


def code_version() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


@rank_zero_only
def save_model_dir(
    module: SpellCorrector,
    best_ckpt: str | None,
    model_dir: Path,
    cfg: DictConfig,
    manifest: dict,
    metrics: dict,
    calibration: CalibrationReport | None = None,
) -> None:
    """Write the module's weights as an HF directory (safetensors) with its tokenizer, its
    decoding settings and lexicon, and metadata."""
    meta = {
        "spellfix_version": spellfix.__version__,
        "code_version": code_version(),
        "best_checkpoint": best_ckpt,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "data_manifest": manifest,
        "metrics": metrics,
        "calibration": calibration.to_dict() if calibration else None,
    }
    with staged_directory(model_dir, if_exists="replace") as staging:
        module.model.save_pretrained(staging, safe_serialization=True)
        module.tokenizer.save_pretrained(staging)
        (staging / "spellfix.json").write_text(json.dumps(meta, indent=2, default=str))
        save_settings(module.decoding, staging)
        if module.lexicon_path:
            shutil.copyfile(module.lexicon_path, staging / LEXICON_FILE)
            catalog = Path(module.lexicon_path).with_name(CATALOG_FILE)
            if catalog.is_file():
                shutil.copyfile(catalog, staging / CATALOG_FILE)


def print_summary(
    run_dir: Path, samples: list[tuple[str, str, float]], metrics: dict[str, float], seconds: float
) -> None:
    table = Table(title="Sample corrections", show_lines=False)
    table.add_column("query")
    table.add_column("corrected")
    table.add_column("confidence", justify="right")
    for query, corrected, confidence in samples:
        table.add_row(query, corrected, f"{confidence:.2f}")
    console.print(table)
    shown = {k: v for k, v in metrics.items() if k.startswith(("test/", "val/", "calibration/"))}
    if shown:
        metric_table = Table(title="Metrics")
        metric_table.add_column("metric")
        metric_table.add_column("value", justify="right")
        for key in sorted(shown):
            metric_table.add_row(key, f"{shown[key]:.4f}")
        console.print(metric_table)
    console.print(f"Trained in {seconds / 60:.1f} min. Model: {run_dir / 'model'}")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a spell corrector as ``cfg`` says; returns the metrics and where things went."""
    started = time.time()
    check_choices(cfg)
    check_strategy(cfg)
    if not _is_launched_rank():
        warn_oversubscription(cfg)
    settings = decoding_settings(cfg)  # a bad decoding value fails before any work
    for word_file in [
        *([cfg.decoding.catalog] if cfg.decoding.catalog else []),
        *(cfg.decoding.lexicon or []),
    ]:  # a bad catalog or word list fails here, before the dataset is synthesized
        try:
            read_catalog(word_file)
        except ValueError as error:
            raise UserConfigError(f"decoding: {error}") from None
    if cfg.data.get("pairs"):  # a bad pairs file fails here, before any work
        from spellfix.data import split_real_pairs

        split_real_pairs(cfg.data, None)
    run_dir = resolve_run_dir(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    checkpoint_dir = Path(cfg.paths.checkpoint_dir)
    resume = resolve_checkpoint(cfg.ckpt_path, checkpoint_dir, run_dir.parent)
    if resume:
        check_checkpoint_fits(resume, cfg)

    dataset_dir = resolve_dataset_dir(cfg.data, cfg.noise)
    tokenizer_dir = prepare_tokenizer(cfg, dataset_dir, run_dir, checkpoint_dir, resume)
    tokenizer = load_tokenizer(tokenizer_dir)
    datamodule = SpellDataModule(
        cfg.data, cfg.noise, tokenizer, seed=cfg.seed, accelerator=cfg.trainer.accelerator
    )

    lexicon_path = (
        prepare_lexicon(cfg, dataset_dir, run_dir) if settings.mode == "channel" else None
    )
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    module = SpellCorrector(
        tokenizer_dir=str(tokenizer_dir),
        model_config=model_cfg["config"],
        pretrained=model_cfg["pretrained"],
        optim=model_cfg["optim"],
        decoding=settings.to_dict(),
        lexicon_path=str(lexicon_path) if lexicon_path else None,
        attn_implementation=model_cfg["attn_implementation"],
        compile=model_cfg["compile"],
        val_generation_samples=model_cfg["val_generation_samples"],
    )
    if lexicon_path and (lexicon_path.parent / CATALOG_FILE).is_file():
        from spellfix.decoding import Lexicon

        module.catalog = Lexicon.load(lexicon_path.parent / CATALOG_FILE)
    callbacks = build_callbacks(cfg.callbacks)  # they write to cfg.paths, pinned above
    tuner = batch_size_tuner(cfg, run_dir, resume)
    if tuner:
        callbacks.insert(0, tuner)
    trainer: pl.Trainer = instantiate_checked(
        cfg.trainer,
        "trainer",
        (MisconfigurationException,),
        callbacks=callbacks,
        logger=build_loggers(cfg),
        default_root_dir=str(run_dir),
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)
    if trainer.is_global_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    except SystemExit:
        if trainer.interrupted:  # Lightning exits on Ctrl-C after saving nothing new
            raise Interrupted(
                f"interrupted; resume with: spellfix-train paths.output_dir={cfg.paths.output_dir}"
                f" paths.run_name={run_dir.name} ckpt_path=last"
            ) from None
        raise

    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    calibration = calibrate_decoding(module, Path(datamodule.dataset_dir), cfg)
    if calibration:
        console.print(calibration.summary())
        metrics.update(
            {
                "calibration/accuracy": calibration.accuracy,
                "calibration/overcorrection": calibration.overcorrection,
                "calibration/apply_threshold": calibration.settings.apply_threshold,
            }
        )
    if cfg.run_test:
        results = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update({k: float(v) for k, v in (results[0] if results else {}).items()})
    model_dir = run_dir / "model"
    save_model_dir(module, best or None, model_dir, cfg, datamodule.manifest, metrics, calibration)

    result = {"run_dir": str(run_dir), "model_dir": str(model_dir), "metrics": metrics}
    if trainer.is_global_zero:
        result["samples"] = correct_queries(module, list(cfg.sample_queries))
        write_json_atomic(run_dir / "result.json", result)
        log_model_artifact(trainer.loggers, model_dir, name=f"{cfg.paths.run_name}-model")
        result["report"] = str(write_report(run_dir))
        _link(run_dir / "dataset", Path(datamodule.dataset_dir).resolve())
        _link(run_dir.parent.parent / "latest", run_dir)
        print_summary(run_dir, result["samples"], metrics, time.time() - started)
    return result


def correct_queries(module: SpellCorrector, queries: list[str]) -> list[tuple[str, str, float]]:
    """(query, correction, confidence) as the saved model will answer them."""
    return [(c.query, c.correction, c.confidence) for c in module.corrections(queries)]


def _link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically: ``<output_dir>/latest`` follows the newest
    run, ``<run_dir>/dataset`` names the data it trained on, for scripts and the Makefile."""
    tmp = link.with_name(link.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def remove_failed_run(run_dir: Path) -> None:
    """A run that failed before its first checkpoint leaves no directory behind.

    One with checkpoints is kept: ``ckpt_path=last`` resumes it.
    """
    if run_dir.is_dir() and not any(run_dir.glob("checkpoints/*.ckpt")):
        shutil.rmtree(run_dir, ignore_errors=True)


def _remove_this_failed_run() -> None:
    if not _is_launched_rank():  # a launched rank's directory belongs to rank zero
        remove_failed_run(Path(HydraConfig.get().runtime.output_dir))


@hydra_app("train", "spellfix-train", on_failure=_remove_this_failed_run)
def main(cfg: DictConfig) -> None:
    """``spellfix-train``: bad input ends in one line on stderr and exit status 2."""
    train(cfg)


if __name__ == "__main__":
    main()
