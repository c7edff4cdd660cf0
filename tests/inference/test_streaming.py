"""Prefetching loader and background writer: order, bounded look-ahead, errors per item."""

from __future__ import annotations

import threading
import time

import pytest

from ovseg.inference.streaming import BackgroundWriter, prefetch


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_keeps_order_and_hands_over_errors(workers):
    def load(n: int) -> int:
        time.sleep(0.002 * (7 - n % 7))  # later items finish first
        if n == 4:
            raise ValueError("bad item 4")
        return n * n

    loaded = list(prefetch(load, range(10), workers=workers, depth=3))
    assert [item.item for item in loaded] == list(range(10))
    assert [item.value for item in loaded if item.error is None] == [
        n * n for n in range(10) if n != 4
    ]
    assert str(loaded[4].error) == "bad item 4"
    with pytest.raises(ValueError, match="bad item 4"):
        loaded[4].get()


def test_prefetch_loads_at_most_depth_ahead():
    started: list[int] = []
    lock = threading.Lock()

    def load(n: int) -> int:
        with lock:
            started.append(n)
        return n

    seen = []
    for item in prefetch(load, range(20), workers=2, depth=3):
        time.sleep(0.005)  # a slow consumer: loaders must wait for it
        with lock:
            assert len(started) <= item.item + 1 + 3
        seen.append(item.item)
    assert seen == list(range(20))


def test_prefetch_runs_in_other_threads_only_with_workers():
    names = [item.value for item in prefetch(lambda _: threading.current_thread().name, [1, 2])]
    assert all(name.startswith("ovseg-load") for name in names)
    plain = [
        item.value for item in prefetch(lambda _: threading.current_thread().name, [1], workers=0)
    ]
    assert plain == [threading.current_thread().name]


@pytest.mark.parametrize("threaded", [True, False])
def test_writer_runs_jobs_in_order_and_records_errors_per_key(threaded):
    ran: list[int] = []
    finished: list[tuple[int, int]] = []

    def job(n: int):
        def run() -> int:
            if n == 2:
                raise OSError("disk full")
            ran.append(n)
            return 10 * n

        return run

    with BackgroundWriter(
        lambda key, value: finished.append((key, value)), depth=2, threaded=threaded
    ) as writer:
        for n in range(5):
            writer.submit(n, job(n))
    assert ran == [0, 1, 3, 4]
    assert finished == [(0, 0), (1, 10), (3, 30), (4, 40)]
    errors = writer.close()
    assert [(key, str(exc)) for key, exc in errors] == [(2, "disk full")]
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(9, job(9))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        list(prefetch(lambda n: n, [1], depth=0))
    with pytest.raises(ValueError):
        BackgroundWriter(depth=0)
