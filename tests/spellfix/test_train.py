"""Training end to end: a composed config, the CLI, DDP, kill-and-resume, bad input."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from data_synth.paths import CONF_DIR
from spellfix.correct import Corrector
from spellfix.train import train

FAST = ["experiment=smoke"]  # a run takes seconds (conf/experiment/smoke.yaml)

CLI = [sys.executable, "-m", "spellfix.train"]


def compose_train(tmp_path: Path, *overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[*FAST, f"paths.output_dir={tmp_path}", "paths.run_name=run", *overrides],
        )


def run_cli(tmp_path: Path, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [*CLI, *FAST, f"paths.output_dir={tmp_path}", *overrides],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=env,
    )


@pytest.mark.slow
def test_train_saves_a_calibrated_model_that_hf_loads_and_that_corrects(tmp_path: Path) -> None:
    result = train(compose_train(tmp_path, "decoding.web_words=true"))

    model_dir = Path(result["model_dir"])
    AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    AutoTokenizer.from_pretrained(model_dir)
    assert (model_dir / "model.safetensors").is_file()
    meta = json.loads((model_dir / "spellfix.json").read_text())
    assert meta["config"]["model"]["config"]["d_model"] == 32
    assert meta["data_manifest"], "the dataset manifest travels with the model"
    for key in ("test/loss", "test/exact_match", "test/cer", "val/loss"):
        assert key in result["metrics"], key
    assert len(result["samples"]) == len(meta["config"]["sample_queries"])

    # The decoding travels with the model: its lexicon and the calibrated thresholds.
    decoding = json.loads((model_dir / "decoding.json").read_text())
    assert decoding["mode"] == "channel"
    assert meta["calibration"]["overcorrection"] <= 0.01 + 1e-9
    assert decoding["apply_threshold"] == meta["calibration"]["settings"]["apply_threshold"]
    assert (model_dir / "lexicon.tsv").stat().st_size > 1_000_000  # the English dictionary
    corrector = Corrector.from_pretrained(model_dir)
    assert "kanye" in corrector.decoder.lexicon.web  # and the web words
    (answer, name) = corrector.corrections(["new yrok city", "Kanye West"])
    # Even a 12-step model fixes a plain typo: the lexicon and the pair counts do the work;
    # and it keeps a capitalized name. Whether a lower-case "kanye" is a name or a typo is
    # the channel model's call, which 12 steps cannot make (test_decoding covers web words).
    assert answer.correction == "new york city" and 0.5 <= answer.confidence <= 1.0
    assert name.correction == "Kanye West"
    assert (tmp_path / "latest").resolve() == Path(result["run_dir"])
    ckpt = torch.load(
        Path(result["run_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert ckpt["global_step"] == 12


@pytest.mark.slow
def test_dynamic_noise_mode_feeds_training_fresh_typos_every_epoch(tmp_path: Path) -> None:
    from data_synth.build import load_dataset_dir
    from spellfix.data import SpellDataModule
    from spellfix.tokenizer import train_tokenizer

    cfg = compose_train(tmp_path, "data.noise_mode=dynamic")
    tokenizer = train_tokenizer(["the beatles let it be"] * 3, vocab_size=300)
    module = SpellDataModule(cfg.data, cfg.noise, tokenizer, accelerator="cpu")
    module.setup()
    stored = load_dataset_dir(module.dataset_dir)["train"]
    loader = module.train_dataloader()  # what the Trainer iterates, one pass per epoch
    epochs = [
        sorted(pair for b in loader for pair in zip(b["noisy"], b["clean"], strict=True))
        for _ in range(2)
    ]
    assert (
        sorted(c for _, c in epochs[0])
        == sorted(c for _, c in epochs[1])
        == sorted(stored["clean"])
    )
    assert epochs[0], "the loader yielded no batches"
    assert epochs[0] != epochs[1], "the second epoch repeats the first one's typos"
    assert sorted(n for n, _ in epochs[0]) != sorted(stored["noisy"]), "the stored typos"


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_through_the_cli_leaves_one_run_directory(tmp_path: Path) -> None:
    done = run_cli(
        tmp_path,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "paths.run_name=ddp",
        "callbacks.utilization.enabled=false",
        # A time limit that never ends the run, so that every step's learning rate comes
        # from the clock that rank zero broadcasts (model.optim.decay_by_time).
        "trainer.max_time=00:00:10:00",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [p for p in (tmp_path / "runs").iterdir()]
    assert [p.name for p in runs] == ["ddp"]
    model_dir = runs[0] / "model"
    AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    assert not list(tmp_path.glob("**/model.tmp"))


@pytest.mark.slow
def test_killed_run_resumes_to_the_planned_step_count(tmp_path: Path) -> None:
    overrides = [
        f"paths.output_dir={tmp_path}",
        "paths.run_name=killed",
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        "callbacks.checkpoint.every_n_train_steps=5",
        "run_test=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*CLI, *FAST, *overrides],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = tmp_path / "runs" / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and _global_step(last) >= 10:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _global_step(last)
    assert 10 <= killed_at < 60

    done = run_cli(tmp_path, *overrides[1:], "ckpt_path=last")
    assert done.returncode == 0, done.stderr[-3000:]
    assert _global_step(last) == 60
    assert "Restoring states from the checkpoint" in done.stderr + done.stdout


def _global_step(path: Path) -> int:
    for _ in range(20):  # the file may be mid-write
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
        except (RuntimeError, EOFError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"cannot read {path}")


def test_unknown_key_fails_in_one_line_naming_it(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "trainer.no_such_key=1", "paths.run_name=unknown", timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spellfix-train: error: "), lines
    assert "trainer.no_such_key: no such key (trainer has " in lines[0]
    assert not (tmp_path / "runs" / "unknown").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc (Linux)")
def test_an_output_dir_that_cannot_be_created_is_named_in_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "paths.output_dir=/proc/spellfix", timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "paths.output_dir=/proc/spellfix" in lines[0], lines


def test_a_value_of_the_wrong_type_is_refused_in_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "data.max_tokens=lots", "paths.run_name=typed", timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.max_tokens='lots': expected int like the default" in lines[0]
    assert not (tmp_path / "runs" / "typed").exists()


def test_missing_dataset_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = run_cli(tmp_path, f"data.dataset_dir={missing}", timeout=120)
    assert done.returncode != 0
    assert str(missing) in done.stderr
    assert "Traceback" not in done.stderr


def test_deepspeed_on_cpu_fails_in_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_cli(tmp_path, "trainer=deepspeed_zero2", timeout=120)
    assert done.returncode != 0
    assert "needs CUDA" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batching=token", "data.batching='token': choose one of tokens, size"),
        ("data.noise_mode=dynmic", "data.noise_mode='dynmic': choose one of static, dynamic"),
        ("model.optim.warmup_ratio=0.1", "both set the warmup; set one of them to 0"),
        ("decoding.max_candidates=0", "decoding.max_candidates must be >= 1, got 0"),
        # These failed late with a numpy/torch traceback, or trained on empty inputs.
        ("seed=-1", "seed=-1: expected a number >= 0"),
        ("model.optim.lr=-1", "model.optim.lr=-1: expected a number > 0"),
        ("data.max_source_length=0", "data.max_source_length=0: expected a number >= 1"),
        ("decoding.apply_threshold=2", "0 <= suggest_threshold <= apply_threshold <= 1"),
    ],
)
def test_a_value_outside_its_choices_or_in_conflict_is_refused(tmp_path, override, message):
    done = run_cli(tmp_path, override, "paths.run_name=refused", timeout=120)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "refused").exists(), "a failed run leaves no directory"


@pytest.mark.parametrize("content", [None, b"", b"\x00\x01binary\x00"])
def test_a_missing_empty_or_binary_pairs_file_is_named_in_one_line(tmp_path, content):
    pairs = tmp_path / "logs.tsv"
    if content is not None:
        pairs.write_bytes(content)
    done = run_cli(tmp_path, f"data.pairs={pairs}", "paths.run_name=pairs", timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert str(pairs) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs" / "pairs").exists()


@pytest.mark.slow
def test_real_pairs_join_every_split_by_their_clean_side(tmp_path: Path) -> None:
    from spellfix.data import SpellDataModule
    from spellfix.tokenizer import train_tokenizer

    pairs = tmp_path / "logs.tsv"
    rows = [("quen bohemain", "queen bohemian"), ("beatels", "beatles"), ("nwes", "news")] * 5
    pairs.write_text("misspelled\tcorrect\n" + "".join(f"{a}\t{b}\n" for a, b in rows))
    cfg = compose_train(tmp_path, f"data.pairs={pairs}", "data.pairs_share=0.2")
    tokenizer = train_tokenizer(["queen bohemian beatles news"] * 3, vocab_size=300)
    module = SpellDataModule(cfg.data, cfg.noise, tokenizer, accelerator="cpu")
    module.setup()
    real = {name: [c for n, c in zip(split.noisy, split.clean, strict=True) if (n, c) in rows]
            for name, split in module.splits.items()}  # fmt: skip
    clean_sides = [set(found) for found in real.values() if found]
    assert sum(len(found) for found in real.values()) >= len(rows)
    for one, other in itertools.combinations(clean_sides, 2):
        assert not one & other, "a clean query sits in one split only"
    train_rows = len(module.splits["train"].clean)
    assert len(real["train"]) >= 0.15 * train_rows or not real["train"]


@pytest.mark.slow
def test_resuming_another_architecture_is_refused_in_one_line(tmp_path: Path) -> None:
    first = run_cli(tmp_path, "paths.run_name=small", "run_test=false")
    assert first.returncode == 0, first.stderr[-2000:]
    done = run_cli(tmp_path, "paths.run_name=wide", "model.config.d_model=48", "ckpt_path=last")
    assert done.returncode == 2
    assert "another architecture (d_model 32 there, 48 here)" in done.stderr
    assert "Traceback" not in done.stderr


def test_more_cpu_processes_than_cores_is_one_warning(tmp_path: Path, monkeypatch) -> None:
    from spellfix.train import warn_oversubscription

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    cfg = compose_train(tmp_path, "trainer.accelerator=cpu", "trainer.devices=3")
    with pytest.warns(UserWarning, match="trainer.devices=3 CPU processes on 2 cores") as caught:
        warn_oversubscription(cfg)
    assert len(caught) == 1
    fits = compose_train(tmp_path, "trainer.accelerator=cpu", "trainer.devices=2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_oversubscription(fits)


def test_a_missing_catalog_stops_the_run_before_any_work(tmp_path: Path) -> None:
    missing = tmp_path / "titles.tsv"
    done = run_cli(tmp_path, f"decoding.catalog={missing}", "paths.run_name=refused", timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], lines
    assert not (tmp_path / "runs" / "refused").exists()
