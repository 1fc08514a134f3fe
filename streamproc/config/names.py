"""Names that end up in SQL, Kafka or file paths: columns, tables, topics, pipeline ids.

Table and column names are spliced into SQL statements (quoted, but still), so
only plain identifiers are accepted: ``[A-Za-z_][A-Za-z0-9_]*``, at most 63
characters (PostgreSQL's limit), optionally ``schema.table``. That closes the door
on injection by config (``"users; DROP TABLE x"``) instead of relying on quoting.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from typing_extensions import override

from streamproc.config.fields import HouseType, as_string
from streamproc.config.messages import expected, render

IDENTIFIER_MAX = 63  # PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)
TOPIC_MAX = 249  # Kafka's limit on topic names
IDENT_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"  # an unquoted SQL identifier
_IDENT = IDENT_PATTERN
_IDENTIFIER = re.compile(_IDENT)
_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}")
_IDENTIFIER_RULE = "letters, digits and '_' (not starting with a digit), at most 63 characters"
_LOWER_IDENT = "[a-z_][a-z0-9_]*"
_TABLE_RULE = (
    "lower-case letters, digits and '_' (not starting with a digit), at most 63 characters"
)


def quote_ident(name: str) -> str:
    """Quote a possibly schema-qualified identifier for SQL (``a.b`` -> ``"a"."b"``).

    Names are checked when the config is read; quoting them as well means that
    neither a config nor a record can inject SQL, whichever module splices them.
    """
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def quote_literal(text: str) -> str:
    """A string as an SQL literal (``it's`` -> ``'it''s'``), for statements that must name
    a value in their text (a function's body, a partial index's predicate)."""
    return "'" + text.replace("'", "''") + "'"


def check_column(name: str) -> str:
    """Return ``name`` if it is a safe SQL column name, else raise ValueError(one line)."""
    if _IDENTIFIER.fullmatch(name) and len(name) <= IDENTIFIER_MAX:
        return name
    raise ValueError(f"{render(name)} is not a valid column name; expected {_IDENTIFIER_RULE}")


@dataclass(frozen=True)
class ColumnName(HouseType):
    """A column name: ``[A-Za-z_][A-Za-z0-9_]*``, at most 63 characters.

    Safe to splice into SQL as it is.
    """

    @override
    def parse(self, value: Any) -> str:
        return check_column(as_string(value))

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_IDENT}$", "maxLength": IDENTIFIER_MAX}


@dataclass(frozen=True)
class TableName(HouseType):
    """A table name: ``name`` or ``schema.name``, each ``[a-z_][a-z0-9_]*`` (at most 63).

    Safe to splice into SQL as it is. Lower case only: streamproc quotes the
    names it writes, so ``twin_table_B`` made a case-sensitive table that psql's
    ``select * from twin_table_B`` (folded to ``twin_table_b``) cannot find; such
    a name is refused with the lower-case one to use.
    """

    @override
    def parse(self, value: Any) -> str:
        name = as_string(value)
        parts = name.split(".")
        if len(parts) <= 2 and all(
            _IDENTIFIER.fullmatch(p) and len(p) <= IDENTIFIER_MAX for p in parts
        ):
            if name != name.lower():
                raise ValueError(
                    f"{render(name)} has upper-case letters, which PostgreSQL folds to lower "
                    f"case in SQL written without quotes (select * from {name} reads "
                    f"{name.lower()}), and streamproc would create it quoted, case-sensitive; "
                    f"use '{name.lower()}'"
                )
            return name
        raise ValueError(
            f"{render(name)} is not a valid table name; expected name or schema.name, "
            f"each of {_TABLE_RULE}"
        )

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": rf"^(?:{_LOWER_IDENT}\.)?{_LOWER_IDENT}$"}


def _unique_columns(names: list[str], shown: Any) -> tuple[str, ...]:
    seen: set[str] = set()
    for name in names:
        check_column(name)
        if name in seen:
            raise ValueError(f"{render(shown)} names '{name}' twice")
        seen.add(name)
    return tuple(names)


@dataclass(frozen=True)
class ColumnList(HouseType):
    """Comma-separated column names (``"store_id,category"``).

    Parsed to a tuple.
    """

    @override
    def parse(self, value: Any) -> tuple[str, ...]:
        text = as_string(value)
        names = [part.strip() for part in text.split(",")]
        if names == [""]:
            raise ValueError(f"{render(text)} names no column; expected comma-separated names")
        return _unique_columns(names, text)

    @override
    def dump(self, value: Any) -> Any:
        return ",".join(value) if isinstance(value, tuple) else value

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": rf"^\s*{_IDENT}\s*(?:,\s*{_IDENT}\s*)*$"}


@dataclass(frozen=True)
class ColumnNames(HouseType):
    """A non-empty JSON list of column names.

    Parsed to a tuple.
    """

    @override
    def parse(self, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise ValueError(expected("a list of column names", value))
        if not value:
            raise ValueError("empty list; expected at least one column name")
        return _unique_columns([as_string(item) for item in value], list(value))

    @override
    def dump(self, value: Any) -> Any:
        return list(value) if isinstance(value, tuple) else value

    @override
    def schema(self) -> dict[str, Any]:
        column = {"type": "string", "pattern": f"^{_IDENT}$", "maxLength": IDENTIFIER_MAX}
        return {"type": "array", "items": column, "minItems": 1, "uniqueItems": True}


@dataclass(frozen=True)
class Topic(HouseType):
    """A Kafka topic name: 1-249 of ``[A-Za-z0-9._-]``, and not ``.`` or ``..``."""

    @override
    def parse(self, value: Any) -> str:
        name = as_string(value)
        if _TOPIC.fullmatch(name) and len(name) <= TOPIC_MAX and name not in (".", ".."):
            return name
        raise ValueError(
            f"{render(name)} is not a valid Kafka topic name; expected 1-249 characters "
            "from letters, digits, '.', '_' and '-'"
        )

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_TOPIC.pattern}$", "maxLength": TOPIC_MAX}


@dataclass(frozen=True)
class Name(HouseType):
    """A name: 1-128 of ``[A-Za-z0-9._-]``, starting with a letter or digit.

    It appears in file paths, metric labels and table rows.
    """

    what: str

    @override
    def parse(self, value: Any) -> str:
        name = as_string(value)
        if _NAME.fullmatch(name):
            return name
        raise ValueError(
            f"{render(name)} is not a valid {self.what}; expected 1-128 characters from "
            "letters, digits, '.', '_' and '-', starting with a letter or digit"
        )

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^{_NAME.pattern}$"}


@dataclass(frozen=True)
class BootstrapServers(HouseType):
    """Kafka bootstrap servers: ``host:port[,host:port...]``."""

    @override
    def parse(self, value: Any) -> str:
        text = as_string(value)
        if all(_HOST_PORT.fullmatch(part.strip()) for part in text.split(",")):
            return ",".join(part.strip() for part in text.split(","))
        raise ValueError(
            f"{render(text)} is not a list of host:port; expected e.g. 'localhost:9092' "
            "or 'b1:9092,b2:9092'"
        )

    @override
    def schema(self) -> dict[str, Any]:
        item = _HOST_PORT.pattern
        return {"type": "string", "pattern": rf"^\s*{item}\s*(?:,\s*{item}\s*)*$"}


def _redact_url(url: str) -> str:
    # Show enough of a bad URL to find it, never its password: everything
    # between "user:" and the last "@" (a password may hold "@" itself).
    return re.sub(r"(://[^:/@]*):.*@", r"\1:***@", url)


def _dsn_problem(url: str) -> str | None:
    """Why asyncpg would fail to parse a DSN, in words that quote none of it."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.query:
            urllib.parse.parse_qs(parts.query, strict_parsing=True)
    except ValueError:
        return "it is not a well-formed URL"
    # asyncpg splits user:password from the host at the FIRST "@".
    hostspec = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
    if "@" in hostspec:
        return "an '@' follows the host"
    for host in hostspec.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, number = port.rpartition(":") if ":" in port else ("", "", "")
        if colon and number and not number.isdigit():
            return "the port after the host is not a number"
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        return "an '@' follows the host"
    return None


@dataclass(frozen=True)
class PostgresUrl(HouseType):
    """A ``postgresql://`` (or ``postgres://``) URL.

    Kept as a secret: it may hold a password.
    """

    @override
    def parse(self, value: Any) -> SecretStr:
        url = as_string(value)
        if re.match(r"postgres(?:ql)?://", url):
            problem = _dsn_problem(url)
            if problem is None:
                return SecretStr(url)
            raise ValueError(
                f"{render(_redact_url(url))} cannot be parsed: {problem}; a password holding "
                "@ / ? # or : must be URL-encoded (%40 %2F %3F %23 %3A)"
            )
        raise ValueError(
            f"{render(_redact_url(url))} is not a postgresql:// URL; "
            "expected postgresql://user:password@host:port/database"
        )

    @override
    def dump(self, value: Any) -> Any:
        return _redact_url(value.get_secret_value()) if isinstance(value, SecretStr) else value

    @override
    def schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": "^postgres(?:ql)?://"}
