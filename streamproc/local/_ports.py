"""Free TCP ports for the local servers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is only probed (bind to port 0, read it back, close), so another
    process may take it before the caller binds it: callers that start a server
    on it should retry with a fresh port when the bind fails.

    Args:
        host: Interface to probe, loopback by default.

    Returns:
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
