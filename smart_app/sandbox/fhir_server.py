"""Run a sekmet-fhir R4 server in a subprocess on loopback (dev only)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Our settings file must win over whatever the developer has exported for their own sekmet.
_SEKMET_ENV_OVERRIDES = ("SEKMET_CONFIG", "SEKMET_BASE_URL", "SEKMET_DB", "SEKMET_PORT", "SEKMET_PUBLIC_URL")


class FhirServerError(RuntimeError):
    """The sandbox FHIR server did not start."""


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def sekmet_settings(port: int, data_dir: Path, public_base_url: str | None) -> dict:
    """settings.yaml content: loopback only, no auth, no simulator, links pointing at `public_base_url`."""
    base_url = f"{public_base_url.rstrip('/')}/fhir" if public_base_url else f"http://{HOST}:{port}/fhir"
    return {
        "base_url": base_url,
        "host": HOST,
        "port": port,
        "data_dir": str(data_dir),
        "own_private_key_path": str(data_dir / "keys" / "sekmet_private.pem"),
        "simulator": {"enabled": False},  # it would otherwise edit our MedicationRequests itself
        "server_auth": {"types": ["none"]},  # the sandbox EHR in front of it does the auth
        "log_inbound": False,
    }


@dataclass
class FhirServer:
    """A running sekmet process. `base_url` is where it listens; its links use `public_base_url`."""

    base_url: str
    public_base_url: str
    data_dir: Path
    process: subprocess.Popen
    log_path: Path
    _log_file: IO[bytes]
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote to stdout/stderr."""
        self._log_file.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate, then kill if it does not exit in time. Safe to call twice."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("sekmet (pid %s) ignored SIGTERM; killing it", self.process.pid)
                self.process.kill()
                self.process.wait(timeout)
        if not self._log_file.closed:
            self._log_file.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FhirServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fhir_server(port: int = 0, public_base_url: str | None = None, data_dir: str | Path | None = None,
                      startup_timeout: float = 30.0) -> FhirServer:
    """Start sekmet on 127.0.0.1 and wait until /fhir/metadata answers."""
    tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="ldn-sekmet-")
    directory = Path(tmp.name if tmp else data_dir or "").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    settings_path = directory / "settings.yaml"
    # JSON is YAML: no PyYAML needed on our side
    settings_path.write_text(json.dumps(sekmet_settings(port, directory, public_base_url), indent=2))
    env = {k: v for k, v in os.environ.items() if k not in _SEKMET_ENV_OVERRIDES}
    log_path = directory / "sekmet.log"
    log_file = log_path.open("ab")
    process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "sekmet.cli", "serve", "--config", str(settings_path)],
        cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C goes to us; we stop it in order
    )
    server = FhirServer(f"http://{HOST}:{port}/fhir", (public_base_url or f"http://{HOST}:{port}").rstrip("/")
                        + "/fhir", directory, process, log_path, log_file, tmp)
    atexit.register(server.stop)
    try:
        _wait_until_up(server, startup_timeout)
    except FhirServerError:
        server.stop()
        raise
    log.info("sekmet pid %s listening on %s (links: %s)", process.pid, server.base_url,
             server.public_base_url)
    return server


def _wait_until_up(server: FhirServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise FhirServerError(f"sekmet exited with code {server.process.returncode} before answering:\n"
                                  f"{server.log_tail()}")
        try:
            if requests.get(f"{server.base_url}/metadata", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet
        time.sleep(0.1)
    raise FhirServerError(f"sekmet did not answer {server.base_url}/metadata within {timeout:g} s:\n"
                          f"{server.log_tail()}")
