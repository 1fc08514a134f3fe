"""Batch composition across partitions: level in Kafka time, always progressing."""

from __future__ import annotations

import random
from dataclasses import dataclass

from streamproc.sources.alignment import aligned_counts


@dataclass(frozen=True)
class Rec:
    timestamp: int


def recs(*timestamps: int) -> list[Rec]:
    return [Rec(t) for t in timestamps]


def test_partitions_go_only_as_far_as_the_one_buffered_least_far() -> None:
    buffers = {0: recs(1, 2, 3, 4, 5, 6), 1: recs(1, 3), 2: recs(2, 3, 4)}
    assert aligned_counts(buffers, 100) == {0: 3, 1: 2, 2: 2}


def test_empty_buffers_hold_nothing_up() -> None:
    assert aligned_counts({0: recs(5, 6), 1: []}, 100) == {0: 2}
    assert aligned_counts({0: [], 1: []}, 100) == {}


def test_more_than_asked_for_is_shared_by_the_same_fraction() -> None:
    buffers = {0: recs(*range(100)), 1: recs(*range(100)), 2: recs(*range(50))}
    # 50 of each are within the horizon (49): a third of each goes.
    assert aligned_counts(buffers, 50) == {0: 17, 1: 17, 2: 16}


def test_timestamps_that_go_back_never_stop_progress() -> None:
    # CreateTime is the producer's clock: it may go back within a partition.
    # The partition that sets the horizon gives its whole buffer regardless.
    buffers = {0: recs(9, 3), 1: recs(5, 6)}
    assert aligned_counts(buffers, 100) == {0: 2}


def test_every_call_hands_out_records_within_bounds() -> None:
    rng = random.Random(5)
    for _ in range(500):
        buffers = {
            p: recs(*sorted(rng.randrange(1000) for _ in range(rng.randrange(0, 30))))
            for p in range(rng.randrange(1, 5))
        }
        ordered = rng.random() < 0.7
        if not ordered:  # timestamps that go back
            for records in buffers.values():
                rng.shuffle(records)
        want = rng.randrange(1, 60)
        counts = aligned_counts(buffers, want)
        if any(buffers.values()):
            assert 1 <= sum(counts.values()) <= want
        else:
            assert counts == {}
        horizon = min((r[-1].timestamp for r in buffers.values() if r), default=0)
        for p, n in counts.items():
            assert 0 < n <= len(buffers[p])
            if ordered:
                assert all(r.timestamp <= horizon for r in buffers[p][:n])
