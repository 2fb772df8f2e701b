"""``spellfix-serve``: run tritonserver on an exported model repository, and stop it cleanly.

``TritonServer`` is the Python API (tests, benchmarks and ``spellfix-correct --triton`` use
it); ``serve(cfg)`` is the plain function behind the console script, and ``main`` its Hydra
shim.

Which server runs:

- the binary bundled in the ``nvidia-pytriton`` wheel (``pip install 'spellfix[serve]'``,
  done by ``make setup``). Only its binary is used, never ``pytriton``'s Python API, which
  pins numpy<2. The wheel ships one python-backend stub per Python version; the backend
  directory with the right stub is assembled once in a cache directory, never inside
  site-packages;
- otherwise ``tritonserver`` on PATH (an NGC container), with its own backends.

The bundled python-backend stub is compiled against numpy 1.x: under numpy 2 it hands
``model.py`` tensors whose strides read as zero (a BYTES input arrives as its first byte
repeated). So the stub runs on a separate, small Python environment with numpy<2,
onnxruntime and tokenizers (``make setup`` creates it at ``.venv/triton-python``): the
server's Python, as a container would have it, apart from the training environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
from omegaconf import DictConfig

from data_synth.app import UserConfigError, hydra_app
from data_synth.files import staged_directory
from data_synth.paths import CONF_DIR
from spellfix.export.triton import TritonConfigError, check_repository

DEFAULT_PYTHON_ENV = CONF_DIR.parent / ".venv" / "triton-python"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spellfix"
SERVER_PYTHON_PACKAGES = ("numpy<2", "onnxruntime", "tokenizers", "rapidfuzz", "jellyfish")
STUB = "triton_python_backend_stub"
T = TypeVar("T")
PROBE_TIMEOUT_S = 60
PORT_TAKEN = "already in use"  # tritonserver's words when another process holds a port
PR_SET_PDEATHSIG = 1  # linux/prctl.h: ask for a signal when the parent process dies


class TritonServerError(UserConfigError):
    """The server cannot start (no binary, no server Python, a busy port...); says the fix."""


@dataclass(frozen=True)
class ServerPython:
    """The Python the python-backend stub embeds: its bin dir goes first on PATH."""

    bin_dir: Path
    version: str  # "3.11": picks the stub built for it
    lib_dir: str  # holds libpython3.X.so, which the stub links against


@dataclass(frozen=True)
class ServerInstall:
    """A tritonserver binary and how to run it."""

    binary: Path
    backend_dir: Path | None  # None: the binary's own default (an NGC container)
    lib_dirs: tuple[str, ...]  # prepended to LD_LIBRARY_PATH
    python: ServerPython | None


def free_ports(count: int = 3, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports nothing listens on right now, for tests and benchmarks.

    All probes stay bound until every port is chosen: ports picked one at a time can
    repeat, and a server given the same port twice fails to start.
    """
    with contextlib.ExitStack() as stack:
        probes = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for probe in probes:
            probe.bind((host, 0))
        return [probe.getsockname()[1] for probe in probes]


def on_free_ports(start: Callable[[list[int]], T], attempts: int = 3) -> T:
    """``start(ports)`` on three free ports; on fresh ones if another process took one.

    A port is free when chosen, but on a shared machine any outgoing connection can take
    it in the seconds before tritonserver binds it. Only that failure is retried.
    """
    for _ in range(attempts - 1):
        try:
            return start(free_ports(3))
        except TritonServerError as error:
            if PORT_TAKEN not in str(error):
                raise
    return start(free_ports(3))


def server_python(
    env_dir: str | Path | None = None, probe_timeout_s: float = PROBE_TIMEOUT_S
) -> ServerPython:
    """Check the server's Python environment and describe it; the error says how to create it."""
    env_dir = Path(env_dir) if env_dir else DEFAULT_PYTHON_ENV
    python = env_dir / "bin" / "python3"
    create = (
        f"create it with `make setup`, or: {sys.executable} -m venv {env_dir} && "
        f"{env_dir}/bin/pip install {' '.join(repr(p) for p in SERVER_PYTHON_PACKAGES)}"
    )
    if not python.is_file():
        raise TritonServerError(f"python_env={env_dir}: no server Python there; {create}")
    modules = ", ".join(package.split("<")[0] for package in SERVER_PYTHON_PACKAGES)
    probe = (
        f"import sys, sysconfig, {modules}; "
        "print(f'{sys.version_info[0]}.{sys.version_info[1]}'); "
        "print(sysconfig.get_config_var('LIBDIR')); print(numpy.__version__)"
    )
    try:
        result = subprocess.run(
            [str(python), "-c", probe],
            capture_output=True,
            text=True,
            timeout=probe_timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TritonServerError(
            f"python_env={env_dir}: importing the server's packages took over "
            f"{probe_timeout_s:g}s (a machine this busy cannot start a server either)"
        ) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TritonServerError(f"python_env={env_dir}: {last}; {create}")
    version, lib_dir, numpy_version = result.stdout.split()
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritonServerError(
            f"python_env={env_dir} has numpy {numpy_version}; the bundled python-backend "
            f"stub needs numpy<2: {env_dir}/bin/pip install 'numpy<2'"
        )
    return ServerPython(bin_dir=python.parent, version=version, lib_dir=lib_dir)


def _bundled_root() -> Path | None:
    """``pytriton/tritonserver`` of the nvidia-pytriton wheel, located without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def _bundled_backend_dir(root: Path, python_version: str) -> Path:
    """A backends dir whose python backend has the stub for ``python_version``, built once.

    Assembled in a temporary sibling and renamed, so concurrent first starts never see a
    half-copied backend.
    """
    stub = root / "python_backend_stubs" / python_version / STUB
    if not stub.is_file():
        raise TritonServerError(
            f"{stub.parent.parent} has no python-backend stub for Python {python_version}; "
            f"make the server Python (python_env) one of "
            f"{sorted(p.name for p in stub.parent.parent.iterdir())}"
        )
    backends = CACHE_DIR / f"tritonserver-{root.stat().st_mtime_ns}-py{python_version}" / "backends"
    if (backends / "python" / STUB).is_file():
        return backends
    # Another server starting at the same time may finish its copy first: keep that one.
    with staged_directory(backends, if_exists="keep") as staging:
        shutil.copytree(
            root / "backends",
            staging,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        shutil.copy2(stub, staging / "python" / STUB)
    return backends


def find_server(
    tritonserver: str | None = None, python_env: str | Path | None = None
) -> ServerInstall:
    """The server to run: ``tritonserver`` if given, else the bundled one, else PATH's."""
    if tritonserver:
        binary = Path(tritonserver)
        if not binary.is_file():
            raise TritonServerError(f"tritonserver={binary} does not exist")
        return ServerInstall(binary=binary, backend_dir=None, lib_dirs=(), python=None)
    root = _bundled_root()
    if root is not None:
        python = server_python(python_env)
        return ServerInstall(
            binary=root / "bin" / "tritonserver",
            backend_dir=_bundled_backend_dir(root, python.version),
            lib_dirs=(python.lib_dir, str(root.parent.parent / "nvidia_pytriton.libs")),
            python=python,
        )
    on_path = shutil.which("tritonserver")
    if on_path is None:
        raise TritonServerError(
            "no tritonserver: install the serve extra (pip install 'spellfix[serve]', "
            "or `make setup`) or run inside a Triton (NGC) container"
        )
    return ServerInstall(binary=Path(on_path), backend_dir=None, lib_dirs=(), python=None)


class TritonServer:
    """A tritonserver process on ``repository``, bound to ``host`` only.

    ``with TritonServer(repo, http_port=...) as server:`` starts it, waits until the
    repository's models are ready, and on exit stops it and every process it started
    (the python-backend stubs), killing what does not exit in time.
    """

    def __init__(
        self,
        repository: str | Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        python_env: str | Path | None = None,
        tritonserver: str | None = None,
        startup_timeout_s: float = 120.0,
        exit_timeout_s: int = 10,
        log_file: str | Path | None = None,
        log_verbose: int = 0,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.host = host
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.python_env = python_env
        self.tritonserver = tritonserver
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.log_verbose = log_verbose
        self.log_file = Path(log_file) if log_file else None
        self.process: subprocess.Popen | None = None
        self._scratch: Path | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, install: ServerInstall) -> list[str]:
        """The tritonserver command line: every endpoint on ``host``, CPU metrics only."""
        command = [
            str(install.binary),
            f"--model-repository={self.repository}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--log-verbose={self.log_verbose}",
            "--allow-cpu-metrics=true",
            "--allow-gpu-metrics=false",
        ]
        if install.backend_dir is not None:
            command.append(f"--backend-directory={install.backend_dir}")
        return command

    def environment(self, install: ServerInstall) -> dict[str, str]:
        """This process's environment plus what the bundled binary and its stub need."""
        env = dict(os.environ)
        library_path = [*install.lib_dirs, env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = ":".join(p for p in library_path if p)
        if install.python is not None:
            # The stub embeds the first python3 on PATH: the server Python, not this one.
            env["PATH"] = f"{install.python.bin_dir}:{env.get('PATH', '')}"
            env.pop("PYTHONHOME", None)
            env.pop("PYTHONPATH", None)
        # Each model instance gets its own process; one ORT thread pool per core is enough.
        env.setdefault("OMP_NUM_THREADS", "1")
        if self._scratch is not None:  # the server's and its stubs' temp files go here
            env["TMPDIR"] = str(self._scratch)
        return env

    def start(self) -> TritonServer:
        """Start the server and wait until it serves every model; raises with its log's tail."""
        if self.process is not None:
            raise TritonServerError("this TritonServer is already running")
        check_repository(self.repository)
        install = find_server(self.tritonserver, self.python_env)
        self.check_ports()
        if self.log_file is None:
            handle, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
            self.log_file = Path(name)
        self._scratch = Path(tempfile.mkdtemp(prefix="tritonserver-tmp-"))
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                self.command(install),
                env=self.environment(install),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stubs included, killable at once
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise TritonServerError(f"tritonserver exited with {code}: {self.log_tail()}")
            # Ready means our process answers: the ports were free when it started, and
            # it is still running after the probe.
            if self.is_ready() and self.process.poll() is None:
                return self
            time.sleep(0.2)
        self.stop()
        raise TritonServerError(
            f"tritonserver not ready after {self.startup_timeout_s:g}s: {self.log_tail()}"
        )

    def check_ports(self) -> None:
        """Refuse ports something already listens on: the readiness probe would reach it."""
        for key, port in (
            ("http_port", self.http_port),
            ("grpc_port", self.grpc_port),
            ("metrics_port", self.metrics_port),
        ):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((self.host, port))
                except OSError:
                    raise TritonServerError(
                        f"{key}={port}: {self.host}:{port} is in use (another server?); "
                        f"stop it or choose another {key}"
                    ) from None

    def is_ready(self) -> bool:
        """The server is up and every model of the repository loaded."""
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_tail(self, lines: int = 8) -> str:
        """The last error-looking lines of the server log, for one-line error messages."""
        if self.log_file is None or not self.log_file.is_file():
            return "(no log)"
        text = self.log_file.read_text(errors="replace").splitlines()
        errors = [line.strip() for line in text if line.startswith("E") or "error" in line.lower()]
        picked = (errors or [line.strip() for line in text])[-lines:]
        return " | ".join(picked) + f" (full log: {self.log_file})"

    def stop(self) -> None:
        """SIGTERM, wait for the graceful exit, then kill whatever of its group is left."""
        if self.process is None:
            return
        process, self.process = self.process, None
        try:
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(True)]
        except psutil.NoSuchProcess:
            family = []
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.exit_timeout_s + 5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # stubs that outlived the server, if any
        process.wait()
        _, alive = psutil.wait_procs(family, timeout=5)
        for leftover in alive:
            leftover.kill()
        psutil.wait_procs(alive, timeout=5)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the server's process, before exec: receive SIGTERM when its parent dies.

    A ``spellfix-serve`` killed by SIGKILL (or a closed terminal) then takes the server
    and, through the server's own shutdown, its stubs with it. Linux only; elsewhere the
    parent's signal handlers are all there is.
    """
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def serve(cfg: DictConfig, stop_event: threading.Event | None = None) -> int:
    """Serve ``cfg.repository`` until SIGINT/SIGTERM (or ``stop_event``); returns the exit code.

    A server that dies on its own ends the command with status 1 and its log's tail.
    """
    if not cfg.get("repository"):
        raise TritonServerError("repository is required: spellfix-serve repository=<dir>")
    if not Path(cfg.repository).is_dir():
        raise TritonServerError(f"repository={cfg.repository} is not a directory")
    stop_event = stop_event or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: stop_event.set())
    server = TritonServer(
        cfg.repository,
        http_port=cfg.http_port,
        grpc_port=cfg.grpc_port,
        metrics_port=cfg.metrics_port,
        host=cfg.host,
        python_env=cfg.python_env,
        tritonserver=cfg.tritonserver,
        startup_timeout_s=cfg.startup_timeout_s,
        exit_timeout_s=cfg.exit_timeout_s,
        log_file=cfg.log_file,
        log_verbose=cfg.log_verbose,
    )
    with server:
        print(f"spellfix-serve: {server.repository} is ready", flush=True)
        print(f"  HTTP     {server.http_url}", flush=True)
        print(f"  gRPC     {server.grpc_url}", flush=True)
        print(f"  metrics  {server.metrics_url}", flush=True)
        print(f"  log      {server.log_file}", flush=True)
        print(f"  try: spellfix-correct --triton {server.http_url} 'queen bohemain rapsody'")
        print("Stop with Ctrl-C (SIGINT), SIGTERM or SIGHUP.", flush=True)
        while not stop_event.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                print(f"spellfix-serve: server died: {server.log_tail()}", file=sys.stderr)
                return 1
    print("spellfix-serve: stopped", flush=True)
    return 0


@hydra_app("serve", "spellfix-serve", user_errors=(TritonConfigError,))
def main(cfg: DictConfig) -> int:
    """``spellfix-serve repository=<dir> [http_port=8000 grpc_port=8001 metrics_port=8002]``."""
    return serve(cfg)


if __name__ == "__main__":
    main()
