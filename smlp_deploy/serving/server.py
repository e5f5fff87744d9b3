"""A local Triton server: the ``tritonserver`` binary in nvidia-pytriton's wheel, serving a model repository.

That wheel is the only pip-installable Triton (2.51, Python backend only, glibc >= 2.35). It pins numpy<2, so it
is installed without its dependencies into a folder of its own inside the environment, where pip's view of the
environment stays clean (``smlp_deploy.environment`` finds it there): only its binaries are used, never its Python
package. The Python stub embeds this interpreter's libpython and takes its environment from the first ``python3`` on
PATH, so the models run with this environment's smlp_deploy and numpy.

The server listens on 127.0.0.1 unless told otherwise, runs in its own session (Ctrl-C in a terminal reaches the
caller, which stops it cleanly), receives SIGTERM if the process that started it dies, and :meth:`stop` removes
everything it made: its processes, its shared-memory regions and its scratch folder.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..environment import TritonInstall, find_tritonserver
from ..errors import BackendUnavailableError, SmlpDeployError

_PR_SET_PDEATHSIG = 1
LOG_NAME = "tritonserver.log"  # in the server's scratch folder, unless log_file names another


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]  # (host, port) for an IPv4 socket
        return port


class LocalTritonServer:
    """``tritonserver --model-repository REPO`` on ``host``; ports 0 take free ones. Use as a context manager, or
    call :meth:`start` and :meth:`stop`."""

    def __init__(self, repository: str | Path, *, host: str = "127.0.0.1", http_port: int = 0, grpc_port: int = 0,
                 metrics_port: int = 0, log_file: str | Path | None = None, startup_timeout: float = 120.0,
                 exit_timeout: int = 10):
        self.repository = Path(repository)
        if not self.repository.is_dir():
            raise SmlpDeployError(f"model repository {str(self.repository)!r} is not a folder", parameter="repository")
        self.host = host
        self.ports = {"http": http_port or free_port(host), "grpc": grpc_port or free_port(host),
                      "metrics": metrics_port or free_port(host)}
        self.log_file = Path(log_file) if log_file else None
        self.startup_timeout = startup_timeout
        self.exit_timeout = exit_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None
        self.shm_prefix = f"smlp_triton_{os.getpid()}_{id(self):x}_"  # the Python backend's shared memory

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports['metrics']}/metrics"

    def start(self) -> LocalTritonServer:
        """Start the server and wait until every model is ready; on failure nothing is left running."""
        install = find_tritonserver()
        scratch = self._scratch = Path(tempfile.mkdtemp(prefix="smlp-triton-"))
        try:
            log = self.log_file or scratch / LOG_NAME
            with open(log, "wb") as sink:
                process = self.process = subprocess.Popen(
                    self._command(install, scratch), env=self._environment(install), stdout=sink,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=_die_with_parent if _prctl else None)  # noqa: PLW1509
            self._wait_ready(process, log)
        except BaseException:
            self.stop()
            raise
        return self

    def _command(self, install: TritonInstall, scratch: Path) -> list[str]:
        backends = scratch / "backends"
        (backends / "python").mkdir(parents=True)
        # The wheel keeps the stub apart from the backend; Triton looks for it in the backend's folder.
        for item in [*install.python_backend.iterdir(), install.stub]:
            (backends / "python" / item.name).symlink_to(item)
        return [
            str(install.binary), f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={backends}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.host}", f"--http-port={self.ports['http']}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports['metrics']}",
            "--allow-gpu-metrics=false", "--exit-on-error=true", f"--exit-timeout-secs={self.exit_timeout}",
        ]

    @staticmethod
    def _environment(install: TritonInstall) -> dict[str, str]:
        """The server's environment: the stub finds this Python's libpython and the wheel's libraries, and
        embeds this environment (the first python3 on PATH)."""
        env = dict(os.environ)
        libraries = [sysconfig.get_config_var("LIBDIR"), str(install.libraries), env.get("LD_LIBRARY_PATH")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libraries if p)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _wait_ready(self, process: subprocess.Popen[bytes], log: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BackendUnavailableError(f"tritonserver exited with status {process.returncode} while "
                                              f"loading {self.repository}:\n{_tail(log)}")
            if self.ready():
                return
            time.sleep(0.2)
        raise BackendUnavailableError(f"tritonserver was not ready after {self.startup_timeout:.0f} s:\n{_tail(log)}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                status: int = response.status
                return status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait(self) -> int:
        """Block until the server exits on its own; returns its exit status."""
        if self.process is None:
            raise SmlpDeployError("tritonserver is not running: start() it first")
        return self.process.wait()

    def log_tail(self) -> str:
        log = self.log_file or (self._scratch / LOG_NAME if self._scratch else None)
        return _tail(log) if log else "(no log: tritonserver has not been started)"

    def stop(self) -> int | None:
        """SIGTERM to the server's process group (the server and its stubs), SIGKILL after ``exit_timeout`` + 10 s;
        then its shared memory and scratch folder go. Returns the server's exit status (None if never started)."""
        status = None
        if self.process is not None:
            if self.process.poll() is None:
                _signal_group(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(self.exit_timeout + 10)
                except subprocess.TimeoutExpired:
                    _signal_group(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            _signal_group(self.process.pid, signal.SIGKILL)  # stubs that outlived the server, if any
            status, self.process = self.process.returncode, None
        for region in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            region.unlink(missing_ok=True)
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        return status

    def __enter__(self) -> LocalTritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Resolved here, so the child below only makes one system call; None where the C library has no prctl (not Linux).
_prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)


def _die_with_parent() -> None:
    """In the child: SIGTERM when the thread that started the server ends, so a killed caller leaves no server.

    It runs between fork and exec, where only async-signal-safe work is safe in a threaded parent (tritonclient's
    gRPC runs threads): a call through a function pointer resolved beforehand imports and locks nothing."""
    if _prctl is not None:  # only passed to Popen where it is
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"
