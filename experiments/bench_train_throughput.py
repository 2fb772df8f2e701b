"""Training throughput: HF ``Seq2SeqTrainer`` against spellfix on the same model and data.

What a user would otherwise pick to fine-tune BART is transformers' ``Seq2SeqTrainer``
with ``DataCollatorForSeq2Seq``. Both sides here train the same ``bart_tiny`` model
(same config, seed, tokenizer, optimizer settings, label smoothing) on the same
synthesized pairs with 64 examples per batch on average:

- ``hf_default``: Seq2SeqTrainer as it comes (random order, pad to the longest);
- ``hf_group_by_length``: with ``group_by_length=True`` (its length-grouped sampler);
- ``spellfix_size``: spellfix with ``data.batching=size`` (length buckets, 64 a batch);
- ``spellfix_tokens``: spellfix's default token-budget batching, the budget set so a
  batch holds 64 examples on average;
- ``spellfix_tokens_compiled``: the same with ``model.compile=true`` (``torch.compile``
  with dynamic shapes; its one-off compile time falls in the untimed warm-up steps).

Each runner is a fresh subprocess (so peak memory is its own) that trains for
``--steps`` optimizer steps after ``--warmup`` untimed ones; the runners alternate
for ``--rounds`` rounds and the median round counts. Tokens are counted from the
batches each runner really produced: real tokens (not padding) on both sides, and
padded tokens (what the model computed on).

    python experiments/bench_train_throughput.py   # writes results/bench_train_throughput.md
    python experiments/bench_train_throughput.py --steps 10 --rounds 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNERS = (
    "hf_default",
    "hf_group_by_length",
    "spellfix_size",
    "spellfix_tokens",
    "spellfix_tokens_compiled",
)
BATCH = 64


def prepare(workdir: Path, queries: int) -> dict:
    """Synthesize the dataset and train the tokenizer once; every runner reads them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from data_synth.build import build_dataset, load_dataset_dir
    from data_synth.paths import CONF_DIR
    from spellfix.tokenizer import train_tokenizer

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data.corpus.max_queries={queries}"])
    dataset_dir = workdir / "dataset"
    build_dataset(
        OmegaConf.to_container(cfg.data.corpus, resolve=True),
        OmegaConf.to_container(cfg.noise, resolve=True),
        {**OmegaConf.to_container(cfg.data.build, resolve=True), "progress": False},
        dataset_dir,
    )
    train = load_dataset_dir(dataset_dir)["train"]
    tokenizer = train_tokenizer(
        list(train["clean"]) + list(train["noisy"]), cfg.model.tokenizer.vocab_size
    )
    tokenizer.save_pretrained(workdir / "tokenizer")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return {
        "dataset_dir": str(dataset_dir),
        "tokenizer_dir": str(workdir / "tokenizer"),
        "model": model,
    }


class TokenCounter:
    """Wraps a collator and counts real and padded tokens of every batch it makes."""

    def __init__(self, collate, pad_token_id: int) -> None:
        self.collate = collate
        self.pad_token_id = pad_token_id
        self.batches: list[tuple[int, int, int]] = []  # (examples, real, padded)

    def __call__(self, examples):
        batch = self.collate(examples)
        source, labels = batch["input_ids"], batch["labels"]
        real = int((source != self.pad_token_id).sum() + (labels != -100).sum())
        self.batches.append((source.size(0), real, source.numel() + labels.numel()))
        return batch


def run_hf(spec: dict, group_by_length: bool, steps: int, warmup: int, outdir: Path) -> dict:
    import torch
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )

    from data_synth.build import load_dataset_dir
    from spellfix.model import build_bart
    from spellfix.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    torch.manual_seed(0)
    model = build_bart(spec["model"]["config"], None, tokenizer)
    train = load_dataset_dir(spec["dataset_dir"])["train"]
    train = train.map(
        lambda rows: {
            **tokenizer(rows["noisy"], truncation=True, max_length=64),
            "labels": tokenizer(rows["clean"], truncation=True, max_length=64)["input_ids"],
        },
        batched=True,
        remove_columns=train.column_names,
    )
    counter = TokenCounter(DataCollatorForSeq2Seq(tokenizer, model=model), tokenizer.pad_token_id)
    optim = spec["model"]["optim"]
    args = Seq2SeqTrainingArguments(
        output_dir=str(outdir),
        per_device_train_batch_size=BATCH,
        max_steps=warmup + steps,
        learning_rate=optim["lr"],
        weight_decay=optim["weight_decay"],
        warmup_steps=optim["warmup_steps"],
        label_smoothing_factor=optim["label_smoothing"],
        max_grad_norm=1.0,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    clock = StepClock(warmup)

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.step_end()

    trainer = Seq2SeqTrainer(
        model=model, args=args, train_dataset=train, data_collator=counter, callbacks=[Timer()]
    )
    trainer.train()
    return clock.result(counter.batches)


class StepClock:
    """Times the steps after ``warmup``; batches are matched to steps by position."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.ends: list[float] = []

    def step_end(self) -> None:
        self.ends.append(time.perf_counter())

    def result(self, batches: list[tuple[int, int, int]]) -> dict:
        timed = batches[self.warmup + 1 : len(self.ends)]
        seconds = self.ends[-1] - self.ends[self.warmup]
        examples = sum(b[0] for b in timed)
        real = sum(b[1] for b in timed)
        padded = sum(b[2] for b in timed)
        return {
            "steps": len(timed),
            "seconds": seconds,
            "examples_per_batch": examples / len(timed),
            "real_tokens_per_s": real / seconds,
            "padded_tokens_per_s": padded / seconds,
            "padding_fraction": 1 - real / padded,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def run_spellfix(
    spec: dict, batching: str, steps: int, warmup: int, outdir: Path, compile: bool = False
) -> dict:
    import lightning.pytorch as pl
    import torch
    from hydra import compose, initialize_config_dir

    from data_synth.paths import CONF_DIR
    from spellfix.data import SpellDataModule
    from spellfix.model import SpellCorrector
    from spellfix.tokenizer import load_tokenizer

    overrides = [f"data.dataset_dir={spec['dataset_dir']}", f"data.batching={batching}"]
    overrides.append(
        f"data.batch_size={BATCH}"
        if batching == "size"
        else f"data.max_tokens={spec['max_tokens']}"
    )
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    tokenizer = load_tokenizer(spec["tokenizer_dir"])
    datamodule = SpellDataModule(cfg.data, cfg.noise, tokenizer, seed=0, accelerator="cpu")
    datamodule.setup("fit")
    counter = TokenCounter(datamodule.collate, tokenizer.pad_token_id)
    datamodule.collate = counter
    torch.manual_seed(0)
    module = SpellCorrector(
        tokenizer_dir=spec["tokenizer_dir"],
        model_config=spec["model"]["config"],
        optim=spec["model"]["optim"],
        generation=spec["model"]["generation"],
        compile=compile,
    )
    clock = StepClock(warmup)

    class Timer(pl.Callback):
        def on_train_batch_end(self, *args, **kwargs):
            clock.step_end()

    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=warmup + steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        use_distributed_sampler=False,
        callbacks=[Timer()],
        default_root_dir=str(outdir),
    )
    trainer.fit(module, datamodule=datamodule)  # as spellfix.train does
    return clock.result(counter.batches)


def token_budget_for_batch(spec: dict, batch: int) -> int:
    """The token budget whose batches hold ``batch`` examples on average.

    Found on spellfix's own sampler over the training split (a batch costs its widest
    example times its size, so an average of example widths would undershoot).
    """
    from hydra import compose, initialize_config_dir

    from data_synth.paths import CONF_DIR
    from spellfix.data import SpellDataModule
    from spellfix.tokenizer import load_tokenizer

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data.dataset_dir={spec['dataset_dir']}"])
    datamodule = SpellDataModule(
        cfg.data, cfg.noise, load_tokenizer(spec["tokenizer_dir"]), seed=0, accelerator="cpu"
    )
    datamodule.setup("fit")
    examples = len(datamodule.splits["train"])

    def mean_batch(budget: int) -> float:
        datamodule.cfg.max_tokens = budget
        return examples / len(datamodule.batch_sampler("train").batches())

    low, high = 1, 64 * batch
    while low < high:  # the smallest budget reaching the wanted average
        middle = (low + high) // 2
        low, high = (middle + 1, high) if mean_batch(middle) < batch else (low, middle)
    return low


def child(runner: str, spec_path: Path, steps: int, warmup: int, out: Path) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    spec = json.loads(spec_path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        if runner.startswith("hf_"):
            result = run_hf(spec, runner == "hf_group_by_length", steps, warmup, Path(tmp))
        else:
            batching, compiled = runner.split("_")[1], runner.endswith("_compiled")
            result = run_spellfix(spec, batching, steps, warmup, Path(tmp), compile=compiled)
    out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Windows of a few seconds swing by a quarter on a shared 2-core machine; 300 steps
    # per round keep the median steady.
    parser.add_argument("--steps", type=int, default=300, help="timed optimizer steps per runner")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--queries", type=int, default=20000, help="clean queries synthesized")
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.spec, args.steps, args.warmup, args.out)
        return

    from experiments.common import write_results

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        spec = prepare(workdir, args.queries)
        spec["max_tokens"] = token_budget_for_batch(spec, BATCH)
        spec_path = workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        results: dict[str, list[dict]] = {r: [] for r in RUNNERS}
        for round_index in range(args.rounds):
            for runner in RUNNERS:
                out = workdir / f"{runner}-{round_index}.json"
                subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        runner,
                        "--spec",
                        str(spec_path),
                        "--out",
                        str(out),
                        "--steps",
                        str(args.steps),
                        "--warmup",
                        str(args.warmup),
                    ],
                    check=True,
                )
                results[runner].append(json.loads(out.read_text()))
                print(runner, round_index, results[runner][-1], flush=True)

    median = {
        runner: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for runner, rounds in results.items()
    }
    base = median["hf_default"]["real_tokens_per_s"]
    rows = [
        "| runner | examples/batch | real tokens/s | padded tokens/s | padding | peak RSS (MiB) "
        "| vs HF default |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for runner, m in median.items():
        rows.append(
            f"| {runner} | {m['examples_per_batch']:.1f} | {m['real_tokens_per_s']:,.0f} | "
            f"{m['padded_tokens_per_s']:,.0f} | {m['padding_fraction']:.1%} | "
            f"{m['peak_rss_mib']:,.0f} | "
            f"{m['real_tokens_per_s'] / base:.2f}x |"
        )
    shape = spec["model"]["config"]
    body = "\n".join(
        [
            f"bart_tiny ({shape['d_model']}-d, "
            f"{shape['encoder_layers']}+{shape['decoder_layers']} layers), "
            f"pairs synthesized from {args.queries} clean queries of the built-in corpus, "
            f"{BATCH} examples per batch on average (token budget {spec['max_tokens']}), "
            f"{args.steps} timed steps after {args.warmup} warm-up steps, median of {args.rounds} "
            "alternating rounds, each runner in its own process.",
            "",
            *rows,
            "",
            "Reproduce: `.venv/bin/python experiments/bench_train_throughput.py`",
        ]
    )
    path = write_results(
        "bench_train_throughput", "Training throughput: Seq2SeqTrainer vs spellfix", body
    )
    print(path.read_text())


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
