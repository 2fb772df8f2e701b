"""Loading a trained model: HF directories and Lightning checkpoints give the same model,
and a directory that cannot work is refused naming the file or the model type."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from spellfix.generation import generation_settings, torch_generate
from spellfix.loading import load_seq2seq

pytestmark = pytest.mark.slow
# Queries the shared tiny model was taught to copy (tests/conftest.py).
QUERIES = ["queen bohemian rhapsody", "news podcasts", "coldplay yellow"]


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json"])
def test_a_model_directory_missing_a_file_is_named(tiny_model_dir, tmp_path, missing):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        load_seq2seq(copy)


def test_a_model_that_is_not_bart_is_named(tiny_model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    with pytest.raises(ValueError, match="a t5 model; spellfix runs BART models"):
        load_seq2seq(copy)


def test_lightning_checkpoint_loads_to_the_same_model(tiny_model_dir, tmp_path):
    loaded = load_seq2seq(tiny_model_dir)
    checkpoint = tmp_path / "last.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in loaded.model.state_dict().items()},
            "hyper_parameters": {
                "model_config": loaded.model.config.to_dict(),
                "tokenizer_dir": str(tiny_model_dir),
            },
        },
        checkpoint,
    )
    from_checkpoint = load_seq2seq(checkpoint)
    assert from_checkpoint.source_kind == "lightning_ckpt"
    settings = generation_settings(loaded.model, 1.5, 8)
    batch = loaded.tokenizer(QUERIES, return_tensors="pt", padding=True)
    args = (batch["input_ids"], batch["attention_mask"], settings)
    assert torch.equal(
        torch_generate(from_checkpoint.model, *args), torch_generate(loaded.model, *args)
    )
