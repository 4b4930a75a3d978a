"""transfer: the thread pool of the downloads (a hook per thread, order, first failure stops the rest)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.transfer import HookPool, in_parallel

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def pool(smartflows_conn: str) -> Iterator[HookPool]:
    with HookPool(SmartFlowsHook(smartflows_conn)) as hooks:
        yield hooks


def test_each_thread_holds_a_hook_of_its_own(pool: HookPool) -> None:
    together = threading.Barrier(3)

    def work(hook: SmartFlowsHook, item: int) -> tuple[int, int]:
        together.wait(timeout=30)  # all three run at once, so none can share a hook with another
        return item * 10, id(hook)

    results = in_parallel([1, 2, 3], work, pool, concurrency=3)
    assert [value for value, _ in results] == [10, 20, 30]
    assert len({hook for _, hook in results}) == 3
    assert pool.hook is pool.take(1)[0]  # the caller's own hook is one of them


def test_hooks_are_made_in_the_calling_thread_and_kept(smartflows_conn: str) -> None:
    made_in: list[str] = []

    def factory() -> SmartFlowsHook:
        made_in.append(threading.current_thread().name)
        return SmartFlowsHook(smartflows_conn)

    with HookPool(SmartFlowsHook(smartflows_conn), factory) as hooks:
        first = in_parallel(list(range(6)), lambda hook, _: id(hook), hooks, concurrency=3)
        again = in_parallel(list(range(6)), lambda hook, _: id(hook), hooks, concurrency=3)
        # Two extra hooks for three threads, made once in this thread and used by both calls.
        assert made_in == [threading.current_thread().name] * 2
        assert set(first) | set(again) <= {id(hook) for hook in hooks.take(3)}


def test_first_failure_starts_no_more(pool: HookPool) -> None:
    started: list[int] = []

    def work(hook: SmartFlowsHook, item: int) -> int:
        started.append(item)
        if item == 2:
            raise RuntimeError("item 2 failed")
        return item

    with pytest.raises(RuntimeError, match="item 2 failed"):
        in_parallel(list(range(10)), work, pool, concurrency=1)
    assert started == [0, 1, 2]


def test_nothing_to_do(pool: HookPool) -> None:
    assert in_parallel([], lambda hook, item: item, pool, concurrency=4) == []
