"""Every command meets a PostgreSQL it cannot use the same way: one `streamproc:` line naming
the server (host:port) and the reason, no traceback, no password.

Three failures: a wrong password (a server that asks for one and refuses it, as PostgreSQL
does: the local stack's server trusts every login), a host name that does not resolve, and
a port nothing listens on.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import struct
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.cli_helpers import BIN, REPO

SECRET = "s3cret-Pa55"


class _RefusesPassword(socketserver.BaseRequestHandler):
    """A PostgreSQL server as far as its login: no TLS, a password asked for, then 28P01."""

    def handle(self) -> None:
        sock = self.request
        while True:
            size = struct.unpack("!i", _exactly(sock, 4))[0]
            body = _exactly(sock, size - 4)
            if struct.unpack("!i", body[:4])[0] == 80877103:  # SSLRequest
                sock.sendall(b"N")
                continue
            break
        sock.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = _exactly(sock, 1)
        size = struct.unpack("!i", _exactly(sock, 4))[0]
        password = _exactly(sock, size - 4)
        assert kind == b"p" and password.rstrip(b"\0") == SECRET.encode()
        fields = b"".join(
            key + value.encode() + b"\0"
            for key, value in (
                (b"S", "FATAL"),
                (b"V", "FATAL"),
                (b"C", "28P01"),
                (b"M", 'password authentication failed for user "etl"'),
            )
        )
        payload = fields + b"\0"
        sock.sendall(b"E" + struct.pack("!i", len(payload) + 4) + payload)


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client left")
        data += chunk
    return data


@pytest.fixture
def password_server() -> Iterator[int]:
    """The port of a server that refuses the password."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RefusesPassword) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield int(server.server_address[1])
        server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp: Path, name: str, mode: str) -> Path:
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    (data / "a.jsonl").write_text('{"user_id": "u1", "value": 1}\n')
    config = {
        "pipelineId": name,
        "mode": mode,
        "extract": {"sourceType": "file", "path": str(data)},
        "load": {
            "sinkType": "postgresql",
            "table": name,
            "connectionParams": {"url": "${TEST_PG_DSN}"},
        },
        "errorHandlingConfig": {"retryConfig": {"strategy": "none"}},
    }
    if mode == "streaming":
        config["streamingConfigJson"] = {
            "checkpointLocation": str(tmp / "checkpoints"),
            "queryName": name,
            "triggerMode": "availablenow",
        }
    path = tmp / f"{name}-{mode}.json"
    path.write_text(json.dumps(config))
    return path


def test_every_command_says_a_connection_failure_in_one_line_without_the_password(
    password_server: int, tmp_path: Path
) -> None:
    refused = _free_port()
    failures = {
        "wrong password": (
            f"postgresql://etl:{SECRET}@127.0.0.1:{password_server}/db",
            f'127.0.0.1:{password_server}: password authentication failed for user "etl"',
        ),
        "unknown host": (
            f"postgresql://etl:{SECRET}@nosuchhost.invalid:5432/db",
            "nosuchhost.invalid:5432: host name not found",
        ),
        "refused": (
            f"postgresql://etl:{SECRET}@127.0.0.1:{refused}/db",
            f"127.0.0.1:{refused}: connection refused",
        ),
    }
    streaming = _config(tmp_path, "conn", "streaming")
    batch = _config(tmp_path, "conn", "batch")
    commands = {
        "run": [str(BIN / "streamproc"), "run", str(streaming)],
        "run (batch)": [str(BIN / "streamproc"), "run", str(batch)],
        "faust worker": [str(BIN / "faust"), "-A", "agents.app", "worker", "-l", "info"],
        "status": [str(BIN / "streamproc"), "status", str(streaming)],
        "reset": [str(BIN / "streamproc"), "reset", "--yes", str(streaming)],
        "validate": [str(BIN / "streamproc"), "validate", str(streaming), str(batch)],
    }

    def run(command: list[str], dsn: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TEST_PG_DSN": dsn, "STREAMPROC_CONFIG": str(streaming)}
        return subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, cwd=REPO
        )

    cases = [(kind, name) for kind in failures for name in commands]
    with ThreadPoolExecutor(4) as pool:
        done = dict(
            zip(
                cases,
                pool.map(lambda case: run(commands[case[1]], failures[case[0]][0]), cases),
                strict=True,
            )
        )
    for (kind, name), result in done.items():
        output = result.stdout + result.stderr
        where = (kind, name, result.returncode, output[-3000:])
        assert SECRET not in output, where
        assert "Traceback" not in output, where
        if name == "validate":  # connects to nothing
            assert result.returncode == 0, where
            continue
        assert result.returncode == 1, where
        ours = [line for line in result.stderr.splitlines() if line.startswith("streamproc:")]
        assert len(ours) == 1, where
        assert f"cannot connect to PostgreSQL at {failures[kind][1]}" in ours[0], where
        assert result.stderr.strip().splitlines()[-1] == ours[0], where
