"""The exception raised for an invalid config."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(ValueError):
    """A pipeline config is invalid.

    ``str(error)`` is the errors joined by newlines, one problem per line, each
    ``<path>: <what is wrong>; <what is accepted>``.

    Attributes:
        errors: one line per problem.
        warnings: one line per warning found along the way.
    """

    def __init__(self, errors: Sequence[str], warnings: Sequence[str] = ()) -> None:
        self.errors: list[str] = list(errors)
        self.warnings: list[str] = list(warnings)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)
