"""The controller's work queue: one entry per resource, due work first, back-off on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from modeldeploy.workqueue import Lane, WorkQueue

Key = tuple[str, str]
A, B, C = ("ns", "a"), ("ns", "b"), ("ns", "c")


def run(test: Callable[[WorkQueue[Key]], Awaitable[None]]) -> None:
    async def main() -> None:
        queue: WorkQueue[Key] = WorkQueue(backoff_base=0.05, backoff_cap=0.2)
        timers = asyncio.create_task(queue.run_timers())
        try:
            await test(queue)
        finally:
            timers.cancel()

    asyncio.run(main())


async def take(queue: WorkQueue[Key], timeout: float = 2.0) -> Key:
    return await asyncio.wait_for(queue.get(), timeout)


async def nothing_within(queue: WorkQueue[Key], seconds: float) -> bool:
    try:
        await asyncio.wait_for(queue.get(), seconds)
    except TimeoutError:
        return True
    return False


def test_a_key_added_many_times_is_queued_once() -> None:
    async def check(queue: WorkQueue[Key]) -> None:
        for _ in range(5):
            queue.add(A)
        queue.add(B)
        assert len(queue) == 2
        assert [await take(queue), await take(queue)] == [A, B]
        queue.done(A)
        queue.done(B)
        assert await nothing_within(queue, 0.1)

    run(check)


def test_a_key_changed_while_processed_is_processed_again_after_done_never_twice_at_once() -> None:
    async def check(queue: WorkQueue[Key]) -> None:
        queue.add(A)
        assert await take(queue) == A
        queue.add(A)  # a watch event while a worker holds it
        assert await nothing_within(queue, 0.1), "the same key handed to a second worker"
        queue.done(A)
        assert await take(queue) == A

    run(check)


def test_due_work_is_taken_before_any_resync() -> None:
    async def check(queue: WorkQueue[Key]) -> None:
        for key in (A, B):
            queue.add(key, lane=Lane.RESYNC)
        queue.add(C)
        assert await take(queue) == C
        queue.add(B)  # a change to a resource already queued for resync promotes it
        assert await take(queue) == B
        assert await take(queue) == A

    run(check)


def test_a_delayed_key_comes_at_its_time_and_the_earliest_time_wins() -> None:
    async def check(queue: WorkQueue[Key]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        queue.add(A, after=5.0)
        queue.add(A, after=0.1)
        assert await take(queue) == A
        assert loop.time() - started < 4.0
        queue.done(A)
        assert await nothing_within(queue, 0.3), "the later timer fired as well"

    run(check)


def test_failures_back_off_exponentially_up_to_the_cap_and_success_resets_it() -> None:
    async def check(queue: WorkQueue[Key]) -> None:
        delays = [queue.failed(A) for _ in range(5)]
        assert delays == pytest.approx([0.05, 0.1, 0.2, 0.2, 0.2])
        queue.succeeded(A)
        assert queue.failed(A) == pytest.approx(0.05)
        assert await take(queue) == A

    run(check)


def test_a_forgotten_key_leaves_no_timer_behind() -> None:
    async def check(queue: WorkQueue[Key]) -> None:
        queue.add(A, after=0.05)
        queue.add(B)
        queue.forget(A)
        queue.forget(B)
        assert not queue.pending(A) and not queue.pending(B)
        assert await nothing_within(queue, 0.2)

    run(check)
