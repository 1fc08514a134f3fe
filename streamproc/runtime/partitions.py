"""The partitions a worker owns: assignment, revocation, restore from the checkpoint, rewind.

The tracker owns the engine (its state is the owned partitions' state) and,
per owned partition, the next offset the checkpoint expects. Its
`generation` counts changes that make records fetched before them stale: an
assignment change, a restore, a replay from the ledger. The loop compares it
before and after fetching.

Restoring follows one rule: W only ever rises, so the engine must never
compute it from part of the topic. Every partition being restored is first
reset to empty (an empty partition holds W back), then the other partitions
get their committed watermarks, and only then does each restored partition
get its state (STREAMING.md, "Exactly once").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from streamproc.engine import StreamEngine
from streamproc.runtime.failure_kinds import STOP_ERRORS
from streamproc.runtime.logcontext import log_context
from streamproc.sinks.base import (
    RESET_HINT,
    Checkpoint,
    CheckpointConflictError,
    PartitionCheckpoint,
)
from streamproc.sources.base import RawRecord, Source, record_digest
from streamproc.sources.position import where_of

log = logging.getLogger("streamproc.query")


@dataclass(frozen=True, slots=True)
class PartitionMarks:
    """What a worker knows of a partition it owns once restored (event time; None: unknown).

    Attributes:
        lag: records past the committed offset, when the source has seen its end.
    """

    watermark_ms: int | None
    max_event_ts_ms: int | None
    lag: int | None


@dataclass(frozen=True, slots=True)
class Restored:
    """What a worker holds right after an assignment: its partitions, W, its local state."""

    partitions: Mapping[int, PartitionMarks]
    global_watermark_ms: int | None
    state_bytes: int | None


class PartitionTracker:
    """Owned partitions, their expected next offsets, and the engine holding their state."""

    def __init__(
        self,
        query: str,
        source: Source,
        checkpoint: Checkpoint,
        new_engine: Callable[[], StreamEngine],
    ) -> None:
        self._query = query
        self._source = source
        self._checkpoint = checkpoint
        self._new_engine = new_engine
        #: How a log line names an offset of a partition, in the source's own terms.
        self.where = where_of(source.positions)
        self.engine = new_engine()
        self.generation = 0
        #: Owned, restored partitions -> the offset the next batch starts at (after
        #: what was prepared, even if its commit is still in flight).
        self.next: dict[int, int] = {}
        #: Owned, restored partitions -> the offset after what is durably committed.
        self.committed: dict[int, int] = {}
        #: Owned partitions not restored yet (the checkpoint was unreachable);
        #: none of their records is processed until they are.
        self.pending: set[int] = set()
        #: Restored partitions that have a committed position (the others start per
        #: startingOffsets and have none until their first commit).
        self._positioned: set[int] = set()
        self.partition_count = 0

    # ------------------------------------------------------------ assignment
    async def assigned(self, partitions: set[int]) -> None:
        """Take on new partitions: every owned partition restored from its last commit.

        A partition that cannot be restored now (the checkpoint is
        unreachable) stays pending; the loop restores it later.
        """
        self.generation += 1
        await self._restart(self._owned() | partitions)

    async def revoked(self, partitions: set[int]) -> None:
        """Give partitions up: the ones kept are restored from their last commit."""
        self.generation += 1
        await self._restart(self._owned() - partitions)

    def restored(self, ends: Mapping[int, int]) -> Restored:
        """The owned partitions' marks as restored (for the metrics of an assignment).

        Args:
            ends: End offsets the source has seen (`Source.seen_ends`).
        """
        engine = self.engine
        marks = {}
        for p in sorted(self._source.assignment()):
            end, committed = ends.get(p), self.committed.get(p)
            marks[p] = PartitionMarks(
                engine.partition_watermark_ms(p),
                engine.partition_max_event_ts_ms(p),
                None if end is None or committed is None else max(0, end - committed),
            )
        return Restored(marks, engine.global_watermark_ms, engine.state_bytes())

    def _owned(self) -> set[int]:
        return set(self.next) | set(self.committed) | self.pending

    async def _restart(self, owned: set[int]) -> None:
        """A fresh engine holding exactly what is committed for the owned partitions.

        After an assignment change the engine must be what a restarted worker
        would hold: a batch prepared but not committed may have moved W (and
        folded records into kept partitions); the loop drops such a batch and
        fetches its records again, so none of it may stay behind.
        """
        self.engine.close()
        self.engine = self._new_engine()
        self.next.clear()
        self.committed.clear()
        self._positioned.clear()
        self.pending = set(owned)
        try:
            await self.restore_pending()
        except STOP_ERRORS:
            pass  # the loop meets it again and stops the query with its message
        except Exception as exc:
            # Never let a rebalance callback fail: the Kafka client would log it and
            # carry on with partitions nobody restored.
            log.warning(
                "cannot restore partitions %s yet (%s); they wait", sorted(self.pending), exc
            )

    @property
    def owns_every_partition(self) -> bool:
        """True when this worker owns the whole topic (it can merge rows locally)."""
        return len(self._source.assignment()) >= self.partition_count

    # ------------------------------------------------------------- restoring
    async def restore_pending(self) -> None:
        """Restore every pending partition from its last commit and seek it to the ledger.

        Raises:
            CheckpointConflictError: the checkpoint does not fit the topic any more
                (re-created, truncated, records deleted before they were read) or
                its ledger chain is broken.
        """
        # While this awaits the checkpoint, what the source holds can change (an
        # early start handed over to the group during a replay) and a newer
        # restore can take over (generation): this one then stops, and never
        # seeks a partition the source no longer holds (Kafka refuses that).
        generation = self.generation
        # Read every time: partitions added to the topic join W and the group.
        self.partition_count = await self._source.partition_count()
        if self.generation != generation:
            return
        # Only what the source holds is ours to restore: a partition can leave the
        # tracker's set without a revocation it hears of (a rejoin after a failed
        # heartbeat), and one kept pending but never held would stall the loop.
        self.pending &= self._source.assignment()
        pending = sorted(self.pending)
        for p in pending:
            self.engine.restore(p, None, ())
        await self.refresh_remote_watermarks()
        checkpoints = {p: await self._checkpoint.load_partition(p) for p in pending}
        await self._check_source(checkpoints)
        for p in pending:
            if self.generation != generation:
                return
            if p in self._source.assignment():
                with log_context(partition=p):
                    if not await self._apply(checkpoints[p], generation):
                        return  # a newer restore took over meanwhile
            self.pending.discard(p)  # restored, or not this member's any more

    async def _check_source(self, checkpoints: dict[int, PartitionCheckpoint]) -> None:
        """Refuse to resume where the topic's offsets went back or lost unread records.

        Kafka offsets never go back; when the log ends below the checkpoint's
        next offset, or the record at the last committed offset is not the
        one committed, the topic was re-created (or truncated) and resuming
        would skip its new records silently.
        """
        asks = {p: c.next_offset - 1 for p, c in checkpoints.items() if c.next_offset}
        if not asks:
            return
        found = await self._source.describe(asks)
        topic = self._source.topic
        for p, ask in asks.items():
            info, committed = found[p], checkpoints[p]
            where = f"partition {p} of topic {topic}"
            problem = None
            if info.end <= ask:
                problem = (
                    f"{where} ends at offset {info.end}, below the checkpoint's next offset "
                    f"{ask + 1}: the topic was re-created or truncated"
                )
            elif info.log_start > ask + 1:
                problem = (
                    f"records {ask + 1} to {info.log_start - 1} of {where} were deleted "
                    "(retention) before this query read them"
                )
            elif (
                info.record is not None
                and committed.last_record is not None
                and record_digest(info.record) != committed.last_record
            ):
                problem = (
                    f"the record at offset {ask} of {where} is not the one this query "
                    "committed: the topic was re-created"
                )
            if problem is not None:
                raise CheckpointConflictError(
                    f"query {self._query}: {problem}; nothing was skipped or "
                    f"processed; {RESET_HINT}"
                )

    async def replay_from_ledger(self) -> None:
        """Forget everything not committed and fetch it again, as a restarted worker would.

        A fresh engine (its W and stores knew uncommitted records), every owned
        partition restored from its last commit and seeked to the ledger.
        """
        self.generation += 1  # whatever was fetched before this is stale
        self.engine.close()
        self.engine = self._new_engine()
        self.next.clear()
        self.committed.clear()
        self._positioned.clear()
        self.pending = set(self._source.assignment())
        await self.restore_pending()

    async def restore_in_place(self) -> bool:
        """Like `replay_from_ledger`, but keep the consumer where it is (to isolate a batch).

        Returns False, after a full replay, when the ledger moved meanwhile
        (another worker committed): then the batch at hand is stale.
        """
        self.engine.close()
        self.engine = self._new_engine()
        owned = sorted(self._source.assignment())
        for p in owned:
            self.engine.restore(p, None, ())
        await self.refresh_remote_watermarks()
        for p in owned:
            if p in self.pending:
                continue
            checkpoint = await self._checkpoint.load_partition(p)
            self._restore_engine(checkpoint)
            if checkpoint.next_offset is not None and checkpoint.next_offset != self.committed.get(
                p
            ):
                await self.replay_from_ledger()
                return False
        self.discard_planned()
        return True

    def discard_planned(self) -> None:
        """Forget batches prepared but not committed: the next batch starts at the commit."""
        self.next = dict(self.committed)

    def prepared(self, ends: dict[int, int]) -> None:
        """A batch ending at these offsets was prepared: the next one starts there."""
        self.next.update(ends)

    def committed_up_to(self, partition: int, offset: int) -> None:
        """A batch of the partition ending at offset is durable."""
        self.committed[partition] = offset
        self._positioned.add(partition)
        if self.next.get(partition, -1) < offset:
            self.next[partition] = offset

    def expected_positions(self) -> dict[int, int | None]:
        """Where each restored partition's committed position will be when the next batch
        commits: after the batches prepared before it (None: no position yet).

        A batch whose rows were merged from every partition's state depends on
        all of these, not only on the partitions it carries (`CommitBatch.basis`).
        """
        return {
            p: offset if p in self._positioned or offset != self.committed.get(p) else None
            for p, offset in self.next.items()
        }

    def _restore_engine(self, checkpoint: PartitionCheckpoint) -> None:
        """Reset a partition's engine state to its last commit."""
        p = checkpoint.partition
        self.engine.revoke([p])
        self.engine.assign([p])
        self.engine.restore(
            p, checkpoint.max_event_ts_ms, checkpoint.partials, closed=checkpoint.fences
        )

    async def _apply(self, checkpoint: PartitionCheckpoint, generation: int) -> bool:
        """Restore a held partition and seek it to its commit; False when a newer
        restore took over while this one awaited the source."""
        p = checkpoint.partition
        self._restore_engine(checkpoint)
        if checkpoint.next_offset is not None:
            self._source.seek(p, checkpoint.next_offset)
            self.next[p] = checkpoint.next_offset
            self._positioned.add(p)
        else:
            await self._source.seek_to_start(p)
            position = await self._source.position(p)
            if self.generation != generation:
                return False
            self.next[p] = position
        self.committed[p] = self.next[p]
        return True

    async def refresh_remote_watermarks(self) -> None:
        """Count other workers' partitions in W, and never let W be below the committed W."""
        marks = await self._checkpoint.watermarks()
        if marks.global_ms is not None:
            # A partition added later, or one with no data yet, holds W where it
            # was; windows closed before stay closed (their records are late).
            self.engine.advance_global_watermark(marks.global_ms)
        owned = self._source.assignment()
        for p in range(self.partition_count):
            if p not in owned:
                self.engine.set_remote_watermark(p, marks.partitions.get(p))

    # ------------------------------------------------------------- positions
    def rewind(self) -> None:
        """Seek every restored partition back to its next uncommitted offset (the ledger's)."""
        owned = self._source.assignment()
        for p, offset in self.next.items():
            if p in owned:
                self._source.seek(p, offset)

    def contiguous(self, raws: list[RawRecord]) -> list[RawRecord]:
        """Keep only records at or after each partition's expected next offset."""
        nxt = self.next
        return [r for r in raws if r.partition in nxt and r.offset >= nxt[r.partition]]
