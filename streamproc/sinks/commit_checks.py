"""The checks every checkpoint runs on a commit, with no I/O: stale or not, what may expire.

Both executors of a commit plan (`PostgresCheckpoint`, the testing kit's
`MemoryCheckpoint`) call these with what they read of their stored state, so a
stale batch, a batch behind the checkpoint's W, and the windows a stateTimeout
may expire are decided the same way in both.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamproc.engine import QuerySpec
from streamproc.sinks.base import CommitBatch


def stale_partitions(batch: CommitBatch, committed: Mapping[int, int]) -> tuple[int, ...]:
    """Partitions whose committed position is not where the batch assumed it.

    Each partition the batch carries must be positioned at its start offset (or
    have no position yet). A batch with a `basis` also needs every other
    partition where the basis says: another worker that committed one since (a
    rebalance, or an early start beside the group) holds contributions the
    batch's locally merged rows do not, and writing them would overwrite those.

    Args:
        committed: The next offset of each partition with a position (for a batch
            with a basis: every partition of the query; else at least its own).
    """
    stale = {
        p.partition
        for p in batch.partitions
        if p.partition in committed and committed[p.partition] != p.start_offset
    }
    basis = batch.basis
    if basis is not None:
        stale.update(p for p in set(basis) | set(committed) if committed.get(p) != basis.get(p))
    return tuple(sorted(stale))


def behind_watermark(batch: CommitBatch, stored_w: int | None) -> tuple[int, ...]:
    """The batch's partitions when it holds a state of a window W had already closed.

    That happens only when a worker classified records with a W older than the
    checkpoint's (another worker moved W meanwhile, an idle partition): the
    batch is stale, and its replay, with W restored from the checkpoint, finds
    those records late ("window closed") instead of reopening a closed window.
    """
    if stored_w is None:
        return ()
    for rows in batch.partials.values():
        for row in rows:
            if row.window_end_ms is not None and row.window_end_ms <= stored_w:
                return tuple(p.partition for p in batch.partitions) or tuple(batch.partials)
    return ()


def expiry_bounds(
    spec: QuerySpec, watermark: int | None, stored_w: int | None
) -> tuple[int, int] | None:
    """Window starts (low, high] that may hold a (key, window) expiring at this commit.

    A windowed stateTimeout expires an open (key, window) whose activity (the max event
    time of its records over every partition) is the timeout or more behind W: its
    window starts after W - size (open) and at or before W - timeout (the activity lies
    in the window). None when nothing can expire: no timeout, no W, or W did not move
    (every record committed since the last check is at or after it).
    """
    timeout, window = spec.state_timeout_ms, spec.window
    if timeout is None or window is None or watermark is None:
        return None
    if stored_w is not None and watermark <= stored_w:
        return None
    low, high = watermark - window.size_ms, watermark - timeout
    return (low, high) if high > low else None


def check_local_watermark(query: str, batch: CommitBatch, watermark: int | None) -> None:
    """A worker closing windows itself must agree with the checkpoint on W (see CommitBatch)."""
    if batch.closes_locally and watermark != batch.watermark_ms:
        raise RuntimeError(
            f"query {query}: internal error: the worker's W ({batch.watermark_ms}) is not the "
            f"checkpoint's ({watermark}); nothing of the batch was written"
        )
