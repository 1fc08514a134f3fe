"""Records the decoder refuses, one of each kind, with the reason each gets (and a good one)."""

from __future__ import annotations

import json

GOOD = {"user_id": "u1", "event_time": "2025-11-26T10:00:00Z", "value": 5}
#: Six bad values and (the start of) the reason each gets.
BAD = [
    (b"\xff\xfe not utf-8", "value: not UTF-8"),
    (b"{not json", "value: not JSON"),
    (b"[1, 2]", "value: a JSON array, not an object"),
    (json.dumps({"user_id": "u1", "value": 1}).encode(), "event_time: missing"),
    (json.dumps({"user_id": "u1", "event_time": "yesterday"}).encode(), "event_time: 'yesterday'"),
    (
        json.dumps(
            {"user_id": "u1", "event_time": "2025-11-26T10:00:01Z", "value": "abc"}
        ).encode(),
        "value: 'abc' is not a number (needed by value:sum)",
    ),
]
