"""Blocking readiness probes that speak the real wire protocols.

They need no event loop, so they work from sync code, from fixtures and from
inside a running loop alike. Each returns facts that identify the server (the
Kafka cluster id, the PostgreSQL data directory), so a probe can tell our
server from a foreign one that grabbed the same port.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class ProbeError(Exception):
    """The server answered, but not as expected."""


@dataclass(frozen=True)
class KafkaMetadata:
    """What a Kafka Metadata (v2) response says about the cluster."""

    cluster_id: str | None
    brokers: tuple[tuple[int, str, int], ...]


def _split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    return bytes(buf)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        size = self.take("!h")
        if size < 0:
            return None
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw.decode("utf-8")


def kafka_metadata(bootstrap: str, timeout: float = 1.0) -> KafkaMetadata:
    """Send one Kafka Metadata request (v2, no topics) and decode the answer.

    Args:
        bootstrap: ``host:port`` of one broker.
        timeout: Socket timeout in seconds (connect and each read).

    Returns:
        The cluster id and the brokers (node id, host, port) it advertises.

    Raises:
        OSError: Not reachable, or no answer in time.
        ProbeError: Malformed answer.
    """
    client_id = b"streamproc-probe"
    correlation = 0x5EED
    # Request header v1: api_key=3 (Metadata), api_version=2, correlation id,
    # client id; body: topics = empty array (ask for brokers only).
    body = struct.pack("!hhih", 3, 2, correlation, len(client_id)) + client_id
    body += struct.pack("!i", 0)
    with socket.create_connection(_split_hostport(bootstrap), timeout=timeout) as sock:
        sock.sendall(struct.pack("!i", len(body)) + body)
        (size,) = struct.unpack("!i", _recv_exact(sock, 4))
        payload = _recv_exact(sock, size)
    try:
        reader = _Reader(payload)
        if reader.take("!i") != correlation:
            raise ProbeError("Metadata response with a foreign correlation id")
        brokers = []
        for _ in range(reader.take("!i")):
            node = reader.take("!i")
            host = reader.string() or ""
            port = reader.take("!i")
            reader.string()  # rack
            brokers.append((node, host, port))
        cluster_id = reader.string()
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProbeError(f"malformed Metadata response: {exc}") from exc
    return KafkaMetadata(cluster_id=cluster_id, brokers=tuple(brokers))


def _pg_message(sock: socket.socket) -> tuple[bytes, bytes]:
    head = _recv_exact(sock, 5)
    kind, size = head[:1], struct.unpack("!i", head[1:])[0]
    return kind, _recv_exact(sock, size - 4)


def _pg_error_text(payload: bytes) -> str:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode("utf-8", "replace")
    return f"{fields.get(b'C', '?')}: {fields.get(b'M', '')}"


def postgres_query_one(dsn: str, query: str, timeout: float = 1.0) -> str | None:
    """Log in without a password and return the first column of the first row.

    Speaks just enough of the PostgreSQL v3 protocol for a readiness check
    (trust authentication only, no TLS).

    Args:
        dsn: ``postgresql://user@host:port/db`` URL.
        query: A query returning one text column.
        timeout: Socket timeout in seconds.

    Returns:
        The value (None for SQL NULL or no row).

    Raises:
        OSError: Not reachable, or no answer in time.
        ProbeError: The server refused (still starting, auth needed, ...).
    """
    url = urlsplit(dsn)
    user = unquote(url.username or "postgres")
    database = unquote(url.path.lstrip("/") or user)
    params = b""
    for key, val in (("user", user), ("database", database), ("application_name", "probe")):
        params += key.encode() + b"\0" + val.encode() + b"\0"
    startup = struct.pack("!i", 196608) + params + b"\0"
    address = (url.hostname or "127.0.0.1", url.port or 5432)
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(struct.pack("!i", len(startup) + 4) + startup)
        value: str | None = None
        sent_query = False
        while True:
            kind, payload = _pg_message(sock)
            if kind == b"E":
                raise ProbeError(_pg_error_text(payload))
            if kind == b"R" and struct.unpack("!i", payload[:4])[0] != 0:
                raise ProbeError("server asks for a password (trust auth expected)")
            if kind == b"D" and value is None:
                ncols, size = struct.unpack("!hi", payload[:6])
                if ncols >= 1 and size >= 0:
                    value = payload[6 : 6 + size].decode("utf-8")
            if kind == b"Z":
                if sent_query:
                    break
                text = query.encode() + b"\0"
                sock.sendall(b"Q" + struct.pack("!i", len(text) + 4) + text)
                sent_query = True
        sock.sendall(b"X" + struct.pack("!i", 4))
    return value


def broker_is_ready(bootstrap: str, timeout: float = 1.0) -> bool:
    """Tell whether a Kafka broker answers a Metadata request.

    Args:
        bootstrap: ``host:port``.
        timeout: Seconds to wait for the answer.

    Returns:
        True if it answered (a paused broker times out: False).
    """
    try:
        kafka_metadata(bootstrap, timeout)
    except (OSError, ProbeError):
        return False
    return True


def postgres_is_ready(dsn: str, timeout: float = 1.0) -> bool:
    """Tell whether PostgreSQL accepts a login and answers ``SELECT 1``.

    Args:
        dsn: ``postgresql://user@host:port/db`` URL (trust auth).
        timeout: Seconds to wait for each answer.

    Returns:
        True if the query succeeded.
    """
    try:
        return postgres_query_one(dsn, "SELECT 1", timeout) == "1"
    except (OSError, ProbeError):
        return False
