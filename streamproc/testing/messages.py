"""An in-memory message writer: dead letters without a broker (a `MessageWriter`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from streamproc.sinks.base import OutgoingMessage


class MemoryMessages:
    """Keeps every message delivered, per topic; can refuse messages like a broker.

    `refuse` returns an exception to raise for a message it refuses (a record
    too large, say), or None to deliver it. Delivery is all or nothing per call.
    """

    def __init__(self, refuse: Callable[[OutgoingMessage], Exception | None] | None = None):
        self.delivered: list[OutgoingMessage] = []
        self.refuse = refuse
        self.outage = False

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to flush."""

    async def send_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Deliver every message, or raise and deliver none."""
        if self.outage:
            raise ConnectionRefusedError("memory broker: connection refused (outage)")
        if self.refuse is not None:
            for message in messages:
                error = self.refuse(message)
                if error is not None:
                    raise error
        self.delivered += messages

    def on_topic(self, topic: str) -> list[OutgoingMessage]:
        """The messages delivered to one topic, in order."""
        return [m for m in self.delivered if m.topic == topic]
