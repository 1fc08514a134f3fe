"""Counting a commit's round trips to PostgreSQL (reported per batch and per run).

A round trip is an exchange the worker waits for: a statement (1), a COPY (2: the
COPY command, then the data and its completion), BEGIN and COMMIT (1 each). The
count leaves out what asyncpg adds the first time it sees a statement (its
prepare), which its statement cache saves on every later batch.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

#: Round trips per asyncpg call.
_COST = {
    "execute": 1,
    "executemany": 1,
    "fetch": 1,
    "fetchrow": 1,
    "fetchval": 1,
    "copy_records_to_table": 2,
    "copy_to_table": 2,
}


class CountingConnection:
    """An asyncpg connection whose calls count their round trips (`round_trips`)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.round_trips = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name == "transaction":
            return lambda **kwargs: CountedTransaction(attr(**kwargs), self)
        cost = _COST.get(name)
        if cost is None:
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.round_trips += cost
            return await attr(*args, **kwargs)

        return call


class CountedTransaction:
    """An asyncpg transaction whose BEGIN, COMMIT and ROLLBACK count as round trips."""

    def __init__(self, transaction: Any, counter: CountingConnection) -> None:
        self._transaction = transaction
        self._counter = counter

    async def start(self) -> None:
        """BEGIN."""
        self._counter.round_trips += 1
        await self._transaction.start()

    async def commit(self) -> None:
        """COMMIT."""
        self._counter.round_trips += 1
        await self._transaction.commit()

    async def rollback(self) -> None:
        """ROLLBACK."""
        self._counter.round_trips += 1
        await self._transaction.rollback()

    async def __aenter__(self) -> CountedTransaction:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            await self.commit()
        else:
            await self.rollback()
