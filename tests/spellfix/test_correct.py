"""Corrector: every back end decodes the same way, and awkward inputs behave."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spellfix.correct import Corrector, DeviceError

pytestmark = pytest.mark.slow
QUERIES = ["queen bohemian rhapsody", "news podcasts", "beyoncé halo", "coldplay yellow"]


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spellfix.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("correct") / "onnx"
    export_onnx(tiny_model_dir, out, validation_queries=QUERIES)
    return out


@pytest.fixture(scope="module")
def channel_onnx_dir(
    tiny_channel_dir: Path, channel_queries: list[str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    from spellfix.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("correct") / "channel_onnx"
    export_onnx(tiny_channel_dir, out, validation_queries=channel_queries[:40])
    return out


@pytest.fixture(scope="module")
def correctors(tiny_model_dir: Path, onnx_dir: Path) -> dict[str, Corrector]:
    return {
        "torch": Corrector.from_pretrained(tiny_model_dir, backend="torch", batch_size=3),
        "onnx": Corrector.from_pretrained(onnx_dir, backend="onnx", batch_size=3),
    }


@pytest.fixture(scope="module")
def channel_correctors(tiny_channel_dir: Path, channel_onnx_dir: Path) -> dict[str, Corrector]:
    return {
        "torch": Corrector.from_pretrained(tiny_channel_dir, backend="torch"),
        "onnx": Corrector.from_pretrained(channel_onnx_dir, backend="onnx"),
    }


def test_channel_backends_give_the_same_corrections_and_confidences(
    channel_correctors, channel_queries
):
    queries = channel_queries
    torch_out = channel_correctors["torch"].corrections(queries)
    onnx_out = channel_correctors["onnx"].corrections(queries)
    assert [c.correction for c in onnx_out] == [c.correction for c in torch_out]
    assert [c.suggestion for c in onnx_out] == [c.suggestion for c in torch_out]
    pairs = zip(onnx_out, torch_out, strict=True)
    assert max(abs(a.confidence - b.confidence) for a, b in pairs) < 1e-3
    assert sum(c.correction != c.query for c in torch_out) > 0  # it does correct something


def test_channel_model_leaves_a_long_correct_input_intact(channel_correctors, tiny_channel_dir):
    from spellfix.decoding import Lexicon

    lexicon = Lexicon.load(tiny_channel_dir / "lexicon.tsv")
    frequent = sorted(lexicon.unigrams, key=lambda w: -lexicon.unigrams[w])[:60]
    text = " ".join(frequent)
    for corrector in channel_correctors.values():
        assert corrector.correct([text]) == [text]


def test_generate_backends_agree_and_keep_input_order(correctors):
    # Batches of 3 over 5 queries sorted by length: order must be restored afterwards.
    queries = [*QUERIES, "the beatles let it be"]
    torch_out = correctors["torch"].correct(queries)
    assert correctors["onnx"].correct(queries) == torch_out
    assert torch_out[0] == "queen bohemian rhapsody"  # the tiny model copies what it learned
    assert torch_out[4] == "the beatles let it be"


def test_a_query_gets_the_same_correction_whatever_its_batch(correctors):
    alone = correctors["onnx"].correct(["coldplay yellow"])
    with_long = correctors["onnx"].correct(["coldplay yellow", "queen bohemian rhapsody " * 3])
    assert with_long[0] == alone[0]


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_empty_and_blank_strings_come_back_unchanged(correctors, backend):
    out = correctors[backend].correct(["", "news podcasts", "   ", ""])
    assert out[0] == "" and out[2] == "   " and out[3] == ""
    assert out[1] == "news podcasts"
    assert correctors[backend].correct([]) == []


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_input_longer_than_the_model_is_left_alone_with_a_warning(correctors, backend, caplog):
    long_query = "bohemian rhapsody " * 200
    with caplog.at_level(logging.WARNING):
        out = correctors[backend].correct([long_query, "coldplay yellow"])
    assert "left as they are" in caplog.text
    assert out == [long_query, "coldplay yellow"]


def test_non_ascii_inputs_agree_across_backends(correctors):
    queries = ["sigur rós hoppípolla", "東京事変", "motörhead 🎸", "café del mar"]
    out = correctors["torch"].correct(queries)
    assert correctors["onnx"].correct(queries) == out
    assert all(isinstance(text, str) for text in out)


def test_a_model_without_lexicon_says_so_in_one_line(tiny_model_dir, caplog):
    with caplog.at_level(logging.WARNING):
        Corrector.from_pretrained(tiny_model_dir, backend="torch")
    warnings = [r.getMessage() for r in caplog.records if "decoding.json" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]


def test_onnx_backend_on_a_model_dir_names_spellfix_export(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="spellfix-export"):
        Corrector.from_pretrained(tiny_model_dir, backend="onnx")


def test_a_single_string_is_refused(correctors):
    with pytest.raises(TypeError, match="list of strings"):
        correctors["torch"].correct("queen")


def _cli(model: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "spellfix.correct", "--backend", "onnx", "--model", str(model)]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, timeout=300)


def test_cli_prints_confidence_and_suggestion_as_json(channel_onnx_dir):
    result = _cli(channel_onnx_dir, "--json", stdin=b"the best\r\n\nteh best\n")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [row["query"] for row in rows] == ["the best", "", "teh best"]  # CRLF stripped
    assert set(rows[0]) == {"query", "correction", "confidence", "suggestion"}
    assert rows[0]["correction"] == "the best" and 0 <= rows[2]["confidence"] <= 1


def test_cli_names_a_line_that_is_not_utf8_and_corrects_the_rest(channel_onnx_dir):
    result = _cli(channel_onnx_dir, stdin=b"the best\n\xff\xfe bad\nnew york\n")
    assert result.returncode == 1
    assert b"stdin line 2: not UTF-8" in result.stderr
    assert b"Traceback" not in result.stderr
    assert result.stdout.decode().splitlines() == ["the best", "", "new york"]


def test_cli_answers_each_line_as_it_arrives(channel_onnx_dir):
    command = [sys.executable, "-m", "spellfix.correct", "--backend", "onnx"]
    process = subprocess.Popen(
        [*command, "--model", str(channel_onnx_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        process.stdin.write(b"the best\n")
        process.stdin.flush()
        deadline = time.monotonic() + 120
        ready = []
        while not ready and time.monotonic() < deadline:
            ready = select.select([process.stdout], [], [], 1)[0]
        # The answer comes while stdin is still open: the CLI does not wait for the end.
        assert ready, "no answer before stdin was closed"
        assert os.read(process.stdout.fileno(), 1000).decode().strip() == "the best"
    finally:
        process.stdin.close()
        process.wait(timeout=60)


@pytest.mark.parametrize("content", [None, b"", b"\x00\x01binary\x00"])
def test_a_missing_empty_or_binary_catalog_is_named_in_one_line(
    channel_onnx_dir, tmp_path, content
):
    catalog = tmp_path / "catalog.tsv"
    if content is not None:
        catalog.write_bytes(content)
    result = _cli(channel_onnx_dir, "--catalog", str(catalog), "teh best")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spellfix-correct: error: "), lines
    assert str(catalog) in lines[0]


def test_a_catalog_makes_its_titles_preferred(channel_onnx_dir, tmp_path):
    catalog = tmp_path / "titles.tsv"
    catalog.write_text("title\tartist\nQuuxington Love\tThe Zorblaxes\n")
    plain = Corrector.from_pretrained(channel_onnx_dir, backend="onnx")
    with_catalog = Corrector.from_pretrained(channel_onnx_dir, backend="onnx", catalog=catalog)
    # Unknown to the lexicon, the word is copied; in the catalog, its typo is fixed.
    assert plain.correct(["quuxingten love"]) == ["quuxingten love"]
    assert with_catalog.correct(["quuxingten love"]) == ["quuxington love"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda", "device='cuda': this torch build sees no CUDA GPU; use cpu"),
        ("gpu", "device='gpu': not a device torch knows; use cpu, cuda or cuda:<index>"),
    ],
)
def test_cli_a_device_it_cannot_run_on_is_refused_in_one_line(tiny_channel_dir, device, message):
    command = [sys.executable, "-m", "spellfix.correct", "--model", str(tiny_channel_dir)]
    result = subprocess.run([*command, "--device", device, "teh best"], capture_output=True)
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert lines == [f"spellfix-correct: error: {message}"]


def test_the_onnx_backend_refuses_a_device_name_it_does_not_know(channel_onnx_dir):
    with pytest.raises(DeviceError, match="device='gpu': not a device; use cpu, cuda"):
        Corrector.from_pretrained(channel_onnx_dir, backend="onnx", device="gpu")
