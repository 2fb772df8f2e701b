"""spellfix-synth as users run it: a summary on success, one line and exit 2 on bad input."""

import signal
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from data_synth.build import load_dataset_dir
from data_synth.cli import synthesize
from data_synth.paths import CONF_DIR


def run_cli(*overrides, cwd):
    command = [sys.executable, "-m", "data_synth.cli", "build.progress=false", *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_synthesize_builds_from_a_composed_config_and_prints_a_summary(tmp_path, capsys):
    songs = tmp_path / "songs.csv"
    songs.write_text("title,artist\nHey Jude,The Beatles\nHalo,Beyoncé\nCrazy in Love,Jay-Z\n")
    overrides = [
        f"corpus.path={songs}",
        "corpus.columns=[title,artist]",
        f"output_dir={tmp_path / 'out'}",
        "build.progress=false",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="synth", overrides=overrides)
    path = synthesize(cfg)
    clean = set().union(*(set(split["clean"]) for split in load_dataset_dir(path).values()))
    assert clean == {"Hey Jude", "The Beatles", "Halo", "Beyoncé", "Crazy in Love", "Jay-Z"}
    printed = capsys.readouterr().out
    assert f"wrote {path}" in printed
    assert "train:" in printed and "operations in train" in printed and "examples" in printed


def test_cli_infers_the_format_from_the_path_alone(tmp_path):
    songs = "title\tartist\nHey Jude\tThe Beatles\nHalo\tBeyoncé\nYesterday\tThe Beatles\n"
    (tmp_path / "songs.tsv").write_text(songs)
    result = run_cli("corpus.path=songs.tsv", "output_dir=out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()
    assert "read 3, kept 3" in result.stdout  # the first column only: titles
    assert not (tmp_path / "outputs").exists()  # Hydra writes no run folders


@pytest.mark.parametrize(
    ("files", "overrides", "message"),
    [
        ({}, ["corpus.path=missing.csv"], "missing.csv: no such file"),
        (
            {"songs.csv": b"title,artist\nHalo,Beyonce\n"},
            ["corpus.path=songs.csv", "corpus.columns=[song]"],
            "songs.csv: no column 'song'; the header has title, artist",
        ),
        ({"tiny.txt": b"a\n\nb\n"}, ["corpus.path=tiny.txt"], "no queries left after filtering"),
        (
            {"model.bin": b"\x7fELF\x00\x00"},
            ["corpus.path=model.bin", "corpus.source=text"],
            "binary",
        ),
        # Wrong types: random.Random("abc") would accept the seed and build another dataset.
        ({}, ["build.seed=abc"], "build.seed='abc': expected int like the default 0"),
        ({}, ["build.num_proc=0"], "build.num_proc=0: expected a whole number >= 1 or null"),
        ({}, ["build.overwrite=maybe"], "build.overwrite='maybe': expected bool like the default"),
        ({}, ["noise=qwerty"], "Available options in 'noise': default, keyboard, phonetic"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(tmp_path, files, overrides, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    result = run_cli(*overrides, "output_dir=out", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("spellfix-synth: error: ")
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_synthesizing_says_so_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_synth.cli", f"output_dir={out}", "build.progress=true"]
    # A suite started in the background (`make test &`) inherits Ctrl-C ignored, and so
    # would the child: Python then never raises KeyboardInterrupt. A user's terminal does not.
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = b""
    while b"synthesizing" not in seen:  # the progress bar: the work has begun
        chunk = process.stderr.read1(4096)
        assert chunk, f"synth ended before it began synthesizing: {seen[-500:]!r}"
        seen += chunk
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    last = (seen + rest).decode().replace("\r", "\n").strip().splitlines()[-1]
    assert last == f"spellfix-synth: interrupted; {out} was not written"
    assert b"Traceback" not in seen + rest
    assert not out.exists()
