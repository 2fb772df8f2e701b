"""A real tritonserver on the exported repository: same answers, robust to bad input, clean stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from spellfix.correct import Corrector
from spellfix.correct import main as correct_main
from spellfix.decoding import Correction
from spellfix.serve import TritonServer, TritonServerError, free_ports, on_free_ports

pytestmark = [pytest.mark.triton, pytest.mark.slow]

SERVER_PROCESS_NAMES = ("tritonserver", "triton_python_backend_stub")


@pytest.fixture(scope="module")
def queries(channel_queries: list[str]) -> list[str]:
    """200 queries of lexicon words, most misspelled, plus odd ones and an empty one."""
    odd = ["beyoncé crazy in love", "東京事変", "#1 hits 2024", "coldplay yelow", ""]
    return [*channel_queries[:195], *odd]


@pytest.fixture(scope="module")
def expected(triton_export: dict, queries: list[str]) -> dict[str, Correction]:
    """What the in-process ONNX Runtime corrector answers: the reference for every client."""
    corrector = Corrector.from_pretrained(
        triton_export["export_dir"], backend="onnx", intra_op_threads=1
    )
    return dict(zip(queries, corrector.corrections(queries), strict=True))


def _same(got: Correction, want: Correction) -> bool:
    """Equal corrections and suggestions; confidences equal up to the float32 wire format."""
    return (
        got.correction == want.correction
        and got.suggestion == want.suggestion
        and abs(got.confidence - want.confidence) < 1e-5
    )


def _address(url: str) -> str:
    return url.split("://", 1)[1]


def _text_input(module, values: list) -> object:
    array = np.array(values, dtype=np.object_).reshape(-1, 1)
    tensor = module.InferInput("TEXT", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array)
    return tensor


def test_http_and_grpc_answer_like_the_in_process_corrector(served, queries, expected):
    layout, server = served
    reference = [expected[q] for q in queries]
    assert sum(c.correction != q for q, c in zip(queries, reference, strict=True)) > 0
    for url, protocol in ((server.http_url, "http"), (server.grpc_url, "grpc")):
        answers = Corrector.from_triton(url, protocol=protocol).corrections(queries)
        differ = [(a, b) for a, b in zip(answers, reference, strict=True) if not _same(a, b)]
        assert differ == [], f"{layout} over {protocol}: first {differ[:2]}"


def test_spellfix_correct_cli_sends_queries_to_the_server(served, expected, capsys):
    _, server = served
    queries = ["coldplay yelow", "", "beyoncé crazy in love"]
    assert correct_main(["--triton", server.http_url, "--json", *queries]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["correction"] for line in lines] == [expected[q].correction for q in queries]
    assert [line["suggestion"] for line in lines] == [expected[q].suggestion for q in queries]
    assert all(0 <= line["confidence"] <= 1 for line in lines)
    assert correct_main(["--triton", server.grpc_url, "--protocol", "grpc", queries[0]]) == 0
    assert capsys.readouterr().out == expected[queries[0]].correction + "\n"


def test_spellfix_correct_cli_names_an_unreachable_server(capsys):
    assert correct_main(["--triton", f"http://127.0.0.1:{free_ports(1)[0]}", "x"]) == 2
    assert "cannot reach Triton at http://127.0.0.1:" in capsys.readouterr().err


def test_malformed_requests_get_errors_or_defined_results(served, expected):
    _, server = served
    client = httpclient.InferenceServerClient(_address(server.http_url))
    grpc = grpcclient.InferenceServerClient(_address(server.grpc_url))
    try:
        _check_malformed_requests(client, grpc, expected)
    finally:  # an open keep-alive connection would hold up the server's stop
        client.close()
        grpc.close()


def _check_malformed_requests(client, grpc, expected: dict[str, Correction]) -> None:
    def infer(tensor):
        return client.infer("spellfix", [tensor]).as_numpy("CORRECTED")

    assert infer(_text_input(httpclient, [b""])).tolist() == [[b""]]
    long_query = ("queen bohemian rapsody " * 500)[:10_000]
    (answer,) = infer(_text_input(httpclient, [long_query.encode()])).reshape(-1)
    # Corrected word by word, never truncated: as long as the input, give or take edits.
    assert abs(len(answer.decode("utf-8")) - len(long_query)) < 0.1 * len(long_query)

    with pytest.raises(InferenceServerException, match="not valid UTF-8"):
        infer(_text_input(httpclient, [b"\xff\xfe broken"]))
    wrong_dtype = httpclient.InferInput("TEXT", [1, 1], "INT64")
    wrong_dtype.set_data_from_numpy(np.array([[42]], dtype=np.int64))
    with pytest.raises(InferenceServerException, match=r"data-type is 'INT64'.*expects 'BYTES'"):
        infer(wrong_dtype)
    empty_batch = httpclient.InferInput("TEXT", [0, 1], "BYTES")
    empty_batch.set_data_from_numpy(np.zeros((0, 1), dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"input 'TEXT'.*got 0"):
        infer(empty_batch)

    # Still healthy: the bad requests failed alone, and the next ones are answered.
    assert client.is_server_live() and client.is_model_ready("spellfix")
    good = grpc.infer("spellfix", [_text_input(grpcclient, [b"coldplay yelow"])])
    assert good.as_numpy("CORRECTED").tolist() == [[expected["coldplay yelow"].correction.encode()]]


def test_16_threads_200_requests_each_without_an_error(served, queries, expected):
    layout, server = served
    errors: list[str] = []
    wrong: list[tuple[str, str]] = []
    answered = [0] * 16

    def client_thread(index: int) -> None:
        # Half the threads speak HTTP, half gRPC; an HTTP client is not shared across threads.
        protocol = "http" if index % 2 else "grpc"
        url = server.http_url if protocol == "http" else server.grpc_url
        corrector = Corrector.from_triton(url, protocol=protocol)
        for n in range(200):
            query = queries[(index * 200 + n) % len(queries)]
            try:
                (answer,) = corrector.corrections([query])
            except Exception as error:  # every failure is counted, none may happen
                errors.append(f"{protocol}: {error}")
                continue
            answered[index] += 1
            if not _same(answer, expected[query]):
                wrong.append((query, answer))

    threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), f"{layout}: clients hung"
    assert errors == [], f"{layout}: {len(errors)} errors, first: {errors[:3]}"
    assert sum(answered) == 16 * 200
    assert wrong == [], f"{layout}: answers differ under load, first: {wrong[:3]}"


def _server_family(server: TritonServer) -> list[psutil.Process]:
    root = psutil.Process(server.process.pid)
    return [root, *root.children(recursive=True)]


def _alive(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.name()}")
        except psutil.NoSuchProcess:
            continue
    return alive


def test_stop_leaves_no_server_or_stub_process(triton_export, server_installed):
    server = on_free_ports(
        lambda ports: TritonServer(
            triton_export["bls"], http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2]
        ).start()
    )
    try:
        family = _server_family(server)
        scratch = server._scratch
        names = sorted(process.name() for process in family)
        # The server and one stub per model instance (spellfix, encoder, decoder).
        assert names.count("triton_python_backend_stub") == 3, names
        assert names.count("tritonserver") == 1, names
        # The python backend's temp files (python_env_*) go where TMPDIR points; whether
        # they are still there at this moment depends on the backend's timing.
        assert family[0].environ()["TMPDIR"] == str(scratch), "the server's temp dir is its own"
    finally:
        server.stop()
    assert _alive(family) == []
    assert not server.is_ready()
    assert not scratch.exists(), "nothing of the server is left in the temp dir"


def test_a_busy_port_is_refused_before_anything_starts(served, triton_export):
    _, server = served
    grpc_port, metrics_port = free_ports(2)
    second = TritonServer(
        triton_export["inprocess"],
        http_port=server.http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
    )
    with pytest.raises(TritonServerError, match=f"http_port={server.http_port}: .* is in use"):
        second.start()
    assert second.process is None


def _start_serve_cli(triton_export, run_name: str) -> tuple[subprocess.Popen, list[int], str]:
    """``spellfix-serve`` on free ports, read up to its "Stop with" line (what it printed)."""

    def start(ports: list[int]) -> tuple[subprocess.Popen, list[int], str]:
        command = [
            sys.executable,
            "-m",
            "spellfix.serve",
            f"repository={triton_export['inprocess']}",
            f"http_port={ports[0]}",
            f"grpc_port={ports[1]}",
            f"metrics_port={ports[2]}",
            f"hydra.run.dir={Path(triton_export['export_dir']).parent / run_name}",
        ]
        cli = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in cli.stdout:  # bounded: the server gives up after startup_timeout_s
            lines.append(line)
            if line.startswith("Stop with"):
                return cli, ports, "".join(lines)
        cli.wait()
        raise TritonServerError(f"spellfix-serve exited with {cli.returncode}: {''.join(lines)}")

    return on_free_ports(start)


def test_the_server_dies_with_a_killed_spellfix_serve(triton_export, server_installed):
    cli, _, _ = _start_serve_cli(triton_export, "killed_run")
    try:
        family = psutil.Process(cli.pid).children(recursive=True)
        assert any(p.name() == "tritonserver" for p in family)
        cli.kill()  # SIGKILL: no handler runs, only the kernel's parent-death signal
        cli.wait(timeout=30)
        _, alive = psutil.wait_procs(family, timeout=60)
        assert [p.pid for p in alive] == [], "server or stubs outlived spellfix-serve"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


def test_spellfix_serve_prints_endpoints_and_stops_on_sigterm(triton_export, server_installed):
    cli, ports, printed = _start_serve_cli(triton_export, "serve_run")
    try:
        assert f"http://127.0.0.1:{ports[0]}" in printed, printed
        assert f"grpc://127.0.0.1:{ports[1]}" in printed
        assert f"http://127.0.0.1:{ports[2]}/metrics" in printed
        family = [psutil.Process(cli.pid), *psutil.Process(cli.pid).children(recursive=True)]
        assert any(p.name() == "triton_python_backend_stub" for p in family)
        answer = Corrector.from_triton(f"http://127.0.0.1:{ports[0]}").correct(["coldplay yelow"])
        assert len(answer) == 1
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
        assert "stopped" in cli.stdout.read()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert _alive(family) == []
    leftovers = [
        p.info
        for p in psutil.process_iter(["pid", "name", "cmdline"])
        if p.info["name"] in SERVER_PROCESS_NAMES
        and any(str(triton_export["inprocess"]) in part for part in p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_a_port_taken_between_choosing_and_binding_is_retried_on_fresh_ports(
    triton_export, server_installed
):
    taken: list[int] = []

    def start(ports: list[int]) -> TritonServer:
        assert len(set(ports)) == 3, ports
        http_port, grpc_port, metrics_port = ports
        server = TritonServer(
            triton_export["inprocess"],
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
        )
        if not taken:  # the first time, another process binds the gRPC port after the check
            holder = socket.create_server(("127.0.0.1", ports[1]))
            taken.append(ports[1])
            server.check_ports = lambda: None
            try:
                return server.start()
            finally:
                holder.close()
        return server.start()

    server = on_free_ports(start)
    try:
        assert server.grpc_port != taken[0]
        assert Corrector.from_triton(server.http_url).correct(["coldplay yelow"])
    finally:
        server.stop()
