"""Counting round trips: a statement 1, a COPY 2, BEGIN/COMMIT/ROLLBACK 1 each."""

from __future__ import annotations

from typing import Any

import pytest

from streamproc.sinks.round_trips import CountingConnection


class FakeTransaction:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def start(self) -> None:
        self.log.append("BEGIN")

    async def commit(self) -> None:
        self.log.append("COMMIT")

    async def rollback(self) -> None:
        self.log.append("ROLLBACK")


class FakeConnection:
    """What asyncpg's connection offers that a commit uses; records the calls."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.server_version = "18"

    async def execute(self, sql: str, *args: Any) -> str:
        self.log.append(sql)
        return "OK"

    async def fetchval(self, sql: str, *args: Any) -> int:
        self.log.append(sql)
        return 7

    async def copy_records_to_table(self, table: str, **kwargs: Any) -> str:
        self.log.append(f"COPY {table}")
        return "COPY 3"

    def transaction(self) -> FakeTransaction:
        return FakeTransaction(self.log)


async def test_each_call_counts_and_passes_through() -> None:
    raw = FakeConnection()
    conn = CountingConnection(raw)
    async with conn.transaction():
        assert await conn.execute("SELECT 1") == "OK"
        assert await conn.fetchval("SELECT 7") == 7
        await conn.copy_records_to_table("t", records=[(1,)])
    assert raw.log == ["BEGIN", "SELECT 1", "SELECT 7", "COPY t", "COMMIT"]
    assert conn.round_trips == 1 + 1 + 1 + 2 + 1
    assert conn.server_version == "18"  # anything else is the connection's own


async def test_a_failed_transaction_counts_its_rollback() -> None:
    raw = FakeConnection()
    conn = CountingConnection(raw)
    with pytest.raises(RuntimeError):
        async with conn.transaction():
            await conn.execute("SELECT 1")
            raise RuntimeError("refused")
    assert raw.log == ["BEGIN", "SELECT 1", "ROLLBACK"]
    assert conn.round_trips == 3
