"""Where /metrics listens: the config and the environment, port 0, a port already taken."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from streamproc.runtime.metrics import (
    DEFAULT_ADDRESS,
    MetricsServerError,
    metrics_endpoint,
    serve_metrics,
)


@pytest.fixture(autouse=True)
def no_metrics_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMPROC_METRICS_PORT", raising=False)
    monkeypatch.delenv("STREAMPROC_METRICS_ADDRESS", raising=False)


def test_port_0_takes_a_free_port_and_says_which() -> None:
    server, port = serve_metrics(DEFAULT_ADDRESS, 0)
    try:
        assert port > 0
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        assert "streamproc_records_total" in text
        assert "streamproc_phase_duration_seconds" in text
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_in_use_is_one_line_saying_where() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsServerError) as caught:
            serve_metrics("127.0.0.1", port)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot serve metrics on 127.0.0.1:{port}: already in use")


def test_loopback_by_default_and_nothing_without_a_port() -> None:
    assert metrics_endpoint() is None
    assert metrics_endpoint(port=9108) == ("127.0.0.1", 9108)
    assert metrics_endpoint("0.0.0.0", 0) == ("0.0.0.0", 0)


def test_the_environment_wins_over_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMPROC_METRICS_PORT", "9200")
    assert metrics_endpoint("10.0.0.1", 9108) == ("10.0.0.1", 9200)
    monkeypatch.setenv("STREAMPROC_METRICS_ADDRESS", "0.0.0.0")
    assert metrics_endpoint("10.0.0.1", 9108) == ("0.0.0.0", 9200)
    assert metrics_endpoint() == ("0.0.0.0", 9200)


@pytest.mark.parametrize("bad", ["http", "-1", "70000"])
def test_a_port_that_is_no_port_is_one_line(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("STREAMPROC_METRICS_PORT", bad)
    with pytest.raises(MetricsServerError, match=r"^STREAMPROC_METRICS_PORT="):
        metrics_endpoint()
