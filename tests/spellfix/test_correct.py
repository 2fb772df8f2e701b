"""Corrector: torch and ONNX Runtime back ends agree, and awkward inputs behave."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from spellfix.correct import Corrector

pytestmark = pytest.mark.slow
QUERIES = ["queen bohemian rhapsody", "news podcasts", "beyoncé halo", "coldplay yellow"]


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from spellfix.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("correct") / "onnx"
    export_onnx(tiny_model_dir, out, validation_queries=QUERIES)
    return out


@pytest.fixture(scope="module")
def correctors(tiny_model_dir: Path, onnx_dir: Path) -> dict[str, Corrector]:
    return {
        "torch": Corrector.from_pretrained(tiny_model_dir, backend="torch", batch_size=3),
        "onnx": Corrector.from_pretrained(onnx_dir, backend="onnx", batch_size=3),
    }


def test_backends_agree_and_keep_input_order(correctors):
    # Batches of 3 over 5 queries sorted by length: order must be restored afterwards.
    queries = [*QUERIES, "the beatles let it be"]
    torch_out = correctors["torch"].correct(queries)
    assert correctors["onnx"].correct(queries) == torch_out
    assert torch_out[0] == "queen bohemian rhapsody"  # the tiny model copies what it learned
    assert torch_out[4] == "the beatles let it be"


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_empty_and_blank_strings_come_back_unchanged(correctors, backend):
    out = correctors[backend].correct(["", "news podcasts", "   ", ""])
    assert out[0] == "" and out[2] == "   " and out[3] == ""
    assert out[1] == "news podcasts"
    assert correctors[backend].correct([]) == []


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_very_long_input_is_truncated_with_a_warning(correctors, backend, caplog):
    long_query = "bohemian rhapsody " * 200
    with caplog.at_level(logging.WARNING):
        out = correctors[backend].correct([long_query, "coldplay yellow"])
    assert "truncated" in caplog.text
    assert isinstance(out[0], str) and out[1] == "coldplay yellow"


def test_non_ascii_inputs_agree_across_backends(correctors):
    queries = ["sigur rós hoppípolla", "東京事変", "motörhead 🎸", "café del mar"]
    out = correctors["torch"].correct(queries)
    assert correctors["onnx"].correct(queries) == out
    assert all(isinstance(text, str) for text in out)


def test_onnx_backend_on_a_model_dir_names_spellfix_export(tiny_model_dir):
    with pytest.raises(FileNotFoundError, match="spellfix-export"):
        Corrector.from_pretrained(tiny_model_dir, backend="onnx")


def test_a_single_string_is_refused(correctors):
    with pytest.raises(TypeError, match="list of strings"):
        correctors["torch"].correct("queen")


def test_cli_reads_stdin_and_prints_json(onnx_dir):
    command = [sys.executable, "-m", "spellfix.correct", "--json", "--backend", "onnx"]
    result = subprocess.run(
        [*command, "--model", str(onnx_dir)],
        input="queen bohemian rhapsody\n\nbeyoncé halo\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["query"] for row in rows] == ["queen bohemian rhapsody", "", "beyoncé halo"]
    assert rows[0]["correction"] == "queen bohemian rhapsody" and rows[1]["correction"] == ""
