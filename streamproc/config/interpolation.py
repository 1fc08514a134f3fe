"""``${NAME}`` and ``${NAME:-default}`` in config strings, filled from the environment.

Interpolation runs on the raw JSON before any validation, so a value from the
environment is checked exactly like a value written in the file. It applies to
every string value at any depth (keys are never interpolated). ``${NAME:-default}``
follows the shell: the default is used when NAME is unset or empty. A ``${`` that
does not form a valid reference is an error rather than literal text, because a
typo such as ``${PG PASSWORD}`` must not silently become the password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streamproc.config.messages import Problem, join_path, render

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# For the JSON Schema: a string holding a reference is acceptable wherever a typed
# value (a port, a duration) is, since it is resolved before validation.
REFERENCE_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}"


class InterpolationError(ValueError):
    """A string whose ``${...}`` cannot be resolved; the message is one line without path."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Replace every ``${NAME}`` / ``${NAME:-default}`` in ``text``.

    Args:
        text: a config string.
        env: the variables to read.

    Returns:
        The text with every reference replaced.

    Raises:
        InterpolationError: a variable is unset and has no default, or a ``${`` is malformed.
    """
    out: list[str] = []
    pos = 0
    while (start := text.find("${", pos)) >= 0:
        match = _REFERENCE.match(text, start)
        if match is None:
            raise InterpolationError(
                f"{render(text)} holds a malformed reference; expected ${{NAME}} or "
                "${NAME:-default} with NAME of letters, digits and '_'"
            )
        name, default = match.group(1), match.group(2)
        value = env.get(name)
        if default is not None and not value:
            value = default
        if value is None:
            raise InterpolationError(
                f"environment variable '{name}' is not set (and no ${{{name}:-default}} given)"
            )
        out.append(text[pos:start])
        out.append(value)
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def interpolate(value: Any, env: Mapping[str, str], path: str = "") -> tuple[Any, list[Problem]]:
    """Expand references in every string of a JSON value.

    Args:
        value: the parsed JSON (dicts, lists, scalars).
        env: the variables to read.
        path: the rendered path of ``value`` (empty for the document).

    Returns:
        A copy of ``value`` with references expanded, and one problem per string that
        could not be expanded (that string is left as written).
    """
    if isinstance(value, str):
        try:
            return expand(value, env), []
        except InterpolationError as exc:
            return value, [Problem(path, str(exc))]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        problems: list[Problem] = []
        for key, item in value.items():
            out[key], found = interpolate(item, env, join_path(path, key))
            problems.extend(found)
        return out, problems
    if isinstance(value, list | tuple):
        items: list[Any] = []
        problems = []
        for index, item in enumerate(value):
            expanded, found = interpolate(item, env, join_path(path, index))
            items.append(expanded)
            problems.extend(found)
        return items, problems
    return value, []
