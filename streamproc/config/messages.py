"""One-line problems in the house format: ``<path>: <what is wrong>; <what is accepted>``.

Every config problem, whether pydantic found it, the cross-field checks found it
or the environment lookup did, becomes one :class:`Problem`. The helpers here render
paths (``transforms[0].parameters.aggregations``) and values (``'5 secnds'``) the same
way everywhere, so that a user can grep a message and a test can assert it exactly.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Long values are cut so that a whole message stays on one readable line.
_MAX_VALUE_CHARS = 80
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Problem:
    """One config problem: where it is and what is wrong there.

    Attributes:
        path: JSON path of the offending value, dots for keys and ``[i]`` for list
            items, e.g. ``dataQualityConfig.rules[1].columns``.
        text: what is wrong and what is accepted, on one line.
    """

    path: str
    text: str

    def __str__(self) -> str:
        return f"{self.path}: {self.text}"


def format_path(loc: Iterable[str | int]) -> str:
    """Render a location (``('transforms', 0, 'parameters')``) as ``transforms[0].parameters``.

    Pydantic marks a bad dict key with an extra ``'[key]'`` element; it adds nothing
    for a reader, so it is dropped.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":
            out = join_path(out, part)
    return out or "(top level)"


def join_path(path: str, key: str | int) -> str:
    """Extend a rendered path by one key or list index."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = _one_line(key)
    return f"{path}.{key}" if path else key


def _one_line(text: str) -> str:
    # A newline inside a value or key must not split a message into two lines.
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def _clip(text: str) -> str:
    text = _one_line(text)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def render(value: Any) -> str:
    """Render a config value for a message: strings in single quotes, the rest as JSON."""
    if isinstance(value, str):
        return f"'{_clip(value)}'"
    try:
        return _clip(json.dumps(value, ensure_ascii=False, default=str))
    except ValueError:  # a circular structure: only reachable from Python callers
        return _clip(repr(value))


def json_type(value: Any) -> str:
    """Name the JSON type of a value the way a config author thinks of it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def expected(kind: str, value: Any) -> str:
    """``expected a string, got list ["a", "b"]``: the text for a value of the wrong type."""
    if value is None or isinstance(value, bool):
        return f"expected {kind}, got {render(value)}"
    return f"expected {kind}, got {json_type(value)} {render(value)}"


def unknown_key(key: str, accepted: Sequence[str], listed: Sequence[str] | None = None) -> str:
    """The text for a key nobody knows, with a did-you-mean when one is close.

    Args:
        key: the unknown key as written.
        accepted: every key accepted at that place (candidates for the suggestion).
        listed: the keys to list when nothing is close; defaults to ``accepted``.

    Returns:
        ``unknown key; did you mean 'outputMode'?`` or ``unknown key; accepted keys: ...``.
    """
    suggestion = did_you_mean(key, accepted)
    if suggestion is not None:
        return f"unknown key; did you mean '{suggestion}'?"
    shown = sorted(listed if listed is not None else accepted, key=str.lower)
    return f"unknown key; accepted keys: {', '.join(shown)}"


def did_you_mean(word: str, candidates: Sequence[str]) -> str | None:
    """The candidate closest to ``word`` (case-insensitively), or None when none is close."""
    by_lower = {c.lower(): c for c in candidates}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    # 0.7 keeps real typos (outputMod, triggerMod, delayThresold) and drops far-fetched
    # pairs such as name -> mode, which would mislead more than help.
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.7)
    if close:
        return by_lower[close[0]]
    # A shortened key (groupBy for groupByColumns) is far from its target by edit
    # ratio, yet obviously meant; suggest the one key it begins, if only one.
    longer = [
        c for lower, c in by_lower.items() if len(word) >= 4 and lower.startswith(word.lower())
    ]
    return longer[0] if len(longer) == 1 else None
