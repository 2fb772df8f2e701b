"""Every CLI, used as a careless new user would: what each bad input gets back.

Each case runs the installed command in a scratch directory and records its exit status
and the last line it printed to stderr; a case fails when a traceback shows, when a
failure exits 0 (or a success does not), or when it leaves a directory or process
behind. Writes ``experiments/results/sweep.md``.

    .venv/bin/python -m experiments.cli_sweep outputs/latest/model outputs/latest/onnx
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil

from experiments.common import write_results
from spellfix.serve import free_ports

BIN = Path(sys.executable).parent


@dataclass
class Case:
    command: str  # e.g. spellfix-synth
    args: list[str]
    expect_success: bool = False
    stdin: bytes = b""
    must_not_exist: tuple[str, ...] = ()  # paths (under the scratch dir) left by failures
    must_keep: tuple[str, ...] = ()  # user files that must survive


def build_cases(model: Path, export: Path, scratch: Path) -> list[tuple[str, Case]]:
    (scratch / "empty.txt").write_text("")
    (scratch / "binary.bin").write_bytes(b"\x00\x01\x02binary\x00" * 100)
    (scratch / "old_mac.csv").write_bytes(b"title,artist\rSong A,Artist A\rSong B,Artist B\r")
    (scratch / "utf16.txt").write_bytes("beyonce halo\nnews podcasts\nqueen\n".encode("utf-16"))
    (scratch / "latin1.txt").write_bytes("café crème\nnaïve song\nthird one\n".encode("latin-1"))
    (scratch / "songs.csv").write_text("title,artist\nSong A,Artist A\nSong B,Artist B\n")
    (scratch / "pairs_wrong.tsv").write_text("typo\tfix\nteh\tthe\n")
    (scratch / "pairs.tsv").write_text("misspelled\tcorrect\nteh\tthe\nbeatels\tbeatles\n")
    notes = scratch / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    no_weights = scratch / "no_weights"
    shutil.copytree(model, no_weights)
    (no_weights / "model.safetensors").unlink()
    no_tokenizer = scratch / "no_tokenizer"
    shutil.copytree(model, no_tokenizer)
    (no_tokenizer / "tokenizer.json").unlink()
    t5 = scratch / "t5"
    shutil.copytree(model, t5)
    config = json.loads((t5 / "config.json").read_text())
    (t5 / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    synth_out = ["output_dir=synth_out", "build.progress=false", "show_examples=0"]
    train_fast = ["experiment=smoke", "paths.output_dir=runs_out", "paths.run_name=sweep"]
    no_run = ("runs_out/runs/sweep",)
    onnx = ["--model", str(export), "--backend", "onnx"]

    def synth(*args: str, **kwargs) -> Case:
        return Case("spellfix-synth", list(args), **kwargs)

    def train(*args: str, **kwargs) -> Case:
        return Case("spellfix-train", [*train_fast, *args], must_not_exist=no_run, **kwargs)

    def export_(*args: str, **kwargs) -> Case:
        return Case("spellfix-export", list(args), **kwargs)

    def correct(*args: str, **kwargs) -> Case:
        return Case("spellfix-correct", list(args), **kwargs)

    gone_synth = {"must_not_exist": ("synth_out",)}
    gone_export = {"must_not_exist": ("exp_out",)}
    keep_mine = {"must_keep": ("mine/notes.txt",)}
    return [
        ("synth: missing corpus file", synth("corpus.path=nope.txt", *synth_out, **gone_synth)),
        ("synth: empty corpus file", synth("corpus.path=empty.txt", *synth_out, **gone_synth)),
        ("synth: binary corpus file", synth("corpus.path=binary.bin", *synth_out, **gone_synth)),
        (
            "synth: corpus.columns=[]",
            synth("corpus.path=songs.csv", "corpus.columns=[]", *synth_out, **gone_synth),
        ),
        (
            "synth: CR-only CSV (classic Mac)",
            synth(
                "corpus.path=old_mac.csv",
                "corpus.columns=[title,artist]",
                *synth_out,
                expect_success=True,
            ),
        ),
        ("synth: UTF-16 file, encoding not set", synth("corpus.path=utf16.txt", *synth_out)),
        (
            "synth: UTF-16 file, corpus.encoding=utf-16",
            synth(
                "corpus.path=utf16.txt",
                "corpus.encoding=utf-16",
                "output_dir=synth16",
                "build.progress=false",
                "show_examples=0",
                expect_success=True,
            ),
        ),
        ("synth: Latin-1 file read as UTF-8", synth("corpus.path=latin1.txt", *synth_out)),
        ("synth: corpus.builtin_words=-5", synth("corpus.builtin_words=-5", *synth_out)),
        (
            "synth: output_dir holds user files",
            synth("corpus.path=songs.csv", "output_dir=mine", **keep_mine),
        ),
        ("synth: unknown noise profile", synth("noise=nope", *synth_out)),
        (
            "synth: build.seed=abc",
            synth("build.seed=abc", "output_dir=seed_out", must_not_exist=("seed_out",)),
        ),
        ("train: data.batching=token", train("data.batching=token")),
        ("train: data.noise_mode=dynmic", train("data.noise_mode=dynmic")),
        ("train: warmup_ratio and warmup_steps both set", train("model.optim.warmup_ratio=0.1")),
        ("train: data.max_tokens=lots", train("data.max_tokens=lots")),
        ("train: unknown key", train("trainer.no_such_key=1")),
        ("train: missing dataset dir", train("data.dataset_dir=/nonexistent")),
        ("train: missing pairs file", train("data.pairs=nope.tsv")),
        ("train: empty pairs file", train("data.pairs=empty.txt")),
        ("train: binary pairs file", train("data.pairs=binary.bin")),
        ("train: pairs file without the columns", train("data.pairs=pairs_wrong.tsv")),
        ("train: constraint=catalog without a catalog", train("decoding.constraint=catalog")),
        ("train: missing catalog file", train("decoding.catalog=nope.tsv")),
        ("train: missing checkpoint", train("ckpt_path=/nonexistent.ckpt")),
        ("train: deepspeed on a CPU machine", train("trainer=deepspeed_zero2")),
        ("train: unwritable output dir", train("paths.output_dir=/proc/spellfix")),
        ("train: trainer.precision=17", train("trainer.precision=17")),
        ("train: a callback's argument refused", train("callbacks.utilization.interval_s=0")),
        (
            "export: missing model",
            export_("model=/nonexistent", "output_dir=exp_out", **gone_export),
        ),
        (
            "export: onnx.opset=abc",
            export_(f"model={model}", "output_dir=exp_out", "onnx.opset=abc", **gone_export),
        ),
        (
            "export: overwrite=true on a user directory",
            export_(f"model={model}", "output_dir=mine", "overwrite=true", **keep_mine),
        ),
        (
            "export: model dir without model.safetensors",
            export_(f"model={no_weights}", "output_dir=exp_out", **gone_export),
        ),
        ("export: a T5 model dir", export_(f"model={t5}", "output_dir=exp_out", **gone_export)),
        (
            "export: unknown format",
            export_(f"model={model}", "output_dir=exp_out", "formats=[onnx,foo]", **gone_export),
        ),
        (
            "export: onnx.precision=int4",
            export_(f"model={model}", "output_dir=exp_out", "onnx.precision=int4", **gone_export),
        ),
        ("correct: missing model", correct("--model", "/nonexistent", "teh")),
        ("correct: model dir without tokenizer.json", correct("--model", str(no_tokenizer), "x")),
        (
            "correct: --device cuda on a CPU build",
            correct("--model", str(model), "--device", "cuda", "x"),
        ),
        ("correct: --device gpu", correct(*onnx, "--device", "gpu", "x")),
        (
            "correct: --backend onnx on a model dir",
            correct("--model", str(model), "--backend", "onnx", "x"),
        ),
        (
            "correct: stdin with a line not in UTF-8",
            correct(*onnx, stdin=b"teh best\n\xff\xfe\nnew yrok\n"),
        ),
        (
            "correct: stdin with CRLF lines",
            correct(*onnx, expect_success=True, stdin=b"teh best\r\nnew yrok\r\n"),
        ),
        ("correct: missing catalog", correct(*onnx, "--catalog", "nope.tsv", "teh")),
        ("correct: empty catalog", correct(*onnx, "--catalog", "empty.txt", "teh")),
        ("correct: binary catalog", correct(*onnx, "--catalog", "binary.bin", "teh")),
        (
            "correct: unreachable Triton",
            correct("--triton", f"http://127.0.0.1:{free_ports(1)[0]}", "x"),
        ),
        ("eval: missing pairs file", Case("spellfix-eval", ["model=identity", "pairs=nope.tsv"])),
        (
            "eval: pairs file without the columns",
            Case("spellfix-eval", ["model=identity", "pairs=pairs_wrong.tsv"]),
        ),
        ("eval: missing model", Case("spellfix-eval", ["model=/nonexistent", "pairs=pairs.tsv"])),
        (
            "eval: device=gpu",
            Case("spellfix-eval", [f"model={model}", "pairs=pairs.tsv", "device=gpu"]),
        ),
        ("serve: missing repository", Case("spellfix-serve", ["repository=/nonexistent"])),
        (
            "serve: an export dir, not a repository",
            Case("spellfix-serve", [f"repository={export}"]),
        ),
        ("report: missing run dir", Case("spellfix-report", ["/nonexistent"])),
    ]


def run_case(case: Case, scratch: Path) -> dict:
    before = {p.pid for p in psutil.process_iter()}
    result = subprocess.run(
        [str(BIN / case.command), *case.args],
        input=case.stdin,
        capture_output=True,
        cwd=scratch,
        timeout=900,
    )
    stderr = result.stderr.decode(errors="replace").strip().splitlines()
    leftovers = [
        p.name()
        for p in psutil.process_iter()
        if p.pid not in before and p.name() in ("tritonserver", "triton_python_backend_stub")
    ]
    problems = []
    if any("Traceback" in line for line in stderr):
        problems.append("traceback")
    if (result.returncode == 0) != case.expect_success:
        problems.append(f"exit {result.returncode}")
    problems += [f"left {path}" for path in case.must_not_exist if (scratch / path).exists()]
    problems += [f"lost {path}" for path in case.must_keep if not (scratch / path).exists()]
    problems += [f"left process {name}" for name in leftovers]
    last = next((line for line in reversed(stderr) if line.strip()), "")
    if case.expect_success and not last:
        last = (result.stdout.decode(errors="replace").strip().splitlines() or [""])[-1]
    return {"code": result.returncode, "last": last, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("export_dir", type=Path)
    args = parser.parse_args()
    rows, failures = [], 0
    with tempfile.TemporaryDirectory(prefix="spellfix-sweep-") as tmp:
        scratch = Path(tmp)
        cases = build_cases(args.model_dir.resolve(), args.export_dir.resolve(), scratch)
        for name, case in cases:
            outcome = run_case(case, scratch)
            failures += bool(outcome["problems"])
            problems = ", ".join(outcome["problems"])
            verdict = f"**{problems}**" if problems else "ok"
            last = outcome["last"].replace("|", "\\|")[:220]
            rows.append(f"| {name} | {outcome['code']} | `{last}` | {verdict} |")
            print(rows[-1], flush=True)
    body = "\n".join(
        [
            f"{len(rows)} cases, {failures} with a problem (a traceback, a wrong exit status, "
            "a directory or process left behind, a user file lost).",
            "",
            "| case | exit | last line on stderr | verdict |",
            "|---|---:|---|---|",
            *rows,
            "",
            "Reproduce: `.venv/bin/python -m experiments.cli_sweep outputs/latest/model "
            "outputs/latest/onnx`",
        ]
    )
    print(write_results("sweep", "CLI sweep: careless input, one clear line", body))


if __name__ == "__main__":
    main()
