"""One export of the tiny channel model with both Triton layouts, and a server per layout.

The export goes through ``spellfix-export``'s ``export(cfg)`` with ``formats=[onnx,triton]``
(the inprocess repository), and the bls repository is written from the same ONNX files.
Servers start once per layout per test module: each start costs seconds on a busy CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from data_synth.paths import CONF_DIR
from spellfix.serve import TritonServer, TritonServerError, find_server, on_free_ports

LAYOUTS = ("inprocess", "bls")


def compose_export(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("export", overrides=list(overrides))


@pytest.fixture(scope="session")
def triton_export(tiny_channel_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{"export_dir": ..., "inprocess": <repository>, "bls": <repository>, "summary": ...}``."""
    from spellfix.export.cli import export
    from spellfix.export.triton import RepositorySettings, write_repository

    export_dir = tmp_path_factory.mktemp("triton") / "tiny"
    cfg = compose_export(
        f"model_path={tiny_channel_dir}",
        f"output_dir={export_dir}",
        "formats=[onnx,triton]",
        "validation.num_queries=20",
    )
    summary = export(cfg)
    bls_settings = dataclasses.replace(RepositorySettings.from_config(cfg.triton), layout="bls")
    bls_repository = export_dir.parent / "bls" / "triton"
    write_repository(export_dir, bls_repository, bls_settings)
    return {
        "export_dir": export_dir,
        "inprocess": export_dir / "triton",
        "bls": bls_repository,
        "summary": summary,
    }


@pytest.fixture(scope="session")
def server_installed() -> None:
    """Skip (naming the fix) where neither the serve extra nor a tritonserver is installed."""
    try:
        find_server()
    except TritonServerError as error:
        pytest.skip(f"no runnable tritonserver: {error}")


def start_server(repository: Path) -> TritonServer:
    return on_free_ports(
        lambda ports: TritonServer(
            repository, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]
        ).start()
    )


@pytest.fixture(scope="module", params=LAYOUTS)
def served(request, triton_export: dict, server_installed) -> Iterator[tuple[str, TritonServer]]:
    """A running server for each layout, stopped (stubs included) when the module ends."""
    layout = request.param
    server = start_server(triton_export[layout])
    try:
        yield layout, server
    finally:
        server.stop()
