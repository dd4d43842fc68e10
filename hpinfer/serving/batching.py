"""The batching policy as a pure function (LitServe's ``collate`` idea): which waiting pages run next, or how
long to wait. Every front-end's loop (``batcher.Batcher`` here) is a thin shell around ``next_batch``.

When to run a batch: the oldest waiting page's request decides. While every inference thread is busy,
pages simply pile up and the next batch takes up to ``max_batch_size`` of them with the same options
as the oldest, so batching costs nothing under load. When a thread is free the policy waits, at most
``max_delay_s`` after the oldest page arrived, only while other admitted requests are still on their
way (downloading, decoding: ``coming``) and the batch isn't full; so a lone request never waits.
Requests are never split across option groups; a request's pages may span batches.
"""

from __future__ import annotations

from typing import Hashable, NamedTuple, Optional, Sequence, Tuple


class Waiting(NamedTuple):
    """What the policy sees of a waiting page: its options' key and when it arrived (monotonic seconds)."""

    key: Hashable
    arrived: float


class Decision(NamedTuple):
    """``take``: indices into the waiting pages to run now, in order; empty: run nothing yet, and look again
    after ``wait_s`` seconds (None: only when something changes: a page arrives or a batch finishes)."""

    take: Tuple[int, ...] = ()
    wait_s: Optional[float] = None


def next_batch(
    waiting: Sequence[Waiting], *, running: int, workers: int, coming: int, max_batch_size: int, max_delay_s: float,
    now: float,
) -> Decision:
    if not waiting or running >= workers:
        return Decision()
    oldest = waiting[0]
    same = tuple(i for i, page in enumerate(waiting) if page.key == oldest.key)[:max_batch_size]
    deadline = oldest.arrived + max_delay_s
    if coming and len(same) < max_batch_size and now < deadline:
        return Decision((), deadline - now)
    return Decision(same)
