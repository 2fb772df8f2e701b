"""``evaluate(cfg)`` end to end on small pairs files, dataset splits and the real lists."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from data_synth.paths import CONF_DIR
from spellfix.evaluate import EvalInputError, evaluate

PROJECT_ROOT = Path(__file__).resolve().parents[2]

PAIRS_TSV = (
    "misspelled\tcorrect\n"
    "speling\tspelling\n"
    "recieve\treceive\n"
    "presbyterian\tPresbyterian\n"
    "let it be\tlet it be\n"
    "quen bohemian rapsody\tqueen bohemian rhapsody\n"
)


def compose_eval(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.tsv"
    path.write_text(PAIRS_TSV, encoding="utf-8")
    return path


def test_identity_and_symspell_side_by_side(pairs_file: Path, tmp_path: Path):
    out = tmp_path / "report"
    results = evaluate(
        compose_eval(f"pairs={pairs_file}", "systems=[identity,symspell]", f"output_dir={out}")
    )

    # 5 pairs; "presbyterian" (case only) and "let it be" are already correct ignoring case.
    assert results["pairs"] == {
        "path": str(pairs_file),
        "n": 5,
        "n_clean": 2,
        "n_case_only": 1,
        "dropped": "",
    }
    identity, symspell = results["systems"]
    assert identity["system"] == "identity"
    assert identity["exact_match"] == pytest.approx(2 / 5)
    assert identity["correction_recall"] == 0.0
    assert identity["overcorrection_rate"] == 0.0
    # symspell fixes all three typos (4 misspelled words) and leaves the clean rows alone.
    assert symspell["system"] == "symspell"
    assert symspell["exact_match"] == 1.0
    assert symspell["correction_precision"] == 1.0
    assert symspell["correction_recall"] == 1.0
    assert symspell["overcorrection_rate"] == 0.0
    assert symspell["queries_per_s"] > 0

    written = json.loads((out / "eval_results.json").read_text(encoding="utf-8"))
    assert [row["system"] for row in written["systems"]] == ["identity", "symspell"]
    assert written["systems"][0]["correction_precision"] is None  # undefined: no changes made
    assert {error["source"] for error in written["systems"][0]["errors"]} == {
        "speling",
        "recieve",
        "quen bohemian rapsody",
    }
    table = (out / "eval_results.md").read_text(encoding="utf-8")
    assert "| identity | 40.0% |" in table
    assert "| symspell | 100.0% |" in table


def test_model_and_systems_are_deduplicated_model_first(pairs_file: Path, tmp_path: Path):
    results = evaluate(
        compose_eval(
            f"pairs={pairs_file}",
            "system=symspell",
            "systems=[identity,symspell]",
            f"output_dir={tmp_path}",
        )
    )
    assert [row["system"] for row in results["systems"]] == ["symspell", "identity"]


def test_csv_with_configured_column_names_and_limit(tmp_path: Path):
    pairs = tmp_path / "queries.csv"
    pairs.write_text('query,intended\nspeling,spelling\n"let it be",let it be\nabba,abba\n')
    results = evaluate(
        compose_eval(
            f"pairs={pairs}",
            "system=identity",
            "pairs_columns.source=query",
            "pairs_columns.target=intended",
            "limit=2",
            f"output_dir={tmp_path / 'out'}",
        )
    )
    assert results["pairs"]["n"] == 2
    assert results["systems"][0]["exact_match"] == 0.5


def test_data_synth_dataset_directory_uses_the_test_split(tmp_path: Path):
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {
            "train": Dataset.from_dict({"noisy": ["x"] * 4, "clean": ["x"] * 4}),
            "test": Dataset.from_dict(
                {"noisy": ["speling", "abba", "recieve"], "clean": ["spelling", "abba", "receive"]}
            ),
        }
    ).save_to_disk(tmp_path / "dataset")
    results = evaluate(
        compose_eval(f"pairs={tmp_path / 'dataset'}", "system=identity", f"output_dir={tmp_path}")
    )
    assert results["pairs"]["n"] == 3
    assert results["pairs"]["path"].endswith("[test]")
    assert results["systems"][0]["exact_match"] == pytest.approx(1 / 3)

    with pytest.raises(EvalInputError, match="no split 'validation'"):
        evaluate(
            compose_eval(
                f"pairs={tmp_path / 'dataset'}",
                "system=identity",
                "split=validation",
                f"output_dir={tmp_path}",
            )
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["pairs_columns.target=fixed"], "no column 'fixed'"),
        (["pairs={missing}"], "does not exist"),
        (["system=null"], "no system to evaluate"),
        (["batch_size=0"], "batch_size=0: expected a whole number >= 1"),
        (["num_beams=-1"], "num_beams=-1: expected a whole number >= 1"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    pairs_file: Path, tmp_path: Path, overrides: list[str], message: str
):
    out = tmp_path / "out"
    overrides = [o.format(missing=tmp_path / "missing.tsv") for o in overrides]
    cfg = compose_eval(f"pairs={pairs_file}", "system=identity", f"output_dir={out}", *overrides)
    with pytest.raises(EvalInputError, match=message):
        evaluate(cfg)
    assert not out.exists()


def test_lines_it_cannot_use_are_counted_and_reported_not_scored(tmp_path: Path):
    # The corpus reader's rule: a short row or a line that is not UTF-8 is skipped and
    # counted, and the report says so, since it changes what the scores are out of.
    pairs = tmp_path / "logs.tsv"
    pairs.write_bytes(
        b"misspelled\tcorrect\nspeling\tspelling\nonly-one-field\n"
        + "beyonc\tbeyoncé\n".encode("latin-1")
        + b"teh\tthe\n"
    )
    results = evaluate(compose_eval(f"pairs={pairs}", "system=identity", f"output_dir={tmp_path}"))
    assert results["pairs"]["n"] == 2
    assert results["pairs"]["dropped"] == (
        f"{pairs}: read 4, kept 2 (dropped: 1 undecodable, 1 malformed)"
    )
    assert f"Lines skipped: {pairs}: read 4" in Path(results["markdown_path"]).read_text()


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path):
    pairs = tmp_path / "latin1.tsv"
    pairs.write_bytes("misspelled\tcorrect\nbeyonc\tbeyoncé\n".encode("latin-1"))
    with pytest.raises(EvalInputError, match=r"latin1.tsv: read 1, kept 0 .*not valid UTF-8"):
        evaluate(compose_eval(f"pairs={pairs}", "system=identity", f"output_dir={tmp_path}"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty; a CSV/TSV file needs a header row"),
        (b"\x00\x01binary\x00", "looks like a binary file"),
        (b"misspelled\tcorrect\n", "no pairs to evaluate"),
    ],
)
def test_an_empty_or_binary_file_is_named_in_one_line(tmp_path: Path, content, message):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(content)
    with pytest.raises(EvalInputError, match=message) as raised:
        evaluate(compose_eval(f"pairs={pairs}", "system=identity", f"output_dir={tmp_path}"))
    assert str(pairs) in str(raised.value) and "\n" not in str(raised.value)


def test_cli_bad_column_prints_one_line_and_fails(pairs_file: Path, tmp_path: Path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "spellfix.evaluate",
            f"pairs={pairs_file}",
            "model=identity",
            "pairs_columns.source=typo",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    error_lines = completed.stderr.strip().splitlines()
    assert len(error_lines) == 1, completed.stderr
    assert "no column 'typo'" in error_lines[0]
    assert "pairs_columns.source" in error_lines[0]
    assert not (tmp_path / "run" / "eval_results.json").exists()


def test_cli_writes_the_report_into_the_hydra_run_dir(pairs_file: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "spellfix.evaluate",
            f"pairs={pairs_file}",
            "model=identity",
            f"hydra.run.dir={run_dir}",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| identity | 40.0% |" in completed.stdout
    assert json.loads((run_dir / "eval_results.json").read_text())["pairs"]["n"] == 5


@pytest.mark.slow
@pytest.mark.parametrize(
    ("file_name", "rows"),
    [("aspell.tsv", 531), ("wikipedia_birkbeck.tsv", 2455), ("norvig_testset1.tsv", 270)],
)
def test_real_misspellings_symspell_beats_doing_nothing(
    shared_data: Path, tmp_path: Path, file_name: str, rows: int
):
    results = evaluate(
        compose_eval(
            f"pairs={shared_data / 'misspellings' / file_name}",
            "systems=[identity,symspell]",
            f"output_dir={tmp_path}",
        )
    )
    assert results["pairs"]["n"] == rows
    identity, symspell = results["systems"]
    assert identity["correction_recall"] == 0.0
    assert symspell["exact_match"] > identity["exact_match"] + 0.3
    assert symspell["cer"] < identity["cer"]


def test_model_directory_is_scored_on_the_corrector_output(
    pairs_file: Path, tmp_path: Path, tiny_model_dir: Path
):
    import spellfix.correct as correct
    from spellfix.evaluate import load_pairs
    from spellfix.metrics import compute_metrics

    results = evaluate(
        compose_eval(
            f"pairs={pairs_file}",
            f"system={tiny_model_dir}",
            "batch_size=2",
            f"output_dir={tmp_path}",
        )
    )
    (row,) = results["systems"]
    assert row["system"] == f"{tiny_model_dir.name} (torch)"
    pairs = load_pairs(pairs_file)
    corrector = correct.Corrector.from_pretrained(tiny_model_dir, backend="torch", batch_size=2)
    expected = compute_metrics(pairs.sources, corrector.correct(pairs.sources), pairs.references)
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, nan_ok=True), key


def test_a_device_name_torch_does_not_know_is_refused_in_one_line(
    pairs_file: Path, tmp_path: Path, tiny_model_dir: Path
):
    from spellfix.correct import DeviceError

    cfg = compose_eval(
        f"pairs={pairs_file}", f"system={tiny_model_dir}", "device=gpu", f"output_dir={tmp_path}"
    )
    with pytest.raises(DeviceError, match="device='gpu': not a device torch knows"):
        evaluate(cfg)
    assert not (tmp_path / "eval_results.json").exists()
