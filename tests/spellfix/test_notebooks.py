"""The three notebooks execute top to bottom at small sizes (``SPELLFIX_NOTEBOOK_FAST=1``).

They are stored without outputs; the test runs them with nbclient on the venv's python3
kernel, in a temporary directory, so a notebook that no longer matches the code fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    ).execute()
    return notebook


def outputs_text(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.extend(str(value) for value in output.get("data", {}).values())
    return "\n".join(parts)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.mark.slow
def test_the_three_notebooks_execute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPELLFIX_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("SPELLFIX_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("SPELLFIX_SHARED_DATA", str(SHARED_DATA))

    quickstart = execute("01_quickstart.ipynb", tmp_path)
    run_dir = tmp_path / "work" / "runs" / "quickstart"
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (tmp_path / "work" / "export").is_dir()
    assert "onnx=" in outputs_text(quickstart)

    gallery = execute("02_noise_gallery.ipynb", tmp_path)
    text = outputs_text(gallery)
    assert "keyboard_substitute" in text and "image/png" in json.dumps(gallery.cells[-3].outputs)
    if SHARED_DATA.is_dir():
        assert "aspell" in text, "real misspellings are compared when present"

    monkeypatch.setenv("SPELLFIX_NOTEBOOK_RUNS", str(run_dir))
    dashboard = execute("03_utilization_dashboard.ipynb", tmp_path)
    text = outputs_text(dashboard)
    assert "1 runs: quickstart" in text
    assert sum("image/png" in json.dumps(cell.get("outputs", [])) for cell in dashboard.cells) == 2
